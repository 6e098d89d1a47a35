"""Link benchmark: samples/s from `Board.measure` through a pty and a TCP socket, served by the
Python simulator and by the C firmware's native port (pty only), with the null device (the
protocol's cost alone) and with the virtual DNPU, side by side with the device model's own rate
(`convert`, measured in the same run) and the bound that the frame layout allows on an assumed
link; then a noisy link: how many of N measurements of 3,000 samples complete (exactly) at
~3e-4 faults per byte each way, with the host's link adaptation and without it, and what the
adaptation costs on a clean link.

    .venv/bin/python bench/link_bench.py            # table
    .venv/bin/python bench/link_bench.py --json     # one JSON document on stdout
    .venv/bin/python bench/link_bench.py --firmware native --noisy 0

Targets: null device >= 100,000 samples/s through the pty; the native board >= 2x the Python
simulator's null-device rate through the pty; virtual DNPU >= 90 % of the device model's own
rate; on the noisy link >= 4 of 5 measurements complete, none with a wrong sample.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.board import DEFAULT_LIMITS_V
from firmware_sim.devices import LinearDevice
from firmware_sim.physics import NullDevice, VirtualDNPU
from host.board import Board, BoardError, BoardOptions
from host.board.faults import FaultPlan, FaultyPort
from host.board import protocol as P

TARGET_NULL_PTY = 100_000.0
TARGET_NATIVE_OVER_PYTHON = 2.0
TARGET_DNPU_FRACTION = 0.90
NOISY_RATE = 3e-4               # faults per byte, each direction
NOISY_SAMPLES = 3_000
#: the host's behaviour before the link adaptation (fixed sizes, one SWEEP_DATA frame in flight)
FIXED_OPTIONS = dict(adapt=False, upload_samples=512, block_samples=1024, upload_window=1)
USB_FS_BYTES_PER_S = 1.0e6      # USB full speed bulk, both directions share the bus


@dataclass
class LinkResult:
    firmware: str
    link: str
    device: str
    samples: int
    seconds: float
    samples_per_s: float
    retries: int


def frame_bytes_per_sample(opts: BoardOptions) -> dict[str, float]:
    """Pure frame bytes per sample in each direction for the host's block sizes (as far as a
    frame of MAX_PAYLOAD carries them)."""
    rows = min(opts.upload_samples, (P.MAX_PAYLOAD - P.SCHEMA["SWEEP_DATA"].head.size) // (2 * N_ELECTRODES))
    block = min(opts.block_samples, (P.MAX_PAYLOAD - P.SCHEMA["RESULT"].head.size) // 4)
    up_frame = P.FRAME_OVERHEAD + P.SCHEMA["SWEEP_DATA"].head.size + rows * 2 * N_ELECTRODES
    up = up_frame / rows + P.FRAME_OVERHEAD / rows      # + ACK
    down_frame = P.FRAME_OVERHEAD + P.SCHEMA["RESULT"].head.size + block * 4
    credit = P.FRAME_OVERHEAD + P.SCHEMA["CREDIT"].head.size
    down = down_frame / block + credit / (block * max(1, opts.window // 4))
    return {"host_to_board": up, "board_to_host": down, "total": up + down}


def model_rate(device, n: int, block: int, period_s: float, seed: int) -> float:
    """The device's own samples/s through `convert`, in the board's block size."""
    v = _volts(n, seed)
    device.convert(v[:block], period_s, 1)                  # warm-up (lazy init, caches)
    t = time.perf_counter()
    for i in range(0, n, block):
        device.convert(np.ascontiguousarray(v[i:i + block]), period_s, 1)
    return n / (time.perf_counter() - t)


def _volts(n: int, seed: int) -> np.ndarray:
    lim = np.array(DEFAULT_LIMITS_V)          # the simulated board's limits
    return np.random.default_rng(seed).uniform(lim[:, 0], lim[:, 1], (n, N_ELECTRODES))


def _start_sim(link: str, device: str, seed: int, firmware: str = "python") -> tuple[subprocess.Popen, str]:
    where = ["--pty"] if link == "pty" else ["--tcp", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "firmware_sim", *where, "--exit-on-stdin-eof",
                             "--options", f"device={device}&seed={seed}&firmware={firmware}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


def link_rate(link: str, device: str, n: int, seed: int, opts: BoardOptions,
              firmware: str = "python") -> LinkResult:
    proc, url = _start_sim(link, device, seed, firmware)
    try:
        with Board.open(url, opts) as b:
            v = _volts(n, seed + 1)
            b.measure(v[: min(n, 4 * opts.block_samples)])           # warm-up
            t = time.perf_counter()
            out = b.measure(v)
            dt = time.perf_counter() - t
            assert out.shape == (n,)
            retries = b.counters_host.retries
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for f in (proc.stdin, proc.stdout):
            if f:
                f.close()
    return LinkResult(firmware, link, device, n, dt, n / dt, retries)


@dataclass
class NoisyResult:
    firmware: str
    host: str                   # "adaptive" or "fixed" (the behaviour before the adaptation)
    fault_rate_per_byte: float
    measurements: int
    completed: int
    corrupted_samples: int
    faults_injected: int
    seconds_per_measurement: float
    errors: list[str]


def noisy_link(firmware: str, n_measurements: int, rate: float, opts: BoardOptions,
               seed: int) -> NoisyResult:
    """`n_measurements` of NOISY_SAMPLES samples on the linear board (exact expected values)
    through a FaultyPort at `rate` faults per byte each way (faults on once the board is open)."""
    url = f"sim://?seed={seed}&device=linear&dac_gain_error=0&dac_offset_error_mv=0&firmware={firmware}"
    dev = LinearDevice(seed)
    completed = corrupted = injected = 0
    errors: list[str] = []
    t0 = time.perf_counter()
    for i in range(n_measurements):
        ports: list[FaultyPort] = []

        def wrap(p, plan=FaultPlan.noisy(rate, seed=seed * 1000 + i)):
            ports.append(FaultyPort(p, plan))
            ports[0].enabled = False
            return ports[0]

        with Board.open(url, opts, wrap=wrap) as b:
            v = _volts(NOISY_SAMPLES, seed + i)
            nominal = b.codes_to_volts(b.volts_to_codes(v))
            want = np.clip(np.rint(dev.convert(nominal, 1e-5) / 0.01), -32768, 32767) * 0.01
            ports[0].enabled = True
            try:
                got = b.measure(v)
                completed += 1
                corrupted += int(np.count_nonzero(np.abs(got - want) > 1e-9))
            except BoardError as e:
                errors.append(f"{type(e).__name__}: {e}")
            ports[0].enabled = False
            injected += ports[0].counts.total()
    return NoisyResult(firmware, "adaptive" if opts.adapt else "fixed", rate, n_measurements, completed,
                       corrupted, injected, (time.perf_counter() - t0) / max(1, n_measurements), errors)


def _median(runs: list[dict], key: str) -> dict:
    runs = sorted(runs, key=lambda d: d[key])
    return {**runs[len(runs) // 2], f"{key}_all_runs": [d[key] for d in runs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--null-samples", type=int, default=1_000_000)
    ap.add_argument("--null-repeats", type=int, default=3, help="null-device runs per link (median)")
    ap.add_argument("--dnpu-samples", type=int, default=40_000)
    ap.add_argument("--repeats", type=int, default=3, help="virtual-DNPU runs per link (median)")
    ap.add_argument("--links", default="pty,tcp", help="comma-separated: pty,tcp")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--link-bytes-per-s", type=float, default=USB_FS_BYTES_PER_S,
                    help="assumed physical link for the bound (default: USB full speed, 1 MB/s)")
    ap.add_argument("--firmware", default="python,native",
                    help="comma-separated: python (this simulator), native (the C firmware's pty port)")
    ap.add_argument("--noisy", type=int, default=5,
                    help="measurements of 3,000 samples per firmware on the noisy link (0: skip)")
    ap.add_argument("--fault-rate", type=float, default=NOISY_RATE, help="noisy link: faults per byte, each way")
    a = ap.parse_args(argv)
    firmwares = [f for f in a.firmware.split(",") if f]
    opts = BoardOptions()
    fixed = BoardOptions(**FIXED_OPTIONS)
    period = 10e-6

    bps = frame_bytes_per_sample(opts)
    bound = a.link_bytes_per_s / bps["total"]
    null_own = model_rate(NullDevice(), a.null_samples, opts.block_samples, period, a.seed)
    dnpu = VirtualDNPU.from_seed(a.seed)
    results: list[dict] = []
    pairs = [(fw, link) for fw in firmwares for link in a.links.split(",")
             if fw != "native" or link == "pty"]          # the native port serves a pty
    # The machine is shared: the null-device runs of every firmware and link take turns, so that
    # a busy spell slows them alike, and each reports its median run.
    null_runs: dict[tuple[str, str], list[dict]] = {p: [] for p in pairs}
    for _ in range(a.null_repeats):
        for fw, link in pairs:
            r = link_rate(link, "null", a.null_samples, a.seed, opts, fw)
            null_runs[fw, link].append({**asdict(r), "model_own_samples_per_s": null_own,
                                        "fraction_of_model": r.samples_per_s / null_own})
    for fw, link in pairs:
        results.append(_median(null_runs[fw, link], "samples_per_s"))
        # The machine is shared: measure the model's own rate right before and after each run
        # and compare with their mean; report the median run.
        runs = []
        for _ in range(a.repeats):
            before = model_rate(dnpu, a.dnpu_samples // 2, opts.block_samples, period, a.seed)
            r = link_rate(link, "dnpu", a.dnpu_samples, a.seed, opts, fw)
            after = model_rate(dnpu, a.dnpu_samples // 2, opts.block_samples, period, a.seed)
            own = (before + after) / 2
            runs.append({**asdict(r), "model_own_samples_per_s": own,
                         "fraction_of_model": r.samples_per_s / own})
        if runs:
            results.append(_median(runs, "fraction_of_model"))
    # the adaptation's cost on a clean link: the null device through the pty, fixed sizes as before
    clean_fixed = []
    for fw in firmwares:
        runs = [asdict(link_rate("pty", "null", a.null_samples, a.seed, fixed, fw))
                for _ in range(a.null_repeats)]
        clean_fixed.append({**_median(runs, "samples_per_s"), "host": "fixed"})
    noisy = [asdict(noisy_link(fw, a.noisy, a.fault_rate, o, a.seed + 1))
             for fw in firmwares for o in (opts, fixed)] if a.noisy > 0 else []

    checks: dict[str, bool] = {}
    null_pty = {r["firmware"]: r["samples_per_s"] for r in results
                if r["device"] == "null" and r["link"] == "pty"}
    for fw, rate in null_pty.items():
        checks[f"{fw}_null_pty_ge_100k"] = rate >= TARGET_NULL_PTY
    native_over_python = None
    if "python" in null_pty and "native" in null_pty:
        native_over_python = null_pty["native"] / null_pty["python"]
        checks["native_null_pty_ge_2x_python"] = native_over_python >= TARGET_NATIVE_OVER_PYTHON
    for r in results:
        if r["device"] == "dnpu":
            checks[f"{r['firmware']}_dnpu_{r['link']}_ge_90pct_model"] = r["fraction_of_model"] >= TARGET_DNPU_FRACTION
    for r in noisy:
        if r["host"] == "adaptive":
            checks[f"{r['firmware']}_noisy_ge_{r['measurements'] - 1}_of_{r['measurements']}_exact"] = (
                r["completed"] >= r["measurements"] - 1 and r["corrupted_samples"] == 0)
    report = {
        "assumed_link": {"name": "USB full speed (bulk)", "bytes_per_s": a.link_bytes_per_s},
        "frame_bytes_per_sample": bps,
        "link_bound_samples_per_s": bound,
        "sample_period_s": period,
        "block_samples": opts.block_samples,
        "upload_samples": opts.upload_samples,
        "results": results,
        "native_over_python_null_pty": native_over_python,
        "clean_link_fixed_sizes": clean_fixed,
        "noisy_link": noisy,
        "targets": {"null_pty_samples_per_s": TARGET_NULL_PTY, "native_over_python": TARGET_NATIVE_OVER_PYTHON,
                    "dnpu_fraction_of_model": TARGET_DNPU_FRACTION},
        "checks": checks,
    }
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"frame bytes/sample: host->board {bps['host_to_board']:.2f}, board->host "
              f"{bps['board_to_host']:.2f}, total {bps['total']:.2f}")
        print(f"bound on {report['assumed_link']['name']} ({a.link_bytes_per_s / 1e6:.2f} MB/s): "
              f"{bound:,.0f} samples/s (a pty/TCP on one machine has no baud limit)")
        print(f"{'firmware':8} {'link':5} {'device':6} {'samples/s':>12} {'model own':>12} {'ratio':>7} "
              f"{'vs USB-FS bound':>16} {'retries':>8}")
        for r in results:
            print(f"{r['firmware']:8} {r['link']:5} {r['device']:6} {r['samples_per_s']:12,.0f} "
                  f"{r['model_own_samples_per_s']:12,.0f} {r['fraction_of_model']:7.1%} "
                  f"{r['samples_per_s'] / bound:16.2f}x {r['retries']:8d}")
        if native_over_python is not None:
            print(f"native / python, null device through the pty: {native_over_python:.2f}x")
        for r in clean_fixed:
            print(f"{r['firmware']:8} pty   null   {r['samples_per_s']:12,.0f}  (fixed sizes, one upload "
                  f"frame in flight: the host before the link adaptation)")
        for r in noisy:
            print(f"noisy link {r['fault_rate_per_byte']:.0e}/byte each way, {r['firmware']:6} {r['host']:8}: "
                  f"{r['completed']}/{r['measurements']} completed, {r['corrupted_samples']} corrupted samples, "
                  f"{r['faults_injected']} faults, {r['seconds_per_measurement']:.1f} s each")
        for k, ok in checks.items():
            print(f"{k}: {'PASS' if ok else 'MISS'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
