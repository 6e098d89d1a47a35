"""Fixtures for the host driver tests: simulated boards behind sim:// or served on a pty / TCP."""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, fields, replace
from typing import Iterator

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim.board import DEFAULT_LIMITS_V
from firmware_sim.devices import LinearDevice
from host.board.faults import FaultPlan

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


#: the firmwares a sim:// board can run: this simulator, the C firmware's native port, and the C
#: firmware cross-compiled for an STM32F405 in QEMU
FIRMWARES = ("python", "native", "qemu")
#: what the qemu port needs (tests/firmware/test_qemu_port.py checks the port itself)
QEMU_TOOLS = ("qemu-system-arm", "arm-none-eabi-gcc")
#: QEMU's emulated UART carries ~20 kB/s and a loaded 2-core machine can starve the emulator:
#: the qemu board gets a 2 s host-silence watchdog unless a test sets its own
QEMU_OPTIONS = "&watchdog_ms=2000&firmware=qemu"


def _firmware_param(firmware: str):
    missing = [t for t in QEMU_TOOLS if shutil.which(t) is None] if firmware == "qemu" else []
    marks = [pytest.mark.skip(reason=f"{' and '.join(missing)} not installed (apt-get install "
                              "gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm)")] if missing else []
    return pytest.param(firmware, id=f"fw-{firmware}", marks=marks)


def firmware_url(base: str, firmware: str) -> str:
    """`base` (a sim:// URL with options) served by `firmware`."""
    if firmware == "python":
        return base
    return base + (QEMU_OPTIONS if firmware == "qemu" else f"&firmware={firmware}")


@pytest.fixture(scope="session", params=[_firmware_param(f) for f in FIRMWARES])
def firmware(request) -> str:
    """Each firmware in turn: the same conformance tests run against all three."""
    return request.param


@dataclass(frozen=True)
class LinkProfile:
    """What a test of the link asks of a firmware. QEMU's emulated UART carries ~20 kB/s where a
    pty carries tens of MB/s: its runs are shorter, its reply timeouts longer (a 2 KB frame takes
    0.1 s) and its wall-clock bounds wider. The faults, and what is asserted, are the same."""

    samples: int            # samples per measurement through a faulty link
    timeout_s: float        # the host's reply timeout in those runs
    slowness: float         # wall-clock bounds are multiplied by this

    def faults(self, plan: FaultPlan) -> FaultPlan:
        """`plan` (written for 20,000 samples) with its per-byte rates raised for a shorter run,
        so that as many faults are injected as in the full run. Per-frame rates stay: a slow
        board's shorter frames make about as many frames per run."""
        scale = FULL_RUN_SAMPLES / self.samples
        rates = {f.name: getattr(plan, f.name) * scale for f in fields(plan)
                 if f.name.startswith(("rx_", "tx_byte_"))}
        return replace(plan, **rates)


FULL_RUN_SAMPLES = 20_000


LINK_PROFILES = {"python": LinkProfile(FULL_RUN_SAMPLES, 0.1, 1.0), "native": LinkProfile(FULL_RUN_SAMPLES, 0.1, 1.0),
                 "qemu": LinkProfile(3_000, 0.6, 6.0)}


@pytest.fixture(scope="session")
def link_profile(firmware: str) -> LinkProfile:
    return LINK_PROFILES[firmware]


@pytest.fixture(scope="session")
def served_by(firmware: str):
    """f(sim:// URL with options) -> the same board served by each firmware in turn."""
    return lambda base: firmware_url(base, firmware)


@pytest.fixture(scope="session")
def linear_url(firmware: str) -> str:
    """A deterministic, noise-free simulated board (linear device, no DAC errors), served by each
    firmware in turn."""
    return firmware_url(LINEAR_URL, firmware)


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
