"""A small analog device for protocol tests (the physics lives in `physics/`).

`LinearDevice` is deterministic and noise-free, so a test can compute exactly what the host
must receive and detect any corrupted, duplicated or reordered sample.
"""
from __future__ import annotations

import numpy as np

from firmware_sim.analog import N_ACTIVATION, TIA_RANGE_NA


class LinearDevice:
    """nA = clip(w . volts + b) with seeded weights: a linear stand-in, no state, no noise."""

    def __init__(self, seed: int = 0, fail_after_rows: int | None = None) -> None:
        rng = np.random.default_rng([seed, 0x11])
        self.seed = seed
        self.fail_after_rows = fail_after_rows     # fault injection: raise once this many rows ran
        self.rows = 0
        self.w = rng.uniform(-60.0, 60.0, N_ACTIVATION)
        self.b = float(rng.uniform(-20.0, 20.0))

    @property
    def describe(self) -> dict:
        return {"model": "linear-test-device", "seed": self.seed}

    def convert(self, volts: np.ndarray, sample_period_s: float, oversample: int = 1) -> np.ndarray:
        self.rows += len(volts)
        if self.fail_after_rows is not None and self.rows > self.fail_after_rows:
            raise RuntimeError(f"injected device fault after {self.fail_after_rows} rows")
        return np.clip(volts @ self.w + self.b, *TIA_RANGE_NA)

    def reset(self) -> None:
        pass
