"""What sits on the simulated board's analog side: the options that choose it, and a small
linear device for protocol tests (the physics lives in `physics/`, the digital twin of a
surrogate file in `twin.py`).

`LinearDevice` is deterministic and noise-free, so a test can compute exactly what the host
must receive and detect any corrupted, duplicated or reordered sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.analog import TIA_RANGE_NA, AnalogDevice
from firmware_sim.options import option
from firmware_sim.physics import DeviceParams, NullDevice, VirtualDNPU
from firmware_sim.twin import DRIFT_TAU_S, SurrogateDevice, TwinFile

DEVICE_KINDS = ("dnpu", "null", "linear", "surrogate")


@dataclass(frozen=True)
class DeviceOptions:
    """The analog device of a simulated board (its seed is the board's, `BoardConfig.seed`).
    Every field is a simulator option."""

    device: str = option("dnpu", "analog side: the virtual DNPU, a null device, a linear test device or "
                                 "the digital twin of a surrogate file (surrogate: needs model=)",
                         choices=DEVICE_KINDS)
    noise: float | None = option(None, "level of every random part of the virtual DNPU or the twin: noise and "
                                       "drift (1 = nominal, 0 = clean)", parse=float, default_text="1")
    model: str | None = option(None, "device=surrogate: the surrogate ONNX file (dnpu-surrogate/1) the twin "
                                     "runs; the board adopts its electrode ranges as limits", parse=str)
    noise_na: float | None = option(None, "device=surrogate: white noise RMS per sub-sample, instead of noise "
                                          "x the file's dnpu.noise_floor_na", parse=float, unit="nA",
                                    default_text="the file's noise floor")
    drift_na: float = option(0.0, f"device=surrogate: RMS of a slow seeded random walk of the current "
                                  f"(time constant {DRIFT_TAU_S:g} s of sample time), x noise",
                             unit="nA", name="drift")
    n_sites: int = option(DeviceParams.n_sites, "dopant sites of the virtual DNPU")
    fail_after_rows: int | None = option(None, "fault injection (linear device): the analog side "
                                               "raises once this many rows ran", parse=int)

    def __post_init__(self) -> None:
        if self.device not in DEVICE_KINDS:
            raise ValueError(f"device must be one of {', '.join(DEVICE_KINDS)}, got {self.device!r}")
        if self.fail_after_rows is not None and self.device != "linear":
            raise ValueError("fail_after_rows needs device=linear")
        twin = self.device == "surrogate"
        if twin and not self.model:
            raise ValueError("device=surrogate needs model=FILE (a surrogate ONNX file)")
        for name, given in (("model", self.model is not None), ("noise_na", self.noise_na is not None),
                            ("drift", self.drift_na != 0.0)):
            if given and not twin:
                raise ValueError(f"{name} needs device=surrogate (got device={self.device})")
        if self.noise is not None and self.noise_na is not None:
            raise ValueError("give noise (a level) or noise_na (nA), not both")
        for name, v in (("noise", self.noise), ("noise_na", self.noise_na), ("drift", self.drift_na)):
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")


def make_device(opts: DeviceOptions, seed: int) -> AnalogDevice:
    """The device `opts` describe, drawn from `seed` (ValueError for bad parameters)."""
    if opts.device == "linear":
        return LinearDevice(seed, opts.fail_after_rows)
    if opts.device == "null":
        return NullDevice()
    if opts.device == "surrogate":
        assert opts.model is not None        # DeviceOptions checks it
        file = TwinFile.load(opts.model)
        level = 1.0 if opts.noise is None else opts.noise
        noise_na = level * file.noise_floor_na if opts.noise_na is None else opts.noise_na
        return SurrogateDevice(file, seed, noise_na, level * opts.drift_na)
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
