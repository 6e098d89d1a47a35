"""MNIST for a board of several chips: one surrogate per device, each node trained through its own
chip's surrogate, the export naming each node's surrogate, deploy placing each node on its chip."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.io import read_network
from host.board.chips import board_chips
from host.deploy.placement import OWN_CHIP, place_nodes, rounds
from host.experiments import mnist_model as mm
from host.experiments.__main__ import main
from host.mnist_data import load_mnist, to_inputs
from host.networks.dnpu_nodes import DNPUNodes

CHIPS = ["models/surrogate.onnx", "models/devices/seed5.onnx", "models/twins/seed7.onnx"]
SEEDS = [0, 5, 7]


def _chip(seed: int) -> dict:
    return {"model": "virtual-dnpu-meanfield", "model_version": 1, "seed": seed, "n_sites": 30}


def test_nodes_on_several_surrogates_compute_what_each_node_computes_alone() -> None:
    """Nodes sharing a surrogate module are evaluated together (one call per chip), in node order."""
    torch.manual_seed(0)
    mods = [torch.nn.Sequential(torch.nn.Linear(7, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)) for _ in range(3)]
    per_node = [mods[i % 3] for i in range(7)]
    ranges = np.array([[-1.0, 1.0]] * 7)
    layer = DNPUNodes(per_node, ranges, 7, (0, 3), trials=2, generator=torch.Generator().manual_seed(1))
    assert [n for _, n in layer.node_groups()] == [[0, 3, 6], [1, 4], [2, 5]]
    x = torch.rand(2, 5, 7, 2) * 2 - 1
    out = layer(x)
    v = layer.electrode_volts(x)
    want = torch.stack([per_node[k](v[:, :, k]).squeeze(-1) for k in range(7)], dim=-1)
    assert out.shape == (2, 5, 7)
    torch.testing.assert_close(out, want)
    out.sum().backward()                       # every node's controls get a gradient
    assert bool(torch.all(layer.control.grad.abs().sum(-1) > 0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist-chips")
    code = main(["mnist", "--models", "rf7", "--epochs", "1", "--train-subset", "600", "--surrogate", ",".join(CHIPS),
                 "--out", str(out), "--threads", "1", "--no-progress"])
    assert code == 0
    return out


def test_each_node_trains_through_its_devices_surrogate_and_the_file_names_it(trained) -> None:
    rep = json.loads((trained / "rf7.json").read_text())
    assert rep["surrogates"] == CHIPS
    assert rep["node_devices"] == [k % 3 for k in range(10)]   # the nodes take the devices in turn
    # the core, evaluating each node on the surrogate the file names for it, agrees with torch
    assert rep["core_vs_torch_argmax_agreement"] > 0.999
    assert rep["core_vs_torch_max_abs_logit_diff"] < 1e-2
    # noise: the worst chip's error, each node scaled to its own chip's
    assert rep["noise_std_na"] == pytest.approx(2.5764423159125776, rel=1e-6)
    nf = read_network(trained / "rf7.onnx")
    assert len(nf.surrogates) == 3
    assert [n.surrogate for n in nf.layers[1].nodes] == [k % 3 for k in range(10)]
    assert nf.metadata["node_devices"] == [k % 3 for k in range(10)]


def test_the_file_read_back_computes_what_the_file_computes(trained) -> None:
    from core.io import load_network

    model, _ = mm.load_network_model(trained / "rf7.onnx")       # its own three surrogates
    assert model.node_surrogates == [k % 3 for k in range(10)]
    assert len(model.dnpu.node_groups()) == 3
    x = to_inputs(load_mnist().test.images[:200])
    with torch.inference_mode():
        ours = model(torch.as_tensor(x)).numpy()
    theirs = load_network(trained / "rf7.onnx").evaluate(x, threads=1)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    assert mm.to_layers(model)[1].nodes[4].surrogate == 1


def test_deploy_places_every_node_on_a_device_of_its_chip(trained) -> None:
    nf = read_network(trained / "rf7.onnx")
    # a board of ten devices, chips 0,5,7 in turn: every node on its own chip, one round
    chips = [_chip(SEEDS[k % 3]) for k in range(10)]
    p = place_nodes(nf, chips)
    assert {x.how for x in p} == {OWN_CHIP}
    assert [x.device for x in p] == list(range(10))
    assert len(rounds(p, 1)) == 1
    # a board of the three chips: four rounds; a board without chip 7 refuses the chip-7 nodes
    assert len(rounds(place_nodes(nf, [_chip(s) for s in SEEDS]), 1)) == 4
    with pytest.raises(ValueError, match="seed 7"):
        place_nodes(nf, [_chip(0), _chip(5)])
    assert board_chips({"devices": [{"device": c} for c in chips]}) == chips


def test_several_surrogates_are_refused_where_one_device_is_meant(tmp_path, capsys) -> None:
    assert main(["mnist", "--models", "rf7", "--surrogate", f"{CHIPS[0]},{tmp_path / 'none.onnx'}",
                 "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["mnist", "--models", "rf7", "--surrogate", ",".join(CHIPS), "--train-on", "board",
                 "--out", str(tmp_path)]) == 2
    assert "one device" in capsys.readouterr().err
