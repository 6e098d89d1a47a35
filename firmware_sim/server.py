"""The board's I/O loop: a pty or a TCP socket on one side, `Firmware` on the other.

One thread moves bytes (select on the link and a wake-up pipe); a compute worker runs sweep
blocks through the analog device while earlier blocks are on the wire.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import sys
import threading
import time
import tty
from typing import Protocol

from firmware_sim.board import Firmware

_READ_SIZE = 1 << 16
_OUTBUF_HIGH = 1 << 16


class Link(Protocol):
    def fileno(self) -> int | None: ...          # None while no peer is attached
    def read(self) -> bytes | None: ...          # None: the peer went away
    def write(self, data: bytes | bytearray) -> int: ...
    def wait_peer(self, timeout: float) -> bytes | None: ...   # first bytes once a peer is there
    def close(self) -> None: ...


class PtyLink:
    """The master side of a pseudo-terminal; the host opens `path` like any serial port."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)          # so that the host closing its end shows up as EIO here
        os.set_blocking(self.master, False)
        self.peer = False

    def fileno(self) -> int | None:
        return self.master if self.peer else None

    def wait_peer(self, timeout: float) -> bytes | None:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return None
        try:
            data = os.read(self.master, _READ_SIZE)
        except OSError as e:
            if e.errno in (errno.EIO, errno.EAGAIN):
                time.sleep(timeout)   # nobody has the slave open
                return None
            raise
        self.peer = True
        return data

    def read(self) -> bytes | None:
        try:
            return os.read(self.master, _READ_SIZE)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:
                self.peer = False
                return None
            raise

    def write(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0
        except OSError as e:
            if e.errno == errno.EIO:
                return len(data)       # nobody listening: the bytes are lost, as on a UART
            raise

    def close(self) -> None:
        os.close(self.master)


class TcpLink:
    """127.0.0.1:port, one client at a time (pyserial's socket:// URL on the host)."""

    def __init__(self, port: int) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.path = f"socket://127.0.0.1:{self.port}"
        self.client: socket.socket | None = None

    def fileno(self) -> int | None:
        return self.client.fileno() if self.client is not None else None

    def wait_peer(self, timeout: float) -> bytes | None:
        r, _, _ = select.select([self.server], [], [], timeout)
        if not r:
            return None
        self.client, _ = self.server.accept()
        self.client.setblocking(False)
        self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return b""

    def read(self) -> bytes | None:
        assert self.client is not None
        try:
            data = self.client.recv(_READ_SIZE)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self.client.close()
            self.client = None
            return None
        return data

    def write(self, data: bytes | bytearray) -> int:
        if self.client is None:
            return len(data)
        try:
            return self.client.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            return len(data)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.server.close()


def stop_event(exit_on_stdin_eof: bool) -> threading.Event:
    """An event set on SIGTERM and, if asked, when stdin reaches EOF (the host's sim:// handler
    holds our stdin: when the host goes away, so does the board)."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if exit_on_stdin_eof:
        def watch() -> None:
            while os.read(0, 1024):
                pass
            stop.set()
        threading.Thread(target=watch, daemon=True).start()
    return stop


def _worker(fw: Firmware, wake_w: int) -> None:
    while not fw.stop:
        job = fw.take_job(0.1)
        if job is None:
            continue
        try:
            codes = fw.run_job(job)
        except Exception as e:  # noqa: BLE001 - a device fault must not hang the board
            print(f"firmware_sim: analog device failed: {e!r}", file=sys.stderr, flush=True)
            fw.fail_job(job, e)
            os.write(wake_w, b"\0")
            continue
        if fw.cfg.realtime:
            s = job.sweep
            rows_done = min((job.block + 1) * s.block, s.n)      # a last, partial block ends early
            t_end = s.t_start + rows_done * s.period_s * s.oversample
            delay = t_end - fw.clock()
            if delay > 0:
                time.sleep(delay)
        fw.finish_job(job, codes)
        try:
            os.write(wake_w, b"\0")
        except BlockingIOError:
            pass


def serve(fw: Firmware, link: Link, stop: threading.Event | None = None) -> None:
    """Run until `stop` is set (or forever)."""
    stop = stop or threading.Event()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    worker = threading.Thread(target=_worker, args=(fw, wake_w), name="analog", daemon=True)
    worker.start()
    out = bytearray()
    try:
        while not stop.is_set():
            fd = link.fileno()
            if fd is None:
                out.clear()
                fw.poll(room=False)
                first = link.wait_peer(0.02)
                if first:
                    out += b"".join(fw.receive(first))
                continue
            r, _, _ = select.select([fd, wake_r], [fd] if out else [], [], 0.01)
            if wake_r in r:
                os.read(wake_r, 4096)
            if fd in r:
                data = link.read()
                if data is None:
                    fw.port_closed()
                    continue
                if data:
                    out += b"".join(fw.receive(data))
            out += b"".join(fw.poll(room=len(out) < _OUTBUF_HIGH))
            if out:
                n = link.write(out)
                del out[:n]
    finally:
        fw.stop = True
        with fw.lock:
            fw.lock.notify_all()
        worker.join(timeout=2.0)
        os.close(wake_r)
        os.close(wake_w)
