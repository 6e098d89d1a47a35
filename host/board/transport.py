"""Opening a board's port from a URL, and moving bytes without blocking the protocol loop.

    /dev/ttyACM0, /dev/pts/3          a serial port (pyserial)
    socket://127.0.0.1:PORT            TCP (pyserial's socket handler)
    sim://?seed=N[&option=value...]    a simulated board (host.board.urlhandler.protocol_sim)
"""
from __future__ import annotations

import select
import socket
from typing import Protocol

import serial

from host.board.errors import BoardDisconnected, BoardError


class Port(Protocol):
    """What the driver needs from a port: pyserial's Serial, or a wrapper around one."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def open_port(url: str, baudrate: int = 1_000_000) -> Port:
    """A pyserial port for `url`, opened through `serial.serial_for_url` (so sim:// is pyserial's
    too, via `host.board.urlhandler`).

    `baudrate` matters for UART bridges only (USB CDC ignores it). FTDI-style bridges also need
    their latency timer at 1 ms (Linux: /sys/bus/usb-serial/devices/ttyUSB*/latency_timer)."""
    extra = {} if url.startswith("socket://") else {"exclusive": True}   # one host per board
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0, write_timeout=5.0, **extra)
    except ValueError as e:            # a URL its handler refuses (pyserial's convention)
        raise BoardError(f"cannot open {url!r}: {e}") from None
    except (serial.SerialException, OSError) as e:
        raise BoardDisconnected(f"cannot open {url!r}: {e}") from None
    sock = getattr(port, "_socket", None)     # pyserial's socket:// handler leaves Nagle on
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return port


class ByteLink:
    """Non-blocking reads with an explicit wait, on any `Port` (timeout set to 0)."""

    def __init__(self, port: Port) -> None:
        self.port = port
        port.timeout = 0
        reset = getattr(port, "reset_input_buffer", None)
        if reset is not None:
            reset()          # stale bytes from an earlier session

    def send(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise BoardDisconnected(f"write failed: {e}") from None

    def recv(self, wait_s: float) -> bytes:
        """Whatever has arrived, waiting at most `wait_s` for the first byte."""
        try:
            data = self.port.read(1 << 16)
            if data or wait_s <= 0:
                return data
            select.select([self.port.fileno()], [], [], wait_s)
            return self.port.read(1 << 16)
        except (serial.SerialException, OSError, ValueError) as e:
            raise BoardDisconnected(f"read failed: {e}") from None

    def close(self) -> None:
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass
