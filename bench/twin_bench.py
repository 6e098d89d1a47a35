"""Twin benchmark: `host.sample`-style sampling rate (Board.measure of uniform random volts, in
chunks, through the simulator's pty) on the digital-twin board (sim://?device=surrogate&model=FILE)
side by side with the virtual-DNPU board (sim://?seed=0), in one run, with the twin device's own
rate (`convert`, in the board's block size) for reference.

    .venv/bin/python bench/twin_bench.py            # table
    .venv/bin/python bench/twin_bench.py --json     # one JSON document on stdout
    .venv/bin/python bench/twin_bench.py --model models/surrogate.onnx --samples 100000

Target: the twin board samples at >= 80 % of the virtual-DNPU board's rate. The runs alternate
(virtual DNPU, twin, virtual DNPU, twin, ...) so that a shared machine's load hits both alike;
the median run of each is reported.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.twin import SurrogateDevice
from host.board import Board, BoardOptions

ROOT = Path(__file__).resolve().parents[1]
TARGET_TWIN_OVER_DNPU = 0.80
CHUNK = 8192                      # host.sample's default chunk (samples per Board.measure)


@dataclass
class Run:
    board: str
    url: str
    samples: int
    seconds: float
    samples_per_s: float
    retries: int


def _start(query: str) -> tuple[subprocess.Popen, str]:
    """The simulator on a pty for `query` (what a sim:// URL starts), and its pty."""
    proc = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--pty", "--exit-on-stdin-eof",
                             "--options", query], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line:
        proc.wait(timeout=10)
        raise SystemExit(f"the simulator refused {query!r} (exit status {proc.returncode})")
    return proc, line


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)
    for f in (proc.stdin, proc.stdout):
        if f:
            f.close()


def sample_rate(name: str, query: str, n: int, seed: int, opts: BoardOptions) -> Run:
    """Samples/s of Board.measure over `n` uniform random volts within the board's limits, in
    CHUNK-sample measurements (after a warm-up chunk)."""
    proc, pty = _start(query)
    try:
        with Board.open(pty, opts) as b:
            lim = b.limits_v
            v = np.random.default_rng(seed).uniform(lim[:, 0], lim[:, 1], (n, N_ELECTRODES))
            b.measure(v[:min(n, CHUNK)])                                       # warm-up
            t = time.perf_counter()
            for i in range(0, n, CHUNK):
                out = b.measure(v[i:i + CHUNK])
                assert len(out) == len(v[i:i + CHUNK])
            dt = time.perf_counter() - t
            retries = b.counters_host.retries
    finally:
        _stop(proc)
    return Run(name, f"sim://?{query}", n, dt, n / dt, retries)


def device_rate(model: Path, n: int, block: int, seed: int) -> float:
    """The twin device's own samples/s through `convert`, in blocks of `block` rows."""
    dev = SurrogateDevice.from_file(model, seed)
    lim = np.asarray(dev.working_ranges_v)
    v = np.random.default_rng(seed).uniform(lim[:, 0], lim[:, 1], (n, N_ELECTRODES))
    dev.convert(v[:block], 1e-5)
    t = time.perf_counter()
    for i in range(0, n, block):
        dev.convert(np.ascontiguousarray(v[i:i + block]), 1e-5)
    return n / (time.perf_counter() - t)


def _median(runs: list[Run]) -> dict:
    rates = sorted(r.samples_per_s for r in runs)
    mid = sorted(runs, key=lambda r: r.samples_per_s)[len(runs) // 2]
    return {**asdict(mid), "samples_per_s_all_runs": rates}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "surrogate.onnx", help="the twin's surrogate file")
    ap.add_argument("--samples", type=int, default=3 * CHUNK, help="samples per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per board (median)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    opts = BoardOptions()
    boards = {"virtual-dnpu": f"seed={a.seed}",
              "twin": f"seed={a.seed}&device=surrogate&model={a.model.resolve()}"}
    runs: dict[str, list[Run]] = {k: [] for k in boards}
    for i in range(a.repeats):
        for name, query in boards.items():
            runs[name].append(sample_rate(name, query, a.samples, a.seed + 1 + i, opts))
    med = {k: _median(v) for k, v in runs.items()}
    ratio = med["twin"]["samples_per_s"] / med["virtual-dnpu"]["samples_per_s"]
    own = device_rate(a.model, 20 * opts.block_samples, opts.block_samples, a.seed)
    report = {
        "model": str(a.model), "samples_per_run": a.samples, "chunk": CHUNK, "repeats": a.repeats,
        "block_samples": opts.block_samples, "results": med,
        "twin_device_own_samples_per_s": own,
        "twin_over_virtual_dnpu": ratio,
        "target_twin_over_virtual_dnpu": TARGET_TWIN_OVER_DNPU,
        "checks": {"twin_ge_80pct_virtual_dnpu": ratio >= TARGET_TWIN_OVER_DNPU},
    }
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'board':13} {'samples/s':>12}  runs")
        for name, r in med.items():
            print(f"{name:13} {r['samples_per_s']:12,.0f}  "
                  + ", ".join(f"{x:,.0f}" for x in r["samples_per_s_all_runs"]))
        print(f"twin device own rate (convert, {opts.block_samples}-row blocks): {own:,.0f} samples/s")
        print(f"twin / virtual DNPU: {ratio:.2f}  (target >= {TARGET_TWIN_OVER_DNPU:.2f}): "
              f"{'PASS' if ratio >= TARGET_TWIN_OVER_DNPU else 'MISS'}")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
