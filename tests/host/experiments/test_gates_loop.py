"""gates --train-on board: off-chip, gradient in the loop, GA and SPSA on the board, measured alike."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from host.board import Board
from host.experiments.__main__ import main
from host.experiments.board_session import BoardSession
from host.experiments.data_electrodes import PAPER_DATA_ELECTRODES
from host.experiments.gates import GATES, GatesConfig, placed_points
from host.experiments.gates_loop import (GatesLoopConfig, grouped_fitness, make_task, parse_optimisers, run_gradient,
                                         run_off_chip)
from host.experiments.gates_on_board import GateFitness
from host.experiments.errors import ExperimentError

BOARD = "sim://?seed=0"
#: small budgets: a short off-chip training (so the gates are weak) and a few steps of each optimiser
SMALL = ["gates", "--train-on", "board", "--gates", "XOR,AND", "--trials", "4", "--epochs", "200", "--repeats", "10",
         "--loop-epochs", "4", "--loop-starts", "2", "--ga-generations", "4", "--spsa-iterations", "5",
         "--threads", "1", "--quiet"]


pytestmark = pytest.mark.usefixtures("keep_threads")     # the CLI runs set torch's threads


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_config_options_and_the_grouped_fitness():
    assert parse_optimisers("ga, SPSA,ga") == ("ga", "spsa")
    with pytest.raises(ExperimentError, match="--optimisers"):
        parse_optimisers("gradient,annealing")
    for bad in ({"optimisers": ()}, {"loop_epochs": 0}, {"loop_starts": 0}, {"ga_generations": 0},
                {"spsa_iterations": 0}, {"verify_repeats": 1}, {"loop_repeats": 1}):
        with pytest.raises(ValueError):
            GatesLoopConfig(**bad)
    cfg = GatesLoopConfig(ga_generations=7, spsa_iterations=9, loop_epochs=3, seed=5)
    assert cfg.ga().generations == 7 and cfg.ga().seed == 5 and cfg.spsa().iterations == 9
    assert cfg.loop().epochs == 3 and cfg.loop().seed == 5
    # the fitness of 6 readings in groups of 2: the mean of the three 2-reading fitnesses
    fit = GateFitness()
    cur = np.random.default_rng(0).normal([0.0, 30.0, 30.0, 0.0], 2.0, (1, 6, 4))
    want = np.mean([fit(cur[:, i:i + 2], GATES["XOR"])[0] for i in (0, 2, 4)])
    assert grouped_fitness(fit, cur, GATES["XOR"], 2)[0] == pytest.approx(want)


def test_all_methods_are_trained_checked_alike_and_accounted(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(SMALL + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = _results(out)
    loop = res["in_loop"]
    assert loop["error"] is None and set(loop["gates"]) == {"XOR", "AND"}
    assert loop["fitness"]["output_range_na"] == pytest.approx([-300.0, 95.06], abs=0.01)   # the surrogate's
    n = 4
    for g, methods in loop["gates"].items():
        assert set(methods) == {"off_chip", "gradient", "ga", "spsa"}
        for m, r in methods.items():
            v = r["verification"]
            assert r["error"] is None and v["repeats"] == 20 and len(r["control_voltages"]) == 5
            assert r["verification_account"]["board_points"] == 20 * n and r["verification_account"]["board_s"] > 0
            assert r["heldout"]["repeats"] == 10 and r["heldout"]["board_points"] == 10 * n
            assert 0.0 <= r["heldout"]["accuracy"] <= 1.0 and np.isfinite(v["worst_margin_na"])
            tr = r["training"]
            if m == "off_chip":
                assert tr["board_points"] == 0 and tr["board_s"] == 0 and tr["host_s"] > 0
            else:
                assert tr["board_points"] > 0 and tr["board_s"] > 0 and tr["host_s"] >= 0 and r["curve"]
        # GA: 4 generations of 25 candidates, 2 readings of each pair; SPSA: 300 random starts, the
        # calibration's 8 candidates, 5 steps of 3 and the final iterate, 2 readings each
        assert methods["ga"]["training"]["board_points"] == 4 * 25 * 2 * n
        assert methods["spsa"]["training"]["board_points"] == (300 + 8 + 5 * 3 + 1) * 2 * n
        assert len(methods["ga"]["curve"]) == 4 and len(methods["spsa"]["curve"]) == 5
        assert methods["ga"]["curve"][-1]["board_points"] == methods["ga"]["training"]["board_points"]
        # the gradient loop: 5 sweeps of both gates' 2 copies x 4 readings x 4 pairs, its selection
        # (5 candidates x 4 passes), the comparison with the start (2 states x 10 readings), split over 2 gates
        grad = methods["gradient"]
        assert grad["training"]["board_points"] == (5 * 2 * 2 * 16 + 5 * 4 * 2 * 2 * 16 + 2 * 2 * 10 * n) / 2
        assert [c["epoch"] for c in grad["curve"]] == [0, 1, 2, 3, 4]
        assert grad["curve"][1]["board_points"] - grad["curve"][0]["board_points"] == 2 * 16
        # the loop never hands back less than its start measured: no margin lost on the weak off-chip gates
        noise = methods["off_chip"]["verification"]["noise_rms_na"]
        assert (grad["verification"]["worst_margin_na"]
                >= methods["off_chip"]["verification"]["worst_margin_na"] - 5 * noise), (g, grad, methods["off_chip"])
    assert loop["gradient"]["copies"] == 2 and len(loop["gradient"]["history"]) == 5
    assert loop["gradient"]["account"]["points"] == 5 * 2 * 2 * 16 + 5 * 4 * 2 * 2 * 16
    # the same board count, whole: the first validation, then every method's training and checks
    total = sum(r["training"]["board_points"] + r["verification_account"]["board_points"]
                + r["heldout"]["board_points"] for methods in loop["gates"].values() for r in methods.values())
    assert res["board_samples"] == 2 * 10 * n + total
    for m in ("off_chip", "gradient", "ga", "spsa"):
        assert f"XOR   {m}" in printed and f"AND   {m}" in printed
    assert (out / "gates_board_time.png").stat().st_size > 10_000 and (out / "gates.png").exists()
    assert json.loads((out / "config.json").read_text())["in_loop"]["optimisers"] == ["gradient", "ga", "spsa"]


def test_the_gradient_loop_learns_xor_from_a_start_that_fails(sur):
    # all controls at 0 V: XOR overlaps by 12.5 nA or more on this chip. Four copies that all start
    # there (no jitter: no luck from random starts; they part only by the noise each one sees), 60
    # steps: over 100 stretches of the board's noise every run separated XOR, the worst by 7.8 nA
    # (5x the noise, median 11 nA). One copy alone stalled near -9 nA in 3 of 100. The bars: 3 nA,
    # 2x the noise and a gain of 12 nA.
    pts = placed_points(sur, GatesConfig(), PAPER_DATA_ELECTRODES).volts
    cfg = GatesLoopConfig(loop_epochs=60, loop_starts=4, loop_jitter_v=0.0)
    start = np.zeros(5)
    off, grad = {"gate": "XOR"}, {"XOR": {"gate": "XOR"}}
    shared: dict = {}
    with BoardSession(BOARD, "refuse") as s:
        task = make_task(s, sur, pts, PAPER_DATA_ELECTRODES, 10, np.random.default_rng(0))
        run_off_chip(s, task, GATES["XOR"], start, 0.0, cfg, off)
        run_gradient(s, sur, task, ["XOR"], {"XOR": start}, cfg, grad, shared, lambda: None)
        assert s.warnings == []
    before, after = off["verification"], grad["XOR"]["verification"]
    assert before["worst_margin_na"] < -5.0, before
    assert after["worst_margin_na"] > 3.0 and after["margin_over_noise"] > 2.0, after
    assert after["worst_margin_na"] > before["worst_margin_na"] + 12.0
    assert not grad["XOR"]["kept_off_chip"] and grad["XOR"]["chosen_epoch"] >= 1 and shared["copies"] == 4
    assert grad["XOR"]["heldout"]["accuracy"] == 1.0
    curve = grad["XOR"]["curve"]
    assert len(curve) == 61 and curve[0]["margin_na"] < 0 < max(c["margin_na"] for c in curve)


def test_training_on_the_board_needs_a_board(tmp_path, capsys):
    rc = main(["gates", "--train-on", "board", "--no-board", "--out", str(tmp_path / "g"), "--quiet"])
    assert rc == 2 and "--train-on board needs the board" in capsys.readouterr().err
    rc = main(["gates", "--train-on", "board", "--optimisers", "ga,newton", "--out", str(tmp_path / "g"), "--quiet"])
    assert rc == 2 and "--optimisers" in capsys.readouterr().err


def test_a_board_that_fails_mid_ga_keeps_everything_and_ends_at_zero_volts(tmp_path, capsys, monkeypatch):
    # the simulator's fault injection (a linear test device whose analog side fails after N rows):
    # the first validation and the off-chip and gradient methods take 1,000 rows, GA 200 a generation
    zeroed: list[np.ndarray] = []
    real_zero = Board.zero

    def zero(self, *a, **kw):
        r = real_zero(self, *a, **kw)
        zeroed.append(np.asarray(self.outputs()["target"]))
        return r

    monkeypatch.setattr(Board, "zero", zero)
    out = tmp_path / "g"
    rc = main(["gates", "--train-on", "board", "--board", "sim://?seed=0&device=linear&fail_after_rows=3000",
               "--gates", "XOR", "--trials", "2", "--epochs", "50", "--repeats", "10", "--optimisers", "gradient,ga",
               "--loop-epochs", "3", "--loop-starts", "2", "--ga-generations", "20", "--threads", "1", "--quiet",
               "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "device fault" in err and "results so far" in err
    res = _results(out)
    assert "device fault" in res["error"]
    xor = res["in_loop"]["gates"]["XOR"]
    assert xor["off_chip"]["verification"] is not None and xor["gradient"]["verification"] is not None
    ga = xor["ga"]
    assert "device fault" in ga["error"] and ga["verification"] is None
    assert len(ga["control_voltages"]) == 5 and 3 <= len(ga["curve"]) < 20          # the best so far, mid-run
    assert ga["training"]["board_points"] == 200 * len(ga["curve"])
    assert zeroed and np.allclose(zeroed[-1], 0.0, atol=1e-3)                     # the board was taken to 0 V
    assert (out / "gates_board_time.png").exists()


def test_ctrl_c_in_spsa_keeps_the_results(tmp_path, monkeypatch):
    real = BoardSession.measure
    calls = {"n": 0}

    def measure(self, volts, what="volts", **kw):
        if what == "spsa candidates":
            calls["n"] += 1
            if calls["n"] > 3:                 # the random starts, the calibration, one step: then Ctrl-C
                raise KeyboardInterrupt
        return real(self, volts, what=what, **kw)

    monkeypatch.setattr(BoardSession, "measure", measure)
    out = tmp_path / "g"
    rc = main(SMALL[:4] + ["XOR"] + SMALL[5:] + ["--optimisers", "ga,spsa", "--out", str(out)])
    assert rc == 130
    res = _results(out)
    assert "interrupted" in res["error"]
    xor = res["in_loop"]["gates"]["XOR"]
    assert xor["ga"]["verification"] is not None and "gradient" not in xor
    assert "KeyboardInterrupt" in xor["spsa"]["error"] and len(xor["spsa"]["control_voltages"]) == 5
    assert len(xor["spsa"]["curve"]) == 1
