"""The network file on the C core or on onnxruntime, and timing of either at batch 1 and in batches."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.io import NetworkFile
from host.deploy.errors import DeployError

BACKENDS = ("core", "onnxruntime", "board")


def make_backend(kind: str, model: str | Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A function float32 [n, n_inputs] -> [n, n_outputs] for 'core' or 'onnxruntime'."""
    if kind == "core":
        from core.io import load_network
        net = load_network(model)
        return lambda x: net.evaluate(x, threads=threads)
    if kind == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    raise DeployError(f"backend must be one of {BACKENDS[:2]} here, got {kind!r}")


def measure_latency(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, n: int = 1000,
                    warmup: int = 20) -> np.ndarray:
    """Per-sample latency (us) at batch 1 over the first n samples (after a warm-up)."""
    n = min(n, len(x))
    for i in range(min(warmup, len(x))):
        fn(x[i:i + 1])
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        xi = x[i:i + 1]
        t0 = clock()
        fn(xi)
        out[i] = (clock() - t0) / 1e3
    return out


def measure_throughput(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int,
                       repeats: int = 1) -> tuple[np.ndarray, float]:
    """Outputs on all of x at the given batch size, and the best wall time (s) over repeats."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        parts = [fn(x[a:a + batch]) for a in range(0, len(x), batch)]
        dt = time.perf_counter() - t0
        best = min(best, dt)
        out = np.concatenate(parts)
    return out, best


def surrogate_logits(nf: NetworkFile, x: np.ndarray) -> np.ndarray:
    """The network's outputs as its surrogates predict them (the core, float32)."""
    from core import Network
    return Network(nf.n_inputs, nf.layers, nf.surrogates).evaluate(x)
