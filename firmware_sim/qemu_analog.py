"""The host-side analog emulator behind `firmware=qemu`: the board's DACs, device and ADC, for
the firmware in QEMU, which forwards each block of conversions over its second UART
(firmware/ports/qemu/analog_link.h declares the exchange; the layouts below mirror it).

A board of K devices sends rows of 7K codes and gets K codes per row back, sample-major.
The emulator is the Python firmware's analog side, unchanged: `Firmware.dac_output` (the DAC
errors drawn from the seed) and `Firmware.convert` (the virtual DNPU, or the null / linear
devices, then the ADC). So for one seed the qemu board measures the same chip as `firmware=python`
and `firmware=native`. It keeps the board clock's timestamps that come with each block, from
which the sample clock's lateness (jitter) is read.
"""
from __future__ import annotations

import socket
import struct
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from firmware_sim.board import Firmware

REQUEST = b"B"
REPLY = b"R"
BOOT = b"C"
REQUEST_HEAD = struct.Struct("<cBHIIQQ")     # 'B', oversample, n, period_ns, block, now, due
REPLY_HEAD = struct.Struct("<cBH")           # 'R', ok, n
BOOT_RECORD = struct.Struct("<cBHI")         # 'C', config, n_devices, the adopted block's size
assert REQUEST_HEAD.size == 28 and REPLY_HEAD.size == 4 and BOOT_RECORD.size == 8
NO_BLOCK = 0xFFFFFFFF                        # a row converted outside a sweep block
#: the BOOT record's config codes (ANALOG_CONFIG_* in analog_link.h): 0 adopted, 7 adopted with
#: the FIFO at the image's own size, the others why the launcher's block was not taken
CONFIG_ADOPTED = (0, 7)
CONFIG_REFUSED = {
    1: "no configuration block at its address", 2: "the block's layout version is not the image's",
    3: "the block's size is out of bounds", 4: "the device count is outside what the image carries",
    5: "the serial does not end within its field", 6: "a device description does not end within the block",
    8: "the board refused the settings and halted",
}


@dataclass(frozen=True)
class BootRecord:
    """What the firmware in QEMU adopted at boot (analog_link.h's BOOT)."""

    config: int
    n_devices: int
    config_size: int

    def problem(self, n_devices: int, config_size: int) -> str | None:
        """Why this is not the board the launcher packed (`n_devices`, a block of `config_size`
        bytes), or None."""
        if self.config not in CONFIG_ADOPTED:
            return CONFIG_REFUSED.get(self.config, f"unknown refusal code {self.config}")
        if (self.n_devices, self.config_size) != (n_devices, config_size):
            return (f"it adopted {self.n_devices} device(s) from a {self.config_size}-byte block, the launcher "
                    f"packed {n_devices} in {config_size} bytes")
        return None


@dataclass(frozen=True)
class BlockTiming:
    """When the board began converting a sweep block, and when its sample clock made it due
    (board clock ticks since boot; due 0: not a real-time sweep)."""

    block: int
    rows: int
    now_ticks: int
    due_ticks: int


@dataclass
class AnalogEmulator:
    firmware: Firmware                       # its DAC errors and ADC; its device is the one run
    timings: list[BlockTiming] = field(default_factory=list)
    device_error: str = ""
    _reader: "_Reader | None" = field(default=None, repr=False)   # the link, once read_boot has read from it

    def convert(self, codes: np.ndarray, period_s: float, oversample: int) -> np.ndarray | None:
        """ADC codes [n, K] for DAC codes [n, 7K] (None: the device failed; why in device_error)."""
        volts = self.firmware.dac_output(codes.astype(np.int64))
        try:
            return self.firmware.convert(np.ascontiguousarray(volts), period_s, oversample)
        except Exception as e:  # noqa: BLE001 - any device failure ends the sweep, as on the board
            self.device_error = f"{type(e).__name__}: {e}"
            print(f"analog emulator: {self.device_error}", file=sys.stderr, flush=True)
            return None

    def answer(self, head: bytes, rows: bytes) -> bytes:
        """The reply to one request (its head and its n rows of codes)."""
        tag, oversample, n, period_ns, block, now, due = REQUEST_HEAD.unpack(head)
        channels = self.firmware.channels
        if tag != REQUEST or len(rows) != 2 * channels * n or n == 0 or oversample == 0:
            return REPLY_HEAD.pack(REPLY, 0, n)
        codes = np.frombuffer(rows, dtype="<u2").reshape(n, channels)
        if block != NO_BLOCK:
            self.timings.append(BlockTiming(block, n, now, due))
        out = self.convert(codes, period_ns * 1e-9, oversample)
        if out is None:
            return REPLY_HEAD.pack(REPLY, 0, n)
        return REPLY_HEAD.pack(REPLY, 1, n) + out.astype("<i4").tobytes()

    def read_boot(self, sock: socket.socket, timeout_s: float) -> BootRecord | None:
        """The firmware's BOOT record, the first thing it sends (None: none within `timeout_s`,
        or something else came)."""
        self._reader = _Reader(sock)
        sock.settimeout(timeout_s)
        try:
            rec = self._reader.take(BOOT_RECORD.size)
        finally:
            sock.settimeout(None)
        if rec is None or rec[:1] != BOOT:
            return None
        _, config, n_devices, size = BOOT_RECORD.unpack(rec)
        return BootRecord(config, n_devices, size)

    def serve(self, sock: socket.socket) -> None:
        """Answer requests until the firmware's side closes (QEMU stopped)."""
        buf = self._reader if self._reader is not None else _Reader(sock)
        while True:
            head = buf.take(REQUEST_HEAD.size)
            if head is None:
                return
            n = REQUEST_HEAD.unpack(head)[2]
            rows = buf.take(2 * self.firmware.channels * n)
            if rows is None:
                return
            sock.sendall(self.answer(head, rows))

    def start(self, sock: socket.socket) -> threading.Thread:
        t = threading.Thread(target=self.serve, args=(sock,), name="qemu-analog", daemon=True)
        t.start()
        return t


class _Reader:
    """Exact-size reads from a stream socket (None at EOF)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out
