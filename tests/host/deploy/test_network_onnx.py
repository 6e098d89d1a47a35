"""The dnpu-network/1 format: export, onnxruntime, core and torch agree; bad files are refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from deploy_testlib import SURROGATE, small_layers, two_layer

from core import Network, load_network, load_surrogate
from core.network import DnpuLayer
from core.io import NetworkFormatError, read_network, write_network


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


@pytest.mark.parametrize("kind", ["rf3", "rf7", "two_layer"])
def test_export_ort_core_agree(tmp_path, rng, kind) -> None:
    if kind == "rf3":
        layers = small_layers(rng, data=(0, 3, 4))
    elif kind == "rf7":
        layers = small_layers(rng, data=tuple(range(7)), bias=True)
    else:
        layers = two_layer(rng)
    path = write_network(tmp_path / "n.onnx", 12, layers, SURROGATE, {"task": "t", "dataset": "d.npz"})
    onnx.checker.check_model(onnx.load(path))
    x = rng.normal(size=(300, 12)).astype(np.float32) * 2     # includes clipped inputs
    ref = Network(12, layers, load_surrogate(SURROGATE)).evaluate(x)
    y_ort = ort_run(path, x)
    net = load_network(path)
    y_core = net.evaluate(x)
    scale = np.abs(ref).max()
    assert y_ort.shape == ref.shape == y_core.shape
    assert np.max(np.abs(y_ort - ref)) <= 1e-5 * scale + 1e-4
    assert np.max(np.abs(y_core - ref)) <= 1e-5 * scale + 1e-4
    assert net.metadata == {"task": "t", "dataset": "d.npz"}


def test_read_network_gives_nodes_without_torch(tmp_path, rng) -> None:
    layers = small_layers(rng, data=(0, 3, 4))
    path = write_network(tmp_path / "n.onnx", 12, layers, SURROGATE, {"a": 1})
    n_inputs, got, surrogates, meta = read_network(path)
    assert n_inputs == 12 and meta == {"a": 1} and len(surrogates) == 1
    assert surrogates[0].metadata["dnpu.format"] == "dnpu-surrogate/1"
    assert isinstance(got[1], DnpuLayer) and len(got[1].nodes) == 3
    for a, b in zip(got[1].nodes, layers[1].nodes):
        assert a.data_electrodes == (0, 3, 4)
        np.testing.assert_allclose(a.control_voltages, b.control_voltages, rtol=1e-6)
        np.testing.assert_allclose(a.input_low, b.input_low, rtol=1e-6)
        assert a.output_scale == pytest.approx(b.output_scale, rel=1e-6)
    np.testing.assert_array_equal(got[0].weight, layers[0].weight)
    # every DNPU node is a call to a model-local function
    m = onnx.load(path)
    calls = [n for n in m.graph.node if n.domain == "dnpu"]
    assert [n.op_type for n in calls] == ["DnpuNode0"] * 3
    assert {f.name for f in m.functions} == {"Surrogate0", "DnpuNode0"}


def test_rewrite_is_stable(tmp_path, rng) -> None:
    layers = two_layer(rng)
    p1 = write_network(tmp_path / "a.onnx", 12, layers, SURROGATE)
    nf = read_network(p1)
    p2 = write_network(tmp_path / "b.onnx", nf.n_inputs, nf.layers, nf.surrogates, nf.metadata)
    x = rng.normal(size=(50, 12)).astype(np.float32)
    np.testing.assert_array_equal(load_network(p1).evaluate(x), load_network(p2).evaluate(x))


def test_torch_model_matches_export(tmp_path) -> None:
    import torch
    from host.experiments import mnist_model as mm
    from host.surrogate import onnx_file
    from host.surrogate.torch_model import load_torch

    torch.manual_seed(0)
    sf = onnx_file.read(SURROGATE)
    for cfg in (mm.ModelConfig(kind="dnpu", data_electrodes=(0, 3, 4)),
                mm.ModelConfig(kind="dnpu", data_electrodes=tuple(range(7)), bias=True)):
        model = mm.build(cfg, load_torch(SURROGATE), sf.ranges_v)
        x = torch.rand(200, 784) - 0.5
        model.train()
        with torch.no_grad():
            for _ in range(3):      # populate the batch-norm statistics
                model(x)
        model.eval()
        with torch.no_grad():
            ref = model(x).numpy()
        path = write_network(tmp_path / "m.onnx", 784, mm.to_layers(model), SURROGATE)
        xn = x.numpy()
        assert np.max(np.abs(ort_run(path, xn) - ref)) < 2e-3
        assert np.max(np.abs(load_network(path).evaluate(xn) - ref)) < 2e-3


def test_bad_files(tmp_path, rng) -> None:
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not an onnx file at all")
    with pytest.raises(ValueError, match="not a readable ONNX"):
        read_network(junk)
    with pytest.raises(NetworkFormatError, match="not a DNPU network"):
        read_network(SURROGATE)                     # a surrogate is ONNX but not a network
    # a network whose electrodes were tampered with
    path = write_network(tmp_path / "n.onnx", 12, small_layers(rng), SURROGATE)
    m = onnx.load(path)
    for t in m.graph.initializer:
        if t.name == "layers.1.nodes.0.data_electrodes":
            t.CopyFrom(onnx.numpy_helper.from_array(np.array([0, 3, 3], np.int64), t.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(m, bad)
    with pytest.raises(NetworkFormatError, match="do not cover"):
        read_network(bad)
    # an extra op in the chain
    m = onnx.load(path)
    m.graph.node.insert(1, onnx.helper.make_node("Sigmoid", ["layers.0.out"], ["s"], name="squash"))
    onnx.save(m, bad)
    with pytest.raises(NetworkFormatError, match="squash"):
        read_network(bad)


def test_write_validates_layers(tmp_path, rng) -> None:
    layers = small_layers(rng)
    with pytest.raises(ValueError, match="weight"):
        write_network(tmp_path / "x.onnx", 13, layers, SURROGATE)
    with pytest.raises(TypeError):
        write_network(tmp_path / "x.onnx", 12, layers, 42)
    assert not (tmp_path / "x.onnx").exists()


def test_docstring_example_runs(tmp_path, monkeypatch) -> None:
    """write_network's documented example (the ring 2-2-1 network) is real code."""
    import core.io as m

    code = "\n".join(line[8:] for line in m.write_network.__doc__.split("::\n\n", 1)[1].splitlines())
    monkeypatch.chdir(SURROGATE.parents[1])
    exec(code.replace('"ring.onnx"', repr(str(tmp_path / "ring.onnx"))), {})
    net = load_network(tmp_path / "ring.onnx")
    assert net.n_outputs == 1 and net.metadata["task"] == "ring"
    x = np.array([[0.1, 0.2], [-1.0, 0.5]], np.float32)
    np.testing.assert_allclose(ort_run(tmp_path / "ring.onnx", x), net.evaluate(x), rtol=1e-4, atol=1e-3)
