"""Opening a board's port from a URL, and moving bytes without blocking the protocol loop.

    /dev/ttyACM0, /dev/pts/3          a serial port (pyserial)
    socket://127.0.0.1:PORT            TCP (pyserial's socket handler)
    sim://?seed=N[&noise=X][&device=dnpu|null|linear][&watchdog_ms=..][...]
                                       starts `python -m firmware_sim --pty` and opens its pty
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import serial

from host.board.errors import BoardDisconnected, BoardError

# sim:// query option -> (firmware_sim flag, parser); anything else is rejected.
_SIM_OPTIONS = {
    "seed": ("--seed", int),
    "noise": ("--noise", float),
    "n_sites": ("--n-sites", int),
    "device": ("--device", str),
    "dac_bits": ("--dac-bits", int),
    "adc_bits": ("--adc-bits", int),
    "limits": ("--limits", str),
    "max_slew": ("--max-slew", float),
    "watchdog_ms": ("--watchdog-ms", float),
    "sample_period_us": ("--sample-period-us", float),
    "dac_gain_error": ("--dac-gain-error", float),
    "dac_offset_error_mv": ("--dac-offset-error-mv", float),
    "fifo_blocks": ("--fifo-blocks", int),
    "realtime": ("--realtime", None),
    "fail_after_rows": ("--fail-after-rows", int),
}


class Port(Protocol):
    """What the driver needs from a port: pyserial's Serial, or a wrapper around one."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def sim_command(url: str) -> list[str]:
    """The firmware_sim command line for a sim:// URL (validated: unknown options rejected)."""
    parts = urlsplit(url)
    if parts.scheme != "sim" or parts.path not in ("", "/") or parts.netloc:
        raise BoardError(f"bad sim URL {url!r}: expected sim://?seed=N[&option=value...]")
    cmd = [sys.executable, "-m", "firmware_sim", "--pty", "--exit-on-stdin-eof"]
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in _SIM_OPTIONS:
            raise BoardError(f"sim URL option {key!r} unknown; known: {', '.join(sorted(_SIM_OPTIONS))}")
        flag, conv = _SIM_OPTIONS[key]
        value = values[-1]
        if conv is None:
            if value not in ("", "1", "true", "yes"):
                raise BoardError(f"sim URL option {key!r} is a switch; got {value!r}")
            cmd.append(flag)
            continue
        try:
            conv(value)
        except ValueError:
            raise BoardError(f"sim URL option {key}={value!r} is not a valid {conv.__name__}") from None
        cmd += [flag, value]
    return cmd


@dataclass
class SimProcess:
    """A firmware_sim child process serving on a pty."""

    proc: subprocess.Popen
    path: str

    @classmethod
    def start(cls, url: str, startup_timeout_s: float = 30.0) -> "SimProcess":
        # Own session: a Ctrl-C at the terminal reaches the host, which zeroes the board and
        # then stops the simulator; the simulator also exits when our stdin pipe closes.
        errlog = tempfile.TemporaryFile()
        proc = subprocess.Popen(sim_command(url), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errlog, start_new_session=True)
        assert proc.stdout is not None
        deadline = time.monotonic() + startup_timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            r, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
            chunk = os.read(proc.stdout.fileno(), 256) if r else b""
            if not chunk:
                cls(proc, "").stop()
                errlog.seek(0)
                why = errlog.read().decode(errors="replace").strip().splitlines()[-3:]
                raise BoardError(f"simulator did not start ({url}): {' / '.join(why) or 'no output'}")
            line += chunk
        errlog.close()     # the simulator keeps writing to its (now unlinked) file
        return cls(proc, line.decode().strip())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def open_port(url: str, baudrate: int = 1_000_000) -> tuple[Port, SimProcess | None]:
    """A pyserial port for `url` (and the simulator process behind a sim:// URL).

    `baudrate` matters for UART bridges only (USB CDC ignores it). FTDI-style bridges also need
    their latency timer at 1 ms (Linux: /sys/bus/usb-serial/devices/ttyUSB*/latency_timer)."""
    sim = None
    target = url
    if url.startswith("sim:"):
        sim = SimProcess.start(url)
        target = sim.path
    try:
        extra = {} if target.startswith("socket://") else {"exclusive": True}   # one host per board
        port = serial.serial_for_url(target, baudrate=baudrate, timeout=0, write_timeout=5.0, **extra)
    except (serial.SerialException, ValueError, OSError) as e:
        if sim is not None:
            sim.stop()
        raise BoardDisconnected(f"cannot open {target!r}: {e}") from None
    sock = getattr(port, "_socket", None)     # pyserial's socket:// handler leaves Nagle on
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return port, sim


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
