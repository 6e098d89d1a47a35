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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_sim.analog import TIA_RANGE_NA
from firmware_sim.board import BoardConfig, Firmware
from firmware_sim.devices import DeviceOptions, LinearDevice, make_device
from firmware_sim.options import option
from firmware_sim.physics import NullDevice

FIRMWARES = ("python", "native")
NATIVE_BINARY = Path(__file__).resolve().parents[1] / "build" / "firmware" / "native" / "dnpu-board"
NATIVE_DEVICES = ("null", "linear")
NATIVE_MAX_FIFO_BLOCKS = 512          # DNPU_MAX_FIFO_BLOCKS in firmware/core/board.h


@dataclass(frozen=True)
class FirmwareChoice:
    """Which firmware serves the simulated board (a simulator option)."""

    firmware: str = option("python", "which firmware serves the board: this simulator (python) or the C "
                                     "firmware's native port (native; make firmware builds it)",
                           choices=FIRMWARES)


def _floats(values) -> str:
    return ",".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).ravel())


def native_argv(cfg: BoardConfig, dev: DeviceOptions, exit_on_stdin_eof: bool) -> list[str]:
    """dnpu-board's command line for these options (ValueError for what it cannot serve)."""
    if dev.device not in NATIVE_DEVICES:
        raise ValueError(f"firmware=native serves device={'|'.join(NATIVE_DEVICES)}, not {dev.device!r}")
    if not 1 <= cfg.fifo_blocks <= NATIVE_MAX_FIFO_BLOCKS:
        raise ValueError(f"firmware=native needs fifo_blocks in 1..{NATIVE_MAX_FIFO_BLOCKS}, got {cfg.fifo_blocks}")
    if not NATIVE_BINARY.exists():
        raise ValueError(f"firmware=native: {NATIVE_BINARY} is not built (make firmware)")
    device = make_device(dev, cfg.seed)
    board = Firmware(cfg, device)          # draws the DAC errors from the seed
    if isinstance(device, LinearDevice):
        w, b, clip = device.w, device.b, TIA_RANGE_NA
    else:
        assert isinstance(device, NullDevice)
        w, b, clip = device._w, device.offset_na, device.tia_range_na
    fail = -1 if dev.fail_after_rows is None else dev.fail_after_rows
    argv = [str(NATIVE_BINARY), "--pty",
            "--seed", str(cfg.seed), "--dac-bits", str(cfg.dac_bits), "--adc-bits", str(cfg.adc_bits),
            "--dac-span", _floats(cfg.dac_span_v), "--adc-span", _floats(cfg.adc_span_na),
            "--limits", _floats(cfg.limits_v), "--max-slew", repr(float(cfg.max_slew_v_per_s)),
            "--watchdog-s", repr(float(cfg.watchdog_s)), "--sample-period-s", repr(float(cfg.sample_period_s)),
            "--fifo-blocks", str(cfg.fifo_blocks), "--realtime", str(int(cfg.realtime)),
            "--dac-gain", _floats(board.dac_gain), "--dac-offset", _floats(board.dac_offset),
            "--weights", _floats(w), "--bias", repr(float(b)), "--clip", _floats(clip),
            "--fail-after-rows", str(fail), "--serial", json.loads(board._identity)["serial"],
            "--device-json", json.dumps(device.describe, sort_keys=True, separators=(",", ":"))]
    return argv + (["--exit-on-stdin-eof"] if exit_on_stdin_eof else [])


def exec_native(argv: list[str]) -> None:
    """Replace this process by the native board (same pid, stdin and stdout)."""
    os.execv(argv[0], argv)
