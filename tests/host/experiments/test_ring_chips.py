"""The ring across the chips of a board of several devices: one surrogate per device, each node
trained through and validated on its own chip, the layers' nodes measured together."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.experiments.__main__ import main
from host.experiments.errors import ExperimentError
from host.experiments.surrogates import ChipSurrogates, load_surrogates, node_devices

SURROGATE = "models/surrogate.onnx"          # chip 0
SEED5 = "models/devices/seed5.onnx"          # chip 5
SMALL = ["--trials", "4", "--chunk", "2", "--epochs", "30", "--n-per-class", "12", "--noise-draws", "2",
         "--board-runs", "2", "--board-train-runs", "2", "--archs", "2-2-1", "--nn-baselines", "", "--quiet",
         "--threads", "1"]


def test_nodes_take_the_devices_in_turn() -> None:
    assert node_devices((2, 2, 1), 3) == [[0, 1], [2, 0], [1]]
    assert node_devices((2, 2, 1), 2) == [[0, 1], [0, 1], [0]]
    with pytest.raises(ExperimentError, match="needs 2 devices"):
        node_devices((2, 1), 1)
    sur = load_surrogates(f"{SURROGATE},{SEED5}")
    assert isinstance(sur, ChipSurrogates) and sur.paths == [SURROGATE, SEED5]
    models = sur.node_models((2, 2, 1))
    assert models[0][1] is sur.surrogates[1].model and models[2][0] is sur.surrogates[0].model
    assert sur.test_rmse_na == max(s.test_rmse_na for s in sur.surrogates)


@pytest.mark.slow
def test_ring_runs_each_node_on_its_own_chip_and_exports_the_binding(tmp_path: Path) -> None:
    out = tmp_path / "ring"
    rc = main(["ring", "--surrogate", f"{SURROGATE},{SEED5}", "--board", "sim://?chips=0,5", "--out", str(out),
               *SMALL])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert [c["chip"] for c in res["chips"]] == ["virtual-dnpu-meanfield seed 0 (30 sites)",
                                                  "virtual-dnpu-meanfield seed 5 (30 sites)"]
    b = res["board"]["2-2-1"]
    assert b["node_devices"] == [[0, 1], [0, 1], [0]] and len(b["runs"]) == 2
    from core.io import read_network
    from core.network import DnpuLayer
    nf = read_network(res["export"]["path"])
    assert [[n.surrogate for n in l.nodes] for l in nf.layers if isinstance(l, DnpuLayer)] == [[0, 1], [0, 1], [0]]
    assert len(nf.surrogates) == 2


def test_surrogates_in_the_wrong_device_order_are_refused(tmp_path: Path, capsys) -> None:
    rc = main(["ring", "--surrogate", f"{SEED5},{SURROGATE}", "--board", "sim://?chips=0,5&n_sites=30",
               "--out", str(tmp_path / "r"), *SMALL])
    assert rc == 2
    assert "was measured on virtual-dnpu-meanfield seed 5" in capsys.readouterr().err


def test_each_node_is_as_noisy_as_its_own_chip() -> None:
    import torch

    from host.networks.classifiers import DNPUNet
    sur = load_surrogates(f"{SURROGATE},{SEED5}")
    scale = sur.node_noise_scale((2, 1))
    rmse = [s.test_rmse_na for s in sur.surrogates]
    assert scale == [[rmse[0] / max(rmse), rmse[1] / max(rmse)], [rmse[0] / max(rmse)]]
    net = DNPUNet(sur.node_models((2, 1)), sur.ranges_v, 1, nodes=(2, 1), noise_std_na=5.0,
                  noise_scale=[[0.0, 1.0], [1.0]], generator=torch.Generator().manual_seed(0))
    x = torch.zeros(400, 2)
    layer = net.layers[0]
    layer.train()
    h = x[None, :, None, :].expand(1, 400, 2, 2)
    with torch.no_grad():
        noisy = layer(h) - layer.eval()(h)
    assert float(noisy[..., 0].abs().max()) == 0.0 and 4.0 < float(noisy[..., 1].std()) < 6.0


def test_in_the_loop_every_node_measures_on_its_own_device() -> None:
    """NodeLoops: a node's forward is its own device's current, its gradient its own chip's surrogate's."""
    import numpy as np
    import torch

    from host.experiments.board_session import BoardSession
    from host.experiments.ring_loop import board_loops
    from host.networks.classifiers import DNPUNet
    from host.networks.in_loop import NodeLoops, on_board

    sur = load_surrogates(f"{SURROGATE},{SEED5}", engine="torch")
    nodes = (2, 1)
    net = DNPUNet(sur.node_models(nodes), sur.ranges_v, 1, nodes=nodes, generator=torch.Generator().manual_seed(0))
    x = torch.rand(30, 2) * 1.6 - 0.8
    with BoardSession("sim://?chips=0,5") as s:
        loop, limits = board_loops(s, sur, nodes)
        assert isinstance(loop, NodeLoops) and loop.node_devices == [[0, 1], [0]]
        assert sorted(loop.loops) == [0, 1] and loop.loops[1].gradient_model is sur.surrogates[1].model
        np.testing.assert_array_equal(limits, s.device_limits_v(0))   # the chips' limits agree here
        with on_board(net, loop):
            net.train()
            out = net(x)
            out.sum().backward()
        assert loop.account.points == 30 * 3 and loop.account.calls == 3   # one sweep per node, on its device
        assert all(layer.control.grad is not None and bool(torch.all(torch.isfinite(layer.control.grad)))
                   for layer in net.layers)
        # the surrogates are back after the block
        assert net.layers[0].surrogates[1] is sur.surrogates[1].model
        with pytest.raises(ExperimentError, match="needs one chip"):
            board_loops(s, sur, nodes, record=True)


@pytest.mark.slow
def test_the_ring_across_chips_trains_in_the_loop(tmp_path: Path) -> None:
    out = tmp_path / "ring"
    rc = main(["ring", "--surrogate", f"{SURROGATE},{SEED5}", "--board", "sim://?chips=0,5", "--out", str(out),
               *SMALL, "--train-on", "board", "--loop-candidates", "2", "--loop-epochs", "3",
               "--val-per-class", "20", "--confirm-per-class", "20"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    loop = res["in_loop"]["2-2-1"]
    # every epoch measured both candidates' five nodes on the 24 training points
    assert loop["history"][1]["points"] - loop["history"][0]["points"] == 2 * 24 * 5
    assert "accuracy_mean" in loop["board"] and loop["board"]["node_devices"] == [[0, 1], [0, 1], [0]]
    from core.io import read_network
    assert len(read_network(res["export"]["path"]).surrogates) == 2
