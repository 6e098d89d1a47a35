"""What sits on the simulated board's analog side: the options that choose it, and a small
linear device for protocol tests (the physics lives in `physics/`, the digital twin of a
surrogate file in `twin.py`).

`LinearDevice` is deterministic and noise-free, so a test can compute exactly what the host
must receive and detect any corrupted, duplicated or reordered sample.

A board may carry several devices (`devices=K`, or `chips=S0,S1,...`): `DeviceArray` puts K
analog devices side by side, each behind its own 7 DAC channels and its own readout, so that
one hardware-timed row drives all of them at once.
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
#: the most devices one simulated board carries (K x 7 DAC channels, K readouts)
MAX_DEVICES = 16
#: noise seeds of a repeated chip's later copies start here (device index added): chips=0,0,0
#: gives three copies of chip 0, each with its own noise
_COPY_NOISE_BASE = 1 << 40


def parse_chips(text: str) -> tuple[int, ...]:
    """'0,0,3' -> (0, 0, 3): each device's chip seed."""
    try:
        chips = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"cannot parse {text!r}; use seed[,seed...], e.g. 0,0,0") from None
    if any(c < 0 for c in chips):
        raise ValueError(f"chip seeds must be >= 0, got {text!r}")
    return chips


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
    devices: int = option(1, f"devices on the board (1..{MAX_DEVICES}): K x {N_ELECTRODES} DAC channels and K "
                             "readouts; device k is the chip of seed+k")
    chips: tuple[int, ...] | None = option(None, "each device's chip seed, comma-separated (sets devices=; "
                                                 "0,0,0: three copies of chip 0 with independent noise)",
                                           parse=parse_chips, default_text="seed, seed+1, ...")
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
        if self.chips is not None and self.devices not in (1, len(self.chips)):
            raise ValueError(f"devices={self.devices} but chips= names {len(self.chips)} chips")
        k = len(self.chips) if self.chips is not None else self.devices
        if not 1 <= k <= MAX_DEVICES:
            raise ValueError(f"devices must be 1..{MAX_DEVICES}, got {k}")
        if k > 1 and self.fail_after_rows is not None:
            raise ValueError("fail_after_rows needs a single device")

    def chip_seeds(self, seed: int) -> tuple[int, ...]:
        """Each device's chip seed on a board of `seed`: chips= if given, else seed, seed+1, ..."""
        if self.chips is not None:
            return self.chips
        return tuple(seed + k for k in range(self.devices))


def make_device(opts: DeviceOptions, seed: int) -> AnalogDevice:
    """What sits on the analog side of a board of `seed`: the device `opts` describe, or, for
    several devices, a `DeviceArray` of them (ValueError for bad parameters). A device is the
    chip of its seed with that chip's own noise; a later copy of a chip repeated in chips=
    draws its noise from a seed of its own."""
    chips = opts.chip_seeds(seed)
    if len(chips) == 1:
        return _one_device(opts, chips[0], None)
    members = [_one_device(opts, c, None if c not in chips[:k] else _COPY_NOISE_BASE + k)
               for k, c in enumerate(chips)]
    return DeviceArray(tuple(members))


def _one_device(opts: DeviceOptions, seed: int, noise_seed: int | None) -> AnalogDevice:
    if opts.device == "linear":
        return LinearDevice(seed, opts.fail_after_rows)
    if opts.device == "null":
        return NullDevice()
    if opts.device == "surrogate":
        assert opts.model is not None        # DeviceOptions checks it
        file = TwinFile.load(opts.model)
        level = 1.0 if opts.noise is None else opts.noise
        noise_na = level * file.noise_floor_na if opts.noise_na is None else opts.noise_na
        return SurrogateDevice(file, seed if noise_seed is None else noise_seed, noise_na, level * opts.drift_na)
    kwargs: dict = {} if opts.noise is None else {"noise_level": opts.noise}
    if noise_seed is not None:
        kwargs["noise_seed"] = noise_seed
    return VirtualDNPU.from_seed(seed, opts.n_sites, **kwargs)


@dataclass(frozen=True)
class DeviceArray:
    """K analog devices side by side: row r of the volts [n, K x 7] drives device k with columns
    7k..7k+6, and the readout is [n, K]. The devices sit on one board, so they share its sample
    clock; each keeps its own state, drift and noise."""

    members: tuple[AnalogDevice, ...]

    @property
    def n_devices(self) -> int:
        return len(self.members)

    @property
    def describe(self) -> dict:
        return {"model": "device-array", "devices": [m.describe for m in self.members]}

    def convert(self, volts: np.ndarray, sample_period_s: float, oversample: int = 1) -> np.ndarray:
        v = np.asarray(volts)
        k = self.n_devices
        if v.ndim != 2 or v.shape[1] != k * N_ELECTRODES:
            raise ValueError(f"volts must be [n, {k * N_ELECTRODES}], got shape {v.shape}")
        out = np.empty((len(v), k))
        for i, m in enumerate(self.members):
            part = np.ascontiguousarray(v[:, i * N_ELECTRODES:(i + 1) * N_ELECTRODES])
            out[:, i] = m.convert(part, sample_period_s, oversample)
        return out

    def reset(self) -> None:
        for m in self.members:
            m.reset()


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
