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
