"""capacity --train-on board: failed labellings fine-tuned in the loop, re-checked on fresh measurements."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from host.board import Board
from host.experiments.__main__ import main
from host.experiments.board_session import BoardSession
from host.experiments.capacity import CAPACITY_POINTS_V, labellings
from host.experiments.capacity_loop import (CapacityLoopConfig, check_bce, complement_representatives,
                                            fine_tune_labellings)

BOARD = "sim://?seed=0"
#: deliberately weak off-chip training (one short attempt, one short second search): about half
#: the labellings of 5 points fail the device check, so the loop has work to do
WEAK = ["capacity", "--n-min", "5", "--n-max", "5", "--attempts", "1", "--epochs", "40", "--second-attempts", "1",
        "--systems", "device", "--repeats", "5", "--threads", "1", "--quiet", "--board", BOARD]


pytestmark = pytest.mark.usefixtures("keep_threads")     # the CLI runs set torch's threads


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_complement_pairs_are_trained_once():
    lab = labellings(3)[[0, 2, 5, 3]]          # rows 0 and 5 are complements; 2 and 3 are complements
    reps, where = complement_representatives(lab)
    assert reps.tolist() == [0, 1]
    assert where.tolist() == [0, 1, 0, 1]
    reps, where = complement_representatives(labellings(3)[:2])     # no complements among them
    assert reps.tolist() == [0, 1] and where.tolist() == [0, 1]


def test_the_loss_is_the_checks_logistic_and_pushes_the_classes_apart():
    y = torch.tensor([[0, 0, 1, 1, 0, 1]])
    out = torch.tensor([[1.0, 2.0, 2.5, 4.0, 1.5, 1.8]], dtype=torch.float64, requires_grad=True)
    bce, acc = check_bce(out, y)
    assert bce.shape == (1,) and acc.shape == (1,) and 0 < acc[0] < 1
    bce.sum().backward()
    g = out.grad[0].numpy()
    # descending the loss raises the class-1 currents near the threshold and lowers the class-0 ones;
    # the gradient is largest where the classes meet (2.0 of class 0, 1.8 of class 1)
    assert g[5] < 0 and g[2] < 0 and g[1] > 0 and g[4] > 0
    assert min(abs(g[1]), abs(g[5])) > 3 * max(abs(g[0]), abs(g[3]))
    # the far class-1 current is not pushed further out: it widens the spread that the check's
    # standardised, L2-limited logistic pays for
    assert g[3] >= 0
    sep, acc_sep = check_bce(torch.tensor([[0.0, 1.0, 9.0, 10.0]], dtype=torch.float64), torch.tensor([[0, 0, 1, 1]]))
    assert acc_sep[0] == 1.0 and float(sep[0]) < float(bce.detach()[0])


def test_loop_config_is_validated():
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"repeats": 1}, {"starts": 0}, {"jitter_v": -0.1},
                {"select_passes": 0}, {"betas": (1.0, 0.999)}):
        with pytest.raises(ValueError):
            CapacityLoopConfig(**bad)
    cfg = CapacityLoopConfig(starts=16, max_trials=64)
    assert cfg.copies(3) == 16 and cfg.copies(10) == 6 and cfg.copies(500) == 1


def test_weakly_trained_labellings_that_fail_on_the_board_are_rescued_in_the_loop(tmp_path, capsys):
    out = tmp_path / "cap"
    rc = main(WEAK + ["--train-on", "board", "--loop-epochs", "20", "--loop-starts", "4", "--out", str(out)])
    assert rc == 0
    res = _results(out)
    dev, loop = res["table"]["device"][0], res["table"]["device_loop"][0]
    assert loop["n"] == 5 and loop["off_chip_capacity"] == dev["capacity"]
    assert loop["failed_off_chip"] == len(dev["failed_labellings"]) >= 5
    assert loop["rescued"] >= 1 and loop["capacity"] > dev["capacity"]
    # the loop's row adds exactly its rescues, all of them labellings that had failed off-chip
    assert loop["found"] == dev["found"] + loop["rescued"]
    assert set(loop["rescued_labellings"]) <= set(dev["failed_labellings"])
    assert set(loop["failed_labellings"]) == set(dev["failed_labellings"]) - set(loop["rescued_labellings"])
    rec = res["in_loop"]["5"]
    assert rec["error"] is None and rec["copies"] == 4 and rec["trained"] == loop["trained"]
    hist = rec["history"]
    assert len(hist) == 21 and {"loss", "separable", "passing_in_sample", "points", "board_s"} <= set(hist[0])
    # one sweep per epoch for every trained labelling's copies: trained x copies x 5 repeats x 5 points
    assert hist[1]["points"] - hist[0]["points"] == loop["trained"] * 4 * 5 * 5
    assert hist[1]["calls"] - hist[0]["calls"] == 1
    assert loop["loop_points"] > hist[-1]["points"] and loop["loop_board_s"] > 0 and loop["loop_host_s"] >= 0
    assert np.all(np.array(rec["chosen_epoch"]) >= 1)            # never the unchanged off-chip controls
    # the checks are counted apart from the loop: the unchanged controls and the tuned ones, each failed
    # labelling 5 repeats x 5 points, all fresh
    assert rec["check_account"]["points"] == 2 * loop["failed_off_chip"] * 5 * 5
    assert rec["check_account"]["board_s"] > 0
    assert "device_loop" in (out / "capacity_table.txt").read_text()
    assert (out / "capacity.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "device_loop" in printed and "failed labellings rescued" in printed


def test_a_board_that_fails_mid_loop_keeps_the_best_states_and_ends_at_zero_volts(sur, monkeypatch):
    from host.board.errors import BoardDisconnected

    lab = labellings(5)[[3, 8, 11]].astype(np.int64)
    start = np.random.default_rng(0).uniform(-0.6, 0.2, (3, 5)).astype(np.float32)
    real = Board.measure
    calls = {"n": 0}

    def flaky(self, volts, **kw):
        calls["n"] += 1
        if calls["n"] > 4:                    # four sweeps (epochs 0..3), then the cable goes
            raise BoardDisconnected("cable pulled (test)")
        return real(self, volts, **kw)

    with BoardSession(BOARD) as session:
        monkeypatch.setattr(Board, "measure", flaky)
        out = fine_tune_labellings(session, sur, CAPACITY_POINTS_V[:5], lab, start,
                                   CapacityLoopConfig(epochs=10, repeats=4, starts=2))
        monkeypatch.setattr(Board, "measure", real)
        np.testing.assert_allclose(session.board.outputs()["target"], 0.0, atol=1e-3)
    assert out.error is not None and "cable pulled" in out.error
    assert len(out.history) == 4 and out.account["points"] == 4 * 3 * 2 * 4 * 5
    # the best measured state so far (an epoch the loop produced), inside the ranges
    assert out.solution.shape == (3, 5) and np.all(np.isfinite(out.solution))
    assert np.all((out.chosen_epoch >= 1) & (out.chosen_epoch <= 3))
    ctrl_ranges = sur.ranges_v[[0, 3, 4, 5, 6]]
    assert np.all(out.solution >= ctrl_ranges[:, 0] - 1e-6) and np.all(out.solution <= ctrl_ranges[:, 1] + 1e-6)


def test_the_cli_keeps_the_off_chip_results_when_the_board_fails_in_the_loop(tmp_path, capsys, monkeypatch):
    from host.board.errors import BoardDisconnected
    from host.experiments.board_session import BoardSession

    failing = {"on": False}
    zeroed: list[np.ndarray] = []
    real_measure, real_zero, real_in_loop = Board.measure, Board.zero, BoardSession.in_loop

    def measure(self, volts, **kw):
        if failing["on"]:
            raise BoardDisconnected("cable pulled in the loop (test)")
        return real_measure(self, volts, **kw)

    def zero(self, *a, **kw):
        r = real_zero(self, *a, **kw)
        zeroed.append(np.asarray(self.outputs()["target"]))
        return r

    def in_loop(session, *a, **kw):
        loop = real_in_loop(session, *a, **kw)
        m = loop.measure
        sweeps = {"n": 0}

        def flaky(v):
            sweeps["n"] += 1
            failing["on"] = sweeps["n"] > 3          # the loop's fourth sweep meets a dead board
            return m(v)
        loop.measure = flaky
        return loop

    monkeypatch.setattr(Board, "measure", measure)
    monkeypatch.setattr(Board, "zero", zero)
    monkeypatch.setattr(BoardSession, "in_loop", in_loop)
    out = tmp_path / "cap"
    rc = main(WEAK + ["--train-on", "board", "--loop-epochs", "10", "--loop-starts", "2", "--out", str(out)])
    assert rc == 2
    assert "cable pulled in the loop" in capsys.readouterr().err
    res = _results(out)
    dev = res["table"]["device"][0]
    assert dev["n"] == 5 and dev["labellings"] == 32 and dev["capacity"] > 0      # the off-chip result stands
    assert res["table"]["device_loop"] == [] and "cable pulled" in res["error"]
    rec = res["in_loop"]["5"]
    assert "cable pulled" in rec["error"] and len(rec["history"]) == 3
    assert zeroed and np.allclose(zeroed[-1], 0.0, atol=1e-3)                    # the board was taken to 0 V


def test_training_on_the_board_needs_a_board(tmp_path, capsys):
    rc = main(["capacity", "--train-on", "board", "--no-board", "--out", str(tmp_path / "c"), "--quiet"])
    assert rc == 2 and "--train-on board needs the board" in capsys.readouterr().err
