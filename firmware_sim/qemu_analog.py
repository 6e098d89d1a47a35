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
REQUEST_HEAD = struct.Struct("<cBHIIQQ")     # 'B', oversample, n, period_ns, block, now, due
REPLY_HEAD = struct.Struct("<cBH")           # 'R', ok, n
assert REQUEST_HEAD.size == 28 and REPLY_HEAD.size == 4
NO_BLOCK = 0xFFFFFFFF                        # a row converted outside a sweep block


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

    def serve(self, sock: socket.socket) -> None:
        """Answer requests until the firmware's side closes (QEMU stopped)."""
        buf = _Reader(sock)
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
