"""Every bad input gets its documented behaviour (docs/core.md), never a crash."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import onnx
import pytest
from core_testlib import make_chain_model, random_chain
from onnx import TensorProto, helper, numpy_helper

import core


@pytest.fixture
def sur(surrogate_path) -> core.Surrogate:
    return core.load_surrogate(surrogate_path)


# ---- evaluate() inputs -------------------------------------------------------------------

def test_float64_and_float16_are_converted(sur, rng):
    x = rng.uniform(-1, 1, (10, 7))
    ref = sur.evaluate(x.astype(np.float32))
    np.testing.assert_array_equal(sur.evaluate(x), ref)
    np.testing.assert_array_equal(sur.evaluate(x.tolist()), ref)  # nested lists: float64
    y16 = sur.evaluate(x.astype(np.float16))
    assert y16.dtype == np.float32 and y16.shape == (10,)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, bool, np.complex64, object])
def test_non_float_dtypes_are_refused(sur, dtype):
    with pytest.raises(TypeError, match="floating-point"):
        sur.evaluate(np.zeros((3, 7), dtype=dtype))


@pytest.mark.parametrize("shape", [(7,), (3, 6), (3, 8), (2, 3, 7), ()])
def test_wrong_shapes_are_refused_naming_the_shape(sur, shape):
    with pytest.raises(ValueError, match=r"expected shape \(n, 7\), got " + str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")):
        sur.evaluate(np.zeros(shape, np.float32))


def test_non_contiguous_inputs_are_copied(sur, rng):
    big = rng.uniform(-1, 1, (40, 14)).astype(np.float32)
    views = [big[::2, ::2], big[:, 3:10], np.asfortranarray(big[:, :7]), big[::-1, :7]]
    for v in views:
        np.testing.assert_array_equal(sur.evaluate(v), sur.evaluate(np.ascontiguousarray(v)))


def test_batch_zero_returns_empty(sur):
    for isa in core.supported_isas():
        y = sur.evaluate(np.zeros((0, 7), np.float32), isa=isa, threads=2)
        assert y.shape == (0,) and y.dtype == np.float32


def test_nan_and_inf_propagate_to_their_own_row_only(sur, rng):
    x = rng.uniform(-1, 1, (37, 7)).astype(np.float32)
    clean = sur.evaluate(x)
    x[3, 2] = np.nan
    x[10, 0] = np.inf
    x[20, 6] = -np.inf
    for isa in core.supported_isas():
        y = sur.evaluate(x, isa=isa)
        assert np.isnan(y[3])
        others = np.ones(37, bool)
        others[[3, 10, 20]] = False
        np.testing.assert_allclose(y[others], clean[others], rtol=1e-5, atol=1e-6)
        # the one-sample (latency) path gives the same as the batched path
        for i in (3, 10, 20):
            np.testing.assert_allclose(sur.evaluate(x[i:i + 1], isa=isa), y[i:i + 1], rtol=1e-5,
                                       atol=1e-6, equal_nan=True)


def test_bad_thread_counts_are_refused(sur):
    x = np.zeros((4, 7), np.float32)
    for t in (0, -1, 100000):
        with pytest.raises(ValueError, match="threads"):
            sur.evaluate(x, threads=t)


def test_output_is_a_fresh_array(sur, rng):
    x = rng.uniform(-1, 1, (5, 7)).astype(np.float32)
    a = sur.evaluate(x)
    b = sur.evaluate(x)
    assert a is not b and not np.shares_memory(a, x)


# ---- model files -------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        core.load_surrogate(tmp_path / "nope.onnx")


@pytest.mark.parametrize("content", [b"", b"hello, this is not onnx\n", bytes(range(256)) * 4,
                                     b"\x08\x07\x12\x05hello"])
def test_not_onnx_files(tmp_path, content):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="bad.onnx"):
        core.load_surrogate(p)


def test_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        core.load_surrogate(tmp_path)


def test_missing_external_data(rng, write_model, tmp_path):
    Ws, bs = random_chain(rng, (7, 30, 1))
    p = write_model(make_chain_model(Ws, bs), "ext.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.data", size_threshold=0)
    (tmp_path / "w.data").unlink()
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        core.load_surrogate(p)


def _graph(nodes, inits, k=7, n=1, out="y", extra_inputs=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k]),
                                       *extra_inputs],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", n])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _w(name, shape, rng):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def test_unsupported_op_is_named(rng, write_model):
    m = _graph([helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc1", transB=1),
                helper.make_node("Sigmoid", ["h"], ["s"], name="squash"),
                helper.make_node("Gemm", ["s", "W2"], ["y"], name="fc2", transB=1)],
               [_w("W", (5, 7), rng), _w("b", (5,), rng), _w("W2", (1, 5), rng)])
    with pytest.raises(ValueError, match=r"node 'squash' \(op_type Sigmoid\)"):
        core.load_surrogate(write_model(m))


def test_branching_graph_is_refused(rng, write_model):
    m = _graph([helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc1", transB=1),
                helper.make_node("Relu", ["h"], ["r"], name="relu"),
                helper.make_node("Add", ["r", "h"], ["y"], name="skip")],
               [_w("W", (1, 7), rng), _w("b", (1,), rng)])
    with pytest.raises(ValueError, match="'skip'"):
        core.load_surrogate(write_model(m))


def test_weight_from_graph_input_is_refused(rng, write_model):
    m = _graph([helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)], [],
               extra_inputs=[helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, 7])])
    with pytest.raises(ValueError, match="one graph input"):
        core.load_surrogate(write_model(m))


def test_transA_is_refused(rng, write_model):
    m = _graph([helper.make_node("Gemm", ["x", "W"], ["y"], name="fcT", transA=1)],
               [_w("W", (7, 1), rng)])
    with pytest.raises(ValueError, match="'fcT'.*transA"):
        core.load_surrogate(write_model(m))


def test_inconsistent_layer_shapes(rng, write_model):
    m = _graph([helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1", transB=1),
                helper.make_node("Gemm", ["h", "W2"], ["y"], name="fc2", transB=1)],
               [_w("W1", (10, 7), rng), _w("b1", (10,), rng), _w("W2", (1, 11), rng)])
    with pytest.raises(ValueError, match="'fc2'.*inconsistent shapes.*11 inputs.*carries 10"):
        core.load_surrogate(write_model(m))


def test_input_width_mismatch(rng, write_model):
    Ws, bs = random_chain(rng, (7, 10, 1))
    with pytest.raises(ValueError, match="inconsistent shapes"):
        core.load_surrogate(write_model(make_chain_model(Ws, bs, in_dim=6)))
    with pytest.raises(ValueError, match="output declared with 2 columns"):
        core.load_surrogate(write_model(make_chain_model(Ws, bs, out_dim=2)))


def test_bias_of_wrong_length(rng, write_model):
    m = _graph([helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc", transB=1)],
               [_w("W", (3, 7), rng), _w("b", (4,), rng)], n=3)
    with pytest.raises(ValueError, match="'fc'.*bias of shape"):
        core.load_surrogate(write_model(m))


def test_non_finite_weights_are_refused(rng, write_model):
    Ws, bs = random_chain(rng, (7, 10, 1))
    Ws[1][0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        core.load_surrogate(write_model(make_chain_model(Ws, bs)))
    with pytest.raises(ValueError, match=r"weights\[1\]: holds NaN"):
        core.Surrogate(Ws, bs)


def test_empty_graph_and_double_input(write_model):
    g = helper.make_graph([], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7])],
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7])])
    with pytest.raises(ValueError, match="no nodes"):
        core.load_surrogate(write_model(helper.make_model(g)))


def test_numpy_constructor_validation(rng):
    Ws, bs = random_chain(rng, (7, 10, 1))
    with pytest.raises(ValueError, match="at least one layer"):
        core.Surrogate([], [])
    with pytest.raises(ValueError, match=r"weights\[1\]: inconsistent shapes"):
        core.Surrogate([Ws[0], np.zeros((1, 9))], bs)
    with pytest.raises(ValueError, match=r"biases\[0\]: expected shape \(10,\)"):
        core.Surrogate(Ws, [np.zeros(9), bs[1]])
    with pytest.raises(ValueError, match="same length"):
        core.Surrogate(Ws, bs[:1])


def test_not_picklable(sur):
    import pickle
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(sur)


# ---- concurrency -------------------------------------------------------------------------

def run_concurrently(worker, n: int, timeout_s: float = 120.0) -> None:
    """Runs worker(0..n-1) on n Python threads at once; fails on a hang or on any thread's error."""
    errors: list[BaseException] = []

    def guarded(tid: int) -> None:
        try:
            worker(tid)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=guarded, args=(t,)) for t in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=timeout_s)
    assert not any(t.is_alive() for t in ts), "a caller hung"
    assert not errors, errors[0]


