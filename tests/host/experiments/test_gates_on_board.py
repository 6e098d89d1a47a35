"""Gates learned on a simulated board with GA and SPSA; the gate fitness; a board that drops mid-run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.electrodes import control_electrodes
from host.board.errors import BoardDisconnected
from host.experiments.board_session import BoardSession
from host.experiments.data_electrodes import PAPER_DATA_ELECTRODES, place_paper_points
from host.experiments.errors import ExperimentError
from host.experiments.gates import GATES, GatesConfig, gate_points
from host.experiments.gates_on_board import (GateFitness, GateSearchInterrupted, optimise_gate_on_board,
                                             worst_margin)
from host.networks.model_free import GAConfig, SPSAConfig

BOARD = "sim://?seed=0"
XOR = GATES["XOR"]
DE = PAPER_DATA_ELECTRODES


def task(session: BoardSession) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The four input pairs on e1, e2 of this board, and the board's limits for the controls."""
    lim = session.limits_v
    pts = place_paper_points(gate_points(GatesConfig()), lim, DE).volts
    ce = list(control_electrodes(DE))
    return pts, lim[ce, 0], lim[ce, 1]


class Counting:
    """The session's measure, remembering every volt sent (and failing after `fail_after` calls)."""

    def __init__(self, session: BoardSession, fail_after: int | None = None) -> None:
        self.session, self.fail_after = session, fail_after
        self.calls, self.points = 0, 0
        self.lo, self.hi = np.full(7, np.inf), np.full(7, -np.inf)

    def __call__(self, volts: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            real = self.session.board.measure

            def dropped(v, **kw):
                raise BoardDisconnected("cable pulled (test)")

            self.session.board.measure = dropped          # the session sees a real board error
            try:
                return self.session.measure(volts)
            finally:
                self.session.board.measure = real
        self.points += len(volts)
        self.lo, self.hi = np.minimum(self.lo, volts.min(axis=0)), np.maximum(self.hi, volts.max(axis=0))
        return self.session.measure(volts)


@pytest.mark.parametrize("method", ["ga", "spsa"])
def test_xor_is_learned_on_the_board_well_clear_of_the_noise(method):
    # default budgets: ~12,000 (GA) and ~10,000 (SPSA) board points. Over 30 optimiser seeds on this
    # chip the worst margin/noise was >= 6.7 for both (medians 18 and 16); the bar here is 5.
    with BoardSession(BOARD, "refuse") as s:
        pts, lo, hi = task(s)
        meter = Counting(s)
        steps: list[dict] = []
        r = optimise_gate_on_board(meter, pts, XOR, DE, lo, hi, method=method, on_step=steps.append)
        assert s.warnings == []                       # nothing had to be clipped to the board's limits
        limits = s.limits_v
    v = r["verification"]
    assert v["margin_over_noise"] >= 5.0, v
    assert v["noise_rms_na"] > 0.5 and v["quiet_points"] == []     # a real spread, no reading stuck at a rail
    assert v["worst_margin_na"] == pytest.approx(v["margin_over_noise"] * v["noise_rms_na"])
    ctrl = np.array(r["control_voltages"])
    assert np.all(ctrl >= lo) and np.all(ctrl <= hi)
    assert np.all(meter.lo >= limits[:, 0]) and np.all(meter.hi <= limits[:, 1])
    # the data electrodes carried only the four input levels
    np.testing.assert_allclose([meter.lo[list(DE)], meter.hi[list(DE)]], [pts.min(axis=0), pts.max(axis=0)])
    acc = r["accounting"]
    assert acc["board_points"] == meter.points == acc["search_points"] + 20 * 4
    assert acc["search_points"] == 4 * r["repeats"] * acc["search_evaluations"]
    assert 0 < acc["board_s"] < acc["wall_s"] and acc["host_s"] >= 0
    hist = r["history"]
    assert hist == steps and len(hist) == (60 if method == "ga" else 300)
    pts_so_far = [h["board_points"] for h in hist]
    assert pts_so_far == sorted(pts_so_far) and pts_so_far[-1] <= acc["search_points"]
    assert hist[-1]["best_fitness"] == pytest.approx(r["fitness"])
    json.dumps(r)                                     # plain data, ready for results.json


def test_a_board_that_drops_mid_search_keeps_the_best_so_far_and_goes_to_zero_volts():
    with BoardSession(BOARD, "refuse") as s:
        pts, lo, hi = task(s)
        meter = Counting(s, fail_after=8)             # 8 generations measured, then the cable goes
        with pytest.raises(GateSearchInterrupted, match="BoardDisconnected|failed during validation") as ei:
            optimise_gate_on_board(meter, pts, XOR, DE, lo, hi, method="ga", cfg=GAConfig(generations=50))
        np.testing.assert_allclose(s.board.outputs()["target"], 0.0, atol=1e-3)
    e = ei.value
    assert isinstance(e.__cause__, ExperimentError)
    rep = e.report
    assert rep["verification"] is None and "failed during validation" in rep["error"]
    assert len(rep["history"]) == 8 and rep["accounting"]["board_points"] == meter.points == 8 * 25 * 4 * 2
    assert rep["fitness"] == pytest.approx(max(h["best_fitness"] for h in rep["history"]))
    assert rep["control_voltages"] == pytest.approx(list(e.result.best_x))
    assert e.result.interrupted
    json.dumps(rep)


def test_spsa_interrupted_by_ctrl_c_keeps_the_best_so_far():
    with BoardSession(BOARD, "refuse") as s:
        pts, lo, hi = task(s)
        calls = {"n": 0}

        def measure(v):
            calls["n"] += 1
            if calls["n"] > 20:
                raise KeyboardInterrupt
            return s.measure(v)

        with pytest.raises(GateSearchInterrupted) as ei:
            optimise_gate_on_board(measure, pts, XOR, DE, lo, hi, method="spsa",
                                   cfg=SPSAConfig(iterations=100, start_candidates=20))
    assert isinstance(ei.value.__cause__, KeyboardInterrupt)
    assert ei.value.report["control_voltages"] is not None and ei.value.report["error"].startswith("gate search")


# ---- the fitness, on currents made up by hand ---------------------------------------------------

def test_the_fitness_rewards_separation_in_either_polarity():
    f = GateFitness(softness_na=0.0)
    high = np.array([[[-100.0, -20.0, -25.0, -90.0]]])         # XOR with class 1 = high current
    low = -high                                                # ... and with class 1 = low current
    assert f(high, XOR)[0] == pytest.approx(65.0) == f(low, XOR)[0]
    assert f(high, XOR)[0] == pytest.approx(worst_margin(high[0], XOR))
    overlap = np.array([[[-100.0, -20.0, -95.0, -90.0]]])
    assert f(overlap, XOR)[0] < 0


def test_the_soft_margin_sits_below_the_hard_one_and_counts_every_pair():
    cur = np.array([[[-100.0, -20.0, -25.0, -90.0], [-98.0, -22.0, -27.0, -91.0]]])
    hard, soft = GateFitness(softness_na=0.0)(cur, XOR)[0], GateFitness(softness_na=10.0)(cur, XOR)[0]
    assert hard - 10.0 * np.log(16) <= soft < hard
    better = cur.copy()
    better[..., 1] += 30.0                                     # one class-1 point moves further away ...
    assert GateFitness(softness_na=0.0)(better, XOR)[0] == hard    # ... the worst pair is unchanged
    assert GateFitness(softness_na=10.0)(better, XOR)[0] > soft    # ... but the soft margin sees it


def test_separation_gained_at_an_amplifier_rail_does_not_count():
    rail = np.array([[[-300.0, -250.0, -255.0, -300.0]]])      # class 0 pinned at the -300 nA rail
    plain = GateFitness(softness_na=0.0)
    clamped = GateFitness(softness_na=0.0, output_range_na=(-300.0, 100.0), rail_guard=0.05)
    assert plain(rail, XOR)[0] == pytest.approx(45.0)
    assert clamped(rail, XOR)[0] == pytest.approx(25.0)        # measured from the guard's edge, -280 nA
    assert clamped.near_rail(rail[0, 0]).tolist() == [True, False, False, True]


@pytest.mark.parametrize("kwargs, match", [
    (dict(truth=(1, 1, 1, 1)), "both classes"),
    (dict(truth=(0, 1, 2, 0)), "0/1"),
    (dict(control_lo=np.zeros(4)), "control_lo"),
    (dict(method="annealing"), "method"),
    (dict(repeats=0), "repeats"),
    (dict(verify_repeats=1), "verify_repeats"),
    (dict(cfg=SPSAConfig()), "GAConfig"),
    (dict(data_electrodes=(1, 1)), "data_electrodes"),
])
def test_bad_gate_tasks_are_refused_before_anything_is_measured(kwargs, match):
    def measure(v):
        raise AssertionError("nothing may be measured")

    args = dict(points_v=gate_points(GatesConfig()), truth=XOR, data_electrodes=DE, control_lo=np.full(5, -0.5),
                control_hi=np.full(5, 0.3), method="ga")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        optimise_gate_on_board(measure, **args)


def test_bad_fitness_settings_are_refused():
    with pytest.raises(ValueError, match="softness_na"):
        GateFitness(softness_na=-1.0)
    with pytest.raises(ValueError, match="output_range_na"):
        GateFitness(output_range_na=(100.0, -300.0))
    with pytest.raises(ValueError, match="rail_guard"):
        GateFitness(rail_guard=0.6)
