"""Model-free optimisers for control voltages learned on a board itself: a genetic algorithm and SPSA.

Both maximise a fitness measured on the device, need no surrogate and no gradient, and know
nothing of boards: the caller passes ``objective(pop [P, C] volts) -> fitness [P]`` and measures
the whole population (or SPSA's perturbed pair) in one call, so one call is one board sweep.
Every candidate handed to the objective lies inside the box [lo, hi]; a proposal that left the
box is clipped onto it and counted (``SearchResult.clipped``).

genetic_search: the evolution-in-materio GA (defaults after brains-py's): the ``elite`` best of
  each generation survive unchanged (and are measured again, so a lucky noisy reading does not
  keep an elite for ever); the rest are children of parents drawn by stochastic universal
  sampling on a linear ranking (selection pressure 1.5: the best is expected to parent 1.5
  children, the worst 0.5), blended gene by gene (BLX-alpha-beta: uniform on the parents'
  interval widened by alpha of its width on the fitter parent's side and beta on the other),
  then mutated gene by gene with a probability that decays hyperbolically over the generations
  (1/rate linear in the generation, from ``mutation_start`` to ``mutation_end``: brains-py's
  0.625 / (2 + 5 g / (G - 1))); a mutated gene is redrawn from the triangular distribution on
  [lo, hi] whose mode is its old value.

spsa_search: Spall's simultaneous perturbation stochastic approximation, in coordinates scaled
  to the box (u = (x - lo) / (hi - lo)): at step k the iterate u and the pairs u +- c_k Delta
  (Delta a random +-1 vector, c_k = c / (k + 1)^gamma) are measured in one call, the gradient is
  estimated from each pair's difference (divided by the actual, possibly clipped, difference of
  the pair's coordinates; ``averaging`` pairs per step are averaged) and the iterate moves uphill
  by a_k = a / (k + 1 + A)^alpha times it. Without an explicit ``a`` it is calibrated as Spall
  recommends: a few gradient estimates at the start set a so that the first step moves about
  ``first_step`` of each coordinate's range. SPSA is a local method: with ``start_candidates`` it
  starts from the best of that many random candidates, measured in one call.

The best candidate ever measured is kept (on a noisy objective its fitness is an optimistic
reading: measure it again to verify). An exception or Ctrl-C during a search raises
``SearchInterrupted`` carrying the partial ``SearchResult``, with the original as ``__cause__``.

numpy only; no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

Objective = Callable[[np.ndarray], np.ndarray]
Callback = Callable[[dict[str, Any]], None]


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class GAConfig:
    """Genetic algorithm settings; brains-py's defaults where it has them."""

    population: int = 25
    generations: int = 100
    elite: int = 5                      # the best of each generation, kept unchanged
    crossover: float = 1.0              # chance that a child is a blend of its parents (else the fitter's copy)
    blend_alpha: float = 0.6            # BLX widening on the fitter parent's side (fraction of the parents' gap)
    blend_beta: float = 0.4             # ... and on the other side
    selection_pressure: float = 1.5     # linear ranking: expected children of the best (the worst gets 2 - this)
    mutation_start: float = 0.3125      # per-gene mutation probability in the first generation ...
    mutation_end: float = 0.625 / 7     # ... and in the last (hyperbolic decay between them)
    seed: int = 0
    target_fitness: float | None = None  # stop as soon as a candidate reaches it

    def __post_init__(self) -> None:
        _check(_is_int(self.population) and self.population >= 2,
               f"population must be an integer >= 2, got {self.population!r}")
        _check(_is_int(self.generations) and self.generations >= 1,
               f"generations must be an integer >= 1, got {self.generations!r}")
        _check(_is_int(self.elite) and 0 <= self.elite < self.population,
               f"elite must be an integer in 0..population-1 ({self.population - 1}), got {self.elite!r}")
        _check(_finite(self.crossover) and 0.0 <= self.crossover <= 1.0,
               f"crossover must be in [0, 1], got {self.crossover!r}")
        for name in ("blend_alpha", "blend_beta"):
            v = getattr(self, name)
            _check(_finite(v) and v >= 0.0, f"{name} must be >= 0, got {v!r}")
        _check(_finite(self.selection_pressure) and 1.0 <= self.selection_pressure <= 2.0,
               f"selection_pressure must be in [1, 2], got {self.selection_pressure!r}")
        for name in ("mutation_start", "mutation_end"):
            v = getattr(self, name)
            _check(_finite(v) and 0.0 < v <= 1.0, f"{name} must be in (0, 1], got {v!r}")
        _check(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        _check(self.target_fitness is None or _finite(self.target_fitness),
               f"target_fitness must be a finite number or None, got {self.target_fitness!r}")

    def mutation_rate(self, generation: int) -> float:
        """Per-gene mutation probability in `generation` (0-based): 1/rate linear from 1/start to 1/end."""
        t = generation / (self.generations - 1) if self.generations > 1 else 0.0
        return 1.0 / (1.0 / self.mutation_start + t * (1.0 / self.mutation_end - 1.0 / self.mutation_start))


@dataclass(frozen=True)
class SPSAConfig:
    """SPSA settings (Spall's gain sequences); lengths are fractions of each coordinate's range."""

    iterations: int = 200
    a: float | None = None          # step gain; None: calibrated from the first gradient estimates (first_step)
    c: float = 0.1                  # perturbation size at step 0, a fraction of each range (<= 0.5)
    A: float | None = None          # stability constant; None: 10 % of iterations, as Spall advises
    alpha: float = 0.602
    gamma: float = 0.101
    averaging: int = 1              # perturbation pairs per step, averaged (measured in the same call)
    first_step: float = 0.05        # with a=None: the typical size of the first step, a fraction of each range
    calibration: int = 4            # with a=None: gradient estimates at the start used to set a
    max_step: float | None = 0.2    # largest move of one coordinate in one step (fraction of its range); None: no cap
    start_candidates: int = 1       # without x0: start from the best of this many random candidates (measured if > 1)
    seed: int = 0
    target_fitness: float | None = None  # stop as soon as a candidate reaches it

    def __post_init__(self) -> None:
        _check(_is_int(self.iterations) and self.iterations >= 1,
               f"iterations must be an integer >= 1, got {self.iterations!r}")
        _check(self.a is None or (_finite(self.a) and self.a > 0), f"a must be > 0 or None (calibrate), got {self.a!r}")
        _check(_finite(self.c) and 0.0 < self.c <= 0.5,
               f"c must be in (0, 0.5] (a fraction of each range), got {self.c!r}")
        _check(self.A is None or (_finite(self.A) and self.A >= 0), f"A must be >= 0 or None, got {self.A!r}")
        _check(_finite(self.alpha) and 0.0 < self.alpha <= 1.0, f"alpha must be in (0, 1], got {self.alpha!r}")
        _check(_finite(self.gamma) and 0.0 < self.gamma < self.alpha,
               f"gamma must be in (0, alpha={self.alpha}), got {self.gamma!r}")
        _check(_is_int(self.averaging) and self.averaging >= 1,
               f"averaging must be an integer >= 1, got {self.averaging!r}")
        _check(_finite(self.first_step) and 0.0 < self.first_step <= 1.0,
               f"first_step must be in (0, 1], got {self.first_step!r}")
        _check(_is_int(self.calibration) and self.calibration >= 1,
               f"calibration must be an integer >= 1, got {self.calibration!r}")
        _check(self.max_step is None or (_finite(self.max_step) and 0.0 < self.max_step <= 1.0),
               f"max_step must be in (0, 1] or None, got {self.max_step!r}")
        _check(_is_int(self.start_candidates) and self.start_candidates >= 1,
               f"start_candidates must be an integer >= 1, got {self.start_candidates!r}")
        _check(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        _check(self.target_fitness is None or _finite(self.target_fitness),
               f"target_fitness must be a finite number or None, got {self.target_fitness!r}")

    @property
    def stability(self) -> float:
        """A as used: the given value, or 10 % of the iterations."""
        return 0.1 * self.iterations if self.A is None else float(self.A)

    def c_k(self, k: int) -> float:
        """Perturbation size at step k (fraction of each range)."""
        return self.c / (k + 1) ** self.gamma

    def a_k(self, a: float, k: int) -> float:
        """Step gain at step k for the gain a."""
        return a / (k + 1 + self.stability) ** self.alpha


@dataclass
class SearchResult:
    """What a search found: the best candidate measured, and how it got there."""

    method: str                                  # "ga" | "spsa"
    best_x: np.ndarray | None                    # [C] volts; None if nothing was measured
    best_fitness: float                          # -inf if nothing was measured
    history: list[dict[str, Any]] = field(default_factory=list)   # one record per generation / step
    evaluations: int = 0                         # candidates measured
    clipped: int = 0                             # proposals that left the box and were clipped onto it
    stopped_early: bool = False                  # target_fitness reached
    interrupted: bool = False                    # the partial result of a SearchInterrupted
    info: dict[str, Any] = field(default_factory=dict)   # method details (SPSA: the gain a used)

    def to_json(self) -> dict[str, Any]:
        """Plain data for a results file (non-finite numbers as None)."""
        return {"method": self.method,
                "best_x": None if self.best_x is None else [float(v) for v in self.best_x],
                "best_fitness": _num(self.best_fitness), "evaluations": int(self.evaluations),
                "clipped": int(self.clipped), "stopped_early": bool(self.stopped_early),
                "interrupted": bool(self.interrupted), "info": {k: _plain(v) for k, v in self.info.items()},
                "history": [{k: _plain(v) for k, v in h.items()} for h in self.history]}


class SearchInterrupted(Exception):
    """A search stopped by an exception or Ctrl-C; `result` is what it had found so far."""

    def __init__(self, result: SearchResult, message: str = "") -> None:
        self.result = result
        best = "nothing measured" if result.best_x is None else f"best fitness so far {result.best_fitness:.4g}"
        super().__init__(message or f"{result.method} search interrupted after {result.evaluations} evaluations "
                                    f"({best})")


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _plain(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return _num(float(v))
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _box(lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
    lo_a = np.asarray(lo, dtype=np.float64)
    hi_a = np.asarray(hi, dtype=np.float64)
    if lo_a.ndim != 1 or lo_a.shape != hi_a.shape or lo_a.size == 0:
        raise ValueError(f"lo and hi must be 1-D arrays of the same length, got shapes {lo_a.shape} and {hi_a.shape}")
    if not (np.all(np.isfinite(lo_a)) and np.all(np.isfinite(hi_a))):
        raise ValueError("lo and hi must be finite")
    if not np.all(lo_a < hi_a):
        bad = [int(i) for i in np.flatnonzero(lo_a >= hi_a)]
        raise ValueError(f"lo must be below hi in every coordinate; not so at {bad}")
    return lo_a, hi_a


class _Tracker:
    """The running state of a search: evaluations, the best so far, the history."""

    def __init__(self, method: str, objective: Objective, lo: np.ndarray, hi: np.ndarray) -> None:
        self.result = SearchResult(method, None, -math.inf)
        self._objective = objective
        self._lo, self._hi = lo, hi

    def evaluate(self, pop: np.ndarray) -> np.ndarray:
        """Fitness [P] of candidates [P, C] (inside the box by construction; checked here once more)."""
        pop = np.clip(pop, self._lo, self._hi)          # guards against rounding only: callers clip and count
        f = np.asarray(self._objective(pop.copy()), dtype=np.float64)
        if f.shape != (len(pop),):
            raise ValueError(f"objective returned shape {f.shape} for {len(pop)} candidates; expected ({len(pop)},)")
        if np.any(np.isnan(f)):
            raise ValueError("objective returned NaN fitness")
        self.result.evaluations += len(pop)
        i = int(np.argmax(f))
        if f[i] > self.result.best_fitness:
            self.result.best_fitness = float(f[i])
            self.result.best_x = pop[i].copy()
        return f

    def record(self, index: int, f: np.ndarray, callback: Callback | None, **extra: Any) -> dict[str, Any]:
        rec = {"index": index, "best_fitness": self.result.best_fitness, "step_best": float(np.max(f)),
               "mean_fitness": float(np.mean(f)), "evaluations": self.result.evaluations, **extra}
        self.result.history.append(rec)
        if callback is not None:
            callback(rec)
        return rec

    def reached(self, target: float | None) -> bool:
        if target is not None and self.result.best_fitness >= target:
            self.result.stopped_early = True
            return True
        return False

    def interrupted(self, e: BaseException) -> SearchInterrupted:
        self.result.interrupted = True
        return SearchInterrupted(self.result, f"{self.result.method} search interrupted by {type(e).__name__}: {e} "
                                              f"after {self.result.evaluations} evaluations")


def _clip_count(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, int]:
    """x [..., C] clipped into the box, and how many rows needed it."""
    out = np.clip(x, lo, hi)
    return out, int(np.any(out != x, axis=-1).sum())


# ---- genetic algorithm ----------------------------------------------------------------------------

def _rank_probabilities(n: int, pressure: float) -> np.ndarray:
    """Linear ranking: selection probability of rank r (0 = fittest) of n."""
    r = np.arange(n)
    return (pressure - (2.0 * pressure - 2.0) * r / (n - 1)) / n


def _universal_sampling(p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices drawn by stochastic universal sampling (n equally spaced pointers, one random offset)."""
    pointers = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(p), pointers, side="right"), len(p) - 1)


def _blend(fit: np.ndarray, weak: np.ndarray, alpha: float, beta: float, rng: np.random.Generator) -> np.ndarray:
    """BLX-alpha-beta children [n, C] of fitter parents `fit` and `weak` [n, C]."""
    lo_p, hi_p = np.minimum(fit, weak), np.maximum(fit, weak)
    d = hi_p - lo_p
    fit_high = fit >= weak
    lo_c = lo_p - d * np.where(fit_high, beta, alpha)
    hi_c = hi_p + d * np.where(fit_high, alpha, beta)
    return lo_c + rng.random(fit.shape) * (hi_c - lo_c)


def _mutate(x: np.ndarray, rate: float, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each gene with probability `rate` redrawn from triangular(lo, mode = gene, hi)."""
    mask = rng.random(x.shape) < rate
    if not mask.any():
        return x
    lo_b = np.broadcast_to(lo, x.shape)[mask]
    hi_b = np.broadcast_to(hi, x.shape)[mask]
    out = x.copy()
    out[mask] = rng.triangular(lo_b, np.clip(x[mask], lo_b, hi_b), hi_b)
    return out


def genetic_search(objective: Objective, lo: Any, hi: Any, cfg: GAConfig | None = None,
                   on_generation: Callback | None = None, initial: Any = None) -> SearchResult:
    """Maximise `objective` over the box [lo, hi] with a genetic algorithm (module docstring).

    `objective(pop [P, C]) -> [P]` is called once per generation with the whole population.
    `initial` [k, C] (k <= P): candidates the first generation starts from (solutions found
    otherwise, to be refined); clipped into the box and counted; the rest of it is drawn uniformly.
    `on_generation(record)` gets each generation's history record (a callback may add its own
    keys to it, such as device accounting; they stay in the history). Raises SearchInterrupted
    (with the partial result) if the objective, the callback or Ctrl-C stops the search."""
    cfg = GAConfig() if cfg is None else cfg
    lo_a, hi_a = _box(lo, hi)
    rng = np.random.default_rng(cfg.seed)
    t = _Tracker("ga", objective, lo_a, hi_a)
    p_rank = _rank_probabilities(cfg.population, cfg.selection_pressure)
    n_child = cfg.population - cfg.elite
    init = None if initial is None else np.asarray(initial, dtype=np.float64)
    if init is not None and (init.ndim != 2 or init.shape[1] != lo_a.size or not 1 <= len(init) <= cfg.population):
        raise ValueError(f"initial candidates must be [k, {lo_a.size}] with 1 <= k <= {cfg.population}, "
                         f"got shape {init.shape}")
    if init is not None and not np.all(np.isfinite(init)):
        raise ValueError("initial candidates must be finite")
    try:
        pop = lo_a + rng.random((cfg.population, lo_a.size)) * (hi_a - lo_a)
        if init is not None:
            pop[:len(init)], n_clipped = _clip_count(init, lo_a, hi_a)
            t.result.clipped += n_clipped
        for g in range(cfg.generations):
            rate = cfg.mutation_rate(g)
            f = t.evaluate(pop)
            t.record(g, f, on_generation, mutation_rate=rate)
            if t.reached(cfg.target_fitness) or g == cfg.generations - 1:
                break
            ranked = pop[np.argsort(-f, kind="stable")]
            parents = rng.permutation(_universal_sampling(p_rank, 2 * n_child, rng)).reshape(n_child, 2)
            a, b = parents.min(axis=1), parents.max(axis=1)          # a: the fitter (lower rank)
            b = np.where(a == b, (b + 1) % cfg.population, b)        # never a parent with itself
            fitter = np.where((a < b)[:, None], ranked[a], ranked[b])
            weaker = np.where((a < b)[:, None], ranked[b], ranked[a])
            blended = _blend(fitter, weaker, cfg.blend_alpha, cfg.blend_beta, rng)
            children = np.where((rng.random(n_child) < cfg.crossover)[:, None], blended, fitter)
            children = _mutate(children, rate, lo_a, hi_a, rng)
            children, n_clipped = _clip_count(children, lo_a, hi_a)
            t.result.clipped += n_clipped
            pop = np.concatenate([ranked[:cfg.elite], children])
    except (KeyboardInterrupt, Exception) as e:
        raise t.interrupted(e) from e
    return t.result


# ---- SPSA -----------------------------------------------------------------------------------------

def spsa_search(objective: Objective, lo: Any, hi: Any, cfg: SPSAConfig | None = None, x0: Any = None,
                on_step: Callback | None = None) -> SearchResult:
    """Maximise `objective` over the box [lo, hi] with SPSA (module docstring).

    x0 [C] is the start; without it, the best of cfg.start_candidates uniform random candidates
    (one call, when more than one). Each step calls the objective once with 1 + 2 * averaging
    candidates: the iterate and the perturbed pairs; with a=None the calibration adds one call of
    2 * calibration candidates at the start, and the final iterate is measured once more at the
    end. `on_step(record)` as genetic_search's on_generation. Raises SearchInterrupted (with the
    partial result) if the objective, the callback or Ctrl-C stops it."""
    cfg = SPSAConfig() if cfg is None else cfg
    lo_a, hi_a = _box(lo, hi)
    span = hi_a - lo_a
    rng = np.random.default_rng(cfg.seed)
    if x0 is None:
        u0 = rng.random((cfg.start_candidates, lo_a.size))
    else:
        x0_a = np.asarray(x0, dtype=np.float64)
        if x0_a.shape != lo_a.shape or not np.all(np.isfinite(x0_a)):
            raise ValueError(f"x0 must be finite with shape {lo_a.shape}, got {x0_a.shape}")
        if np.any(x0_a < lo_a) or np.any(x0_a > hi_a):
            raise ValueError("x0 must lie inside [lo, hi]")
        if cfg.start_candidates > 1:
            raise ValueError("give either x0 or start_candidates > 1, not both")
        u0 = ((x0_a - lo_a) / span)[None]
    t = _Tracker("spsa", objective, lo_a, hi_a)

    def to_x(uu: np.ndarray) -> np.ndarray:
        return lo_a + uu * span

    def gradient(uu: np.ndarray, ck: float, pairs: int, with_iterate: bool) -> tuple[np.ndarray, np.ndarray]:
        """(gradient estimate [pairs, C] in box units, all the fitness measured)."""
        delta = rng.choice(np.array([-1.0, 1.0]), size=(pairs, uu.size))
        plus, n_p = _clip_count(uu + ck * delta, 0.0, 1.0)
        minus, n_m = _clip_count(uu - ck * delta, 0.0, 1.0)
        t.result.clipped += n_p + n_m
        rows = np.concatenate([uu[None], plus, minus] if with_iterate else [plus, minus])
        f = t.evaluate(to_x(rows))
        fp, fm = f[-2 * pairs:-pairs], f[-pairs:]
        return (fp - fm)[:, None] / (plus - minus), f      # |plus - minus| >= ck > 0 in every coordinate

    try:
        u = u0[int(np.argmax(t.evaluate(to_x(u0))))] if len(u0) > 1 else u0[0]
        a = cfg.a
        if a is None:
            g0, _ = gradient(u, cfg.c_k(0), cfg.calibration, with_iterate=False)
            mag = float(np.mean(np.abs(g0)))
            # Spall: a / (A + 1)^alpha * |g0| = the wanted first step (flat start: as if |g0| were 1)
            a = cfg.first_step * (cfg.stability + 1) ** cfg.alpha / (mag if mag > 0 else 1.0)
            t.result.info["calibration_gradient_mean_abs"] = mag
        t.result.info.update(a=float(a), A=cfg.stability)
        for k in range(cfg.iterations):
            ck, ak = cfg.c_k(k), cfg.a_k(a, k)
            g, f = gradient(u, ck, cfg.averaging, with_iterate=True)
            t.record(k, f, on_step, iterate_fitness=float(f[0]), a_k=ak, c_k=ck)
            if t.reached(cfg.target_fitness):
                break
            step = ak * g.mean(axis=0)
            if cfg.max_step is not None:
                step = np.clip(step, -cfg.max_step, cfg.max_step)
            u, n_clipped = _clip_count(u + step, 0.0, 1.0)
            t.result.clipped += n_clipped
        else:
            t.evaluate(to_x(u[None]))                           # the final iterate
    except (KeyboardInterrupt, Exception) as e:
        raise t.interrupted(e) from e
    return t.result
