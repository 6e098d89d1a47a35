"""Learning a Boolean gate's control voltages on a board itself, with no surrogate: GA or SPSA.

The input pairs (00, 01, 10, 11; in general any n points with a 0/1 truth) sit on the data
electrodes, each candidate's controls on the others (core.electrodes.place_volts); one call of
the optimiser's objective measures every candidate at every point ``repeats`` times in one board
sweep. The caller's ``measure(volts [n, 7]) -> nA [n]`` is the only board access (in the
experiments that is ``BoardSession.measure``, which checks the board's limits and goes to 0 V when
the board fails).

The fitness (``GateFitness``), in nA, maximised:

    the soft worst-case margin between the classes, in the better polarity:
        max( smin(ones_i - zeros_j), smin(zeros_j - ones_i) )  over every pair of a class-1 and a
        class-0 reading (all repeats), with smin(d) = -tau log sum exp(-d / tau)

A gate may be realised either way round (low current = 1 is as good: the experiments' logistic
decision re-fits the polarity), hence the max over the two. The soft minimum lies at most
tau log(pairs) below the hard worst-case margin min(ones) - max(zeros) and tends to it as tau -> 0;
unlike it, every pair of readings contributes, so a candidate that moves all the readings the right
way scores better even while the worst pair still overlaps. That is the useful signal before
anything separates which brains-py's "corrsig" gets from a correlation times a sigmoid of the
separation; here it comes from the margin itself, in nA, so the number keeps rewarding a wider
margin once the gate works (a correlation saturates at 1). Measured on the simulated chips seeds
0..3 (XOR on e1, e2, a dozen optimiser seeds each): with tau = 10 nA (about 7x the simulated
board's 1.4 nA noise; scale it with a chip's own noise floor) SPSA failed least often, against
tau = 5 nA, the hard margin (tau = 0) and the hard margin + 10 nA x |correlation|; the GA found
XOR every time with each of them. Readings within ``rail_guard`` of an amplifier rail
(``output_range_na``, when known: from a surrogate file or a survey of the chip) are clamped to
the guard's edge first, so separation gained by saturating the amplifier does not count.

The best controls are measured again (``verify_repeats`` times every point): the hard worst-case
margin over those repeats, the noise (rms over the points of each point's standard deviation over
the repeats) and their ratio are the gate's figures; the report also counts the device's work
(points measured, seconds inside ``measure``, seconds on the host).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from core.electrodes import N_ELECTRODES, check_electrodes, control_electrodes, place_volts
from host.networks.model_free import (GAConfig, SearchInterrupted, SearchResult, SPSAConfig, genetic_search,
                                      spsa_search)

Measure = Callable[[np.ndarray], np.ndarray]
METHODS = ("ga", "spsa")
#: budgets that found XOR on every simulated chip tried (seeds 0..3, e1/e2, a dozen optimiser seeds each):
#: about 12,000 and 10,000 board points. From a random start SPSA climbs but then stalls on this
#: rugged landscape in about a fifth of the runs, so it starts from the best of 300 random
#: candidates (2,400 points); restarts from the next best of them did not help.
DEFAULT_GA = GAConfig(population=25, generations=60)
DEFAULT_SPSA = SPSAConfig(iterations=300, c=0.1, start_candidates=300)


@dataclass(frozen=True)
class GateFitness:
    """The soft worst-case class margin in nA (module docstring)."""

    softness_na: float = 10.0                             # tau; 0: the hard worst-case margin
    output_range_na: tuple[float, float] | None = None    # the amplifier's rails, if known
    rail_guard: float = 0.03                              # fraction of that range counted as saturated

    def __post_init__(self) -> None:
        if not (math.isfinite(self.softness_na) and self.softness_na >= 0):
            raise ValueError(f"softness_na must be >= 0, got {self.softness_na!r}")
        if self.output_range_na is not None:
            r = tuple(float(v) for v in self.output_range_na)
            if len(r) != 2 or not all(math.isfinite(v) for v in r) or not r[0] < r[1]:
                raise ValueError(f"output_range_na must be (low, high) with low < high, got {self.output_range_na!r}")
        if not (math.isfinite(self.rail_guard) and 0 <= self.rail_guard < 0.5):
            raise ValueError(f"rail_guard must be in [0, 0.5), got {self.rail_guard!r}")

    def clamp(self, currents: np.ndarray) -> np.ndarray:
        if self.output_range_na is None:
            return currents
        lo, hi = self.output_range_na
        pad = self.rail_guard * (hi - lo)
        return np.clip(currents, lo + pad, hi - pad)

    def near_rail(self, currents: np.ndarray) -> np.ndarray:
        """Which readings lie inside the rail guard (all False when the range is unknown)."""
        c = np.asarray(currents, dtype=np.float64)
        return c != self.clamp(c)

    def __call__(self, currents: np.ndarray, truth: Sequence[int]) -> np.ndarray:
        """Fitness [P] of currents [P, R, n] (P candidates, R repeats, n points) for `truth` [n]."""
        c = self.clamp(np.asarray(currents, dtype=np.float64))
        t = np.asarray(truth) == 1
        p = len(c)
        ones, zeros = c[..., t].reshape(p, -1), c[..., ~t].reshape(p, -1)
        d = (ones[:, :, None] - zeros[:, None, :]).reshape(p, -1)
        return np.maximum(_soft_min(d, self.softness_na), _soft_min(-d, self.softness_na))


def _soft_min(d: np.ndarray, tau: float) -> np.ndarray:
    m = d.min(axis=1)
    if tau == 0:
        return m
    return m - tau * np.log(np.exp(-(d - m[:, None]) / tau).sum(axis=1))


def worst_margin(currents: np.ndarray, truth: Sequence[int]) -> float:
    """The hard worst-case margin of currents [R, n] in the better polarity (nA; < 0: overlap)."""
    c = np.asarray(currents, dtype=np.float64)
    t = np.asarray(truth) == 1
    ones, zeros = c[:, t], c[:, ~t]
    return float(max(ones.min() - zeros.max(), zeros.min() - ones.max()))


class GateSearchInterrupted(SearchInterrupted):
    """The board (or Ctrl-C) stopped a gate search; `report` is optimise_gate_on_board's report so far
    (best controls found, accounting, the error; no verification) and `result` the search's."""

    def __init__(self, result: SearchResult, report: dict[str, Any], message: str) -> None:
        super().__init__(result, message)
        self.report = report


