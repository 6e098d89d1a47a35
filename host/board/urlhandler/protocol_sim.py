"""pyserial handler for `sim://?option=value&...`: a simulated bench board on a pty.

Opening the port starts `python -m firmware_sim --pty --options QUERY` as a child process and
opens the pseudo-terminal it serves; closing the port stops the child. The query is handed to
the simulator unchanged: the simulator declares its options (seed, noise, device, watchdog_ms,
...; `python -m firmware_sim --help`) and refuses unknown ones, and that refusal comes back
here as a ValueError (pyserial's convention for a bad URL) with the simulator's own words.
The child runs in the host's working directory, so a relative path in the query (the digital
twin's `model=FILE`) means what it means to the host.

The child runs in its own session, so a Ctrl-C at the terminal reaches only the host (which then
ramps the board to 0 V and closes the port); it also exits when its stdin pipe closes, so it
never outlives the host.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

from serial.serialposix import Serial as PosixSerial
from serial.serialutil import SerialException

STARTUP_TIMEOUT_S = 30.0
BAD_OPTIONS_EXIT = 2      # the simulator's exit status for options it refuses


def sim_query(url: str) -> str:
    """The option query of a sim:// URL (ValueError for anything but sim://[/]?query)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sim" or parts.netloc or parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"bad sim URL {url!r}: expected sim://?seed=N[&option=value...]")
    return parts.query


class SimulatorProcess:
    """A `python -m firmware_sim --pty` child; `path` is the pty it serves."""

    def __init__(self, proc: subprocess.Popen, path: str) -> None:
        self.proc = proc
        self.path = path

    @classmethod
    def start(cls, query: str, timeout_s: float = STARTUP_TIMEOUT_S) -> "SimulatorProcess":
        cmd = [sys.executable, "-m", "firmware_sim", "--pty", "--exit-on-stdin-eof", "--options", query]
        with tempfile.TemporaryFile() as errlog:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
                                    start_new_session=True)
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout_s
            line = b""
            while not line.endswith(b"\n"):
                r, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                chunk = os.read(proc.stdout.fileno(), 256) if r else b""
                if not chunk:
                    child = cls(proc, "")
                    child.stop()
                    errlog.seek(0)
                    why = errlog.read().decode(errors="replace").strip()
                    if proc.returncode == BAD_OPTIONS_EXIT:
                        raise ValueError(f"sim:// options {query!r} refused: {why}")
                    tail = " / ".join(why.splitlines()[-3:]) or (
                        "no output" if r else f"no port within {timeout_s} s")
                    raise SerialException(f"simulator did not start (sim://?{query}): {tail}")
                line += chunk
        # (the simulator keeps its stderr: an unlinked file nobody reads)
        return cls(proc, line.decode().strip())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


class Serial(PosixSerial):
    """A pyserial port onto a freshly started simulated board; `simulator` is its process."""

    simulator: SimulatorProcess | None = None

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        url = self._port
        self.simulator = SimulatorProcess.start(sim_query(url))
        self.portstr = self.simulator.path          # what the POSIX port opens
        try:
            super().open()
        except BaseException:
            self.simulator.stop()
            self.simulator = None
            raise
        finally:
            self.portstr = url

    def close(self) -> None:
        super().close()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
