"""Sampling plans (host.sample.plans): coverage, reproducibility in pieces, settings, ranges vs limits."""
from __future__ import annotations

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from host.sample.plans import Plan, PlanConfig, ranges_within_limits, reference_points


@pytest.mark.parametrize("strategy,extra", [("uniform", {}), ("sine", {}), ("sawtooth", {}),
                                            ("grid", {"grid_points": 3, "n": 3 ** N_ELECTRODES})])
def test_plans_stay_in_ranges_and_are_reproducible_in_pieces(strategy, extra, test_ranges):
    cfg = PlanConfig(**{"strategy": strategy, "n": 5000, "seed": 3, "ranges_v": test_ranges, **extra})
    plan = Plan(cfg)
    whole = plan.rows(0, len(plan))
    assert whole.shape == (len(plan), N_ELECTRODES)
    pieces = np.concatenate([plan.rows(a, min(a + 777, len(plan))) for a in range(0, len(plan), 777)])
    np.testing.assert_array_equal(whole, pieces)
    r = np.asarray(test_ranges)
    assert np.all(whole >= r[:, 0]) and np.all(whole <= r[:, 1])
    # every electrode explores most of its own range
    span = (whole.max(0) - whole.min(0)) / (r[:, 1] - r[:, 0])
    assert np.all(span > 0.9)


def test_uniform_plans_differ_by_seed(test_ranges):
    a = Plan(PlanConfig(n=100, seed=0, ranges_v=test_ranges)).rows(0, 100)
    b = Plan(PlanConfig(n=100, seed=1, ranges_v=test_ranges)).rows(0, 100)
    assert not np.allclose(a, b)


def test_plan_settings_round_trip_through_json(test_ranges):
    cfg = PlanConfig(strategy="sine", n=1234, seed=7, ranges_v=test_ranges, wave_period=500.0)
    d = cfg.to_json()
    assert list(d) == ["strategy", "n", "seed", "ranges_v", "wave_period", "grid_points"]
    assert PlanConfig.from_json(d) == cfg


def test_reference_points_start_at_the_centre_and_stay_inside(test_ranges):
    r = np.asarray(test_ranges)
    refs = reference_points(r, 4, seed=0)
    np.testing.assert_allclose(refs[0], r.mean(axis=1))
    assert np.all(refs > r[:, 0]) and np.all(refs < r[:, 1])
    assert len({tuple(x) for x in refs}) == 4


@pytest.mark.parametrize("kwargs,msg", [
    ({"strategy": "spiral"}, "strategy"),
    ({"n": 0}, "n must be positive"),
    ({"ranges_v": ((0.5, -0.5),) * N_ELECTRODES}, "lo < hi"),
    ({"ranges_v": ((-0.5, 0.5),) * (N_ELECTRODES - 1)}, f"{N_ELECTRODES} finite"),
    ({"strategy": "grid", "grid_points": 3, "n": 10}, "grid"),
])
def test_bad_plan_settings_are_refused(kwargs, msg, test_ranges):
    with pytest.raises(ValueError, match=msg):
        PlanConfig(**{"ranges_v": test_ranges, **kwargs})


def test_a_plan_states_its_ranges():
    with pytest.raises(TypeError, match="ranges_v"):
        PlanConfig(n=10)  # type: ignore[call-arg]


def test_ranges_default_to_the_limits_and_an_override_must_lie_within_them(test_ranges):
    assert ranges_within_limits(np.asarray(test_ranges)) == test_ranges
    inner = tuple((lo / 2, hi / 2) for lo, hi in test_ranges)
    assert ranges_within_limits(test_ranges, inner) == inner
    assert ranges_within_limits(test_ranges, test_ranges) == test_ranges  # the limits themselves are fine
    wide = list(inner)
    wide[5] = (-0.5, 0.35)  # e5's limit is 0.3 V
    with pytest.raises(ValueError, match=r"e5 \[-0.5, 0.35\] V is outside the board's limits \[-0.7, 0.3\]"):
        ranges_within_limits(test_ranges, wide)
    with pytest.raises(ValueError, match=f"{N_ELECTRODES} \\[lo, hi\\] pairs"):
        ranges_within_limits(test_ranges, inner[:3])
