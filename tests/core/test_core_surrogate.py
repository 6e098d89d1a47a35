"""core.Surrogate agrees with onnxruntime on every dispatch path, batch size and layout."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from core_testlib import make_chain_model, random_chain

import core

ISAS = core.supported_isas()
BATCHES = (0, 1, 7, 8, 9, 1000)


def ort_eval(path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """Max abs error relative to the output range (or magnitude, for a single sample)."""
    if not ref.size:
        return 0.0
    scale = max(float(np.ptp(ref)), float(np.abs(ref).max()), 1e-6)
    return float(np.abs(a - ref).max() / scale)


def test_generic_is_always_supported_and_default_is_supported():
    assert ISAS[0] == "generic"
    assert core.default_isa() in ISAS


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("threads", (1, 2))
def test_surrogate_matches_onnxruntime(surrogate_path, rng, isa, n, threads):
    s = core.load_surrogate(surrogate_path)
    x = rng.uniform(-1.2, 0.6, (n, 7)).astype(np.float32)
    y = s.evaluate(x, threads=threads, isa=isa)
    assert y.shape == (n,) and y.dtype == np.float32
    if n:
        ref = ort_eval(surrogate_path, x)[:, 0]
        assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("isa", ISAS)
def test_paths_agree_with_generic(surrogate_path, rng, isa):
    s = core.load_surrogate(surrogate_path)
    x = rng.uniform(-1.2, 0.6, (333, 7)).astype(np.float32)
    g = s.evaluate(x, isa="generic")
    np.testing.assert_allclose(s.evaluate(x, isa=isa), g, rtol=1e-5, atol=1e-5 * np.ptp(g))


@pytest.mark.parametrize("dims,style,bias", [
    ((7, 90, 90, 90, 90, 90, 1), "gemm", True),
    ((7, 33, 17, 1), "gemm", True),
    ((7, 16, 1), "matmul", True),
    ((3, 5, 2), "gemm_t0", True),          # several outputs, Gemm alpha/beta, transB=0
    ((7, 100, 130, 1), "gemm", False),     # no bias, widths needing 7 and 9 vectors
    ((40, 1), "gemm", True),               # one layer, dot path reading user rows
    ((7, 1, 5, 1), "matmul", False),       # a width-1 hidden layer
])
@pytest.mark.parametrize("isa", ISAS)
def test_random_models(rng, write_model, dims, style, bias, isa):
    Ws, bs = random_chain(rng, dims, bias)
    p = write_model(make_chain_model(Ws, bs, style=style))
    s = core.load_surrogate(p)
    assert s.layer_sizes == tuple(dims)
    for n in (1, 9, 257):
        x = rng.standard_normal((n, dims[0])).astype(np.float32)
        ref = ort_eval(p, x)
        y = s.evaluate(x, isa=isa, threads=2)
        if dims[-1] == 1:
            ref = ref[:, 0]
        assert y.shape == ref.shape
        assert rel_err(y, ref) < 1e-5


def test_relu_after_last_layer(rng, write_model):
    Ws, bs = random_chain(rng, (7, 20, 3))
    p = write_model(make_chain_model(Ws, bs, relu=[True, True]))
    s = core.load_surrogate(p)
    assert s.relu == (True, True)
    x = rng.standard_normal((50, 7)).astype(np.float32)
    y = s.evaluate(x)
    assert (y >= 0).all()
    assert rel_err(y, ort_eval(p, x)) < 1e-5


def test_from_numpy_weights_matches_onnx(surrogate_path, rng):
    s = core.load_surrogate(surrogate_path)
    t = core.Surrogate(s.weights, s.biases)
    x = rng.uniform(-1, 1, (100, 7)).astype(np.float32)
    np.testing.assert_array_equal(s.evaluate(x), t.evaluate(x))
    # float64 weights are accepted and stored as float32
    u = core.Surrogate([w.astype(np.float64) for w in s.weights], s.biases)
    np.testing.assert_array_equal(u.evaluate(x), s.evaluate(x))


def test_metadata_is_readable(surrogate_path):
    s = core.load_surrogate(surrogate_path)
    assert s.metadata == {"format_version": "1", "output_range_nA": "-300,100"}


def test_external_data(rng, write_model, tmp_path):
    Ws, bs = random_chain(rng, (7, 90, 90, 1))
    model = make_chain_model(Ws, bs)
    p = write_model(model, "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    s = core.load_surrogate(p)
    x = rng.uniform(-1, 1, (20, 7)).astype(np.float32)
    assert rel_err(s.evaluate(x), ort_eval(p, x)[:, 0]) < 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_exported_models(rng, tmp_path):
    torch.manual_seed(0)
    for dims in ((7, 90, 90, 90, 90, 90, 1), (7, 25, 1), (4, 30, 30, 2)):
        mods = []
        for l, (k, n) in enumerate(zip(dims[:-1], dims[1:])):
            mods.append(torch.nn.Linear(k, n))
            if l < len(dims) - 2:
                mods.append(torch.nn.ReLU())
        m = torch.nn.Sequential(*mods).eval()
        p = tmp_path / f"torch_{len(dims)}_{dims[1]}.onnx"
        torch.onnx.export(m, (torch.zeros(1, dims[0]),), str(p), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        s = core.load_surrogate(p)
        x = rng.uniform(-1.2, 0.6, (513, dims[0])).astype(np.float32)
        ref = ort_eval(p, x)
        with torch.inference_mode():
            tref = m(torch.from_numpy(x)).numpy()
        for isa in ISAS:
            y = s.evaluate(x, isa=isa)
            y2 = y if y.ndim == 2 else y[:, None]
            assert rel_err(y2, ref) < 1e-5
            assert rel_err(y2, tref) < 1e-5


def test_fma_peak_is_positive():
    for isa in ISAS:
        assert core.fma_peak_gflops(1, isa=isa, seconds=0.01) > 0.1


def _run_python(code: str, env_isa: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DNPU_CORE_ISA=env_isa)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


def test_env_var_unknown_name_is_refused():
    r = _run_python("import core", "sse9")
    assert r.returncode != 0
    assert "DNPU_CORE_ISA='sse9'" in r.stderr


def test_isa_argument_validation(surrogate_path):
    s = core.load_surrogate(surrogate_path)
    x = np.zeros((2, 7), np.float32)
    with pytest.raises(ValueError, match="isa must be one of"):
        s.evaluate(x, isa="neon")
    for isa in ("generic", "avx2", "avx512"):
        if isa not in ISAS:
            with pytest.raises(ValueError, match="not supported by this CPU"):
                s.evaluate(x, isa=isa)


@pytest.mark.parametrize("isa", ISAS)
def test_zero_skipping_matches_dense_kernel(rng, isa):
    Ws, bs = random_chain(rng, (7, 90, 90, 90, 90, 90, 1))
    bs[2] = bs[2] - 0.5  # a sparser layer
    sparse = core.Surrogate(Ws, bs)
    dense = core.Surrogate(Ws, bs)
    dense._set_skip_zeros(False)
    x = rng.uniform(-1.2, 0.6, (1001, 7)).astype(np.float32)
    ys, yd = sparse.evaluate(x, isa=isa, threads=2), dense.evaluate(x, isa=isa)
    np.testing.assert_allclose(ys, yd, rtol=1e-6, atol=1e-6 * np.ptp(yd))


@pytest.mark.parametrize("isa", ISAS)
def test_dead_layers_and_wide_layers(rng, write_model, isa):
    # every unit of layer 1 dead: later layers see all-zero inputs
    Ws, bs = random_chain(rng, (7, 50, 40, 1))
    bs[0] = bs[0] - 100.0
    p = write_model(make_chain_model(Ws, bs))
    x = rng.uniform(-1, 1, (33, 7)).astype(np.float32)
    y = core.load_surrogate(p).evaluate(x, isa=isa)
    np.testing.assert_allclose(y, ort_eval(p, x)[:, 0], rtol=1e-6, atol=1e-6)
    # a layer wider than the zero-skipping scratch (1024 inputs) runs dense
    Ws, bs = random_chain(rng, (7, 1100, 20, 1))
    p = write_model(make_chain_model(Ws, bs))
    x = rng.uniform(-1, 1, (17, 7)).astype(np.float32)
    assert rel_err(core.load_surrogate(p).evaluate(x, isa=isa), ort_eval(p, x)[:, 0]) < 1e-5


def test_results_do_not_depend_on_thread_count(surrogate_path, rng):
    s = core.load_surrogate(surrogate_path)
    x = rng.uniform(-1.2, 0.6, (2001, 7)).astype(np.float32)
    for isa in ISAS:
        y1 = s.evaluate(x, isa=isa)
        for t in (2, 3, 7):
            np.testing.assert_array_equal(s.evaluate(x, isa=isa, threads=t), y1)
