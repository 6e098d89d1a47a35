#!/usr/bin/env python3
"""Side-by-side benchmark of the core engine against onnxruntime, numpy and torch.

All figures come from one run on the same random 7 -> 5x90 ReLU -> 1 surrogate (and the same
MNIST-shaped network), so the ratios are meaningful even on a noisy shared machine.

    .venv/bin/python bench/core_bench.py            # table
    .venv/bin/python bench/core_bench.py --json     # one JSON object
    .venv/bin/python bench/core_bench.py --quick    # shorter timings
"""
from __future__ import annotations

import argparse
import json
import os

# Helper threads that busy-wait after a call (OpenMP in torch, OpenBLAS in numpy) would steal
# the CPU from the next engine measured; numpy runs single-threaded (one BLAS thread).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import core  # noqa: E402
from core.electrodes import N_ELECTRODES as E  # noqa: E402

DIMS = (E, 90, 90, 90, 90, 90, 1)
MACS = sum(a * b for a, b in zip(DIMS[:-1], DIMS[1:]))  # 33,120
OPSET = 17


def random_surrogate_layers(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    Ws = [(rng.standard_normal((n, k)) * np.sqrt(2.0 / k)).astype(np.float32)
          for k, n in zip(DIMS[:-1], DIMS[1:])]
    bs = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in DIMS[1:]]
    return Ws, bs


def gemm_chain(x: str, Ws, bs, prefix: str, nodes: list, inits: list) -> str:
    cur = x
    for l, (W, b) in enumerate(zip(Ws, bs)):
        inits += [numpy_helper.from_array(W, f"{prefix}W{l}"), numpy_helper.from_array(b, f"{prefix}b{l}")]
        nodes.append(helper.make_node("Gemm", [cur, f"{prefix}W{l}", f"{prefix}b{l}"],
                                      [f"{prefix}g{l}"], transB=1))
        cur = f"{prefix}g{l}"
        if l < len(Ws) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"{prefix}r{l}"]))
            cur = f"{prefix}r{l}"
    return cur


