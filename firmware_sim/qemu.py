"""`firmware=qemu`: the board served by the C firmware cross-compiled for an STM32F405, running
in QEMU's netduinoplus2 machine; its USART1 is the pty the host opens.

`python -m firmware_sim --pty --options 'firmware=qemu&seed=3&device=linear'` parses the same
options as ever, draws the analog side's parameters from the seed exactly as `firmware=native`
does, packs them into the boot configuration block (firmware/ports/qemu/config.h), and starts

    qemu-system-arm -M netduinoplus2 -nographic -monitor none -serial pty \
        -kernel build/firmware-qemu/dnpu-board-qemu.elf -device loader,file=BLOCK,addr=0x080E0000

(`make firmware-qemu` builds the image). It prints the pty QEMU reports as its first stdout line
and stays as QEMU's parent: on stdin EOF (--exit-on-stdin-eof) or SIGTERM it stops QEMU and
exits. Bytes sent while no client holds the pty are lost; the host's HELLO retries cover that.
The part's RAM bounds the FIFO: fifo_blocks above QEMU_MAX_FIFO_BLOCKS is served as that many
(the identity says so, and the host adapts to it, as to max_sweep_samples).
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from firmware_sim.board import BoardConfig, Firmware
from firmware_sim.devices import DeviceOptions, make_device
from firmware_sim.native import affine_terms
from firmware_sim.server import stop_event

ROOT = Path(__file__).resolve().parents[1]
QEMU_IMAGE = ROOT / "build" / "firmware-qemu" / "dnpu-board-qemu.elf"
QEMU_SYSTEM = "qemu-system-arm"
QEMU_MACHINE = "netduinoplus2"
QEMU_DEVICES = ("null", "linear")
QEMU_MAX_FIFO_BLOCKS = 16                 # DNPU_MAX_FIFO_BLOCKS in firmware/ports/qemu/CMakeLists.txt
QEMU_STARTUP_S = 20.0

# firmware/ports/qemu/config.h
QCFG_ADDR = 0x080E0000
QCFG_MAGIC = 0x51504E44
QCFG_VERSION = 1
QCFG_MAX_SIZE = 4096
QCFG_HEAD = struct.Struct("<8I4d14d3d21d3dq64s")
assert QCFG_HEAD.size == 464


def config_block(cfg: BoardConfig, dev: DeviceOptions) -> bytes:
    """The boot configuration block for these options (ValueError for what the port cannot serve)."""
    if dev.device not in QEMU_DEVICES:
        raise ValueError(f"firmware=qemu serves device={'|'.join(QEMU_DEVICES)}, not {dev.device!r}")
    if cfg.fifo_blocks < 1:
        raise ValueError(f"firmware=qemu needs fifo_blocks >= 1, got {cfg.fifo_blocks}")
    device = make_device(dev, cfg.seed)
    board = Firmware(cfg, device)          # draws the DAC errors from the seed (as firmware=native)
    w, b, clip = affine_terms(device)
    fail = -1 if dev.fail_after_rows is None else dev.fail_after_rows
    serial = json.loads(board._identity)["serial"].encode()
    device_json = json.dumps(device.describe, sort_keys=True, separators=(",", ":")).encode() + b"\0"
    size = QCFG_HEAD.size + len(device_json)
    if len(serial) >= 64 or size > QCFG_MAX_SIZE:
        raise ValueError("firmware=qemu: the serial or the device description is too long for the config block")
    f64 = lambda v: [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]  # noqa: E731
    head = QCFG_HEAD.pack(
        QCFG_MAGIC, QCFG_VERSION, size, cfg.seed & 0xFFFFFFFF,
        cfg.dac_bits, cfg.adc_bits, min(cfg.fifo_blocks, QEMU_MAX_FIFO_BLOCKS), int(cfg.realtime),
        *f64(cfg.dac_span_v), *f64(cfg.adc_span_na), *f64(cfg.limits_v),
        float(cfg.max_slew_v_per_s), float(cfg.watchdog_s), float(cfg.sample_period_s),
        *f64(board.dac_gain), *f64(board.dac_offset), *f64(w),
        float(b), *f64(clip), int(fail), serial)
    return head + device_json


def qemu_argv(block_path: str, image: Path = QEMU_IMAGE) -> list[str]:
    return [QEMU_SYSTEM, "-M", QEMU_MACHINE, "-nographic", "-monitor", "none", "-serial", "pty",
            "-kernel", str(image), "-device", f"loader,file={block_path},addr={QCFG_ADDR:#x}"]


def check_available() -> None:
    """ValueError naming what is missing to run firmware=qemu."""
    if shutil.which(QEMU_SYSTEM) is None:
        raise ValueError(f"firmware=qemu: {QEMU_SYSTEM} is not installed (apt-get install qemu-system-arm)")
    if not QEMU_IMAGE.exists():
        raise ValueError(f"firmware=qemu: {QEMU_IMAGE} is not built (make firmware-qemu)")


def serve_qemu(cfg: BoardConfig, dev: DeviceOptions, pty: bool, exit_on_stdin_eof: bool) -> int:
    """Start QEMU on these options, print its pty, run until stdin EOF / SIGTERM, stop QEMU.
    ValueError (before anything starts) for options it cannot serve or a missing tool."""
    if not pty:
        raise ValueError("firmware=qemu serves a pty only (--pty)")
    block = config_block(cfg, dev)
    check_available()
    with tempfile.NamedTemporaryFile(prefix="dnpu-qemu-config-", suffix=".bin") as f:
        f.write(block)
        f.flush()
        proc = subprocess.Popen(qemu_argv(f.name), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            path = _pty_path(proc)
            print(path, flush=True)
            _wait_for_stop(proc, exit_on_stdin_eof)
        finally:
            _stop(proc)
    return 0


def _pty_path(proc: subprocess.Popen) -> str:
    """QEMU's `char device redirected to /dev/pts/N (label serial0)` line; later output drained."""
    assert proc.stdout is not None
    found: list[str] = []
    seen: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for raw in proc.stdout:                      # keep reading, so QEMU never blocks on it
            line = raw.decode(errors="replace")
            if not ready.is_set():
                seen.append(line.strip())
                m = re.search(r"char device redirected to (/dev/\S+)", line)
                if m:
                    found.append(m.group(1))
                    ready.set()
            else:
                sys.stderr.write(line)
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(QEMU_STARTUP_S)
    if not found:
        why = " / ".join(s for s in seen[-3:] if s) or "no output"
        raise RuntimeError(f"firmware=qemu: QEMU did not report a pty: {why}")
    return found[0]


def _wait_for_stop(proc: subprocess.Popen, exit_on_stdin_eof: bool) -> None:
    stop = stop_event(exit_on_stdin_eof)
    try:
        while not stop.is_set() and proc.poll() is None:
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
