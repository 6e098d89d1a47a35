"""Fixtures for the host.sample and host.surrogate tests: an in-process stand-in for a board."""
from __future__ import annotations

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES

#: Per-electrode sampling ranges for tests (V): unequal, so a mix-up of electrodes shows.
TEST_RANGES_V: tuple[tuple[float, float], ...] = ((-1.2, 0.6),) * (N_ELECTRODES - 2) + ((-0.7, 0.3),) * 2


class FakeBoard:
    """Implements the three things host.sample.measure needs: identity, measure(volts) and zero().

    The "device" is a smooth non-linear function plus white noise; `fail_after` raises a
    disconnect-like error after that many measure() calls (a dropped cable).
    """

    def __init__(self, serial: str = "FAKE-1", seed: int = 0, noise: float = 1.4, fail_after: int | None = None):
        self.identity = {"serial": serial, "firmware": "0.0-test", "device": {"seed": seed}}
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.fail_after = fail_after
        self.calls = 0
        self.zeroed = 0

    @staticmethod
    def clean(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float64)
        return 100.0 * np.tanh(v @ np.linspace(-1, 1, N_ELECTRODES)) * np.cos(3 * v[:, 0]) - 50.0 * v[:, 5] ** 2

    def measure(self, v: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise ConnectionError("board vanished")
        return self.clean(v) + self.rng.normal(0.0, self.noise, len(v))

    def zero(self) -> None:
        self.zeroed += 1


@pytest.fixture(scope="session")
def fake_board() -> type[FakeBoard]:
    return FakeBoard


@pytest.fixture(scope="session")
def test_ranges() -> tuple[tuple[float, float], ...]:
    return TEST_RANGES_V
