"""MNIST in the loop (`mnist --train-on board`): a network file read back, tiny runs on sim://?seed=0."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.io import load_network, read_network
from host.board import Board
from host.experiments import mnist_model as mm
from host.experiments.__main__ import main
from host.experiments.board_session import BoardSession
from host.experiments.mnist_loop import (MnistLoopConfig, board_logits, compare_on_test, fine_tune, load_start,
                                         mcnemar_p, trainable_state)
from host.experiments.surrogates import load_surrogate
from host.mnist_data import load_mnist, to_inputs
from host.networks.in_loop import BoardLoop

ROOT = Path(__file__).resolve().parents[3]
SURROGATE = ROOT / "models" / "surrogate.onnx"
RF7 = ROOT / "models" / "mnist.onnx"
RF3 = ROOT / "models" / "mnist_rf3.onnx"
BOARD = "sim://?seed=0"
#: the tiny run: 4 steps of 8 images, validation (20 images) at steps 0, 2 and 4
TINY = MnistLoopConfig(steps=4, batch=8, report_every=2, val_images=20, test_images=30, eval_batch=50)


@pytest.fixture(scope="module")
def data():
    return load_mnist()


def _loop(session: BoardSession, sur) -> BoardLoop:
    return session.in_loop(sur.model)


@pytest.mark.parametrize("path", [RF7, RF3], ids=["rf7", "rf3"])
def test_a_network_file_read_back_computes_what_the_file_computes(path, data) -> None:
    model, meta = mm.load_network_model(path)          # the file's own surrogate and ranges
    x = to_inputs(data.test.images[:300])
    with torch.no_grad():
        torch_logits = model(torch.as_tensor(x)).numpy()
    core_logits = load_network(path).evaluate(x)
    assert np.abs(torch_logits - core_logits).max() < 1e-2
    assert (torch_logits.argmax(1) == core_logits.argmax(1)).mean() > 0.995
    assert meta["dataset"] == "mnist:test" and model.norm is None      # batch norm folded into the nodes
    # exported again, the same layers
    again = mm.to_layers(model)
    orig = read_network(path).layers
    np.testing.assert_allclose(again[0].weight, orig[0].weight, rtol=0, atol=0)
    for a, b in zip(again[1].nodes, orig[1].nodes):
        np.testing.assert_allclose(a.control_voltages, b.control_voltages, atol=1e-7)
        np.testing.assert_allclose(a.input_scale, b.input_scale, rtol=1e-6)
        assert a.output_scale == pytest.approx(b.output_scale, rel=1e-6)


def test_a_file_that_is_not_an_mnist_classifier_is_refused_by_name(sur) -> None:
    layers = read_network(RF7).layers
    with pytest.raises(mm.NetworkFileError, match="expected \\[Linear, DnpuLayer\\]"):
        mm.from_layers(layers[1:], sur.model, sur.ranges_v)
    narrow = sur.ranges_v.copy()
    narrow[0] = (-1.0, 0.5)
    with pytest.raises(mm.NetworkFileError, match="clipped to"):
        mm.from_layers(layers, sur.model, narrow)


def test_the_tiny_loop_measures_on_the_board_counts_points_and_keeps_the_best(sur, data) -> None:
    start = load_start(RF7, sur)
    assert not start.warnings                       # trained through the same surrogate
    snaps: dict[int, dict[str, np.ndarray]] = {}

    def snap(outcome) -> None:
        snaps[outcome.history[-1]["step"]] = trainable_state(start.model)

    with BoardSession(BOARD, limit_policy="refuse") as session:
        loop = _loop(session, sur)
        out = fine_tune(loop, session.limits_v, start.model, data, TINY, log=lambda s: None, on_report=snap)
        assert out.error is None and out.steps_done == 4
        # every point measured went through the board, and they are exactly the mini-batches (all ten
        # nodes of an image in the step's one sweep) plus three validation passes
        assert out.train_points == 4 * 8 * 10
        assert loop.account.points == session.samples == 4 * 8 * 10 + 3 * 20 * 10
        assert loop.account.calls == 4 + 3
        test = compare_on_test(loop, start.model, out, data, TINY)
        assert session.samples == 4 * 8 * 10 + 3 * 20 * 10 + 2 * 30 * 10
        assert not session.warnings
    assert [h["step"] for h in out.history] == [0, 2, 4]
    assert out.history[-1]["points"] == 4 * 8 * 10 + 3 * 20 * 10 and out.history[-1]["train_points"] == 320
    assert all(h["board_s"] > 0 and h["host_s"] > 0 for h in out.history)
    assert all(0.0 <= h["train_accuracy"] <= 1.0 and h["loss"] > 0 for h in out.history[1:])
    # the parameters learnt: the linear layer moved from the start (the board's forward, the surrogate's backward)
    moved = np.abs(snaps[4]["linear.weight"] - out.start_state["linear.weight"]).max()
    assert moved > 1e-6
    # the best fine-tuned state is the one of the best measured validation accuracy, first of equals
    vals = [h["val_accuracy"] for h in out.history[1:]]
    best = [2, 4][int(np.argmax(vals))]
    assert out.best_step == best and out.best_val_accuracy == max(vals)
    for k, v in snaps[best].items():
        np.testing.assert_array_equal(out.best_state[k], v)
    # the final comparison measured the start and that best state on the same 30 test images
    assert test["test_images"] == 30 and test["start"]["board_points"] == test["fine_tuned"]["board_points"] == 300
    assert test["fine_tuned"]["step"] == best
    # the measured start network is close to what the surrogate predicts (the twin of this board)
    assert abs(test["start"]["board_accuracy"] - test["start"]["predicted_accuracy"]) <= 0.1


def test_measured_logits_come_from_the_board(sur, data) -> None:
    """Two passes over the same images differ by the board's noise; the surrogate's do not."""
    start = load_start(RF7, sur)
    img = data.test.images[:20]
    with BoardSession(BOARD) as session:
        loop = _loop(session, sur)
        a, b = (board_logits(start.model, loop, img, 20) for _ in range(2))
        assert session.samples == 2 * 20 * 10
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 5.0


def test_steps_past_the_control_limits_are_clipped_with_a_warning(sur, data) -> None:
    start = load_start(RF3, sur)                    # rf3: four control voltages per node
    cfg = MnistLoopConfig(steps=2, batch=8, lr=0.5, report_every=2, val_images=10, test_images=10)
    with BoardSession(BOARD, limit_policy="refuse") as session:
        out = fine_tune(_loop(session, sur), session.limits_v, start.model, data, cfg, log=lambda s: None)
        assert not session.warnings                 # nothing outside the limits reached the board
    assert out.error is None and out.clipped_values > 0
    assert any("clipped, never sent" in w for w in out.warnings)
    c = start.model.dnpu.control.detach()
    assert torch.all(c >= start.model.dnpu.ctrl_lo - 1e-6) and torch.all(c <= start.model.dnpu.ctrl_hi + 1e-6)


def _zero_recorder(monkeypatch) -> list[np.ndarray]:
    """Every Board.zero() call records the DAC targets it left (0 V expected)."""
    seen: list[np.ndarray] = []
    real = Board.zero

    def zero(self) -> None:
        real(self)
        seen.append(self.outputs()["target"])

    monkeypatch.setattr(Board, "zero", zero)
    return seen


def _flaky(monkeypatch, after: int, exc: BaseException) -> None:
    real = Board.measure
    calls = {"n": 0}

    def measure(self, volts, **kw):
        calls["n"] += 1
        if calls["n"] > after:
            raise exc
        return real(self, volts, **kw)

    monkeypatch.setattr(Board, "measure", measure)


TINY_ARGS = ["--loop-steps", "6", "--loop-batch", "8", "--loop-report-every", "2", "--loop-val-images", "20",
             "--test-images", "30", "--threads", "1", "--no-progress"]


@pytest.mark.parametrize("exc, code", [("disconnect", 2), ("ctrl-c", 130)])
def test_a_board_that_drops_mid_run_keeps_the_results_the_best_network_and_ends_at_zero_volts(
        tmp_path, monkeypatch, capsys, exc, code) -> None:
    from host.board.errors import BoardDisconnected

    seen = _zero_recorder(monkeypatch)
    # calls: validation at step 0, steps 1 and 2, validation at 2, step 3; then the board goes at step 4
    _flaky(monkeypatch, 5, BoardDisconnected("cable pulled (test)") if exc == "disconnect" else KeyboardInterrupt())
    out = tmp_path / "loop"
    rc = main(["mnist", "--train-on", "board", "--init", str(RF7), "--board", BOARD, "--out", str(out), *TINY_ARGS])
    assert rc == code
    res = json.loads((out / "results.json").read_text())
    rec = res["networks"]["mnist"]
    assert [h["step"] for h in rec["history"]] == [0, 2] and rec["steps_done"] == 3
    assert rec["account"]["points"] == 3 * 8 * 10 + 2 * 20 * 10 and rec["train_points"] == 3 * 8 * 10
    if exc == "disconnect":
        assert "cable pulled" in rec["error"] and not rec["interrupted"]
        assert "cable pulled" in capsys.readouterr().err
    else:
        assert rec["interrupted"] and "Ctrl-C" in rec["error"]
    assert "test" not in rec                        # nothing was compared on the test images
    # the best network measured so far is written, and says what it is
    written = Path(rec["written"])
    assert written == out / "mnist_board_best_so_far.onnx" and written.is_file()
    best = rec["best_so_far"]
    assert best["state"] in ("start", "fine-tuned")
    assert best["val_accuracy"] == max(rec["start_val_accuracy"], rec["best_val_accuracy"])
    meta = load_network(written).metadata
    assert meta["best_so_far"] == best["state"] and meta["interrupted"] == rec["error"]
    # and the board was taken to 0 V
    assert seen and np.allclose(seen[-1], 0.0, atol=1e-3)


def test_a_full_tiny_run_writes_the_network_only_if_it_measured_better_on_validation(tmp_path, capsys) -> None:
    out = tmp_path / "loop"
    rc = main(["mnist", "--train-on", "board", "--init", str(RF7), "--board", BOARD, "--out", str(out), *TINY_ARGS])
    assert rc == 0
    rec = json.loads((out / "results.json").read_text())["networks"]["mnist"]
    test, said = rec["test"], capsys.readouterr().out
    assert rec["error"] is None and rec["account"]["points"] == 6 * 80 + 4 * 200 + 2 * 300
    if rec["best_val_accuracy"] > rec["start_val_accuracy"]:    # the test images decide nothing
        assert Path(rec["written"]) == out / "mnist_board.onnx" and "better on the validation images" in said
        meta = load_network(out / "mnist_board.onnx").metadata
        assert meta["board_test_accuracy"] == test["fine_tuned"]["board_accuracy"]
    else:
        assert rec["written"] is None and not (out / "mnist_board.onnx").exists()
        assert "no file written" in said


def test_mcnemar_p_of_the_paired_test_comparison() -> None:
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32) and mcnemar_p(0, 5) == mcnemar_p(5, 0)
    assert mcnemar_p(258, 21) < 1e-40 and 0.5 < mcnemar_p(14, 10) < 0.6


def test_bad_loop_arguments(tmp_path, capsys) -> None:
    assert main(["mnist", "--init", str(RF7), "--out", str(tmp_path)]) == 2
    assert "--train-on board" in capsys.readouterr().err
    assert main(["mnist", "--train-on", "board", "--models", "nn3", "--out", str(tmp_path)]) == 2
    assert "DNPU model" in capsys.readouterr().err
    assert main(["mnist", "--train-on", "board", "--init", str(RF7), "--loop-steps", "0", "--out", str(tmp_path)]) == 2
    assert "steps must be >= 1" in capsys.readouterr().err
    assert main(["mnist", "--train-on", "board", "--init", str(tmp_path / "none.onnx"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["mnist", "--train-on", "board", "--init", str(SURROGATE), "--out", str(tmp_path)]) == 2
    assert "not a DNPU network" in capsys.readouterr().err


def test_a_start_trained_through_another_surrogate_is_flagged() -> None:
    other = load_surrogate(ROOT / "models" / "devices" / "seed5.onnx", engine="core", threads=1)
    start = load_start(RF7, other)
    assert start.name == "mnist" and any("another surrogate" in w for w in start.warnings)
