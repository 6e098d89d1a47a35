"""The contract between the simulated board's firmware loop and what sits on its analog side.

The firmware (protocol, DAC/ADC codes, limits, slew limiter, watchdog) drives an
`AnalogDevice`: it hands over the DAC output voltages it produced, one row per hardware
sample period, and gets back the transimpedance amplifier's output current in nA, which
the firmware then quantises with its ADC. Everything physical between the DAC pins and the
TIA output (line settling, the dopant network itself, drift, noise, the TIA's low-pass and
clipping) lives behind this interface, in `firmware_sim.physics`.

The firmware knows nothing of the device's internals; the host knows nothing of either.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

TIA_RANGE_NA = (-300.0, 100.0)


class AnalogDevice(Protocol):
    """What the board's DAC/ADC loop drives."""

    @property
    def describe(self) -> dict:
        """A JSON-able description (model name, seed, n_sites, ...) for `identify`."""
        ...

    def convert(self, volts: np.ndarray, sample_period_s: float, oversample: int = 1) -> np.ndarray:
        """Run a hardware-timed sequence.

        volts: float64 [n, N_ELECTRODES], C-contiguous, the DAC outputs in time order, one row per sample
        period (already quantised and gain/offset-distorted by the board's DACs).
        Returns float64 [n] nA at the TIA output (within TIA_RANGE_NA), the mean of `oversample`
        sub-samples per row. Stateful: settling, drift and noise continue from the previous call.
        """
        ...

    def reset(self) -> None:
        """Power cycle: analog state back to its start (device seed unchanged)."""
        ...
