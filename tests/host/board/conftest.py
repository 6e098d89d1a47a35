"""Fixtures for the host driver tests: simulated boards behind sim:// or served on a pty / TCP."""
from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim.board import DEFAULT_LIMITS_V
from firmware_sim.devices import LinearDevice

LINEAR_SEED = 3
# A deterministic, noise-free board: any corrupted, lost or duplicated sample shows.
LINEAR_OPTIONS = f"seed={LINEAR_SEED}&device=linear&dac_gain_error=0&dac_offset_error_mv=0"
LINEAR_URL = f"sim://?{LINEAR_OPTIONS}"
#: the limits a simulated board declares by default (its identity's limits_v)
LIMITS_V = np.array(DEFAULT_LIMITS_V)


def _expected_linear(codes_volts: np.ndarray, seed: int = LINEAR_SEED, adc_lsb: float = 0.01) -> np.ndarray:
    """What the linear board must return for nominal DAC volts (16-bit ADC, 0.01 nA/code)."""
    na = LinearDevice(seed).convert(codes_volts, 1e-5)
    return np.clip(np.rint(na / adc_lsb), -32768, 32767) * adc_lsb


def _random_volts(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(LIMITS_V[:, 0], LIMITS_V[:, 1], (n, N_ELECTRODES))


#: the firmwares a sim:// board can run: this simulator, and the C firmware's native port
FIRMWARES = ("python", "native")


@pytest.fixture(scope="session", params=FIRMWARES, ids=[f"fw-{f}" for f in FIRMWARES])
def linear_url(request) -> str:
    """A deterministic, noise-free simulated board (linear device, no DAC errors), served by each
    firmware in turn: the same conformance tests run against both."""
    return LINEAR_URL if request.param == "python" else f"{LINEAR_URL}&firmware={request.param}"


@pytest.fixture(scope="session")
def expected_linear():
    """f(nominal DAC volts [n, 7]) -> the nA the linear board must return."""
    return _expected_linear


@pytest.fixture(scope="session")
def random_volts():
    """f(n, seed=0) -> volts [n, 7] uniform within the simulated board's default limits."""
    return _random_volts


class SimProc:
    """A firmware_sim process serving on a pty or TCP; `url` is what it printed first."""

    def __init__(self, link: str, options: str) -> None:
        where = ["--pty"] if link == "pty" else ["--tcp", "0"]
        cmd = [sys.executable, "-m", "firmware_sim", *where, "--exit-on-stdin-eof", "--options", options]
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


@pytest.fixture
def tcp_sim() -> Iterator[SimProc]:
    sim = SimProc("tcp", LINEAR_OPTIONS)
    yield sim
    sim.stop()


@pytest.fixture
def null_tcp_sim() -> Iterator[SimProc]:
    sim = SimProc("tcp", "device=null")
    yield sim
    sim.stop()
