"""The virtual DNPU as the board's firmware sees it: an `AnalogDevice` (firmware_sim/analog.py).

`VirtualDNPU` couples the seeded dopant-network physics (C kernel, steady-state mean field) with
the analog chain between the DAC pins and the TIA output:

1. settling of each line (first-order RC and a slew-rate limit), per row;
2. drift: a slow random walk of the overall current scale and of the temperature, per row;
3. the clean steady-state current, once per row, at the settled voltages and current temperature;
4. noise: 1/f-like relative noise (a sum of Ornstein-Uhlenbeck processes with log-spaced
   corners), then the transimpedance amplifier's single-pole low-pass, white noise at its output
   and clipping to its range, per sub-sample; `oversample` sub-samples are averaged per row.

DAC quantisation and gain/offset errors and ADC quantisation belong to the firmware loop: the
input here is DAC output volts, the output TIA nA. `NullDevice` is a cheap deterministic
stand-in with the same interface, for measuring protocol cost alone.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import numpy as np

from .. import _physics
from core.electrodes import N_ELECTRODES

from ..analog import TIA_RANGE_NA
from .geometry import K_B_EV, READOUT, WORKING_RANGES_V, DeviceParams, Geometry, make_geometry
from .reference import SolverConfig
from .reference import electrode_currents as ref_currents
from .reference import solve as ref_solve

MAX_ABS_VOLTS = float(_physics.MAX_ABS_VOLTS)
MAX_OVERSAMPLE = 1 << 16


@dataclass(frozen=True)
class AnalogConfig:
    """Non-idealities between the DAC pins and the TIA output. `noise_level` scales every random
    part (white, 1/f, drift, temperature); 0 gives the clean, deterministic device."""

    noise_level: float = 1.0
    white_noise_na: float = 1.4                 # RMS at the TIA output, per sub-sample
    flicker_rel: float = 0.002                  # RMS of the relative 1/f-like noise (0.1-0.5 %)
    flicker_processes: int = 6
    flicker_corners_hz: tuple[float, float] = (1e-2, 1e3)
    drift_rel: float = 0.005                    # stationary RMS of the log current scale
    drift_tau_s: float = 1800.0                 # correlation time of the scale random walk
    temperature_rms_k: float = 0.05             # stationary RMS of the temperature excursion
    temperature_tau_s: float = 300.0
    line_tau_s: float = 0.5e-6                  # RC of each electrode line
    slew_v_per_s: float = 5e6                   # 5 V/us
    tia_bandwidth_hz: float = 200e3             # single pole
    tia_range_na: tuple[float, float] = TIA_RANGE_NA
    noise_seed: int | None = None               # None: derived from the device seed

    def __post_init__(self) -> None:
        for name in ("noise_level", "white_noise_na", "flicker_rel", "drift_rel", "temperature_rms_k"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        if self.noise_level > 100:
            raise ValueError(f"noise_level must be <= 100, got {self.noise_level}")
        for name in ("drift_tau_s", "temperature_tau_s", "line_tau_s", "slew_v_per_s", "tia_bandwidth_hz"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        lo, hi = self.flicker_corners_hz
        if not 0 < lo <= hi:
            raise ValueError("flicker_corners_hz must be increasing positive frequencies")
        if not self.flicker_processes >= 1:
            raise ValueError("flicker_processes must be >= 1")
        if not self.tia_range_na[0] < self.tia_range_na[1]:
            raise ValueError("tia_range_na must be (low, high) with low < high")

    @classmethod
    def clean(cls) -> "AnalogConfig":
        """No noise and no drift (settling and the TIA low-pass remain)."""
        return cls(noise_level=0.0)


def _validate_volts(volts: np.ndarray) -> np.ndarray:
    v = np.asarray(volts)
    if v.ndim != 2 or v.shape[1] != N_ELECTRODES:
        raise ValueError(f"volts must have shape [n, {N_ELECTRODES}], got {v.shape}")
    if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
        raise ValueError(f"volts must be real numbers, got dtype {v.dtype}")
    v = np.ascontiguousarray(v, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("volts contains NaN or infinite values")
    if v.size and np.max(np.abs(v)) > MAX_ABS_VOLTS:
        raise ValueError(f"volts outside the device's absolute limit +-{MAX_ABS_VOLTS} V")
    return v


def _validate_timing(sample_period_s: float, oversample: int) -> tuple[float, int]:
    if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)):
        raise ValueError(f"oversample must be an integer, got {oversample!r}")
    if not 1 <= int(oversample) <= MAX_OVERSAMPLE:
        raise ValueError(f"oversample must be in 1..{MAX_OVERSAMPLE}, got {oversample}")
    try:
        period = float(sample_period_s)
    except (TypeError, ValueError):
        raise ValueError(f"sample_period_s must be a number, got {sample_period_s!r}") from None
    if not (math.isfinite(period) and 0 < period <= 3600):
        raise ValueError(f"sample_period_s must be in (0, 3600] s, got {sample_period_s!r}")
    return period, int(oversample)


@dataclass
class _AnalogState:
    v_line: np.ndarray            # [7] voltages at the device
    drift: float                  # log current scale excursion
    temp: float                   # temperature excursion (K)
    flicker: np.ndarray           # [m] OU states (relative)
    tia: float                    # TIA output before white noise (nA)
    p_state: np.ndarray           # warm-start occupations
    time_s: float = 0.0
    rows: int = 0


@dataclass
class VirtualDNPU:
    """A seeded virtual DNPU behind its analog chain; implements `firmware_sim.analog.AnalogDevice`.

    Build with `VirtualDNPU.from_seed(seed)`. `steady_state_na` gives the clean device current
    (before settling, drift, noise and the TIA), `convert` the hardware-timed measurement.
    """

    geometry: Geometry
    analog: AnalogConfig
    solver: SolverConfig
    nthreads: int
    warm_start: bool
    scale_na: float = field(init=False)           # nA per kernel current unit (e nu)
    _kernel: _physics.Kernel = field(init=False, repr=False)
    _rng: np.random.Generator = field(init=False, repr=False)
    _state: _AnalogState = field(init=False, repr=False)
    _flicker_rate: np.ndarray = field(init=False, repr=False)

    @classmethod
    def from_seed(cls, seed: int, n_sites: int = DeviceParams.n_sites, *, params: DeviceParams | None = None,
                  analog: AnalogConfig | None = None, solver: SolverConfig | None = None,
                  nthreads: int | None = None, warm_start: bool = False, **analog_overrides
                  ) -> "VirtualDNPU":
        """Draw device `seed` (N = n_sites acceptors) and calibrate its current scale.

        analog_overrides: AnalogConfig fields, e.g. noise_level=0 or noise_seed=7.
        nthreads: kernel threads (default: min(2, CPU count)). warm_start: solve each row from the
        previous row's occupations (faster on smooth waveforms; results then depend on history
        at the 1e-10 level), otherwise every row starts from the same fixed guess.
        """
        p = params if params is not None else DeviceParams(n_sites=n_sites)
        if params is not None and n_sites != DeviceParams.n_sites and params.n_sites != n_sites:
            raise ValueError("give n_sites either directly or in params, not both")
        a = analog if analog is not None else AnalogConfig()
        if analog_overrides:
            a = replace(a, **analog_overrides)
        nt = nthreads if nthreads is not None else max(1, min(2, os.cpu_count() or 1))
        if not 1 <= int(nt) <= 256:
            raise ValueError("nthreads must be in 1..256")
        return cls(geometry=make_geometry(seed, p), analog=a, solver=solver or SolverConfig(),
                   nthreads=int(nt), warm_start=bool(warm_start))

    def __post_init__(self) -> None:
        g = self.geometry
        s = self.solver
        self._kernel = _physics.Kernel(g.psi, g.e_static_ev, g.coulomb_ev, g.w_site, g.w_elec,
                                       np.full(g.n_sites, 0.5), g.beta, dt0=s.dt0, dt_max=s.dt_max,
                                       tol_abs=s.tol_abs, tol_quad=s.tol_quad, max_iter=s.max_iter)
        # Output scale: the 0.5th percentile of the current over random voltages in the working
        # ranges sits at target_p05_na times a seeded factor (device-to-device variation).
        rng = np.random.default_rng(np.random.SeedSequence([g.seed, 0x43414C]))
        lo, hi = WORKING_RANGES_V.T
        v = rng.uniform(lo, hi, size=(g.params.n_calibration, N_ELECTRODES))
        raw = self._kernel.solve(v, nthreads=self.nthreads)
        p05 = float(np.nanpercentile(raw, 0.5))
        if not p05 < 0:
            raise RuntimeError(f"device seed {g.seed}: no negative currents to calibrate against")
        self.scale_na = g.params.target_p05_na * g.scale_factor / p05
        corners = np.geomspace(*self.analog.flicker_corners_hz, self.analog.flicker_processes)
        self._flicker_rate = 2 * math.pi * corners          # 1 / tau of each OU process
        noise_seed = self.analog.noise_seed if self.analog.noise_seed is not None else g.seed
        self._rng = np.random.default_rng(np.random.SeedSequence([int(noise_seed), 0x4E4F4953]))
        self._state = self._fresh_state()

    # ----------------------------------------------------------------- clean device
    @property
    def n_sites(self) -> int:
        return self.geometry.n_sites

    def steady_state_na(self, volts: np.ndarray, *, all_currents: bool = False,
                        temperature_k: np.ndarray | float | None = None, warm: bool = False,
                        nthreads: int | None = None) -> np.ndarray:
        """Clean steady-state current in nA for volts [n, 7] (no settling, noise, TIA or clipping).

        all_currents: return [n, 8], the current into every electrode (positive: holes flowing
        into the electrode); otherwise [n], the readout. Cold start unless warm.
        """
        v = _validate_volts(volts)
        beta = None
        if temperature_k is not None:
            t = np.broadcast_to(np.asarray(temperature_k, dtype=np.float64), (v.shape[0],))
            if not np.all(np.isfinite(t)) or np.any(t <= 0):
                raise ValueError("temperature_k must be positive and finite")
            beta = 1.0 / (K_B_EV * t)
        raw = self._kernel.solve(v, beta=beta, all_currents=all_currents, warm=warm,
                                 nthreads=nthreads or self.nthreads)
        return raw * self.scale_na

    # ----------------------------------------------------------------- AnalogDevice
    @property
    def describe(self) -> dict:
        a = self.analog
        return {
            "model": "virtual-dnpu-meanfield",
            "model_version": 1,
            **self.geometry.describe(),
            "scale_na": round(self.scale_na, 6),
            "noise_level": a.noise_level,
            "white_noise_na": a.white_noise_na * a.noise_level,
            "flicker_rel": a.flicker_rel * a.noise_level,
            "tia_bandwidth_hz": a.tia_bandwidth_hz,
            "tia_range_na": list(a.tia_range_na),
            "line_tau_s": a.line_tau_s,
            "slew_v_per_s": a.slew_v_per_s,
        }

    def reset(self) -> None:
        """Power cycle: lines at 0 V, TIA discharged, drift and temperature back to nominal.

        The device (seed) is unchanged; the noise generator continues (noise is not replayed).
        """
        self._state = self._fresh_state()

    def _fresh_state(self) -> _AnalogState:
        a = self.analog
        flick = a.flicker_rel * a.noise_level / math.sqrt(a.flicker_processes)
        return _AnalogState(
            v_line=np.zeros(N_ELECTRODES), drift=0.0, temp=0.0,
            flicker=flick * self._rng.standard_normal(a.flicker_processes),
            tia=0.0, p_state=np.full(self.n_sites, 0.5))

    def convert(self, volts: np.ndarray, sample_period_s: float, oversample: int = 1) -> np.ndarray:
        """Hardware-timed sequence: DAC volts [n, 7] (one row per sample period) -> TIA nA [n]."""
        v = _validate_volts(volts)
        period, os_ = _validate_timing(sample_period_s, oversample)
        n = v.shape[0]
        if n == 0:
            return np.empty(0)
        a = self.analog
        st = self._state
        lvl = a.noise_level
        rng = self._rng
        # 1. line settling (RC + slew), evaluated at the end of each row
        v_dev = _physics.settle(v, st.v_line, math.exp(-period / a.line_tau_s), a.slew_v_per_s * period)
        # 2. slow processes, per row
        beta = None
        drift = np.zeros(n)
        if lvl > 0 and a.drift_rel > 0:
            drift, st.drift = self._ou(st.drift, a.drift_rel * lvl, a.drift_tau_s, period, n)
        if lvl > 0 and a.temperature_rms_k > 0:
            temp, st.temp = self._ou(st.temp, a.temperature_rms_k * lvl, a.temperature_tau_s, period, n)
            beta = 1.0 / (K_B_EV * (self.geometry.params.temperature_k + temp))
        # 3. steady state once per row
        raw = self._kernel.solve(v_dev, beta=beta, warm=self.warm_start,
                                 p_state=st.p_state if self.warm_start else None,
                                 nthreads=self.nthreads)
        if not np.all(np.isfinite(raw)):
            raw = self._retry_failed(v_dev, beta, raw)
        i_row = raw * self.scale_na * np.exp(drift)
        # 4. per sub-sample: 1/f-like relative noise, TIA low-pass, white noise, clipping
        h = period / os_
        m = n * os_
        x = np.repeat(i_row, os_)
        if lvl > 0 and a.flicker_rel > 0:
            rho = np.exp(-h * self._flicker_rate)
            amp = (a.flicker_rel * lvl / math.sqrt(a.flicker_processes)) * np.sqrt(1.0 - rho * rho)
            z = rng.standard_normal((m, a.flicker_processes))
            x *= 1.0 + _physics.ou_sum(st.flicker, rho, amp, z)
        alpha = math.exp(-2 * math.pi * a.tia_bandwidth_hz * h)
        y = _physics.ar1((1.0 - alpha) * x, alpha, st.tia)
        st.tia = float(y[-1])
        if lvl > 0 and a.white_noise_na > 0:
            y = y + (a.white_noise_na * lvl) * rng.standard_normal(m)
        np.clip(y, a.tia_range_na[0], a.tia_range_na[1], out=y)
        st.time_s += n * period
        st.rows += n
        return y.reshape(n, os_).mean(axis=1) if os_ > 1 else y

    def _retry_failed(self, v_dev: np.ndarray, beta: np.ndarray | None, raw: np.ndarray) -> np.ndarray:
        """Rows the C kernel could not solve (none seen in tests): the NumPy reference with a very
        cautious continuation; a row that still fails is an error, never a NaN at the output."""
        out = raw.copy()
        cautious = SolverConfig(dt0=1e-2, max_iter=2000)
        for r in np.flatnonzero(~np.isfinite(raw)):
            b = self.geometry.beta if beta is None else float(beta[r])
            try:
                p, _ = ref_solve(self.geometry, v_dev[r], b, cfg=cautious)
            except RuntimeError:
                raise RuntimeError(f"virtual DNPU: no steady state for volts {v_dev[r].tolist()}") from None
            out[r] = ref_currents(self.geometry, v_dev[r], p, b)[READOUT]
        return out

    def _ou(self, x0: float, rms: float, tau: float, step: float, count: int) -> tuple[np.ndarray, float]:
        """Exact discretisation of an Ornstein-Uhlenbeck process; returns (path, last value)."""
        rho = math.exp(-step / tau)
        u = (rms * math.sqrt(max(0.0, 1.0 - rho * rho))) * self._rng.standard_normal(count)
        path = _physics.ar1(u, rho, float(x0))
        return path, float(path[-1])


@dataclass
class NullDevice:
    """A cheap deterministic `AnalogDevice`: a fixed linear map of the volts, clipped to the TIA
    range. For measuring the protocol's cost alone (no physics, no noise, no state)."""

    weights_na_per_v: tuple[float, ...] = (60.0, 45.0, 30.0, 20.0, 15.0, 10.0, 5.0)
    offset_na: float = -50.0
    tia_range_na: tuple[float, float] = TIA_RANGE_NA
    _w: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights_na_per_v, dtype=np.float64)
        if w.shape != (N_ELECTRODES,) or not np.all(np.isfinite(w)):
            raise ValueError(f"weights_na_per_v must be {N_ELECTRODES} finite numbers")
        self._w = w

    @property
    def describe(self) -> dict:
        return {"model": "null-linear", "model_version": 1, "weights_na_per_v": list(self.weights_na_per_v),
                "offset_na": self.offset_na, "tia_range_na": list(self.tia_range_na)}

    def convert(self, volts: np.ndarray, sample_period_s: float, oversample: int = 1) -> np.ndarray:
        v = _validate_volts(volts)
        _validate_timing(sample_period_s, oversample)
        out = v @ self._w
        out += self.offset_na
        np.clip(out, self.tia_range_na[0], self.tia_range_na[1], out=out)
        return out

    def reset(self) -> None:
        return None


__all__ = ["AnalogConfig", "NullDevice", "VirtualDNPU"]
