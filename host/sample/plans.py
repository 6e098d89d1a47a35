"""Sampling plans: which electrode voltages to measure, in which order.

A plan is a pure function of its settings: `plan.rows(i0, i1)` returns samples i0..i1-1 without
materialising the whole plan, so a run of ten million points needs no memory for the plan and a
resumed run regenerates exactly the samples it has not measured yet.

Strategies
- ``uniform``: independent uniform draws within the electrode ranges (the best coverage per sample).
- ``sine``: each electrode follows a sine wave; frequencies are f0 * sqrt(p) for the first
  N_ELECTRODES primes p, so they are incommensurate and the trajectory never repeats (the field's habit:
  smooth waveforms are gentle on the device and let the board settle between samples).
- ``sawtooth``: the same with triangle waves (uniform density along each axis).
- ``grid``: the full grid with k points per electrode (k**N_ELECTRODES samples, lexicographic order).

The electrode ranges are not declared here: they come from the board (its electrode limits, see
`ranges_within_limits`) and every plan states them explicitly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.electrodes import ELECTRODE_NAMES, N_ELECTRODES

Ranges = tuple[tuple[float, float], ...]
STRATEGIES = ("uniform", "sine", "sawtooth", "grid")
_PRIMES = np.array([2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31][:N_ELECTRODES], dtype=np.float64)
_UNIFORM_BLOCK = 4096  # uniform draws come from one RNG stream per block of this many samples


@dataclass(frozen=True)
class PlanConfig:
    """Everything that defines a plan; stored in the dataset metadata and checked on resume."""

    strategy: str = "uniform"
    n: int = 100_000
    seed: int = 0
    #: electrode ranges (V), one (lo, hi) pair per electrode: the board's limits or a part of them
    ranges_v: Ranges = field(kw_only=True)
    #: sine/sawtooth: period of the slowest wave, in samples
    wave_period: float = 2000.0
    #: grid: points per electrode (n must equal grid_points ** N_ELECTRODES)
    grid_points: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        r = np.asarray(self.ranges_v, dtype=np.float64)
        if r.shape != (N_ELECTRODES, 2) or not np.all(np.isfinite(r)) or np.any(r[:, 0] >= r[:, 1]):
            raise ValueError(f"ranges_v must be {N_ELECTRODES} finite (lo, hi) pairs with lo < hi, "
                             f"got {self.ranges_v!r}")
        if self.n <= 0:
            raise ValueError(f"n must be positive, got {self.n}")
        if self.strategy == "grid":
            if self.grid_points < 2:
                raise ValueError("grid needs grid_points >= 2")
            if self.n != self.grid_points ** N_ELECTRODES:
                raise ValueError(f"grid with {self.grid_points} points per electrode has "
                                 f"{self.grid_points ** N_ELECTRODES} samples, but n = {self.n}")
        if self.strategy in ("sine", "sawtooth") and not self.wave_period > 2:
            raise ValueError(f"wave_period must be > 2 samples, got {self.wave_period}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ranges_v"] = [list(p) for p in self.ranges_v]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PlanConfig":
        d = dict(d)
        d["ranges_v"] = tuple(tuple(float(x) for x in p) for p in d["ranges_v"])
        return cls(**d)


@dataclass(frozen=True)
class Plan:
    config: PlanConfig
    _ranges: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ranges", np.asarray(self.config.ranges_v, dtype=np.float64))

    def __len__(self) -> int:
        return self.config.n

    def rows(self, i0: int, i1: int) -> np.ndarray:
        """Samples i0..i1-1 of the plan, float64 [i1 - i0, N_ELECTRODES] volts."""
        if not 0 <= i0 <= i1 <= self.config.n:
            raise IndexError(f"rows({i0}, {i1}) outside the plan of {self.config.n} samples")
        lo, hi = self._ranges[:, 0], self._ranges[:, 1]
        s = self.config.strategy
        if s == "uniform":
            u = self._uniform(i0, i1)
        elif s in ("sine", "sawtooth"):
            i = np.arange(i0, i1, dtype=np.float64)[:, None]
            freq = np.sqrt(_PRIMES / _PRIMES[0]) / self.config.wave_period  # cycles per sample
            phase = np.random.default_rng([self.config.seed, 1]).uniform(0, 1, N_ELECTRODES)
            cyc = i * freq + phase
            if s == "sine":
                u = 0.5 + 0.5 * np.sin(2 * np.pi * cyc)
            else:
                u = 1.0 - np.abs(2.0 * (cyc - np.floor(cyc)) - 1.0)
        else:
            k = self.config.grid_points
            idx = np.unravel_index(np.arange(i0, i1), (k,) * N_ELECTRODES)
            u = np.stack(idx, axis=1).astype(np.float64) / (k - 1)
        return np.clip(lo + u * (hi - lo), lo, hi)

    def _uniform(self, i0: int, i1: int) -> np.ndarray:
        out = np.empty((i1 - i0, N_ELECTRODES))
        b0 = i0 // _UNIFORM_BLOCK
        b1 = (i1 + _UNIFORM_BLOCK - 1) // _UNIFORM_BLOCK
        for b in range(b0, b1):
            block = np.random.default_rng([self.config.seed, 0, b]).uniform(size=(_UNIFORM_BLOCK, N_ELECTRODES))
            s0, s1 = b * _UNIFORM_BLOCK, (b + 1) * _UNIFORM_BLOCK
            a, z = max(s0, i0), min(s1, i1)
            out[a - i0:z - i0] = block[a - s0:z - s0]
        return out


def reference_points(ranges_v: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k fixed reference configurations inside the ranges (the first at the ranges' centre)."""
    r = np.asarray(ranges_v, dtype=np.float64)
    rng = np.random.default_rng([seed, 2])
    u = rng.uniform(0.1, 0.9, size=(k, N_ELECTRODES))
    u[0] = 0.5
    return r[:, 0] + u * (r[:, 1] - r[:, 0])


def ranges_within_limits(limits_v: np.ndarray | Ranges, ranges_v: np.ndarray | Ranges | None = None) -> Ranges:
    """The sampling ranges on a board with electrode limits `limits_v` [N_ELECTRODES, 2] (V).

    Without `ranges_v` these are the limits themselves; `ranges_v` (an override) must lie within
    them (the board refuses any voltage outside), or ValueError names the first electrode that does not."""
    lim = np.asarray(limits_v, dtype=np.float64)
    if lim.shape != (N_ELECTRODES, 2):
        raise ValueError(f"the board's electrode limits must be {N_ELECTRODES} (lo, hi) pairs, got shape {lim.shape}")
    if ranges_v is None:
        return _as_ranges(lim)
    r = np.asarray(ranges_v, dtype=np.float64)
    if r.shape != (N_ELECTRODES, 2):
        raise ValueError(f"ranges must be {N_ELECTRODES} [lo, hi] pairs, got shape {r.shape}")
    outside = (r[:, 0] < lim[:, 0]) | (r[:, 1] > lim[:, 1])
    if np.any(outside):
        e = int(np.flatnonzero(outside)[0])
        raise ValueError(f"range of {ELECTRODE_NAMES[e]} {r[e].tolist()} V is outside the board's limits "
                         f"{lim[e].tolist()} V")
    return _as_ranges(r)


def _as_ranges(a: np.ndarray) -> Ranges:
    return tuple((float(lo), float(hi)) for lo, hi in a)