def surrogate_model(Ws, bs) -> onnx.ModelProto:
    nodes: list = []
    inits: list = []
    out = gemm_chain("x", Ws, bs, "", nodes, inits)
    g = helper.make_graph(nodes, "surrogate",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", DIMS[0]])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 1])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    helper.set_model_props(m, {"format_version": "1", "source": "bench/core_bench.py random"})
    return m


def network_parts(rng: np.random.Generator):
    """MNIST shape: 784 -> 70 linear, 10 DNPU nodes x 7 data electrodes, shared surrogate."""
    Wl = (rng.standard_normal((70, 784)) * 0.05).astype(np.float32)
    bl = (rng.standard_normal(70) * 0.05).astype(np.float32)
    lo = np.tile(np.array([-1.2] * 5 + [-0.7] * 2, np.float32), 10)
    hi = np.tile(np.array([0.6] * 5 + [0.3] * 2, np.float32), 10)
    scale = ((hi - lo) / 2).astype(np.float32)
    offset = ((hi + lo) / 2).astype(np.float32)
    out_scale = rng.uniform(0.5, 2.0, 10).astype(np.float32)
    out_offset = rng.uniform(-0.1, 0.1, 10).astype(np.float32)
    return Wl, bl, scale, offset, lo, hi, out_scale, out_offset


def core_network(sur: core.Surrogate, parts) -> core.Network:
    Wl, bl, scale, offset, lo, hi, os_, oo = parts
    nodes = [core.DnpuNode(data_electrodes=tuple(range(E)), input_scale=scale[E * q:E * q + E],
                           input_offset=offset[E * q:E * q + E], input_low=lo[E * q:E * q + E],
                           input_high=hi[E * q:E * q + E], output_scale=float(os_[q]),
                           output_offset=float(oo[q])) for q in range(10)]
    return core.Network(784, [core.Linear(Wl, bl), core.DnpuLayer(nodes)], sur)


def network_model(Ws, bs, parts) -> onnx.ModelProto:
    """The same network as one onnxruntime graph (nodes batched through one Gemm chain)."""
    Wl, bl, scale, offset, lo, hi, os_, oo = parts
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (np.ascontiguousarray(Wl.T), "WlT"), (bl, "bl"), (scale, "sc"), (offset, "of"),
        (lo, "lo"), (hi, "hi"), (os_, "os"), (oo, "oo"),
        (np.array([-1, E], np.int64), "shape7"), (np.array([-1, 10], np.int64), "shape10")]]
    nodes = [helper.make_node("MatMul", ["x", "WlT"], ["h0"]),
             helper.make_node("Add", ["h0", "bl"], ["h1"]),
             helper.make_node("Mul", ["h1", "sc"], ["h2"]),
             helper.make_node("Add", ["h2", "of"], ["h3"]),
             helper.make_node("Max", ["h3", "lo"], ["h4"]),
             helper.make_node("Min", ["h4", "hi"], ["h5"]),
             helper.make_node("Reshape", ["h5", "shape7"], ["v"])]
    out = gemm_chain("v", Ws, bs, "s", nodes, inits)
    nodes += [helper.make_node("Reshape", [out, "shape10"], ["y0"]),
              helper.make_node("Mul", ["y0", "os"], ["y1"]),
              helper.make_node("Add", ["y1", "oo"], ["y"])]
    g = helper.make_graph(nodes, "mnist_dnpu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def iobinding_runner(sess: ort.InferenceSession, x: np.ndarray, n_out: int) -> Callable[[], None]:
    binding = sess.io_binding()
    xv = ort.OrtValue.ortvalue_from_numpy(x)
    yv = ort.OrtValue.ortvalue_from_shape_and_type([x.shape[0], n_out], np.float32)
    binding.bind_ortvalue_input(sess.get_inputs()[0].name, xv)
    binding.bind_ortvalue_output(sess.get_outputs()[0].name, yv)
    return lambda: sess.run_with_iobinding(binding)


def calls_per_repeat(fn: Callable[[], object], budget_s: float) -> int:
    fn()
    t0 = time.perf_counter()
    calls = 0
    while time.perf_counter() - t0 < 0.01:
        fn()
        calls += 1
    return max(1, int(budget_s / ((time.perf_counter() - t0) / calls)))


def best_times(cases: dict[str, Callable[[], object]], budget_s: float, rounds: int) -> dict[str, float]:
    """Best mean time per call of each case over `rounds` interleaved rounds (on a shared,
    noisy machine the minimum is the figure least disturbed by other work)."""
    n = {k: calls_per_repeat(fn, budget_s) for k, fn in cases.items()}
    best = {k: float("inf") for k in cases}
    for _ in range(rounds):
        for k, fn in cases.items():
            time.sleep(0.05)  # let the previous engine's spinning worker threads go idle
            t0 = time.perf_counter()
            for _ in range(n[k]):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t0) / n[k])
    return best


def hidden_density(Ws, bs, x: np.ndarray) -> list[float]:
    """Fraction of non-zero inputs of each layer after the first (what the zero-skipping
    kernel actually multiplies)."""
    h = x.astype(np.float64)
    dens = []
    for l, (W, b) in enumerate(zip(Ws, bs)):
        h = np.maximum(h @ W.T + b, 0) if l < len(Ws) - 1 else h
        if l < len(Ws) - 1:
            dens.append(float((h != 0).mean()))
    return dens


