#!/usr/bin/env python3
"""Trial-batched training against a sequential loop, side by side, for the ring experiment.

Both sides run the same code (host.experiments.ring.train_chunk: the same DNPU network module,
loss, noise and optimiser) on the same data; the batched side trains `--chunk` trials per tensor
program, the sequential side one trial at a time in a Python loop. Each side runs `--epochs`
epochs; the figures are trial-epochs per second and, from them, trials per second at the ring
experiment's 400 epochs, and the time for the 1,000 ring trials.

The surrogate runs on either engine (host.core_surrogate: the C core's fused value-and-gradient
pass, or plain torch); the sequential loop is timed on both and the speed-ups are over the
faster of the two, so they are not inflated by a slow baseline.

    .venv/bin/python bench/trials_bench.py                  # single DNPU and 2-2-1, 1 thread
    .venv/bin/python bench/trials_bench.py --threads 2 --json

Cases run in interleaved rounds (--rounds) and the best of each counts, so that a slow stretch
of a shared machine does not land on one side only.

Columns: the sequential loop (float32, T = 1) with the torch and with the core surrogate;
batched on the torch engine (bfloat16 autocast, the previous pipeline); batched on the core in
float32 and in bfloat16 (AMX tiles or AVX512-BF16 dot products where the CPU has them); and the ring experiment's pipeline
(core, bfloat16 + successive halving, whose pruned trial-epochs count as done: end-to-end trials
per second).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--surrogate", default="models/surrogate.onnx")
    p.add_argument("--archs", default="single,2-2-1")
    p.add_argument("--chunk", type=int, default=250, help="trials per batched tensor program (the ring's)")
    p.add_argument("--seq-trials", type=int, default=4, help="trials per round of the sequential loop")
    p.add_argument("--epochs", type=int, default=40, help="epochs timed per trial (the ring uses 400)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each case counts")
    p.add_argument("--full-epochs", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import torch

    from host.experiments.options import set_threads
    from host.experiments.surrogates import load_surrogate
    from host.experiments.ring import ARCHS, RingConfig, normalised_gap, ring_data, train_chunk, train_chunk_parts

    sur_t = load_surrogate(a.surrogate, engine="torch")
    sur = load_surrogate(a.surrogate, engine="core", threads=a.threads)
    cfg = RingConfig(epochs=a.epochs, noise_std_na=sur.test_rmse_na, chunk=a.chunk)
    rng = np.random.default_rng(0)
    x, y = ring_data(cfg.n_per_class, normalised_gap(cfg.gap_mv, sur.ranges_v, cfg.data_electrodes), rng)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    rows = []
    for arch in [s.strip() for s in a.archs.split(",") if s.strip()]:
        nodes = ARCHS[arch]
        gen = torch.Generator().manual_seed(0)

        def sequential(eng: Any) -> float:
            t = time.perf_counter()
            for _ in range(a.seq_trials):
                train_chunk(eng, nodes, cfg, 1, x, y, sur.test_rmse_na, gen)
            return a.seq_trials * a.epochs / (time.perf_counter() - t)

        def batched(eng: Any, bf16: bool) -> float:
            t = time.perf_counter()
            train_chunk(eng, nodes, dataclasses.replace(cfg, bf16=bf16), a.chunk, x, y, sur.test_rmse_na, gen)
            return a.chunk * a.epochs / (time.perf_counter() - t)

        def pipeline() -> float:
            # the experiment's pipeline: bf16 and successive halving at 1/4, 1/2, 3/4 of the epochs
            # (trial-epochs it saves count as done, so the figure is end-to-end trials per second)
            pcfg = dataclasses.replace(cfg, bf16=True, epochs=4 * a.epochs,
                                       prune_at=(a.epochs, 2 * a.epochs, 3 * a.epochs))
            t = time.perf_counter()
            train_chunk_parts(sur, nodes, pcfg, a.chunk, x, y, sur.test_rmse_na, gen)
            return a.chunk * 4 * a.epochs / (time.perf_counter() - t)

        cases: dict[str, tuple[str, Callable[[], float]]] = {
            "sequential_torch": ("torch", lambda: sequential(sur_t)),
            "sequential_core": ("core", lambda: sequential(sur)),
            "batched_torch_bf16": ("torch", lambda: batched(sur_t, True)),
            "batched_fp32": ("core", lambda: batched(sur, False)),
            "batched_bf16": ("core", lambda: batched(sur, True)),
            "pipeline_bf16_halving": ("core", pipeline),
        }
        for eng in (sur_t, sur):   # warm-up
            train_chunk(eng, nodes, dataclasses.replace(cfg, epochs=2), 2, x, y, sur.test_rmse_na, gen)
        row = {"arch": arch, **{m: 0.0 for m in cases}}
        # interleaved rounds, best of each: a shared machine slows whole stretches of time, and
        # every case gets its share of the quiet ones
        for _ in range(a.rounds):
            for m, (engine, fn) in cases.items():
                set_threads(a.threads, engine)
                row[m] = max(row[m], fn())
        row["sequential"] = max(row["sequential_torch"], row["sequential_core"])
        rows.append(row)
    modes = ("sequential_torch", "sequential_core", "batched_torch_bf16", "batched_fp32", "batched_bf16",
             "pipeline_bf16_halving")
    table = [{"arch": r["arch"], **{m: {"trials_per_s": r[m] / a.full_epochs, "speedup": r[m] / r["sequential"],
                                        "s_for_1000_trials": 1000 * a.full_epochs / r[m]} for m in modes}}
             for r in rows]
    from core import _engine

    info = {"threads": a.threads, "core_bf16_unit": _engine.bf16_unit(), "chunk": a.chunk,
            "rounds": a.rounds, "epochs_timed": a.epochs,
            "samples_per_trial": int(len(y)), "full_epochs": a.full_epochs, "rows": table}
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"ring training, {len(y)} samples/trial, {a.threads} thread(s), batched: {a.chunk} trials per tensor "
          f"program, core bf16 products: {info['core_bf16_unit']}; trials/s at {a.full_epochs} epochs, "
          f"speed-up over the faster sequential loop, s for 1000 trials")
    for r in table:
        for m in modes:
            print(f"{r['arch']:7s} {m:24s} {r[m]['trials_per_s']:9.3f} {r[m]['speedup']:6.1f}x "
                  f"{r[m]['s_for_1000_trials']:7.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
