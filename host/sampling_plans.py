"""Sampling plans: which electrode voltages to measure, in which order.

A plan is a pure function of its settings: `plan.rows(i0, i1)` returns samples i0..i1-1 without
materialising the whole plan, so a run of ten million points needs no memory for the plan and a
resumed run regenerates exactly the samples it has not measured yet.

Strategies
- ``uniform``: independent uniform draws within the electrode ranges (the best coverage per sample).
- ``sine``: each electrode follows a sine wave; frequencies are f0 * sqrt(p) for the first seven
  primes p, so they are incommensurate and the 7-D trajectory never repeats (the field's habit:
  smooth waveforms are gentle on the device and let the board settle between samples).
- ``sawtooth``: the same with triangle waves (uniform density along each axis).
- ``grid``: the full grid with k points per electrode (k**7 samples, lexicographic order).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

N_ELECTRODES = 7
#: Working ranges of the DNPU electrodes (V): e0..e4 and e5, e6 (DESIGN.md).
WORKING_RANGES_V: tuple[tuple[float, float], ...] = ((-1.2, 0.6),) * 5 + ((-0.7, 0.3),) * 2
STRATEGIES = ("uniform", "sine", "sawtooth", "grid")
_PRIMES = np.array([2, 3, 5, 7, 11, 13, 17], dtype=np.float64)
_UNIFORM_BLOCK = 4096  # uniform draws come from one RNG stream per block of this many samples


@dataclass(frozen=True)
class PlanConfig:
    """Everything that defines a plan; stored in the dataset metadata and checked on resume."""

    strategy: str = "uniform"
    n: int = 100_000
    seed: int = 0
    ranges_v: tuple[tuple[float, float], ...] = WORKING_RANGES_V
    #: sine/sawtooth: period of the slowest wave, in samples
    wave_period: float = 2000.0
    #: grid: points per electrode (n must equal grid_points ** 7)
    grid_points: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        r = np.asarray(self.ranges_v, dtype=np.float64)
        if r.shape != (N_ELECTRODES, 2) or not np.all(np.isfinite(r)) or np.any(r[:, 0] >= r[:, 1]):
            raise ValueError(f"ranges_v must be 7 finite (lo, hi) pairs with lo < hi, got {self.ranges_v!r}")
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
        """Samples i0..i1-1 of the plan, float64 [i1 - i0, 7] volts."""
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