def run(quick: bool) -> dict:
    rng = np.random.default_rng(1234)
    budget = 0.03 if quick else 0.08
    rounds = 3 if quick else 6
    Ws, bs = random_surrogate_layers(rng)
    model = surrogate_model(Ws, bs)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "surrogate.onnx"
        onnx.save(model, path)
        sur = core.load_surrogate(path)
        dense = core.load_surrogate(path)
    dense._set_skip_zeros(False)
    x1 = rng.uniform(-1.2, 0.6, (1, E)).astype(np.float32)
    xb = {b: rng.uniform(-1.2, 0.6, (b, E)).astype(np.float32) for b in (1024, 4096)}
    res: dict = {"isa": core.default_isa(), "supported_isas": core.supported_isas(),
                 "macs_per_sample": MACS, "cpu_count": os.cpu_count() or 0}

    # agreement check (not timed)
    ref = session(model, 1).run(None, {"x": xb[4096]})[0][:, 0]
    res["max_rel_err_vs_ort"] = float(np.abs(sur.evaluate(xb[4096]) - ref).max() / np.ptp(ref))
    dens = hidden_density(Ws, bs, xb[4096])
    executed = DIMS[0] * DIMS[1] + sum(d * k * n for d, k, n in zip(dens[:-1], DIMS[1:-2], DIMS[2:-1])) \
        + DIMS[-2] * DIMS[-1]
    res["hidden_density"] = dens
    res["executed_macs_per_sample"] = executed

    ort_s = {t: session(model, t) for t in (1, 2)}
    Wt = [np.ascontiguousarray(W.T) for W in Ws]

    def np_eval(x: np.ndarray) -> np.ndarray:
        h = x
        for l in range(len(Wt)):
            h = h @ Wt[l] + bs[l]
            if l < len(Wt) - 1:
                np.maximum(h, 0, out=h)
        return h
    try:
        import torch  # bench only: core never imports torch
        tm = torch.nn.Sequential(*[m for l in range(6) for m in (
            [torch.nn.Linear(DIMS[l], DIMS[l + 1])] + ([torch.nn.ReLU()] if l < 5 else []))])
        with torch.no_grad():
            for l, lin in enumerate([m for m in tm if isinstance(m, torch.nn.Linear)]):
                lin.weight.copy_(torch.from_numpy(Ws[l]))
                lin.bias.copy_(torch.from_numpy(bs[l]))

        def torch_eval(x: np.ndarray, t: int):
            torch.set_num_threads(t)
            with torch.inference_mode():
                return tm(torch.from_numpy(x)).numpy()
    except ImportError:
        tm = None

    # batch 1
    ev = sur.evaluate
    cases: dict[str, Callable[[], object]] = {"core": lambda: ev(x1),
                                              "core_dense": lambda: dense.evaluate(x1)}
    for t in (1, 2):
        s = ort_s[t]
        cases[f"ort_run_{t}t"] = lambda s=s: s.run(None, {"x": x1})
        cases[f"ort_iobind_{t}t"] = iobinding_runner(s, x1, 1)
    cases["numpy"] = lambda: np_eval(x1)
    if tm is not None:
        cases["torch_1t"] = lambda: torch_eval(x1, 1)
    b1 = best_times(cases, budget, rounds)

    # batched throughput, FMA peak measured in the same rounds
    cases = {}
    for b, x in xb.items():
        for t in (1, 2):
            cases[f"core_{t}t_b{b}"] = lambda x=x, t=t: ev(x, threads=t)
            cases[f"core_dense_{t}t_b{b}"] = lambda x=x, t=t: dense.evaluate(x, threads=t)
            s = ort_s[t]
            cases[f"ort_run_{t}t_b{b}"] = lambda s=s, x=x: s.run(None, {"x": x})
            cases[f"ort_iobind_{t}t_b{b}"] = iobinding_runner(s, x, 1)
            if tm is not None:
                cases[f"torch_{t}t_b{b}"] = lambda x=x, t=t: torch_eval(x, t)
        cases[f"numpy_b{b}"] = lambda x=x: np_eval(x)
    peak_s = 0.02 if quick else 0.05
    for t in (1, 2):  # time per FMA-peak call is fixed; its rate is read from the C timer
        cases[f"peak_{t}t"] = lambda t=t: peak_gflops.setdefault(t, []).append(
            core.fma_peak_gflops(t, seconds=peak_s))
    peak_gflops: dict[int, list[float]] = {}
    bt = best_times(cases, budget, rounds)
    sps = {k: int(k.split("_b")[-1]) / v for k, v in bt.items() if not k.startswith("peak")}
    peak = {t: max(peak_gflops[t]) for t in (1, 2)}
    res["fma_peak_1t_gflops"], res["fma_peak_2t_gflops"] = peak[1], peak[2]
    res["fma_peak_2t_sps"] = peak[2] * 1e9 / (2 * MACS)

    # MNIST-shaped network, 10,000 samples
    parts = network_parts(rng)
    net = core_network(sur, parts)
    nmodel = network_model(Ws, bs, parts)
    xn = rng.uniform(-0.5, 0.5, (10000, 784)).astype(np.float32)
    nsess = {t: session(nmodel, t) for t in (1, 2)}
    yo = nsess[1].run(None, {"x": xn})[0]
    res["net_max_rel_err_vs_ort"] = float(np.abs(net.evaluate(xn) - yo).max() / np.ptp(yo))
    cases = {}
    for t in (1, 2):
        s = nsess[t]
        cases[f"net_core_{t}t"] = lambda t=t: net.evaluate(xn, threads=t)
        cases[f"net_ort_run_{t}t"] = lambda s=s: s.run(None, {"x": xn})
        cases[f"net_ort_iobind_{t}t"] = iobinding_runner(s, xn, 10)
    net_t = best_times(cases, budget * 2, max(2, rounds // 2))

    rows: list[tuple[str, str, float]] = []
    rows += [(k, "batch 1 latency (us)", v * 1e6) for k, v in b1.items()]
    rows += [(k, "throughput (M samples/s)", v / 1e6) for k, v in sps.items()]
    rows += [(k, "network 10k samples (ms)", v * 1e3) for k, v in net_t.items()]

    ort_b1 = b1["ort_run_1t"]
    ort_best_2t = max(v for k, v in sps.items() if k.startswith("ort_") and "_2t_" in k)
    core_2t = sps["core_2t_b4096"]
    net_core = min(net_t["net_core_1t"], net_t["net_core_2t"])
    net_ort = min(v for k, v in net_t.items() if k.startswith("net_ort"))
    res.update({
        "core_b1_us": b1["core"] * 1e6,
        "core_dense_b1_us": b1["core_dense"] * 1e6,
        "ort_b1_us": ort_b1 * 1e6,
        "ort_iobind_b1_us": b1["ort_iobind_1t"] * 1e6,
        "speedup_b1_vs_ort": ort_b1 / b1["core"],
        "core_batched_1t_sps": sps["core_1t_b4096"],
        "core_batched_2t_sps": core_2t,
        "core_dense_batched_2t_sps": sps["core_dense_2t_b4096"],
        "ort_batched_2t_sps": ort_best_2t,
        "speedup_batched_vs_ort": core_2t / ort_best_2t,
        # dense-equivalent: 33,120 MACs per sample whether or not zeros were skipped
        "fraction_of_fma_peak": core_2t * 2 * MACS / (peak[2] * 1e9),
        # the dense kernel (no zero skipping): the kernel's own efficiency
        "dense_fraction_of_fma_peak": sps["core_dense_2t_b4096"] * 2 * MACS / (peak[2] * 1e9),
        # FMAs the zero-skipping kernel really executed
        "executed_fraction_of_fma_peak": core_2t * 2 * executed / (peak[2] * 1e9),
        "net_samples": 10000,
        "net_core_ms": net_core * 1e3,
        "net_ort_ms": net_ort * 1e3,
        "speedup_net_vs_ort": net_ort / net_core,
        "net_core_1t_ms": net_t["net_core_1t"] * 1e3,
        "net_core_2t_ms": net_t["net_core_2t"] * 1e3,
        "b1_us": {k: v * 1e6 for k, v in b1.items()},
        "throughput_sps": sps,
        "network_ms": {k: v * 1e3 for k, v in net_t.items()},
    })
    res["targets"] = {
        "b1_speedup>=4.5": res["speedup_b1_vs_ort"] >= 4.5,
        "batched_speedup>=1.5": res["speedup_batched_vs_ort"] >= 1.5,
        "fma_fraction>=0.75": res["fraction_of_fma_peak"] >= 0.75,
        "dense_fma_fraction>=0.75": res["dense_fraction_of_fma_peak"] >= 0.75,
        "net_speedup>=2": res["speedup_net_vs_ort"] >= 2.0,
    }
    res["_rows"] = rows
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="shorter timings (noisier)")
    args = ap.parse_args(argv)
    res = run(args.quick)
    rows = res.pop("_rows")
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True))
        return 0
    print(f"7->5x90->1 surrogate, {MACS} MACs/sample; isa {res['isa']} (supported {res['supported_isas']})")
    print(f"FMA peak: {res['fma_peak_1t_gflops']:.1f} GFLOP/s (1 thread), "
          f"{res['fma_peak_2t_gflops']:.1f} GFLOP/s (2 threads) = "
          f"{res['fma_peak_2t_sps'] / 1e6:.2f} M samples/s")
    case = None
    for eng, c, v in rows:
        if c != case:
            print(f"\n{c}")
            case = c
        print(f"  {eng:<28s} {v:10.3f}")
    print("\nsummary")
    for k in ("core_b1_us", "ort_b1_us", "speedup_b1_vs_ort", "core_batched_2t_sps",
              "ort_batched_2t_sps", "speedup_batched_vs_ort", "fraction_of_fma_peak",
              "core_dense_batched_2t_sps", "dense_fraction_of_fma_peak",
              "executed_fraction_of_fma_peak",
              "net_core_ms", "net_ort_ms", "speedup_net_vs_ort", "max_rel_err_vs_ort",
              "net_max_rel_err_vs_ort"):
        print(f"  {k:<28s} {res[k]:.4g}")
    for k, ok in res["targets"].items():
        print(f"  target {k:<21s} {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
