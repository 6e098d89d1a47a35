"""What sits on the simulated board's analog side: the options that choose it, and a small
linear device for protocol tests (the physics lives in `physics/`).

`LinearDevice` is deterministic and noise-free, so a test can compute exactly what the host
must receive and detect any corrupted, duplicated or reordered sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.analog import TIA_RANGE_NA, AnalogDevice
from firmware_sim.options import option
from firmware_sim.physics import DeviceParams, NullDevice, VirtualDNPU

DEVICE_KINDS = ("dnpu", "null", "linear")


@dataclass(frozen=True)
class DeviceOptions:
    """The analog device of a simulated board (its seed is the board's, `BoardConfig.seed`).
    Every field is a simulator option."""

    device: str = option("dnpu", "analog side: the virtual DNPU, a null device or a linear test device",
                         choices=DEVICE_KINDS)
    noise: float | None = option(None, "noise and drift level of the virtual DNPU (1 = nominal, 0 = clean)",
                                 parse=float, default_text="1")
    n_sites: int = option(DeviceParams.n_sites, "dopant sites of the virtual DNPU")
    fail_after_rows: int | None = option(None, "fault injection (linear device): the analog side "
                                               "raises once this many rows ran", parse=int)

    def __post_init__(self) -> None:
        if self.device not in DEVICE_KINDS:
            raise ValueError(f"device must be one of {', '.join(DEVICE_KINDS)}, got {self.device!r}")
        if self.fail_after_rows is not None and self.device != "linear":
            raise ValueError("fail_after_rows needs device=linear")


def make_device(opts: DeviceOptions, seed: int) -> AnalogDevice:
    """The device `opts` describe, drawn from `seed` (ValueError for bad parameters)."""
    if opts.device == "linear":
        return LinearDevice(seed, opts.fail_after_rows)
    if opts.device == "null":
        return NullDevice()
    kwargs = {} if opts.noise is None else {"noise_level": opts.noise}
    return VirtualDNPU.from_seed(seed, opts.n_sites, **kwargs)


class LinearDevice:
    """nA = clip(w . volts + b) with seeded weights: a linear stand-in, no state, no noise."""

    def __init__(self, seed: int = 0, fail_after_rows: int | None = None) -> None:
        rng = np.random.default_rng([seed, 0x11])
        self.seed = seed
        self.fail_after_rows = fail_after_rows     # fault injection: raise once this many rows ran
        self.rows = 0
        self.w = rng.uniform(-60.0, 60.0, N_ELECTRODES)
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
