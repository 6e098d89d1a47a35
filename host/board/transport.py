"""Opening a board's port from a URL, and moving bytes without blocking the protocol loop.

    /dev/ttyACM0, /dev/pts/3          a serial port (pyserial)
    socket://127.0.0.1:PORT            TCP (pyserial's socket handler)
    sim://?seed=N[&option=value...]    a simulated board (host.board.urlhandler.protocol_sim)
"""
from __future__ import annotations

import os
import select
import socket
import time
from typing import Protocol

import serial

try:
    from serial.serialposix import Serial as _PosixSerial
except ImportError:                    # not a POSIX system: no fast path
    _PosixSerial = None  # type: ignore[assignment,misc]

from host.board.errors import BoardDisconnected, BoardError


class Port(Protocol):
    """What the driver needs from a port: pyserial's Serial, or a wrapper around one."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


#: how long a write may wait for room in the link before the board counts as gone
WRITE_TIMEOUT_S = 5.0


def open_port(url: str, baudrate: int = 1_000_000) -> Port:
    """A pyserial port for `url`, opened through `serial.serial_for_url` (so sim:// is pyserial's
    too, via `host.board.urlhandler`).

    `baudrate` matters for UART bridges only (USB CDC ignores it). FTDI-style bridges also need
    their latency timer at 1 ms (Linux: /sys/bus/usb-serial/devices/ttyUSB*/latency_timer)."""
    extra = {} if url.startswith("socket://") else {"exclusive": True}   # one host per board
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0, write_timeout=WRITE_TIMEOUT_S, **extra)
    except ValueError as e:            # a URL its handler refuses (pyserial's convention)
        raise BoardError(f"cannot open {url!r}: {e}") from None
    except (serial.SerialException, OSError) as e:
        raise BoardDisconnected(f"cannot open {url!r}: {e}") from None
    sock = getattr(port, "_socket", None)     # pyserial's socket:// handler leaves Nagle on
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return port


class ByteLink:
    """Non-blocking reads with an explicit wait, on any `Port` (timeout set to 0).

    On a POSIX serial port or pty (pyserial opens it non-blocking) bytes move with os.read and
    os.write on its descriptor directly: a pty hands out at most a few KB per read, and pyserial's
    per-call select and copies would cost more than the bytes themselves. Any other port (TCP,
    a fault-injecting wrapper) goes through its own read and write."""

    READ_MAX = 1 << 18             # bytes gathered per recv() on the fast path

    def __init__(self, port: Port) -> None:
        self.port = port
        port.timeout = 0
        reset = getattr(port, "reset_input_buffer", None)
        if reset is not None:
            reset()          # stale bytes from an earlier session
        self._fd: int | None = None
        if _PosixSerial is not None and isinstance(port, _PosixSerial):
            fd = getattr(port, "fd", None)
            if isinstance(fd, int) and not os.get_blocking(fd):
                self._fd = fd

    def send(self, data: bytes) -> None:
        try:
            if self._fd is not None:
                self._send_fd(self._fd, data)
                return
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise BoardDisconnected(f"write failed: {e}") from None

    def _send_fd(self, fd: int, data: bytes) -> None:
        view, deadline = memoryview(data), None
        while True:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                pass
            if not view:
                return
            now = time.monotonic()
            if deadline is None:
                deadline = now + WRITE_TIMEOUT_S
            elif now >= deadline:
                raise BoardDisconnected(f"write timed out: no room for {len(view)} bytes in {WRITE_TIMEOUT_S} s")
            select.select([], [fd], [], deadline - now)

    def recv(self, wait_s: float) -> bytes:
        """Whatever has arrived, waiting at most `wait_s` for the first byte."""
        if self._fd is not None:
            return self._recv_fd(self._fd, wait_s)
        try:
            data = self.port.read(1 << 16)
            if data or wait_s <= 0:
                return data
            select.select([self.port.fileno()], [], [], wait_s)
            return self.port.read(1 << 16)
        except (serial.SerialException, OSError, ValueError) as e:
            raise BoardDisconnected(f"read failed: {e}") from None

    def _recv_fd(self, fd: int, wait_s: float) -> bytes:
        # A tty in raw mode (VMIN = VTIME = 0) answers an empty read with b"" rather than
        # EAGAIN, so b"" means "nothing yet" -- unless select just said the port is readable:
        # then the other end is gone (pyserial's own test).
        chunks: list[bytes] = []
        total, waited, ready = 0, wait_s <= 0, False
        try:
            while total < self.READ_MAX:
                try:
                    b = os.read(fd, 1 << 16)
                except BlockingIOError:
                    b = b""
                if b:
                    chunks.append(b)
                    total += len(b)
                    ready = False
                    continue
                if ready:
                    raise BoardDisconnected("read failed: the port reports readiness to read but "
                                            "returned no data (device disconnected?)")
                if chunks or waited:
                    break
                waited = True
                ready = bool(select.select([fd], [], [], wait_s)[0])
        except (OSError, ValueError) as e:
            raise BoardDisconnected(f"read failed: {e}") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass
