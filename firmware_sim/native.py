"""`firmware=native`: the board served by the C firmware's native port instead of this simulator.

`python -m firmware_sim --pty --options 'firmware=native&seed=3&device=linear'` parses the same
options as ever, then execs `build/firmware/native/dnpu-board` (built by `make firmware`) with
them translated to its flags, so a `sim://?firmware=native&...` URL opens the C firmware and the
host needs no change. The analog side's parameters are drawn here, by the simulator's own code
from the same seed (the DAC errors by `Firmware`, the device by `make_device`), and handed over
as numbers: a seed means the same board in both.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.analog import TIA_RANGE_NA
from firmware_sim.board import BoardConfig, Firmware, members_of
from firmware_sim.devices import DeviceOptions, LinearDevice, make_device
from firmware_sim.options import option
from firmware_sim.physics import NullDevice, VirtualDNPU
from firmware_sim.physics.geometry import K_B_EV

FIRMWARES = ("python", "native", "qemu")
NATIVE_BINARY = Path(__file__).resolve().parents[1] / "build" / "firmware" / "native" / "dnpu-board"
NATIVE_DEVICES = ("dnpu", "null", "linear")
NATIVE_MAX_FIFO_BLOCKS = 512          # DNPU_MAX_FIFO_BLOCKS in firmware/core/board.h

# The virtual DNPU's parameter file (read by firmware/ports/native/dnpu_device.c; the layout is
# declared there too): magic, u32 n_sites, flicker_processes, nthreads, max_iter, len(DNPU_SCALARS),
# u64 noise_seed, the scalars, the arrays psi [n, 8], e_static [n], coulomb [n, n], w_site [n, n],
# w_elec [n, 8], p_guess [n], flicker rates [m] (float64), then the FNV-1a 64 of all before it.
DNPU_PARAMS_MAGIC = b"DNPUDEV1"
DNPU_SCALARS = ("beta", "dt0", "dt_max", "tol_abs", "tol_quad", "scale_na", "temperature_k", "k_b_ev",
                "max_abs_volts", "noise_level", "white_noise_na", "flicker_rel", "drift_rel", "drift_tau_s",
                "temperature_rms_k", "temperature_tau_s", "line_tau_s", "slew_v_per_s", "tia_bandwidth_hz",
                "tia_lo_na", "tia_hi_na")
_keep_open: list = []                 # the parameter file must stay open until the exec


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def dnpu_params_blob(device: VirtualDNPU) -> bytes:
    """Everything the native port's virtual DNPU is made of, from the simulator's own device:
    its kernel inputs (exactly what VirtualDNPU passes to _physics.Kernel), current scale, noise,
    settling and TIA parameters."""
    from firmware_sim.physics.device import MAX_ABS_VOLTS
    if device.warm_start:
        raise ValueError("firmware=native: the virtual DNPU runs cold-started rows only")
    g, a, s = device.geometry, device.analog, device.solver
    noise_seed = a.noise_seed if a.noise_seed is not None else g.seed
    scalars = dict(beta=g.beta, dt0=s.dt0, dt_max=s.dt_max, tol_abs=s.tol_abs, tol_quad=s.tol_quad,
                   scale_na=device.scale_na, temperature_k=g.params.temperature_k, k_b_ev=K_B_EV,
                   max_abs_volts=MAX_ABS_VOLTS, noise_level=a.noise_level, white_noise_na=a.white_noise_na,
                   flicker_rel=a.flicker_rel, drift_rel=a.drift_rel, drift_tau_s=a.drift_tau_s,
                   temperature_rms_k=a.temperature_rms_k, temperature_tau_s=a.temperature_tau_s,
                   line_tau_s=a.line_tau_s, slew_v_per_s=a.slew_v_per_s, tia_bandwidth_hz=a.tia_bandwidth_hz,
                   tia_lo_na=a.tia_range_na[0], tia_hi_na=a.tia_range_na[1])
    n = g.n_sites
    arrays = [(g.psi, (n, 8)), (g.e_static_ev, (n,)), (g.coulomb_ev, (n, n)), (g.w_site, (n, n)),
              (g.w_elec, (n, 8)), (np.full(n, 0.5), (n,)), (device._flicker_rate, (a.flicker_processes,))]
    head = DNPU_PARAMS_MAGIC + struct.pack("<5IQ", n, a.flicker_processes, device.nthreads, s.max_iter,
                                           len(DNPU_SCALARS), int(noise_seed) & 0xFFFFFFFFFFFFFFFF)
    body = np.array([scalars[k] for k in DNPU_SCALARS], "<f8").tobytes()
    for arr, shape in arrays:
        arr = np.ascontiguousarray(arr, dtype="<f8")
        assert arr.shape == shape, (arr.shape, shape)
        body += arr.tobytes()
    data = head + body
    return data + struct.pack("<Q", _fnv1a64(data))


def _dnpu_params_file(device: VirtualDNPU) -> str:
    """An unlinked temporary file holding the parameters, inherited across the exec: /dev/fd/N."""
    f = tempfile.TemporaryFile()
    f.write(dnpu_params_blob(device))
    f.flush()
    f.seek(0)
    os.set_inheritable(f.fileno(), True)
    _keep_open.append(f)
    return f"/dev/fd/{f.fileno()}"


@dataclass(frozen=True)
class FirmwareChoice:
    """Which firmware serves the simulated board (a simulator option)."""

    firmware: str = option("python", "which firmware serves the board: this simulator (python), the C "
                                     "firmware's native port (native; make firmware builds it) or its "
                                     "STM32F405 image in QEMU (qemu; make firmware-qemu)",
                           choices=FIRMWARES)


def affine_terms(device: LinearDevice | NullDevice) -> tuple[np.ndarray, float, tuple[float, float]]:
    """(w, b, clip range) of an affine device, nA = clip(w . volts + b): what the C ports model."""
    if isinstance(device, LinearDevice):
        return device.w, device.b, TIA_RANGE_NA
    if isinstance(device, NullDevice):
        return device._w, device.offset_na, device.tia_range_na
    raise TypeError(f"not an affine device: {type(device).__name__}")


def _floats(values) -> str:
    return ",".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).ravel())


def native_argv(cfg: BoardConfig, dev: DeviceOptions, exit_on_stdin_eof: bool) -> list[str]:
    """dnpu-board's command line for these options (ValueError for what it cannot serve)."""
    if dev.device == "surrogate":
        raise ValueError("firmware=native cannot serve device=surrogate (the C firmware has no surrogate "
                         "evaluator): use firmware=python or firmware=qemu for a digital twin")
    if dev.device not in NATIVE_DEVICES:
        raise ValueError(f"firmware=native serves device={'|'.join(NATIVE_DEVICES)}, not {dev.device!r}")
    if not 1 <= cfg.fifo_blocks <= NATIVE_MAX_FIFO_BLOCKS:
        raise ValueError(f"firmware=native needs fifo_blocks in 1..{NATIVE_MAX_FIFO_BLOCKS}, got {cfg.fifo_blocks}")
    if not NATIVE_BINARY.exists():
        raise ValueError(f"firmware=native: {NATIVE_BINARY} is not built (make firmware)")
    device = make_device(dev, cfg.seed)
    board = Firmware(cfg, device)          # draws the DAC errors from the seed
    cfg = board.cfg                        # limits and ADC full scale as the board adopted them
    members = members_of(device)           # K devices: K x 7 channels, in device order
    extra: list[str] = ["--devices", str(len(members))]
    for m in members:
        extra += ["--device-json", json.dumps(m.describe, sort_keys=True, separators=(",", ":"))]
    if isinstance(members[0], VirtualDNPU):
        w, b, clip = np.zeros(N_ELECTRODES * len(members)), np.zeros(len(members)), members[0].analog.tia_range_na
        for m in members:
            extra += ["--dnpu-params", _dnpu_params_file(m)]
    else:
        terms = [affine_terms(m) for m in members]
        w, b, clip = np.concatenate([t[0] for t in terms]), np.array([t[1] for t in terms]), terms[0][2]
    fail = -1 if dev.fail_after_rows is None else dev.fail_after_rows
    argv = [str(NATIVE_BINARY), "--pty",
            "--seed", str(cfg.seed), "--dac-bits", str(cfg.dac_bits), "--adc-bits", str(cfg.adc_bits),
            "--dac-span", _floats(cfg.dac_span_v), "--adc-span", _floats(cfg.adc_span_na),
            "--limits", _floats(cfg.limits_v), "--max-slew", repr(float(cfg.max_slew_v_per_s)),
            "--watchdog-s", repr(float(cfg.watchdog_s)), "--sample-period-s", repr(float(cfg.sample_period_s)),
            "--fifo-blocks", str(cfg.fifo_blocks), "--realtime", str(int(cfg.realtime)),
            "--dac-gain", _floats(board.dac_gain), "--dac-offset", _floats(board.dac_offset),
            "--weights", _floats(w), "--bias", _floats(b), "--clip", _floats(clip),
            "--fail-after-rows", str(fail), "--serial", json.loads(board._identity)["serial"], *extra]
    return argv + (["--exit-on-stdin-eof"] if exit_on_stdin_eof else [])


def exec_native(argv: list[str]) -> None:
    """Replace this process by the native board (same pid, stdin and stdout)."""
    os.execv(argv[0], argv)