def test_python_threads_evaluating_at_once(sur, rng):
    xs = [rng.uniform(-1.2, 0.6, (n, 7)).astype(np.float32) for n in (1, 9, 500, 3000, 1, 4096)]
    expected = [sur.evaluate(x) for x in xs]
    results: dict[tuple[int, int], np.ndarray] = {}

    def worker(tid: int) -> None:
        for rep in range(5):
            for i, x in enumerate(xs):
                results[(tid, rep * 10 + i)] = sur.evaluate(x, threads=1 + (tid + i) % 2)

    run_concurrently(worker, 6)
    assert len(results) == 6 * 5 * len(xs)
    for (tid, key), y in results.items():
        np.testing.assert_array_equal(y, expected[key % 10])


def test_worker_pool_across_thread_counts_networks_and_callers(sur, rng):
    """Threads come from a pool kept between calls: thread counts that grow and shrink, networks
    and surrogates interleaved, and concurrent callers (one gets the pool, the others fresh
    threads) all give the single-thread results."""
    from core import DnpuLayer, DnpuNode, Linear, Network

    net = Network(5, [Linear(rng.standard_normal((6, 5)).astype(np.float32)),
                      DnpuLayer([DnpuNode((0, 1, 2), control_voltages=(0.1, -0.2, 0.3, -0.4)),
                                 DnpuNode((3, 4, 5), control_voltages=(-0.3, 0.2, 0.0, 0.1))])], sur)
    x = rng.uniform(-1.2, 0.6, (2000, 7)).astype(np.float32)
    xn = rng.uniform(-0.5, 0.5, (1500, 5)).astype(np.float32)
    ref, refn = sur.evaluate(x), net.evaluate(xn)
    for t in (2, 4, 3, 1, 4, 2):
        np.testing.assert_array_equal(sur.evaluate(x, threads=t), ref)
        np.testing.assert_array_equal(net.evaluate(xn, threads=t), refn)

    def worker(tid: int) -> None:
        for rep in range(20):
            t = 2 + (tid + rep) % 3
            np.testing.assert_array_equal(sur.evaluate(x, threads=t), ref)
            np.testing.assert_array_equal(net.evaluate(xn, threads=t), refn)

    run_concurrently(worker, 4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_gets_its_own_workers(sur, rng):
    """After fork() the parent's pool threads do not exist in the child; the child must start
    its own instead of waiting for them."""
    x = rng.uniform(-1.2, 0.6, (3000, 7)).astype(np.float32)
    ref = sur.evaluate(x, threads=2)  # the parent's pool is running now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = np.array_equal(sur.evaluate(x, threads=2), ref) and np.array_equal(sur.evaluate(x, threads=3), ref)
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung evaluating with threads")
    np.testing.assert_array_equal(sur.evaluate(x, threads=2), ref)


def test_read_only_and_buffer_inputs(sur, rng):
    x = rng.uniform(-1, 1, (6, 7)).astype(np.float32)
    ref = sur.evaluate(x)
    ro = x.copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(sur.evaluate(ro), ref)
    np.testing.assert_array_equal(sur.evaluate(memoryview(x)), ref)


def test_reinitialising_is_refused(sur):
    with pytest.raises(RuntimeError, match="already initialised"):
        sur.__init__(sur.weights, sur.biases)
