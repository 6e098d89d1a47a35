"""Single-DNPU experiments on one device of a board of several (`--board-device K`): every voltage
goes to device K, its limits apply, and its chip is checked against the surrogate's."""
from __future__ import annotations

import json

import numpy as np
import pytest

from host.board import Board
from host.experiments.__main__ import main
from host.experiments.board_session import BoardSession
from host.experiments.errors import ExperimentError
from host.experiments.surrogates import load_surrogate

SEED5 = "models/devices/seed5.onnx"
CHIP0 = "models/surrogate.onnx"


def test_a_session_on_device_k_measures_that_devices_chip() -> None:
    rng = np.random.default_rng(0)
    v = rng.uniform(-0.25, 0.25, (200, 7))
    with Board.open("sim://?seed=5") as alone:
        want = alone.measure(v)
    with BoardSession("sim://?chips=0,5", device=1) as s:
        got = s.measure(v)
        assert s.identity["device"]["seed"] == 5
        np.testing.assert_array_equal(s.limits_v, s.board.device_limits_v[1])
        applied = s.applied_volts(v)
        assert np.abs(applied - v).max() < 1e-3                # DAC codes of device 1, about as asked
        # device 0 (chip 0) was not driven: it still holds 0 V
        assert np.abs(s.board.outputs(0)["target"]).max() < 1e-3
    # same chip, independent noise draws: equal within a few noise floors, far from chip 0
    assert np.sqrt(np.mean((got - want) ** 2)) < 5.0
    with Board.open("sim://?seed=0") as other:
        assert np.sqrt(np.mean((other.measure(v) - want) ** 2)) > 20.0


def test_the_chip_is_checked_and_a_mismatch_is_warned_about() -> None:
    with BoardSession("sim://?chips=0,5", device=1) as s:
        rec = s.check_chip(load_surrogate(SEED5, engine="torch"))
        assert rec["same"] is True and "seed 5" in rec["device_chip"] and not s.warnings
        with pytest.warns(UserWarning, match="measured on virtual-dnpu-meanfield seed 0"):
            rec = s.check_chip(load_surrogate(CHIP0, engine="torch"))
        assert rec["same"] is False and len(s.warnings) == 1
    with pytest.raises(ExperimentError, match=r"--board-device.*devices 0\.\.1"):
        with BoardSession("sim://?chips=0,5", device=2):
            pass


def test_a_twin_of_the_surrogates_own_file_is_its_chip() -> None:
    # the twin runs the file itself: its predictions are the twin's, no warning; a surrogate of
    # another chip on that twin is warned about
    with BoardSession(f"sim://?device=surrogate&model={SEED5}", device=0) as s:
        rec = s.check_chip(load_surrogate(SEED5, engine="torch"))
        assert rec["same"] is True and "twin of this surrogate file" in rec["device_chip"] and not s.warnings
        with pytest.warns(UserWarning, match="the surrogate's predictions are for another chip"):
            rec = s.check_chip(load_surrogate(CHIP0, engine="torch"))
        assert rec["same"] is False


def test_gates_on_device_1_of_a_two_chip_board(tmp_path) -> None:
    out = tmp_path / "gates"
    rc = main(["gates", "--gates", "NAND", "--trials", "6", "--epochs", "400", "--repeats", "10",
               "--board", "sim://?chips=0,5", "--board-device", "1", "--surrogate", SEED5,
               "--out", str(out), "--quiet", "--threads", "1"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["chip"]["device"] == 1 and res["chip"]["same"] is True
    assert res["gates"]["NAND"]["board_ok"], res["gates"]["NAND"]


def test_several_surrogates_take_every_device_so_board_device_is_refused(tmp_path, capsys) -> None:
    rc = main(["ring", "--surrogate", f"{CHIP0},{SEED5}", "--board", "sim://?chips=0,5", "--board-device", "1",
               "--trials", "4", "--out", str(tmp_path / "ring"), "--quiet"])
    assert rc == 2
    assert "--board-device runs on one device" in capsys.readouterr().err
