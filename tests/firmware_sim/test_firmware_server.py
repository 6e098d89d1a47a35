"""The simulator's I/O loop on a real pty, in-process: frames in and out, and a host closing the
port (EIO on the master) latches the safe state."""
from __future__ import annotations

import threading
import time

import serial

from firmware_sim import protocol as F
from firmware_sim.board import BoardConfig, Firmware
from firmware_sim.devices import LinearDevice
from firmware_sim.server import PtyLink, serve
from host.board import protocol as H


def _replies(port: serial.Serial, n: int, deadline_s: float = 5.0) -> list[H.Frame]:
    dec, got = H.FrameDecoder(), []
    t_end = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < t_end:
        got += dec.feed(port.read(4096))
    return got


def test_pty_link_serves_frames_and_notices_the_port_closing() -> None:
    fw = Firmware(BoardConfig(), LinearDevice(0))
    link = PtyLink()
    stop = threading.Event()
    loop = threading.Thread(target=serve, args=(fw, link, stop), daemon=True)
    loop.start()
    try:
        port = serial.Serial(link.path, timeout=0.05)
        port.write(H.build("HELLO", 1, major=1, minor=0, schema=H.SCHEMA_HASH) + H.build("ARM", 2))
        got = _replies(port, 2)
        assert [(f.name, f.seq) for f in got] == [("HELLO_REPLY", 1), ("ACK", 2)]
        assert fw.armed and fw.connected
        port.close()
        t_end = time.monotonic() + 5.0
        while fw.counters["port_closes"] == 0 and time.monotonic() < t_end:
            time.sleep(0.01)
        assert fw.counters["port_closes"] == 1
        assert not fw.armed and not fw.connected
        assert (F.ERR_WATCHDOG, 0, 2) in fw.errors           # arg 2: port closed
    finally:
        stop.set()
        loop.join(timeout=5)
        link.close()
    assert not loop.is_alive()
