"""core.Network against a straightforward numpy reference."""
from __future__ import annotations

import numpy as np
import pytest
from core_testlib import random_chain

import core
from core import Affine, DnpuLayer, DnpuNode, Linear, Network, Standardize

ISAS = core.supported_isas()
LO = np.array([-1.2] * 5 + [-0.7] * 2)
HI = np.array([0.6] * 5 + [0.3] * 2)


def mlp_ref(s: core.Surrogate, v: np.ndarray) -> np.ndarray:
    h = v.astype(np.float64)
    for W, b, r in zip(s.weights, s.biases, s.relu):
        h = h @ W.T.astype(np.float64) + (0 if b is None else b)
        if r:
            h = np.maximum(h, 0)
    return h[:, 0]


def net_ref(net: Network, x: np.ndarray) -> np.ndarray:
    """Plain numpy, float64, electrode vector built explicitly (no folding)."""
    h = x.astype(np.float64)
    for layer in net.layers:
        if isinstance(layer, Linear):
            h = h @ np.asarray(layer.weight, np.float64).T + (0 if layer.bias is None else layer.bias)
        elif isinstance(layer, Affine):
            h = h * np.asarray(layer.scale) + np.asarray(layer.shift)
        elif isinstance(layer, Standardize):
            h = (h - np.asarray(layer.mean)) / np.asarray(layer.std)
        elif isinstance(layer, DnpuLayer):
            outs = []
            nxt = 0
            for node in layer.nodes:
                s = net.surrogates[node.surrogate]
                data = list(node.data_electrodes)
                idx = list(range(nxt, nxt + len(data))) if node.inputs is None else list(node.inputs)
                nxt = max(idx) + 1
                v = np.empty((h.shape[0], s.n_inputs))
                ctrl = [e for e in range(s.n_inputs) if e not in data]
                v[:, ctrl] = np.asarray(node.control_voltages, np.float64)
                d = h[:, idx] * np.asarray(node.input_scale) + np.asarray(node.input_offset)
                v[:, data] = np.clip(d, node.input_low, node.input_high)
                outs.append(mlp_ref(s, v) * node.output_scale + node.output_offset)
            h = np.stack(outs, axis=1)
    return h


@pytest.fixture
def surrogates(rng) -> list[core.Surrogate]:
    return [core.Surrogate(*random_chain(rng, (7, 90, 90, 90, 90, 90, 1))),
            core.Surrogate(*random_chain(rng, (7, 40, 33, 1)))]


def check(net: Network, x: np.ndarray, tol: float = 1e-5) -> None:
    ref = net_ref(net, x)
    scale = max(float(np.ptp(ref)), float(np.abs(ref).max()), 1e-6) if ref.size else 1.0
    for isa in ISAS:
        for t in (1, 2):
            y = net.evaluate(x, isa=isa, threads=t)
            assert y.shape == ref.shape and y.dtype == np.float32
            if ref.size:
                assert np.abs(y - ref).max() / scale < tol, (isa, t)


def mnist_net(rng, s, n_data=7) -> Network:
    Wl = rng.standard_normal((10 * n_data, 784)) * 0.05
    data = (0, 3, 4) if n_data == 3 else tuple(range(7))
    ctrl_n = 7 - n_data
    nodes = [DnpuNode(data_electrodes=data, control_voltages=rng.uniform(-0.5, 0.2, ctrl_n),
                      input_scale=(HI[list(data)] - LO[list(data)]) / 2,
                      input_offset=(HI[list(data)] + LO[list(data)]) / 2,
                      input_low=LO[list(data)], input_high=HI[list(data)],
                      output_scale=rng.uniform(0.5, 2), output_offset=rng.uniform(-1, 1))
             for _ in range(10)]
    return Network(784, [Linear(Wl, None if n_data == 3 else rng.standard_normal(70) * 0.1),
                         DnpuLayer(nodes)], s)


@pytest.mark.parametrize("n", (0, 1, 7, 8, 9, 1000))
def test_mnist_shape_7_inputs(rng, surrogates, n):
    net = mnist_net(rng, surrogates[0])
    assert net.n_outputs == 10
    check(net, rng.uniform(-0.5, 0.5, (n, 784)).astype(np.float32))


@pytest.mark.parametrize("zeros", (0.0, 0.3, 0.8, 1.0))
def test_linear_layer_on_inputs_with_exact_zeros(rng, surrogates, zeros):
    """Image-like inputs (mostly exact zeros, some rows dense): the zero-skipping linear layer
    gives the reference sums on every path, including NaN/inf rows among sparse ones."""
    net = mnist_net(rng, surrogates[0])
    x = rng.uniform(0.0, 1.0, (203, 784)).astype(np.float32)
    x[rng.uniform(size=x.shape) < zeros] = 0.0
    x[::17] = rng.uniform(0.0, 1.0, (len(x[::17]), 784))  # some fully dense rows in between
    check(net, x)
    x[5, 100] = np.nan
    x[6, 3] = np.inf
    for isa in ISAS:
        y = net.evaluate(x, isa=isa)
        assert np.all(np.isnan(y[5])) and not np.isnan(y[[4, 7]]).any(), isa


def test_mnist_shape_3_inputs_with_control_voltages(rng, surrogates):
    net = mnist_net(rng, surrogates[0], n_data=3)
    check(net, rng.uniform(-0.5, 0.5, (300, 784)).astype(np.float32))


