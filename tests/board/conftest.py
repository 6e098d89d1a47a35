"""Fixtures for the bench-board tests: simulated boards on a pty (sim://) or TCP."""
from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import numpy as np
import pytest

from firmware_sim.devices import LinearDevice

LINEAR_SEED = 3
# A deterministic, noise-free board: any corrupted, lost or duplicated sample shows.
LINEAR_URL = f"sim://?seed={LINEAR_SEED}&device=linear&dac_gain_error=0&dac_offset_error_mv=0"


def _expected_linear(codes_volts: np.ndarray, seed: int = LINEAR_SEED, adc_lsb: float = 0.01) -> np.ndarray:
    """What the linear board must return for nominal DAC volts (16-bit ADC, 0.01 nA/code)."""
    na = LinearDevice(seed).convert(codes_volts, 1e-5)
    return np.clip(np.rint(na / adc_lsb), -32768, 32767) * adc_lsb


def _random_volts(n: int, seed: int = 0) -> np.ndarray:
    lo = np.array([-1.2] * 5 + [-0.7] * 2)
    hi = np.array([0.6] * 5 + [0.3] * 2)
    return np.random.default_rng(seed).uniform(lo, hi, (n, 7))


@pytest.fixture(scope="session")
def linear_url() -> str:
    """A deterministic, noise-free simulated board (linear device, no DAC errors)."""
    return LINEAR_URL


@pytest.fixture(scope="session")
def expected_linear():
    """f(nominal DAC volts [n, 7]) -> the nA the linear board must return."""
    return _expected_linear


@pytest.fixture(scope="session")
def random_volts():
    """f(n, seed=0) -> volts [n, 7] uniform within the default electrode limits."""
    return _random_volts


class SimProc:
    """A firmware_sim process serving on a pty or TCP; `url` is what it printed first."""

    def __init__(self, link: str, *args: str) -> None:
        where = ["--pty"] if link == "pty" else ["--tcp", "0"]
        cmd = [sys.executable, "-m", "firmware_sim", *where, "--exit-on-stdin-eof", *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().decode().strip()
        assert self.url.startswith("socket://" if link == "tcp" else "/dev/"), self.url

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                f.close()


LINEAR_ARGS = ("--seed", str(LINEAR_SEED), "--device", "linear", "--dac-gain-error", "0",
               "--dac-offset-error-mv", "0")


@pytest.fixture
def tcp_sim() -> Iterator[SimProc]:
    sim = SimProc("tcp", *LINEAR_ARGS)
    yield sim
    sim.stop()


@pytest.fixture(params=["pty", "tcp"])
def served_sim(request) -> Iterator[SimProc]:
    """The linear board served by a long-lived process, on a pty and on TCP."""
    sim = SimProc(request.param, *LINEAR_ARGS)
    yield sim
    sim.stop()
