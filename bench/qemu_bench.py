"""QEMU board benchmark: what the firmware cross-compiled for the STM32F405 does in QEMU's
netduinoplus2 (`sim://?firmware=qemu`), side by side with the Python firmware in the same run.

- rate: samples/s of `Board.measure` on the null, linear and virtual-DNPU devices, through the
  qemu board and through the Python simulator (ratio qemu / python);
- sample clock: a real-time sweep (`realtime=1`) paced by the emulated TIM2 counter; for each
  block, when the firmware began converting it against when its samples were due (both read off
  the emulated counter, reported by the analog emulator): lateness percentiles and the spread of
  the intervals between block starts (jitter);
- same chip: the noise-free virtual DNPU of one seed on both firmwares (max |difference|).

    .venv/bin/python bench/qemu_bench.py            # table
    .venv/bin/python bench/qemu_bench.py --json     # one JSON document

Needs qemu-system-arm and the image (`make firmware-qemu`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.board import DEFAULT_LIMITS_V, BoardConfig
from firmware_sim.devices import DeviceOptions
from firmware_sim.qemu import check_available, run_qemu
from host.board import Board


def _volts(n: int, seed: int) -> np.ndarray:
    lim = np.array(DEFAULT_LIMITS_V)
    return np.random.default_rng(seed).uniform(lim[:, 0], lim[:, 1], (n, N_ELECTRODES))


def rate(url: str, n: int, seed: int) -> float:
    with Board.open(url) as b:
        v = _volts(n, seed)
        b.measure(v[:256])                                   # warm-up
        t = time.perf_counter()
        b.measure(v)
        return n / (time.perf_counter() - t)


def sample_clock(period_us: float, block: int, blocks: int, seed: int) -> dict:
    """Lateness of each block's conversion behind its due time on the emulated counter (us)."""
    cfg = BoardConfig(seed=seed, realtime=True, sample_period_s=period_us * 1e-6, watchdog_s=2.0)
    with run_qemu(cfg, DeviceOptions(device="linear")) as q, Board.open(q.pty, block_samples=block) as b:
        b.measure(_volts(block * blocks, seed))
        timings = [t for t in q.analog.timings if t.due_ticks]
    late = np.array([t.now_ticks - t.due_ticks for t in timings], dtype=np.float64)
    starts = np.array([t.now_ticks for t in timings], dtype=np.float64)
    nominal = block * period_us
    intervals = np.diff(starts)
    return {"period_us": period_us, "block_samples": block, "blocks": len(timings),
            "block_period_us": nominal,
            "lateness_us": {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)),
                            "max": float(late.max()), "min": float(late.min())},
            "interval_jitter_us_rms": float(np.sqrt(np.mean((intervals - nominal) ** 2))),
            "interval_jitter_us_max": float(np.abs(intervals - nominal).max())}


def same_chip(seed: int, n: int) -> float:
    v = _volts(n, seed + 7)
    with Board.open(f"sim://?seed={seed}&noise=0") as py:
        a = py.measure(v)
    with Board.open(f"sim://?seed={seed}&noise=0&firmware=qemu&watchdog_ms=2000") as q:
        b = q.measure(v)
    return float(np.abs(a - b).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--samples", type=int, default=4000, help="samples per rate measurement")
    ap.add_argument("--period-us", type=float, default=500.0, help="sample period of the real-time sweep")
    ap.add_argument("--block", type=int, default=32, help="samples per block of the real-time sweep")
    ap.add_argument("--blocks", type=int, default=60, help="blocks in the real-time sweep")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        check_available()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rates = []
    for dev in ("null", "linear", "dnpu"):
        base = f"sim://?seed={a.seed}&device={dev}"
        py = rate(base, a.samples, a.seed)
        qe = rate(base + "&firmware=qemu&watchdog_ms=2000", a.samples, a.seed)
        rates.append({"device": dev, "qemu_samples_per_s": qe, "python_samples_per_s": py, "ratio": qe / py})
    clock = sample_clock(a.period_us, a.block, a.blocks, a.seed)
    diff = same_chip(a.seed, 1000)
    report = {"rates": rates, "sample_clock": clock, "same_chip_max_abs_diff_na": diff}
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'device':7} {'qemu samples/s':>15} {'python samples/s':>17} {'qemu/python':>12}")
    for r in rates:
        print(f"{r['device']:7} {r['qemu_samples_per_s']:15,.0f} {r['python_samples_per_s']:17,.0f} "
              f"{r['ratio']:12.4f}")
    la = clock["lateness_us"]
    print(f"real-time sweep, {clock['blocks']} blocks of {clock['block_samples']} samples at "
          f"{clock['period_us']:g} us (a block every {clock['block_period_us']:g} us, emulated counter):")
    print(f"  conversion start behind due: p50 {la['p50']:.0f} us, p99 {la['p99']:.0f} us, "
          f"max {la['max']:.0f} us, min {la['min']:.0f} us")
    print(f"  block-start interval jitter: rms {clock['interval_jitter_us_rms']:.0f} us, "
          f"max {clock['interval_jitter_us_max']:.0f} us")
    print(f"same chip (seed {a.seed}, noise 0, 1000 samples): max |qemu - python| = {diff:.3f} nA")
    return 0


if __name__ == "__main__":
    sys.exit(main())