def test_ring_221_with_own_surrogates_and_standardisation(rng, surrogates):
    """2-2-1: both first-layer nodes read both inputs; outputs standardised and mapped into the
    next node's electrode ranges."""
    def node(sur, inputs):
        return DnpuNode(data_electrodes=(1, 2), control_voltages=rng.uniform(-0.6, 0.2, 5),
                        inputs=inputs, input_low=LO[[1, 2]], input_high=HI[[1, 2]],
                        surrogate=sur)
    layers = [Affine(scale=[0.9, 0.8], shift=[-0.3, -0.2]),
              DnpuLayer([node(0, (0, 1)), node(1, (0, 1))]),
              Standardize(mean=[0.1, -0.2], std=[0.5, 2.0]),
              Affine(scale=0.45, shift=-0.3),
              DnpuLayer([node(0, None)]),
              Standardize(mean=0.05, std=0.7)]
    net = Network(2, layers, surrogates)
    assert net.n_outputs == 1
    x = rng.uniform(-1.2, 0.6, (257, 2)).astype(np.float32)
    check(net, x)
    # clipping is active for some samples
    assert (np.abs(x * 0.9 - 0.3) > 1.2).any()


def test_control_voltages_are_folded_exactly(rng, surrogates):
    """A node equals the surrogate evaluated on the full electrode vector."""
    s = surrogates[0]
    cv = np.array([0.1, -0.4, 0.2, -0.1, 0.05])
    net = Network(2, [DnpuLayer([DnpuNode(data_electrodes=(2, 5), control_voltages=cv)])], s)
    x = rng.uniform(-0.7, 0.3, (100, 2)).astype(np.float32)
    v = np.empty((100, 7), np.float32)
    v[:, [0, 1, 3, 4, 6]] = cv
    v[:, [2, 5]] = x
    np.testing.assert_allclose(net.evaluate(x)[:, 0], s.evaluate(v), rtol=1e-5, atol=1e-5)


def test_network_nan_propagates_per_row(rng, surrogates):
    net = mnist_net(rng, surrogates[0])
    x = rng.uniform(-0.5, 0.5, (40, 784)).astype(np.float32)
    clean = net.evaluate(x)
    x[5, 100] = np.nan
    y = net.evaluate(x)
    assert np.isnan(y[5]).any()
    np.testing.assert_array_equal(np.delete(y, 5, 0), np.delete(clean, 5, 0))


def test_network_bad_inputs(rng, surrogates):
    net = mnist_net(rng, surrogates[0])
    with pytest.raises(ValueError, match=r"expected shape \(n, 784\), got \(3, 783\)"):
        net.evaluate(np.zeros((3, 783), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        net.evaluate(np.zeros((3, 784), np.int64))
    y = net.evaluate(np.zeros((2, 784 * 2))[:, ::2])  # float64, non-contiguous: converted
    assert y.shape == (2, 10)


def test_network_validation_errors(rng, surrogates):
    s = surrogates[0]
    with pytest.raises(ValueError, match=r"layers\[0\].weight: expected shape \(n_out, 5\)"):
        Network(5, [Linear(np.zeros((3, 4)))], s)
    with pytest.raises(ValueError, match="control_voltages: expected 5 values"):
        Network(2, [DnpuLayer([DnpuNode((0, 1), control_voltages=[0.1])])], s)
    with pytest.raises(ValueError, match="data_electrodes"):
        Network(2, [DnpuLayer([DnpuNode((0, 7), control_voltages=[0] * 5)])], s)
    with pytest.raises(ValueError, match="data_electrodes"):
        Network(2, [DnpuLayer([DnpuNode((1, 1), control_voltages=[0] * 5)])], s)
    with pytest.raises(ValueError, match="out of range for a layer input of 3"):
        Network(3, [DnpuLayer([DnpuNode((0, 1), [0] * 5), DnpuNode((0, 1), [0] * 5)])], s)
    with pytest.raises(ValueError, match="surrogate: index 2 out of range"):
        Network(2, [DnpuLayer([DnpuNode((0, 1), [0] * 5, surrogate=2)])], surrogates)
    with pytest.raises(ValueError, match="std: must be > 0"):
        Network(2, [Standardize(0.0, [1.0, 0.0])], s)
    with pytest.raises(ValueError, match="input_low exceeds input_high"):
        Network(2, [DnpuLayer([DnpuNode((0, 1), [0] * 5, input_low=1, input_high=0)])], s)
    with pytest.raises(ValueError, match="NaN or inf"):
        Network(2, [Affine(scale=[1, np.inf])], s)
    with pytest.raises(ValueError, match="one output"):
        Network(2, [Affine()], core.Surrogate(*random_chain(rng, (7, 5, 2))))
    with pytest.raises(ValueError, match=r"surrogates\[0\]: a DNPU surrogate maps the 7 electrode voltages"):
        Network(2, [Affine()], core.Surrogate(*random_chain(rng, (6, 5, 1))))
    with pytest.raises(ValueError, match=r"layers\[0\].nodes\[0\].data_electrodes must be distinct indices in 0..6"):
        Network(2, [DnpuLayer([DnpuNode((-1, 2), control_voltages=[0] * 5)])], s)
    with pytest.raises(TypeError, match="unsupported layer type"):
        Network(2, ["relu"], s)


def test_load_network_missing_file(tmp_path):
    # the format itself is tested in tests/host/deploy/test_network_onnx.py and test_core_amplification.py
    with pytest.raises(FileNotFoundError, match="net.onnx"):
        core.load_network(tmp_path / "net.onnx")
