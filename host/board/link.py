"""Request and reply over a board's port (docs/protocol.md, section 2).

`Link` numbers each request, resends it with the *same* sequence number after a timeout or a
NAK (the board answers a repeat from its reply cache, so nothing runs twice), drops stale
replies, turns ERROR replies into typed exceptions, keeps the board's watchdog fed from a
heartbeat thread while the host is idle (and with `keepalive` frames while a reply is overdue,
so lost replies never trip it), drops an incomplete frame once the link has been quiet for
`FRAME_GAP_S` (so a frame that lost bytes cannot swallow the next), and counts what happened on
the wire. Stream frames (RESULT) go to `stream_sink`, set by the sweep streamer.
"""
from __future__ import annotations

import dataclasses
from collections import deque
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from host.board import protocol as P
from host.board.errors import (BoardDisconnected, BoardTimeout, ProtocolError, RemoteError,
                               RemoteLimitError, RemoteSafeState)
from host.board.transport import ByteLink, Port


@dataclass
class HostCounters:
    """What the host saw on the link (reported by `Board.counters()["host"]`)."""

    tx_frames: int = 0
    rx_frames: int = 0
    retries: int = 0
    timeouts: int = 0
    naks_received: int = 0
    stale_replies: int = 0
    duplicate_blocks: int = 0
    out_of_order_blocks: int = 0
    rewinds: int = 0
    samples_received: int = 0
    garbage_bytes: int = 0
    header_errors: int = 0
    crc_errors: int = 0
    frame_timeouts: int = 0     # incomplete frames dropped after a quiet gap
    keepalives: int = 0         # STATUS | NOREPLY sent while waiting for a reply

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Link:
    """One board's request/reply channel. `lock` serialises requests (and multi-request
    operations that hold it); the heartbeat only fires while nobody holds it."""

    def __init__(self, port: Port, timeout_s: float, retries: int, heartbeat_s: float) -> None:
        self.timeout_s = timeout_s
        self.retries = retries
        self.heartbeat_s = heartbeat_s
        self.lock = threading.RLock()
        self.counters = HostCounters()
        self.stream_sink: Callable[[P.Frame], None] | None = None
        self.broken = False             # the port failed: do not try to talk any more
        self.last_tx = 0.0
        self.heartbeat_error: BaseException | None = None
        self._bytes = ByteLink(port)
        self._decoder = P.FrameDecoder()
        self._last_rx = time.monotonic()
        self._inbox: deque[P.Frame] = deque()     # replies pumped but not yet claimed
        self._seq = random.randrange(1 << 16)
        self._closed = False
        self._stop_hb = threading.Event()
        self._hb: threading.Thread | None = None

    @property
    def port(self) -> Port:
        return self._bytes.port

    # ---- frames in and out --------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        self._bytes.send(frame)
        self.last_tx = time.monotonic()
        self.counters.tx_frames += 1

    def next_seq(self) -> int:
        """A new request sequence number (+1 mod 2^16)."""
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def keepalive(self) -> None:
        """Pet the board's watchdog without asking anything: STATUS with NOREPLY (any valid frame
        pets it; a NOREPLY command gets no reply). Sent while a reply is overdue."""
        self.send(P.encode_frame(P.SCHEMA["STATUS"].id, 0, b"", P.FLAG_NOREPLY))
        self.counters.keepalives += 1

    def pump(self, wait_s: float) -> list[P.Frame]:
        """Decode whatever arrives within `wait_s`; stream frames go to `stream_sink`, the
        others are returned. An incomplete frame that stopped arriving `P.FRAME_GAP_S` ago is
        dropped (a byte was lost on the wire), so it cannot swallow the frames that follow."""
        try:
            data = self._bytes.recv(wait_s)
        except BoardDisconnected:
            self.broken = True
            raise
        now = time.monotonic()
        if data:
            self._last_rx = now
            frames = self._decoder.feed(data)
        elif self._decoder.pending and now - self._last_rx >= P.FRAME_GAP_S:
            frames = self._decoder.expire()
        else:
            return []
        st, hc = self._decoder.stats, self.counters
        hc.garbage_bytes, hc.header_errors, hc.crc_errors = st.garbage_bytes, st.header_errors, st.crc_errors
        hc.frame_timeouts = st.frame_timeouts
        hc.rx_frames += len(frames)
        out = []
        for f in frames:
            if f.msg == P.SCHEMA["RESULT"].id:
                if self.stream_sink is None:
                    hc.stale_replies += 1
                else:
                    self.stream_sink(f)
            else:
                out.append(f)
        return out

    # ---- requests -----------------------------------------------------------------------
    def request(self, name: str, tail: bytes | np.ndarray = b"", schema_hash: int | None = None,
                **fields: int) -> P.Frame:
        """Send command `name` and return its reply (ERROR raises RemoteError)."""
        spec = P.SCHEMA[name]
        return self.request_raw(spec.id, spec.pack(tail, **fields), schema_hash=schema_hash)

    def expect(self, reply: str, name: str, tail: bytes | np.ndarray = b"",
               schema_hash: int | None = None, **fields: int) -> dict[str, Any]:
        """`request(name, ...)`, checked to be answered by `reply`; its decoded fields."""
        f = self.request(name, tail, schema_hash, **fields)
        if f.name != reply:
            raise ProtocolError(f"expected {reply}, got {f.name}")
        return f.fields()

    def request_raw(self, msg_id: int, payload: bytes, flags: int = 0,
                    schema_hash: int | None = None) -> P.Frame:
        """Send a frame and wait for the reply with its sequence number, resending the same
        frame (with RETRY set) after each timeout or NAK. `schema_hash` seeds the CRC of both
        (default: the host's own; another board's to ask it IDENTIFY before a HELLO fails)."""
        with self.lock:
            own = self._decoder.schema_hash
            if schema_hash is not None:
                self._decoder.schema_hash = schema_hash
            try:
                return self._request(msg_id, payload, flags, self._decoder.schema_hash)
            finally:
                self._decoder.schema_hash = own

    def _request(self, msg_id: int, payload: bytes, flags: int, schema_hash: int) -> P.Frame:
        with self.lock:
            seq = self.next_seq()
            frame = P.encode_frame(msg_id, seq, payload, flags, schema_hash)
            for attempt in range(self.retries + 1):
                if attempt:
                    self.counters.retries += 1
                    frame = P.encode_frame(msg_id, seq, payload, flags | P.FLAG_RETRY, schema_hash)
                self.send(frame)
                reply = self.await_reply({seq}, time.monotonic() + self.timeout_s)
                if reply is not None and reply.msg != P.SCHEMA["NAK"].id:
                    return raise_error_reply(reply)
            name = P.BY_ID[msg_id].name if msg_id in P.BY_ID else hex(msg_id)
            raise BoardTimeout(f"no reply to {name} after {self.retries + 1} attempts of {self.timeout_s} s")

    def await_reply(self, seqs: set[int], deadline: float) -> P.Frame | None:
        """The next reply (NAK included) whose SEQ is in `seqs`, or None at `deadline`. Other
        replies are stale and dropped; stream frames go to `stream_sink`. While waiting, the
        board's watchdog is kept fed (`keepalive`) so that lost replies never trip it."""
        inbox = self._inbox
        while True:
            while inbox:
                f = inbox.popleft()
                if f.seq not in seqs:
                    self.counters.stale_replies += 1
                    continue
                if f.msg == P.SCHEMA["NAK"].id:
                    self.counters.naks_received += 1
                return f
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                self.counters.timeouts += 1
                return None
            if now - self.last_tx >= self.heartbeat_s:
                self.keepalive()
            inbox.extend(self.pump(min(left, 0.05)))

    def status(self) -> dict[str, Any]:
        """STATUS_REPLY fields, plus `state_name` and `armed`."""
        s = self.expect("STATUS_REPLY", "STATUS")
        s["state_name"] = P.STATE_NAMES.get(s["state"], "?")
        s["armed"] = bool(s["flags"] & P.STATUS_ARMED)
        return s

    # ---- heartbeat and closing ------------------------------------------------------------
    def start_heartbeat(self) -> None:
        """Send STATUS whenever nothing was sent for `heartbeat_s` (the board's watchdog)."""
        self._hb = threading.Thread(target=self._heartbeat, name="board-heartbeat", daemon=True)
        self._hb.start()

    def stop_heartbeat(self) -> None:
        self._stop_hb.set()

    def _heartbeat(self) -> None:
        period = self.heartbeat_s
        while not self._stop_hb.wait(period / 2):
            if time.monotonic() - self.last_tx < period:
                continue
            if not self.lock.acquire(blocking=False):
                continue        # the operation in progress keeps the link alive itself
            try:
                if not self._closed:
                    self.request("STATUS")
            except RemoteError as e:      # the board answered: the link is alive
                self.heartbeat_error = e
            except BaseException as e:  # noqa: BLE001 - reported through heartbeat_error
                self.heartbeat_error = e
                return
            finally:
                self.lock.release()

    def close(self) -> None:
        """Stop the heartbeat and close the port (a sim:// port also stops its simulator)."""
        self._stop_hb.set()
        self._closed = True
        if self._hb is not None and self._hb.is_alive():
            self._hb.join(timeout=2.0)
        self._bytes.close()


def raise_error_reply(f: P.Frame) -> P.Frame:
    """`f` itself, unless it is an ERROR reply: then the matching RemoteError."""
    if f.msg != P.SCHEMA["ERROR"].id:
        return f
    e = f.fields()
    code, arg, text = e["code"], e["arg"], e["tail"].decode(errors="replace")
    name = P.ERROR_NAMES.get(code, f"E{code}")
    if name == "LIMIT":
        raise RemoteLimitError(code, name, arg, text)
    if name == "SAFE_STATE":
        raise RemoteSafeState(code, name, arg, text)
    raise RemoteError(code, name, arg, text)
