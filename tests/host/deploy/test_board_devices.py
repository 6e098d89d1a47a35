"""Deploy's board backend on boards of several devices: each node on a device of its own chip, the
nodes of a layer together, and explicit maps for anything else."""
from __future__ import annotations

import json

import numpy as np
import pytest
from deploy_testlib import SURROGATE

from core.io import read_network
from host.board.chips import board_chips, chip_of, describe_chip, surrogate_chip
from host.deploy import DeployError, evaluate_board
from host.deploy.__main__ import main
from host.deploy.placement import MAPPED, OWN_CHIP, UNCHECKED, parse_device_map, place_nodes, rounds

CHIP0 = {"model": "virtual-dnpu-meanfield", "model_version": 1, "seed": 0, "n_sites": 30}
CHIP4 = dict(CHIP0, seed=4)


def test_the_shipped_surrogate_names_its_chip() -> None:
    from core import load_surrogate
    assert surrogate_chip(load_surrogate(SURROGATE).metadata) == CHIP0
    assert describe_chip(CHIP0) == "virtual-dnpu-meanfield seed 0 (30 sites)"
    # a twin is the chip of its file, whatever seed draws its noise
    twin = {"model": "surrogate-twin", "sha256": "ab" * 32, "seed": 3, "noise_na": 1.0}
    assert chip_of(twin) == chip_of(dict(twin, seed=9)) == {"model": "surrogate-twin", "sha256": "ab" * 32}
    assert chip_of({"model": "x"}) is None and chip_of(None) is None
    assert board_chips({"device": dict(CHIP0, noise_level=1.0)}) == [CHIP0]
    assert board_chips({"devices": [{"device": CHIP4}, {"device": CHIP0}]}) == [CHIP4, CHIP0]


def test_placement_spreads_a_layer_over_its_chips_devices(small_model) -> None:
    nf = read_network(small_model[0])                 # one layer of 3 nodes, all chip 0
    p = place_nodes(nf, [CHIP0, CHIP4, CHIP0, CHIP0])
    assert [x.device for x in p] == [0, 2, 3] and {x.how for x in p} == {OWN_CHIP}
    assert [[x.node for x in r] for r in rounds(p, 1)] == [[0, 1, 2]]
    p2 = place_nodes(nf, [CHIP0, CHIP4, CHIP0])       # two devices of chip 0: two rounds
    assert [x.device for x in p2] == [0, 2, 0]
    assert [[x.node for x in r] for r in rounds(p2, 1)] == [[0, 1], [2]]
    with pytest.raises(DeployError, match=r"trained for virtual-dnpu-meanfield seed 0 \(30 sites\), which no "
                                          r"device of the board carries \(0: virtual-dnpu-meanfield seed 4.*--device-map"):
        place_nodes(nf, [CHIP4])
    m = place_nodes(nf, [CHIP4, CHIP4], device_map=[1, 0, 1])
    assert [x.device for x in m] == [1, 0, 1] and {x.how for x in m} == {MAPPED}
    assert "seed 4" in m[0].device_chip and "seed 0" in m[0].chip
    assert {x.how for x in place_nodes(nf, [None, None])} == {UNCHECKED}
    with pytest.raises(DeployError, match="names 2 devices for 3 nodes"):
        place_nodes(nf, [CHIP0], device_map=[0, 0])
    with pytest.raises(DeployError, match="device 5 does not exist"):
        place_nodes(nf, [CHIP0], device_map=[0, 5, 0])
    assert parse_device_map("auto") is None and parse_device_map("2,0,1") == [2, 0, 1]
    with pytest.raises(DeployError, match="one device index per node"):
        parse_device_map("a,b")


@pytest.mark.slow
def test_a_layer_runs_in_one_round_on_copies_of_its_chip(small_model) -> None:
    model, data = small_model
    nf = read_network(model)
    x = np.load(data)["x"][:40]
    one = evaluate_board(nf, x, "sim://?seed=0", board_options={"ramp_v_per_s": 10.0})
    three = evaluate_board(nf, x, "sim://?chips=0,0,0", board_options={"ramp_v_per_s": 10.0})
    assert one.error is None and three.error is None
    assert one.rounds == 3 and three.rounds == 1 and three.board["n_devices"] == 3
    assert [p.device for p in three.placements] == [0, 1, 2]
    assert [e["device"] for e in three.node_errors] == [0, 1, 2]
    # the same network on copies of one chip: the same outputs within the noise
    assert np.abs(three.logits - one.logits).max() < 0.2 * np.abs(one.logits).max()
    for e in three.node_errors:
        assert 0 < e["rmse_na"] < 10


@pytest.mark.slow
def test_a_node_never_runs_on_another_chip_unless_mapped(capsys, small_model) -> None:
    model, data = small_model
    argv = ["--model", str(model), "--backend", "board", "--data", str(data), "--limit", "10", "--ramp", "10",
            "--latency-samples", "0", "--json"]
    assert main(argv + ["--board", "sim://?seed=4"]) == 2
    err = capsys.readouterr().err
    assert "trained for virtual-dnpu-meanfield seed 0" in err and "--device-map" in err
    assert main(argv + ["--board", "sim://?seed=4", "--device-map", "0,0,0"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["how"] for p in rep["placement"]] == [MAPPED] * 3 and rep["rounds_per_pass"] == 3
    assert "seed 4" in rep["placement"][0]["device_chip"]
