"""`firmware=qemu`: the board served by the C firmware cross-compiled for an STM32F405, running
in QEMU's netduinoplus2 machine; its USART1 is the pty the host opens, its USART2 the analog
link to the host-side analog emulator (firmware_sim/qemu_analog.py) that runs the seeded device.

`python -m firmware_sim --pty --options 'firmware=qemu&seed=3'` parses the same options as ever,
packs the board's settings into the boot configuration block (firmware/ports/qemu/config.h),
builds the board's device and DAC errors from the seed exactly as `firmware=python` does, and
starts

    qemu-system-arm -M netduinoplus2 -nographic -monitor none -serial pty \
        -serial unix:DIR/analog.sock,server=on,wait=on \
        -kernel build/firmware-qemu/dnpu-board-qemu.elf -device loader,file=BLOCK,addr=0x080E0000

(`make firmware-qemu` builds the image). QEMU waits for the emulator to attach to the analog
socket before the firmware runs. The launcher prints the pty QEMU reports as its first stdout
line and stays as QEMU's parent: on stdin EOF (--exit-on-stdin-eof) or SIGTERM it stops QEMU and
exits. Bytes sent while no client holds the pty are lost; the host's HELLO retries cover that.
The part's RAM bounds the FIFO: fifo_blocks above QEMU_MAX_FIFO_BLOCKS is served as that many
(the identity says so, and the host adapts to it, as to max_sweep_samples).
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.board import BoardConfig, Firmware, members_of
from firmware_sim.devices import DeviceOptions, make_device
from firmware_sim.qemu_analog import AnalogEmulator, BootRecord
from firmware_sim.server import stop_event

ROOT = Path(__file__).resolve().parents[1]
QEMU_IMAGE = ROOT / "build" / "firmware-qemu" / "dnpu-board-qemu.elf"
QEMU_SYSTEM = "qemu-system-arm"
QEMU_MACHINE = "netduinoplus2"
QEMU_MAX_FIFO_BLOCKS = 16                 # DNPU_MAX_FIFO_BLOCKS in firmware/ports/qemu/CMakeLists.txt
QEMU_STARTUP_S = 20.0

# firmware/ports/qemu/config.h
QCFG_ADDR = 0x080E0000
QCFG_MAGIC = 0x51504E44
QCFG_VERSION = 3
QCFG_MAX_SIZE = 4096
#: the devices the qemu image carries (DNPU_MAX_DEVICES in firmware/ports/qemu/CMakeLists.txt)
QEMU_MAX_DEVICES = 4
QCFG_HEAD = struct.Struct(f"<10I4d3d{2 * N_ELECTRODES * QEMU_MAX_DEVICES}d64s")
assert QCFG_HEAD.size == 160 + 112 * QEMU_MAX_DEVICES


def qemu_board(cfg: BoardConfig, dev: DeviceOptions) -> Firmware:
    """The Python firmware for these options: the device and DAC errors the emulator runs, and
    the identity (serial) the qemu board reports."""
    if cfg.fifo_blocks < 1:
        raise ValueError(f"firmware=qemu needs fifo_blocks >= 1, got {cfg.fifo_blocks}")
    k = len(dev.chip_seeds(cfg.seed))
    if k > QEMU_MAX_DEVICES:
        raise ValueError(f"firmware=qemu carries at most {QEMU_MAX_DEVICES} devices, not {k}; a larger "
                         "board needs firmware=python or firmware=native")
    return Firmware(cfg, make_device(dev, cfg.seed))


def config_block(board: Firmware) -> bytes:
    """The boot configuration block for this board's settings, as it adopted its device (limits,
    ADC full scale); ValueError if they do not fit it."""
    cfg = board.cfg
    serial = json.loads(board._identity)["serial"].encode()
    members = members_of(board.device)
    device_json = b"".join(json.dumps(m.describe, sort_keys=True, separators=(",", ":")).encode() + b"\0"
                           for m in members)
    size = QCFG_HEAD.size + len(device_json)
    if len(serial) >= 64 or size > QCFG_MAX_SIZE:
        raise ValueError("firmware=qemu: the serial or the device description is too long for the config block")
    f64 = lambda v: [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]  # noqa: E731
    limits = np.zeros((QEMU_MAX_DEVICES * N_ELECTRODES, 2))
    limits[:len(cfg.limits_v)] = cfg.limits_v
    head = QCFG_HEAD.pack(
        QCFG_MAGIC, QCFG_VERSION, size, cfg.seed & 0xFFFFFFFF,
        cfg.dac_bits, cfg.adc_bits, min(cfg.fifo_blocks, QEMU_MAX_FIFO_BLOCKS), int(cfg.realtime),
        len(members), 0, *f64(cfg.dac_span_v), *f64(cfg.adc_span_na),
        float(cfg.max_slew_v_per_s), float(cfg.watchdog_s), float(cfg.sample_period_s), *f64(limits), serial)
    return head + device_json


def qemu_argv(block_path: str, analog_socket: str, image: Path = QEMU_IMAGE) -> list[str]:
    return [QEMU_SYSTEM, "-M", QEMU_MACHINE, "-nographic", "-monitor", "none", "-serial", "pty",
            "-serial", f"unix:{analog_socket},server=on,wait=on",
            "-kernel", str(image), "-device", f"loader,file={block_path},addr={QCFG_ADDR:#x}"]


def check_available() -> None:
    """ValueError naming what is missing to run firmware=qemu."""
    if shutil.which(QEMU_SYSTEM) is None:
        raise ValueError(f"firmware=qemu: {QEMU_SYSTEM} is not installed (apt-get install qemu-system-arm)")
    if not QEMU_IMAGE.exists():
        raise ValueError(f"firmware=qemu: {QEMU_IMAGE} is not built (make firmware-qemu)")


@dataclass
class QemuSession:
    """A running qemu board: the pty the host opens, QEMU's process and the analog emulator."""

    pty: str
    proc: subprocess.Popen
    analog: AnalogEmulator


