"""Core vs onnxruntime on the same network ONNX file, side by side.

    .venv/bin/python bench/deploy_bench.py [--model models/mnist.onnx] [--rounds 5] [--json]

Measures, in interleaved rounds (best round kept: the machine is shared), for the C core
(core.io.load_network) and onnxruntime (the file unchanged, CPUExecutionProvider):

* batch-1 latency per image through Python (median over --latency-samples images per round);
* the whole data set (the MNIST test set for the shipped models; --data PATH otherwise) at
  batch --batch, with 1 and 2 threads (onnxruntime: intra_op_num_threads).

It prints the figures and the ratios onnxruntime / core (targets: latency >= 5x,
data set >= 2x), and checks that both give the same predictions. --json prints one object.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.io import read_network  # noqa: E402
from host.deploy.data import load_data  # noqa: E402
from host.deploy.engines import make_backend  # noqa: E402
from host.metrics import n_classes, predict  # noqa: E402


def _latency(fn, x: np.ndarray, n: int) -> float:
    clock = time.perf_counter_ns
    t = np.empty(n)
    for i in range(n):
        xi = x[i % len(x):i % len(x) + 1]
        t0 = clock()
        fn(xi)
        t[i] = clock() - t0
    return float(np.median(t) / 1e3)


def _dataset(fn, x: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = [fn(x[a:a + batch]) for a in range(0, len(x), batch)]
    return time.perf_counter() - t0, np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="models/mnist.onnx")
    p.add_argument("--data", default="test")
    p.add_argument("--batch", type=int, default=10000, help="batch size of the data-set run")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--latency-samples", type=int, default=300)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    nf = read_network(a.model)
    from core import Network
    n_out = Network(nf.n_inputs, nf.layers, nf.surrogates).n_outputs
    ds = load_data(a.data, nf.metadata, nf.n_inputs, n_classes(n_out))
    x = ds.x
    fns = {(k, t): make_backend(k, a.model, t) for k in ("core", "onnxruntime") for t in (1, 2)}
    for fn in fns.values():   # warm-up
        fn(x[:1])
        fn(x[:a.batch])
    lat = {k: float("inf") for k in ("core", "onnxruntime")}
    full = {key: float("inf") for key in fns}
    preds = {}
    for _ in range(a.rounds):
        for k in ("core", "onnxruntime"):
            lat[k] = min(lat[k], _latency(fns[(k, 1)], x, a.latency_samples))
        for key, fn in fns.items():
            dt, out = _dataset(fn, x, a.batch)
            full[key] = min(full[key], dt)
            preds[key] = out
    agree = float((predict(preds[("core", 1)]) == predict(preds[("onnxruntime", 1)])).mean())
    max_diff = float(np.max(np.abs(preds[("core", 1)] - preds[("onnxruntime", 1)])))
    best_ort = min(full[("onnxruntime", 1)], full[("onnxruntime", 2)])
    best_core = min(full[("core", 1)], full[("core", 2)])
    res = {
        "model": a.model, "n_samples": int(len(x)), "batch": a.batch, "rounds": a.rounds,
        "machine": platform.processor() or platform.machine(),
        "core_b1_us": lat["core"], "ort_b1_us": lat["onnxruntime"],
        "speedup_b1_vs_ort": lat["onnxruntime"] / lat["core"],
        "core_dataset_1t_ms": full[("core", 1)] * 1e3, "core_dataset_2t_ms": full[("core", 2)] * 1e3,
        "ort_dataset_1t_ms": full[("onnxruntime", 1)] * 1e3, "ort_dataset_2t_ms": full[("onnxruntime", 2)] * 1e3,
        "speedup_dataset_1t_vs_ort": full[("onnxruntime", 1)] / full[("core", 1)],
        "speedup_dataset_2t_vs_ort": full[("onnxruntime", 2)] / full[("core", 2)],
        "speedup_dataset_best_vs_best_ort": best_ort / best_core,
        "argmax_agreement": agree, "max_abs_logit_diff": max_diff,
    }
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"{a.model}: {len(x)} samples, best of {a.rounds} interleaved rounds")
    print(f"{'figure':34} {'core':>12} {'onnxruntime':>12} {'ratio':>8}")
    print(f"{'batch-1 latency (us, median)':34} {lat['core']:12.1f} {lat['onnxruntime']:12.1f} "
          f"{res['speedup_b1_vs_ort']:7.2f}x")
    for t in (1, 2):
        print(f"{f'data set at batch {a.batch}, {t} thread(s) (ms)':34} {full[('core', t)] * 1e3:12.1f} "
              f"{full[('onnxruntime', t)] * 1e3:12.1f} {res[f'speedup_dataset_{t}t_vs_ort']:7.2f}x")
    print(f"{'data set, best vs best (ms)':34} {best_core * 1e3:12.1f} {best_ort * 1e3:12.1f} "
          f"{res['speedup_dataset_best_vs_best_ort']:7.2f}x")
    print(f"argmax agreement {agree * 100:.2f} %, max |logit diff| {max_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
