"""A fault-injecting port wrapper: what a real UART/USB link does that a pty never does.

Wrap any port (`FaultyPort(port, FaultPlan(...))`) and hand it to `Board(...)`. Faults are
seeded, so a failing test replays exactly. Used by the fault tests and by bench/soak.py.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from host.board.protocol import SYNC
from host.board.transport import Port


@dataclass(frozen=True)
class FaultPlan:
    """Rates are per byte received (rx_*), per frame written (tx_drop, tx_flip, tx_truncate) or
    per byte written (tx_byte_*): a plan with rx_* = tx_byte_* = r means r faults per byte both ways."""

    seed: int = 0
    rx_flip: float = 0.0          # flip one bit
    rx_drop_span: float = 0.0     # drop 1..64 bytes (a truncated frame)
    rx_drop_frame: float = 0.0    # drop from one SYNC to the next (a lost frame)
    rx_garbage: float = 0.0       # insert 1..40 random bytes (sync bytes included)
    tx_drop: float = 0.0          # lose a whole written frame
    tx_flip: float = 0.0          # flip one bit in a written frame
    tx_truncate: float = 0.0      # send only a prefix of a written frame
    tx_byte_flip: float = 0.0     # per byte written: flip one bit
    tx_byte_drop_span: float = 0.0  # per byte written: drop 1..64 bytes
    tx_byte_garbage: float = 0.0  # per byte written: insert 1..40 random bytes (sync bytes included)
    stall_after_rx_bytes: int | None = None   # stop delivering bytes after this many ...
    stall_s: float = 0.0                      # ... for this long (inf: forever)

    @classmethod
    def noisy(cls, rate: float, seed: int = 0) -> "FaultPlan":
        """`rate` faults per byte in each direction, a third each of bit flips, dropped byte
        spans and garbage inserts (what a marginal UART or a bad cable does)."""
        r = rate / 3
        return cls(seed=seed, rx_flip=r, rx_drop_span=r, rx_garbage=r,
                   tx_byte_flip=r, tx_byte_drop_span=r, tx_byte_garbage=r)


@dataclass
class FaultCounts:
    rx_flips: int = 0
    rx_spans_dropped: int = 0
    rx_frames_dropped: int = 0
    rx_garbage_inserts: int = 0
    tx_dropped: int = 0
    tx_flipped: int = 0
    tx_truncated: int = 0
    tx_flips: int = 0
    tx_spans_dropped: int = 0
    tx_garbage_inserts: int = 0
    stalls: int = 0

    def total(self) -> int:
        return sum(dataclasses.astuple(self)) - self.stalls


class FaultyPort:
    def __init__(self, port: Port, plan: FaultPlan) -> None:
        self.port = port
        self.plan = plan
        self.rng = np.random.default_rng(plan.seed)
        self.counts = FaultCounts()
        self.rx_bytes = 0            # bytes read and written while enabled: faults ~ rate x bytes
        self.tx_bytes = 0
        self._stall_until: float | None = None
        self._stalled_once = False
        self._held = bytearray()
        self._frame_drops_due = 0
        self.enabled = True          # False: pass bytes through untouched (e.g. while opening)

    # pyserial-like surface
    @property
    def timeout(self) -> float | None:
        return self.port.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.port.timeout = value

    def fileno(self) -> int:
        return self.port.fileno()

    def close(self) -> None:
        self.port.close()

    def _events(self, rate: float, n: int) -> int:
        return int(self.rng.poisson(rate * n)) if rate > 0 and n > 0 else 0

    def _flip(self, data: bytearray, rate: float) -> int:
        n = self._events(rate, len(data))
        for _ in range(n):
            i = int(self.rng.integers(len(data)))
            data[i] ^= 1 << int(self.rng.integers(8))
        return n

    def _drop_spans(self, data: bytearray, rate: float) -> int:
        n = 0
        for _ in range(self._events(rate, len(data))):
            if not data:
                break
            i = int(self.rng.integers(len(data)))
            del data[i:i + int(self.rng.integers(1, 65))]
            n += 1
        return n

    def _drop_frames(self, data: bytearray, rate: float) -> int:
        """Drop from a SYNC to the next. A drop drawn for a chunk with no SYNC after its position
        waits for the next chunk that has one: a slow link (a UART) hands over a few bytes per
        read, and its frames must get lost as often per byte as on a fast one."""
        n = 0
        self._frame_drops_due += self._events(rate, len(data))
        while self._frame_drops_due and data:
            i = data.find(SYNC, int(self.rng.integers(len(data))))
            if i < 0:
                i = data.find(SYNC)
                if i < 0:
                    break
            j = data.find(SYNC, i + 2)
            del data[i:j if j >= 0 else len(data)]
            self._frame_drops_due -= 1
            n += 1
        return n

    def _garbage(self, data: bytearray, rate: float) -> int:
        n = self._events(rate, len(data))
        for _ in range(n):
            i = int(self.rng.integers(len(data) + 1))
            junk = self.rng.integers(0, 256, int(self.rng.integers(1, 41)), dtype=np.uint8).tobytes()
            if self.rng.random() < 0.5:
                junk = junk[:len(junk) // 2] + SYNC + junk[len(junk) // 2:]
            data[i:i] = junk
        return n

    def read(self, size: int = 1) -> bytes:
        if not self.enabled:
            return self.port.read(size)
        p = self.plan
        now = time.monotonic()
        if self._stall_until is not None:
            if now < self._stall_until:
                time.sleep(0.005)
                return b""
            self._stall_until = None
        data = bytearray(self._held)
        self._held.clear()
        data += self.port.read(size)
        if (p.stall_after_rx_bytes is not None and not self._stalled_once
                and self.rx_bytes + len(data) > p.stall_after_rx_bytes):
            cut = max(0, p.stall_after_rx_bytes - self.rx_bytes)
            self._held += data[cut:]
            del data[cut:]
            self._stalled_once = True
            self.counts.stalls += 1
            self._stall_until = now + p.stall_s
        self.rx_bytes += len(data)
        if not data:
            return b""
        c = self.counts
        c.rx_flips += self._flip(data, p.rx_flip)
        c.rx_spans_dropped += self._drop_spans(data, p.rx_drop_span)
        c.rx_frames_dropped += self._drop_frames(data, p.rx_drop_frame)
        c.rx_garbage_inserts += self._garbage(data, p.rx_garbage)
        return bytes(data)

    def write(self, data: bytes) -> int:
        if not self.enabled:
            self.port.write(data)
            return len(data)
        p, r = self.plan, self.rng
        self.tx_bytes += len(data)
        if p.tx_drop and r.random() < p.tx_drop:
            self.counts.tx_dropped += 1
            return len(data)
        out = bytearray(data)
        if p.tx_flip and r.random() < p.tx_flip:
            out[int(r.integers(len(out)))] ^= 1 << int(r.integers(8))
            self.counts.tx_flipped += 1
        if p.tx_truncate and r.random() < p.tx_truncate:
            out = out[:int(r.integers(len(out)))]
            self.counts.tx_truncated += 1
        c = self.counts
        c.tx_flips += self._flip(out, p.tx_byte_flip)
        c.tx_spans_dropped += self._drop_spans(out, p.tx_byte_drop_span)
        c.tx_garbage_inserts += self._garbage(out, p.tx_byte_garbage)
        self.port.write(bytes(out))
        return len(data)