@dataclass
class _Meter:
    """The caller's measure, counted and timed."""

    measure: Measure
    points: int = 0
    seconds: float = 0.0

    def __call__(self, volts: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(volts, dtype=np.float64).reshape(-1, N_ELECTRODES)
        t0 = time.perf_counter()
        try:
            out = np.asarray(self.measure(v), dtype=np.float64)
        finally:
            self.seconds += time.perf_counter() - t0
        if out.shape != (len(v),):
            raise ValueError(f"measure returned shape {out.shape} for {len(v)} points; expected ({len(v)},)")
        self.points += len(v)
        return out


def _check_task(points_v: Any, truth: Sequence[int], data_electrodes: Sequence[int], control_lo: Any,
                control_hi: Any, method: str, repeats: int, verify_repeats: int
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], np.ndarray, np.ndarray]:
    de = check_electrodes(data_electrodes, "data_electrodes")
    pts = np.asarray(points_v, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != len(de) or len(pts) < 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"points_v must be finite [n >= 2, {len(de)}] (one column per data electrode), "
                         f"got {pts.shape}")
    t = np.asarray(truth)
    if t.shape != (len(pts),) or not np.all((t == 0) | (t == 1)) or t.min() == t.max():
        raise ValueError(f"truth must be {len(pts)} values of 0/1 with both classes present, "
                         f"got {list(np.ravel(truth))}")
    n_ctrl = N_ELECTRODES - len(de)
    lo, hi = np.asarray(control_lo, dtype=np.float64), np.asarray(control_hi, dtype=np.float64)
    if lo.shape != (n_ctrl,) or hi.shape != (n_ctrl,):
        raise ValueError(f"control_lo and control_hi must have {n_ctrl} values (electrodes "
                         f"{list(control_electrodes(de))}), got shapes {lo.shape} and {hi.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if not (isinstance(repeats, (int, np.integer)) and not isinstance(repeats, bool) and repeats >= 1):
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not (isinstance(verify_repeats, (int, np.integer)) and not isinstance(verify_repeats, bool)
            and verify_repeats >= 2):
        raise ValueError(f"verify_repeats must be an integer >= 2 (the noise is a spread), got {verify_repeats!r}")
    return pts, t.astype(int), de, lo, hi


def verify_gate(measure: Measure, points_v: np.ndarray, truth: Sequence[int], data_electrodes: Sequence[int],
                controls: np.ndarray, repeats: int = 20, fitness: GateFitness | None = None) -> dict[str, Any]:
    """Measure `controls` at every point `repeats` times: worst margin, noise, their ratio, polarity."""
    fitness = GateFitness() if fitness is None else fitness
    pts = np.asarray(points_v, dtype=np.float64)
    v = np.broadcast_to(place_volts(pts, np.asarray(controls, dtype=np.float64)[None], data_electrodes),
                        (repeats,) + pts.shape[:1] + (N_ELECTRODES,))
    cur = np.asarray(measure(v.reshape(-1, N_ELECTRODES)), dtype=np.float64).reshape(repeats, len(pts))
    t = np.asarray(truth) == 1
    std = cur.std(axis=0, ddof=1)
    noise = float(np.sqrt(np.mean(std ** 2)))
    margin = worst_margin(cur, truth)
    high = bool(cur[:, t].mean() > cur[:, ~t].mean())
    ones, zeros = cur[:, t], cur[:, ~t]
    threshold = (ones.min() + zeros.max()) / 2 if high else (zeros.min() + ones.max()) / 2
    quiet = [int(i) for i in np.flatnonzero(std < 0.25 * std.max())] if std.max() > 0 else list(range(len(pts)))
    return {"repeats": repeats, "currents_mean_na": cur.mean(axis=0).tolist(), "currents_std_na": std.tolist(),
            "worst_margin_na": margin, "noise_rms_na": noise,
            "margin_over_noise": margin / noise if noise > 0 else None,      # None: no spread at all
            "class_1_current": "high" if high else "low", "threshold_na": float(threshold),
            "separated": bool(margin > 0), "fitness": float(fitness(cur[None], truth)[0]),
            # a reading held at an amplifier rail barely varies: such points make the noise look smaller
            "quiet_points": quiet, "near_rail_points": [int(i) for i in np.flatnonzero(
                fitness.near_rail(cur.mean(axis=0)))]}


def optimise_gate_on_board(measure: Measure, points_v: Any, truth: Sequence[int], data_electrodes: Sequence[int],
                           control_lo: Any, control_hi: Any, method: str = "ga",
                           cfg: GAConfig | SPSAConfig | None = None, repeats: int = 2, verify_repeats: int = 20,
                           fitness: GateFitness | None = None,
                           on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Learn the control voltages of one gate on the board with GA or SPSA, then verify them.

    points_v [n, D] volts on `data_electrodes` (the gate's four input pairs), truth [n] of 0/1,
    control_lo/hi [7 - D] volts: the box the controls stay in (the board's limits for them, or
    less). `cfg` is the method's config (DEFAULT_GA / DEFAULT_SPSA when None); `repeats` readings
    of every point per candidate go into its fitness. `on_step(record)` sees each generation's or
    step's history record, device accounting included.

    Returns a report (plain data): best control voltages and their fitness, the verification
    (verify_gate), the device's accounting and the history. A failure of `measure` (a board that
    drops) or Ctrl-C raises GateSearchInterrupted, whose `report` holds the best found so far."""
    wall0 = time.perf_counter()
    pts, t, de, lo, hi = _check_task(points_v, truth, data_electrodes, control_lo, control_hi, method, repeats,
                                     verify_repeats)
    if cfg is None:
        cfg = DEFAULT_GA if method == "ga" else DEFAULT_SPSA
    want = GAConfig if method == "ga" else SPSAConfig
    if not isinstance(cfg, want):
        raise ValueError(f"method {method!r} needs a {want.__name__}, got {type(cfg).__name__}")
    fitness = GateFitness() if fitness is None else fitness
    meter = _Meter(measure)
    truth_list = [int(v) for v in t]

    def objective(pop: np.ndarray) -> np.ndarray:
        v = place_volts(pts[None, None], pop[:, None, None, :], de)          # [P, 1, n, 7]
        v = np.broadcast_to(v, (len(pop), repeats) + v.shape[2:])
        return fitness(meter(v).reshape(len(pop), repeats, len(pts)), truth_list)

    def step(rec: dict[str, Any]) -> None:
        rec["board_points"] = meter.points
        rec["board_s"] = meter.seconds
        if on_step is not None:
            on_step(rec)

    report: dict[str, Any] = {
        "method": method, "config": _config_json(cfg), "fitness_definition": _config_json(fitness),
        "truth_table": truth_list, "points_v": pts.tolist(), "data_electrodes": list(de),
        "control_electrodes": list(control_electrodes(de)), "control_lo_v": lo.tolist(), "control_hi_v": hi.tolist(),
        "repeats": repeats}
    try:
        if isinstance(cfg, GAConfig):
            result = genetic_search(objective, lo, hi, cfg, on_generation=step)
        else:
            result = spsa_search(objective, lo, hi, cfg, on_step=step)
    except SearchInterrupted as e:
        raise _stopped(report, e.result, e.__cause__ or e, meter, wall0, "gate search") from e.__cause__
    best = result.best_x
    if best is None:                     # a finished search has measured at least one candidate
        raise RuntimeError("search finished without a measured candidate")
    search_points = meter.points
    try:
        report["verification"] = verify_gate(meter, pts, truth_list, de, best, verify_repeats, fitness)
    except (KeyboardInterrupt, Exception) as e:
        raise _stopped(report, result, e, meter, wall0, "verification") from e
    _fill(report, result, meter, wall0)
    report["accounting"]["search_points"] = search_points
    return report


def _stopped(report: dict[str, Any], result: SearchResult, cause: BaseException, meter: _Meter, wall0: float,
             during: str) -> GateSearchInterrupted:
    """The report so far (no verification) in the exception that says what stopped the run."""
    _fill(report, result, meter, wall0)
    report["error"] = f"{during}: {type(cause).__name__}: {cause}"
    report["verification"] = None
    return GateSearchInterrupted(result, report, f"{report['method']} {during} stopped by {type(cause).__name__}: "
                                 f"{cause}; best fitness so far {result.best_fitness:.4g} nA after "
                                 f"{meter.points} board points")


def _fill(report: dict[str, Any], result: SearchResult, meter: _Meter, wall0: float) -> None:
    """The search's outcome and the device accounting, into `report`."""
    search = result.to_json()
    report["history"] = search.pop("history")
    report["search"] = search
    report["control_voltages"] = search["best_x"]
    report["fitness"] = search["best_fitness"]
    wall = time.perf_counter() - wall0
    report["accounting"] = {"board_points": meter.points, "board_s": meter.seconds,
                            "host_s": max(0.0, wall - meter.seconds), "wall_s": wall,
                            "search_evaluations": result.evaluations}


def _config_json(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
