"""A surrogate file's dnpu.amplification: every reader returns nA (the chain's output times it).

The core (evaluate, value_and_grad, DNPU nodes of a network, network files), the numpy reference
of host.surrogate.onnx_file, torch (host.surrogate.torch_model.load_torch) and onnxruntime's raw
output times the amplification all agree."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from core_testlib import make_chain_model, random_chain, surrogate_metadata

import core
from core import DnpuLayer, DnpuNode, Linear, Network, surrogate_format
from core.io import load_network, load_surrogate, read_network, write_network

AMP = 28.5
ISAS = core.supported_isas()


def ort_raw(path, x: np.ndarray) -> np.ndarray:
    """onnxruntime's output of the file as it is: the chain's raw output."""
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def close(a: np.ndarray, ref: np.ndarray, rel: float = 2e-6) -> None:
    np.testing.assert_allclose(a, ref, rtol=rel, atol=rel * float(np.abs(ref).max()))


@pytest.fixture
def amplified(rng, write_model):
    """(path, Ws, bs) of a 7 -> 90x3 -> 1 surrogate file whose amplification is 28.5."""
    Ws, bs = random_chain(rng, (7, 90, 90, 90, 1))
    return write_model(make_chain_model(Ws, bs, metadata=surrogate_metadata(AMP))), Ws, bs


def volts(rng, n: int) -> np.ndarray:
    return rng.uniform(-1.2, 0.6, (n, 7)).astype(np.float32)


def test_the_rule_reads_the_metadata():
    assert surrogate_format.amplification({}) == 1.0
    assert surrogate_format.amplification({"dnpu.amplification": "28.5"}) == 28.5
    assert surrogate_format.amplification({"dnpu.amplification": "-3"}) == -3.0
    for bad in ('"x"', "nan", "Infinity", "true", "[1]", "not json"):
        with pytest.raises(surrogate_format.SurrogateFormatError, match="dnpu.amplification"):
            surrogate_format.amplification({"dnpu.amplification": bad})


def test_core_evaluate_returns_na_like_every_other_reader(amplified, rng):
    from host.surrogate import onnx_file
    from host.surrogate.torch_model import load_torch

    path, _, _ = amplified
    x = volts(rng, 500)
    raw = ort_raw(path, x)[:, 0].astype(np.float64)
    s = load_surrogate(path)
    assert s.amplification == AMP and s.metadata["dnpu.amplification"] == "28.5"
    sf = onnx_file.read(path)
    assert sf.amplification == AMP
    numpy_na = sf.evaluate_numpy(x)
    with torch.inference_mode():
        torch_na = load_torch(path)(torch.from_numpy(x))[:, 0].numpy()
    close(numpy_na, raw * AMP)
    close(torch_na, numpy_na)
    for isa in ISAS:
        close(s.evaluate(x, isa=isa), numpy_na)
        close(s.evaluate(x, isa=isa, threads=2), numpy_na)


def test_value_and_grad_scales_value_and_gradient(amplified, rng):
    path, Ws, bs = amplified
    s = load_surrogate(path)
    raw = core.Surrogate(Ws, bs)                         # the same chain without metadata: raw output
    assert raw.amplification == 1.0
    x = volts(rng, 300)
    y0, g0 = raw.value_and_grad(x, isa="generic")
    # torch's gradient through load_torch's module is the reference for the scaled gradient
    from host.surrogate.torch_model import load_torch
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    load_torch(path)(xt)[:, 0].sum().backward()
    for isa in ISAS:
        y, g = s.value_and_grad(x, isa=isa)
        close(y, y0.astype(np.float64) * AMP, 1e-5)
        close(g, g0.astype(np.float64) * AMP, 1e-5)
        close(g, xt.grad.numpy(), 1e-5)
        np.testing.assert_array_equal(y, s.evaluate(x, isa=isa))
    if s.bf16_ready:
        y16, g16 = s.value_and_grad(x, precision="bf16")
        assert np.abs(y16 - y).max() < 0.03 * np.abs(y).max()
        rel = np.linalg.norm(g16 - g, axis=1) / np.maximum(np.linalg.norm(g, axis=1), 1e-6)
        assert np.median(rel) < 0.02


def test_rebuilding_from_weights_and_metadata_gives_the_same_surrogate(amplified, rng):
    path, _, _ = amplified
    s = load_surrogate(path)
    t = core.Surrogate(s.weights, s.biases, s.relu, s.metadata)
    x = volts(rng, 50)
    np.testing.assert_array_equal(t.evaluate(x), s.evaluate(x))
    raw = ort_raw(path, x)[:, 0]
    close(core.Surrogate(s.weights, s.biases).evaluate(x), raw, 1e-5)   # weights: the chain as stored


def test_bad_amplification_is_refused(rng, write_model):
    Ws, bs = random_chain(rng, (7, 10, 1))
    meta = dict(surrogate_metadata(), **{"dnpu.amplification": '"ten"'})
    with pytest.raises(ValueError, match=r"bad\.onnx: dnpu\.amplification must be a finite number"):
        load_surrogate(write_model(make_chain_model(Ws, bs, metadata=meta), "bad.onnx"))
    with pytest.raises(ValueError, match="dnpu.amplification"):
        core.Surrogate(Ws, bs, metadata=meta)
    with pytest.raises(ValueError, match="overflows float32"):
        core.Surrogate(Ws, bs, metadata={"dnpu.amplification": "1e300"})


@pytest.mark.parametrize("dims", [(7, 90, 90, 90, 1), (7, 1)], ids=["deep", "one-layer"])
def test_network_nodes_return_na(rng, write_model, dims):
    """A DNPU node of an amplified surrogate emits nA * output_scale + output_offset, also when
    the first layer (where control voltages are folded) is the last one."""
    Ws, bs = random_chain(rng, dims)
    path = write_model(make_chain_model(Ws, bs, metadata=surrogate_metadata(AMP)))
    s = load_surrogate(path)
    W = rng.standard_normal((5, 4)).astype(np.float32)
    nodes = [DnpuNode((0, 3, 4), control_voltages=(0.1, -0.2, 0.3, -0.4), output_scale=0.5, output_offset=2.0),
             DnpuNode((1, 2), control_voltages=(-0.3, 0.2, 0.0, 0.1, 0.25), inputs=(3, 4))]
    layers = [Linear(W), DnpuLayer(nodes)]
    x = rng.uniform(-0.5, 0.5, (200, 4)).astype(np.float32)
    h = x.astype(np.float64) @ W.T.astype(np.float64)
    ref = []
    for node, cols in zip(nodes, ([0, 1, 2], [3, 4])):
        v = np.empty((len(x), 7))
        ctrl = [e for e in range(7) if e not in node.data_electrodes]
        v[:, list(node.data_electrodes)] = h[:, cols]
        v[:, ctrl] = node.control_voltages
        ref.append(ort_raw(path, v.astype(np.float32))[:, 0] * AMP * node.output_scale + node.output_offset)
    ref = np.stack(ref, axis=1)
    net = Network(4, layers, s)
    for isa in ISAS:
        close(net.evaluate(x, isa=isa), ref, 1e-5)
    # the network file folds the amplification once: core, onnxruntime and a re-written file agree
    p1 = write_network(path.with_name("net.onnx"), 4, layers, path, {"task": "test"})
    close(load_network(p1).evaluate(x), ref, 1e-5)
    close(ort_raw(p1, x), ref, 1e-5)
    nf = read_network(p1)
    assert nf.surrogates[0].amplification == 1.0
    stored = json.loads({p.key: p.value for p in onnx.load(p1).metadata_props}["dnpu.surrogates"])[0]
    assert stored["dnpu.amplification"] == "1.0" and stored["dnpu.amplification_folded"] == "28.5"
    p2 = write_network(path.with_name("net2.onnx"), nf.n_inputs, nf.layers, nf.surrogates, nf.metadata)
    np.testing.assert_array_equal(load_network(p2).evaluate(x), load_network(p1).evaluate(x))
    assert read_network(p2).surrogate_metadata[0]["dnpu.amplification_folded"] == "28.5"
