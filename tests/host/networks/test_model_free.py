"""The model-free optimisers (GA, SPSA) on analytic objectives in a box."""
from __future__ import annotations

import json

import numpy as np
import pytest

from host.networks.model_free import GAConfig, SearchInterrupted, SPSAConfig, genetic_search, spsa_search

LO = np.array([-1.2, -1.2, -1.2, -0.7, -0.7])
HI = np.array([0.6, 0.6, 0.6, 0.3, 0.3])
#: the optimum, with one coordinate on the box's edge (so proposals past it have to be clipped)
OPT = np.array([0.3, -0.5, 0.1, 0.3, -0.4])


class Recorder:
    """An objective that records every candidate it is asked about, and can fail after some calls."""

    def __init__(self, f, noise: float = 0.0, fail_after: int | None = None,
                 error: BaseException | None = None) -> None:
        self.f, self.noise, self.fail_after, self.error = f, noise, fail_after, error
        self.rng = np.random.default_rng(123)
        self.seen: list[np.ndarray] = []
        self.fitness: list[np.ndarray] = []

    def __call__(self, pop: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise self.error or ConnectionError("board vanished (test)")
        self.seen.append(pop.copy())
        out = self.f(pop) + self.rng.normal(0.0, self.noise, len(pop)) if self.noise else self.f(pop)
        self.fitness.append(out)
        return out

    def all_seen(self) -> np.ndarray:
        return np.concatenate(self.seen)


def quadratic(pop: np.ndarray) -> np.ndarray:
    """-100 x the squared distance to OPT in box units: 0 at the optimum, about -100 across the box."""
    return -100.0 * np.sum(((pop - OPT) / (HI - LO)) ** 2, axis=1)


def rippled(pop: np.ndarray) -> np.ndarray:
    """A bowl with ripples (Rastrigin-like): a local maximum every quarter of each range, the
    global one (5.0) at OPT."""
    d = (pop - OPT) / (HI - LO)
    return -np.sum(10 * d ** 2 - np.cos(2 * np.pi * RIPPLES * d), axis=1)


RIPPLES = 4.0


def peak(pop: np.ndarray) -> np.ndarray:
    """One smooth peak (1.0) at OPT, 0.15 of each range wide."""
    return np.exp(-np.sum(((pop - OPT) / (HI - LO)) ** 2, axis=1) / (2 * 0.15 ** 2))


def assert_inside(pts: np.ndarray) -> None:
    assert np.all(pts >= LO) and np.all(pts <= HI), (pts.min(axis=0), pts.max(axis=0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ga_finds_a_noisy_quadratics_optimum_and_never_leaves_the_box(seed):
    obj = Recorder(quadratic, noise=0.1)
    r = genetic_search(obj, LO, HI, GAConfig(generations=60, seed=seed))
    assert_inside(obj.all_seen())
    assert np.abs(r.best_x - OPT).max() < 0.1          # volts, in ranges of 1.0 and 1.8 V
    assert r.evaluations == len(obj.all_seen()) == 60 * 25
    assert r.clipped > 0                                # the edge optimum pulls children past it
    assert len(r.history) == 60 and r.history[-1]["evaluations"] == r.evaluations
    assert r.history[-1]["best_fitness"] == r.best_fitness
    assert not r.stopped_early and not r.interrupted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spsa_finds_a_noisy_quadratics_optimum_and_never_leaves_the_box(seed):
    obj = Recorder(quadratic, noise=0.1)
    r = spsa_search(obj, LO, HI, SPSAConfig(iterations=400, seed=seed))
    assert_inside(obj.all_seen())
    assert np.abs(r.best_x - OPT).max() < 0.1
    # calibration (2 x 4) + 400 steps of (iterate + pair) + the final iterate
    assert r.evaluations == len(obj.all_seen()) == 8 + 400 * 3 + 1
    assert r.clipped > 0
    assert r.info["a"] > 0 and r.info["A"] == 40


def test_ga_finds_the_global_maximum_among_many_local_ones():
    for seed in range(4):
        obj = Recorder(rippled)
        r = genetic_search(obj, LO, HI, GAConfig(generations=80, seed=seed))
        ripples_off = np.abs((r.best_x - OPT) / (HI - LO)).max() * RIPPLES
        assert ripples_off < 0.25, seed                # inside the global maximum's half-ripple basin
        assert_inside(obj.all_seen())


def test_spsa_climbs_a_peak_from_its_flank():
    x0 = np.clip(OPT + 0.3 * (HI - LO) * np.array([1, -1, 1, -1, 1]) / np.sqrt(5), LO, HI)
    obj = Recorder(peak, noise=0.005)
    r = spsa_search(obj, LO, HI, SPSAConfig(iterations=300, seed=0), x0=x0)
    assert peak(x0[None])[0] < 0.2 and r.best_fitness > 0.7
    assert_inside(obj.all_seen())


def test_spsa_starts_from_the_best_of_its_start_candidates():
    obj = Recorder(quadratic)
    r = spsa_search(obj, LO, HI, SPSAConfig(iterations=5, start_candidates=50, seed=3))
    first = obj.seen[0]
    assert len(first) == 50
    best_start = first[np.argmax(quadratic(first))]
    calib = obj.seen[1]                                 # the calibration pairs sit around the chosen start
    np.testing.assert_allclose(calib.mean(axis=0), best_start, atol=0.2 * (HI - LO).max())
    assert r.best_fitness >= quadratic(best_start[None])[0]


def test_the_same_seed_gives_the_same_search():
    a = genetic_search(Recorder(quadratic, noise=0.1), LO, HI, GAConfig(generations=10, seed=5))
    b = genetic_search(Recorder(quadratic, noise=0.1), LO, HI, GAConfig(generations=10, seed=5))
    np.testing.assert_array_equal(a.best_x, b.best_x)
    c = spsa_search(Recorder(quadratic), LO, HI, SPSAConfig(iterations=20, seed=5))
    d = spsa_search(Recorder(quadratic), LO, HI, SPSAConfig(iterations=20, seed=5))
    np.testing.assert_array_equal(c.best_x, d.best_x)


def test_a_target_fitness_stops_the_search_early():
    r = genetic_search(Recorder(quadratic), LO, HI, GAConfig(generations=200, seed=0, target_fitness=-5.0))
    assert r.stopped_early and r.best_fitness >= -5.0 and len(r.history) < 200
    s = spsa_search(Recorder(quadratic), LO, HI, SPSAConfig(iterations=500, seed=0, target_fitness=-5.0))
    assert s.stopped_early and s.best_fitness >= -5.0 and len(s.history) < 500


@pytest.mark.parametrize("search", ["ga", "spsa"])
@pytest.mark.parametrize("error", [ConnectionError("board vanished (test)"), KeyboardInterrupt()])
def test_a_failing_objective_or_ctrl_c_keeps_the_best_so_far(search, error):
    obj = Recorder(quadratic, noise=0.1, fail_after=6, error=error)
    with pytest.raises(SearchInterrupted) as ei:
        if search == "ga":
            genetic_search(obj, LO, HI, GAConfig(generations=50, seed=0))
        else:
            spsa_search(obj, LO, HI, SPSAConfig(iterations=50, seed=0))
    r = ei.value.result
    assert ei.value.__cause__ is error
    assert r.interrupted and r.evaluations == len(obj.all_seen())
    seen, fit = obj.all_seen(), np.concatenate(obj.fitness)
    assert r.best_fitness == fit.max()
    np.testing.assert_array_equal(r.best_x, seen[np.argmax(fit)])
    json.dumps(r.to_json())                              # the partial result can be written


def test_system_exit_is_not_turned_into_an_interruption():
    def leave(pop):
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        genetic_search(leave, LO, HI, GAConfig(generations=2))


def test_an_objective_returning_the_wrong_shape_is_named():
    with pytest.raises(SearchInterrupted, match="shape") as ei:
        genetic_search(lambda p: np.zeros(3), LO, HI, GAConfig(generations=2))
    assert isinstance(ei.value.__cause__, ValueError)


def test_results_are_plain_json():
    r = spsa_search(Recorder(quadratic), LO, HI, SPSAConfig(iterations=5))
    d = json.loads(json.dumps(r.to_json()))
    assert d["method"] == "spsa" and len(d["best_x"]) == 5 and len(d["history"]) == 5
    assert set(d["history"][0]) >= {"index", "best_fitness", "mean_fitness", "evaluations"}


def test_the_mutation_rate_decays_from_start_to_end():
    cfg = GAConfig(generations=11, mutation_start=0.3, mutation_end=0.05)
    rates = [cfg.mutation_rate(g) for g in range(11)]
    assert rates[0] == pytest.approx(0.3) and rates[-1] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("make, field", [
    (lambda: GAConfig(population=1), "population"),
    (lambda: GAConfig(elite=25), "elite"),
    (lambda: GAConfig(generations=0), "generations"),
    (lambda: GAConfig(crossover=1.5), "crossover"),
    (lambda: GAConfig(mutation_start=0.0), "mutation_start"),
    (lambda: GAConfig(selection_pressure=3.0), "selection_pressure"),
    (lambda: GAConfig(target_fitness=float("nan")), "target_fitness"),
    (lambda: SPSAConfig(iterations=0), "iterations"),
    (lambda: SPSAConfig(c=0.8), "c"),
    (lambda: SPSAConfig(a=-1.0), "a"),
    (lambda: SPSAConfig(gamma=0.7), "gamma"),
    (lambda: SPSAConfig(averaging=0), "averaging"),
    (lambda: SPSAConfig(start_candidates=0), "start_candidates"),
    (lambda: SPSAConfig(max_step=0.0), "max_step"),
])
def test_bad_configs_are_refused_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_bad_boxes_and_starts_are_refused():
    with pytest.raises(ValueError, match="below hi"):
        genetic_search(quadratic, HI, LO)
    with pytest.raises(ValueError, match="same length"):
        spsa_search(quadratic, LO, HI[:3])
    with pytest.raises(ValueError, match="inside"):
        spsa_search(quadratic, LO, HI, x0=HI + 0.1)


def test_the_ga_starts_from_the_candidates_it_is_given():
    """A seeded first generation: the given rows (clipped into the box, counted) are measured first,
    and a start at the optimum is never lost (the elite keeps it)."""
    rec = Recorder(quadratic)
    start = np.stack([OPT, HI + 0.5])
    res = genetic_search(rec, LO, HI, GAConfig(population=10, generations=3, seed=0), initial=start)
    first = rec.seen[0]
    np.testing.assert_allclose(first[0], OPT)
    np.testing.assert_allclose(first[1], HI)           # clipped onto the box
    assert res.clipped >= 1 and res.best_fitness == pytest.approx(0.0, abs=1e-12)
    assert_inside(rec.all_seen())
    with pytest.raises(ValueError, match="initial"):
        genetic_search(quadratic, LO, HI, GAConfig(population=4, generations=2, elite=1), initial=np.zeros((5, 5)))
    with pytest.raises(ValueError, match="initial"):
        genetic_search(quadratic, LO, HI, GAConfig(population=4, generations=2, elite=1), initial=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        genetic_search(quadratic, LO, HI, GAConfig(population=4, generations=2, elite=1), initial=np.full((1, 5), np.nan))
