#!/usr/bin/env python3
"""Trial-batched training against a sequential loop, side by side, for the ring experiment.

Both sides run the same code (host.experiments.ring.train_chunk: the same DNPU network module,
loss, noise and optimiser) on the same data; the batched side trains `--chunk` trials per tensor
program, the sequential side one trial at a time in a Python loop. Each side runs `--epochs`
epochs; the figures are trial-epochs per second and, from them, trials per second at the ring
experiment's 400 epochs, and the time for the 1,000 ring trials.

    .venv/bin/python bench/trials_bench.py                  # single DNPU and 2-2-1, 1 thread
    .venv/bin/python bench/trials_bench.py --threads 2 --json

Columns: the sequential loop (float32, T = 1); batched float32 (the same work); batched bfloat16
autocast; and the ring experiment's pipeline (bfloat16 + successive halving, whose pruned
trial-epochs count as done: end-to-end trials per second).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--surrogate", default="models/surrogate.onnx")
    p.add_argument("--archs", default="single,2-2-1")
    p.add_argument("--trials", type=int, default=1000, help="trials the batched side trains (the ring's 1,000)")
    p.add_argument("--chunk", type=int, default=50, help="trials per batched tensor program")
    p.add_argument("--seq-trials", type=int, default=10, help="trials timed in the sequential loop")
    p.add_argument("--epochs", type=int, default=20, help="epochs timed per trial (the ring uses 400)")
    p.add_argument("--full-epochs", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import torch

    from host.experiments._common import load_surrogate
    from host.experiments._common import trial_chunks
    from host.experiments.ring import ARCHS, RingConfig, normalised_gap, ring_data, train_chunk, train_chunk_parts

    torch.set_num_threads(a.threads)
    sur = load_surrogate(a.surrogate)
    cfg = RingConfig(epochs=a.epochs, noise_std_na=sur.test_rmse_na, chunk=a.chunk)
    rng = np.random.default_rng(0)
    x, y = ring_data(cfg.n_per_class, normalised_gap(cfg.gap_mv, sur.ranges_v, cfg.data_electrodes), rng)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    rows = []
    for arch in [s.strip() for s in a.archs.split(",") if s.strip()]:
        nodes = ARCHS[arch]
        gen = torch.Generator().manual_seed(0)
        train_chunk(sur, nodes, dataclasses.replace(cfg, epochs=2), 2, x, y, sur.test_rmse_na, gen)  # warm-up
        t = time.perf_counter()
        for _ in range(a.seq_trials):
            train_chunk(sur, nodes, cfg, 1, x, y, sur.test_rmse_na, gen)
        seq = a.seq_trials * a.epochs / (time.perf_counter() - t)
        row = {"arch": arch, "sequential": seq}
        for mode, bf16 in (("batched_fp32", False), ("batched_bf16", True)):
            bcfg = dataclasses.replace(cfg, bf16=bf16)
            t = time.perf_counter()
            for lo, hi in trial_chunks(a.trials, a.chunk):
                train_chunk(sur, nodes, bcfg, hi - lo, x, y, sur.test_rmse_na, gen)
            row[mode] = a.trials * a.epochs / (time.perf_counter() - t)
        # the experiment's pipeline: bf16 and successive halving at 1/4, 1/2, 3/4 of the epochs
        # (trial-epochs it saves are counted as done, so the figure is end-to-end trials per second)
        pcfg = dataclasses.replace(cfg, bf16=True, epochs=4 * a.epochs,
                                   prune_at=(a.epochs, 2 * a.epochs, 3 * a.epochs))
        t = time.perf_counter()
        for lo, hi in trial_chunks(a.trials, a.chunk):
            train_chunk_parts(sur, nodes, pcfg, hi - lo, x, y, sur.test_rmse_na, gen)
        row["pipeline_bf16_halving"] = a.trials * 4 * a.epochs / (time.perf_counter() - t)
        rows.append(row)
    modes = ("sequential", "batched_fp32", "batched_bf16", "pipeline_bf16_halving")
    table = [{"arch": r["arch"], **{m: {"trials_per_s": r[m] / a.full_epochs, "speedup": r[m] / r["sequential"],
                                        "s_for_1000_trials": 1000 * a.full_epochs / r[m]} for m in modes}}
             for r in rows]
    info = {"threads": a.threads, "chunk": a.chunk, "epochs_timed": a.epochs,
            "samples_per_trial": int(len(y)), "full_epochs": a.full_epochs, "rows": table}
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"ring training, {len(y)} samples/trial, {a.threads} thread(s), batched: {a.chunk} trials per tensor "
          f"program; trials/s at {a.full_epochs} epochs (speed-up over the sequential loop; s for 1000 trials)")
    print(f"{'arch':7s} " + " ".join(f"{m:>28s}" for m in modes))
    for r in table:
        print(f"{r['arch']:7s} " + " ".join(
            f"{r[m]['trials_per_s']:9.3f} ({r[m]['speedup']:5.1f}x, {r[m]['s_for_1000_trials']:6.0f}s)" for m in modes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