@contextmanager
def run_qemu(cfg: BoardConfig, dev: DeviceOptions) -> Iterator[QemuSession]:
    """Start QEMU with the analog emulator attached; stop both on exit. ValueError (before
    anything starts) for options it cannot serve or a missing tool; RuntimeError if QEMU fails
    to start."""
    board = qemu_board(cfg, dev)
    block = config_block(board)
    check_available()
    with tempfile.TemporaryDirectory(prefix="dnpu-qemu-") as tmp:
        block_path, sock_path = os.path.join(tmp, "config.bin"), os.path.join(tmp, "analog.sock")
        Path(block_path).write_bytes(block)
        proc = subprocess.Popen(qemu_argv(block_path, sock_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        sock: socket.socket | None = None
        try:
            lines = _drain(proc)
            sock = _attach(sock_path, proc, lines)
            analog = AnalogEmulator(board)
            _check_boot(analog.read_boot(sock, QEMU_STARTUP_S), len(members_of(board.device)), len(block), lines)
            analog.start(sock)
            yield QemuSession(lines.pty(), proc, analog)
        finally:
            _stop(proc)
            if sock is not None:
                sock.close()


def serve_qemu(cfg: BoardConfig, dev: DeviceOptions, pty: bool, exit_on_stdin_eof: bool) -> int:
    """Start QEMU on these options, print its pty, run until stdin EOF / SIGTERM, stop QEMU.
    ValueError (before anything starts) for options it cannot serve or a missing tool."""
    if not pty:
        raise ValueError("firmware=qemu serves a pty only (--pty)")
    with run_qemu(cfg, dev) as session:
        print(session.pty, flush=True)
        _wait_for_stop(session.proc, exit_on_stdin_eof)
    return 0


def _check_boot(boot: BootRecord | None, n_devices: int, config_size: int, lines: "_QemuOutput") -> None:
    """RuntimeError unless the firmware booted as the board the launcher packed (a stale image, or
    a block it refuses, would otherwise serve its defaults as another board)."""
    if boot is None:
        raise RuntimeError(f"firmware=qemu: the image sent no boot record on its analog link within "
                           f"{QEMU_STARTUP_S:g} s (an image older than this launcher? make firmware-qemu); QEMU: {lines.why()}")
    why = boot.problem(n_devices, config_size)
    if why is not None:
        raise RuntimeError(f"firmware=qemu: {QEMU_IMAGE.name} did not take the board's configuration: {why} "
                           f"(rebuild it with make firmware-qemu)")


def _die_with_parent() -> None:
    """In QEMU's child before exec: SIGKILL it when the launcher dies, however it dies (a killed
    launcher must not leave QEMU holding the pty, or the host would never see the board go)."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _attach(path: str, proc: subprocess.Popen, lines: "_QemuOutput") -> socket.socket:
    """Connect to QEMU's analog socket once it listens (QEMU waits for this before running)."""
    deadline = time.monotonic() + QEMU_STARTUP_S
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return s
            except OSError:
                s.close()
        time.sleep(0.02)
    raise RuntimeError(f"firmware=qemu: QEMU did not open its analog link: {lines.why()}")


class _QemuOutput:
    """QEMU's stdout, drained by a thread so QEMU never blocks on it; the pty it reports."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.seen: list[str] = []
        self.ready = threading.Event()

    def why(self) -> str:
        return " / ".join(s for s in self.seen[-3:] if s) or "no output"

    def pty(self) -> str:
        self.ready.wait(QEMU_STARTUP_S)
        if not self.found:
            raise RuntimeError(f"firmware=qemu: QEMU did not report a pty: {self.why()}")
        return self.found[0]


def _drain(proc: subprocess.Popen) -> _QemuOutput:
    """QEMU's `char device redirected to /dev/pts/N (label serial0)` line; later output to stderr."""
    assert proc.stdout is not None
    out = _QemuOutput()

    def drain() -> None:
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if not out.ready.is_set():
                out.seen.append(line.strip())
                m = re.search(r"char device redirected to (/dev/\S+)", line)
                if m:
                    out.found.append(m.group(1))
                    out.ready.set()
            elif not re.search(r"waiting for connection|terminating on signal", line):
                sys.stderr.write(line)
        out.ready.set()

    threading.Thread(target=drain, daemon=True).start()
    return out


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
