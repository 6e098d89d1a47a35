"""Hardware-timed sweeps over a `Link` (docs/protocol.md, section 6).

`SweepStream.run` uploads DAC codes, starts the sweep and collects the RESULT blocks in order
under credit flow control: it keeps only the block it expects next, asks the board to rewind
when a block went missing, raises on overflow, abort or a sweep that stopped making progress,
and aborts the sweep on the board when anything (Ctrl-C included) interrupts it.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from core.electrodes import N_ELECTRODES
from host.board import protocol as P
from host.board.errors import BoardError, BoardOverflow, BoardTimeout, ProtocolError, SafeStateError
from host.board.link import Link


@dataclass(frozen=True)
class SweepSizes:
    """Sizes agreed between the host's options and the board's identity."""

    block_samples: int      # samples per RESULT block
    upload_samples: int     # samples per SWEEP_DATA frame
    window: int             # RESULT blocks in flight (credits)
    max_samples: int        # samples per sweep (the board's buffer)

    @classmethod
    def negotiate(cls, identity: dict, block_samples: int, upload_samples: int, window: int,
                  sweep_samples: int) -> "SweepSizes":
        per_frame = (int(identity["max_payload"]) - 6) // (2 * N_ELECTRODES)
        return cls(block_samples=min(block_samples, int(identity["max_block_samples"])),
                   upload_samples=min(upload_samples, per_frame, P.MAX_PAYLOAD // (2 * N_ELECTRODES) - 1),
                   window=max(1, min(window, int(identity["fifo_blocks"]))),
                   max_samples=min(sweep_samples, int(identity["max_sweep_samples"])))


@dataclass
class _SweepRx:
    sweep_id: int
    n: int
    block: int
    n_blocks: int
    codes: np.ndarray
    expected: int = 0
    overflow: bool = False
    aborted: bool = False
    credited: int = 0
    last_gap_rewind: float = -1.0
    progress_t: float = field(default_factory=time.monotonic)


class SweepStream:
    """Runs one sweep at a time on `link`; receives its RESULT frames through `link.stream_sink`."""

    def __init__(self, link: Link, sizes: SweepSizes, stall_timeout_s: float) -> None:
        self.link = link
        self.sizes = sizes
        self.stall_timeout_s = stall_timeout_s
        self.sweep_id = random.randrange(1 << 16)      # the last sweep's id; the next is +1
        self._rx: _SweepRx | None = None
        link.stream_sink = self._on_result

    def run(self, codes: np.ndarray, oversample: int, period_ns: int) -> np.ndarray:
        """DAC codes uint16 [n, 7] (n <= sizes.max_samples) -> ADC codes int32 [n]."""
        link, sz = self.link, self.sizes
        n = len(codes)
        self.sweep_id = sid = (self.sweep_id + 1) & 0xFFFF
        link.request("SWEEP_BEGIN", sweep_id=sid, n_samples=n, oversample=oversample,
                     period_ns=period_ns, block_samples=sz.block_samples)
        for off in range(0, n, sz.upload_samples):
            link.request("SWEEP_DATA", tail=codes[off:off + sz.upload_samples].reshape(-1),
                         sweep_id=sid, offset=off)
        rx = _SweepRx(sid, n, sz.block_samples, -(-n // sz.block_samples), np.empty(n, dtype=np.int32))
        self._rx = rx
        try:
            link.request("SWEEP_RUN", sweep_id=sid, window=sz.window)
            self._stream(rx)
        except BaseException:
            self._rx = None
            if not link.broken:
                try:
                    link.request("SWEEP_ABORT", sweep_id=sid)
                except BoardError:
                    pass
            raise
        self._rx = None
        return rx.codes

    def _credit(self, rx: _SweepRx, rewind: bool = False) -> None:
        payload = P.SCHEMA["CREDIT"].pack(sweep_id=rx.sweep_id, next_block=rx.expected,
                                          window=self.sizes.window,
                                          flags=P.CREDIT_REWIND if rewind else 0)
        self.link.send(P.encode_frame(P.SCHEMA["CREDIT"].id, 0, payload, P.FLAG_NOREPLY))
        rx.credited = rx.expected
        if rewind:
            self.link.counters.rewinds += 1

    def _on_result(self, f: P.Frame) -> None:
        rx, hc = self._rx, self.link.counters
        try:
            r = P.SCHEMA["RESULT"].unpack(f.payload)
        except ProtocolError:
            hc.stale_replies += 1
            return
        if rx is None or r["sweep_id"] != rx.sweep_id:
            hc.stale_replies += 1
            return
        b = r["block"]
        if r["flags"] & P.RESULT_OVERFLOW:
            rx.overflow = True
            return
        if r["flags"] & P.RESULT_ABORTED:
            rx.aborted = True
            return
        if b < rx.expected:
            hc.duplicate_blocks += 1
            return
        now = time.monotonic()
        if b > rx.expected:
            hc.out_of_order_blocks += 1
            if now - rx.last_gap_rewind > self.link.timeout_s:
                rx.last_gap_rewind = now
                self._credit(rx, rewind=True)
            return
        first = b * rx.block
        count = min(rx.block, rx.n - first)
        data = r["tail"]
        if r["first"] != first or len(data) != count:
            raise ProtocolError(f"RESULT block {b}: first {r['first']} / {len(data)} samples, "
                                f"expected {first} / {count}")
        rx.codes[first:first + count] = data
        rx.expected += 1
        rx.progress_t = now
        hc.samples_received += count
        if rx.expected - rx.credited >= max(1, self.sizes.window // 4) or rx.expected == rx.n_blocks:
            self._credit(rx)

    def _stream(self, rx: _SweepRx) -> None:
        link = self.link
        check_s = 2 * link.timeout_s
        last_check = time.monotonic()
        while rx.expected < rx.n_blocks:
            if rx.overflow:
                raise BoardOverflow(f"board FIFO overflowed at block {rx.expected} of sweep "
                                    f"{rx.sweep_id}: samples were lost (host slower than the sample clock)")
            if rx.aborted:
                raise BoardError(f"board aborted sweep {rx.sweep_id} at block {rx.expected} "
                                 f"(analog device fault; see errors())")
            link.pump(0.02)
            now = time.monotonic()
            if rx.expected >= rx.n_blocks or rx.overflow or rx.aborted:
                continue
            if now - link.last_tx > link.heartbeat_s:
                self._credit(rx)
            if now - rx.progress_t < check_s or now - last_check < check_s:
                continue
            # A quiet link: is the board still computing, or did blocks go missing?
            last_check = now
            st = link.status()            # (its reply may arrive after the last blocks)
            if rx.expected >= rx.n_blocks or rx.overflow or rx.aborted:
                continue
            if not st["armed"]:
                raise SafeStateError("board latched its safe state during the sweep "
                                     "(watchdog, port closed or SAFE); call rearm()")
            if st["flags"] & P.STATUS_OVERFLOWED and st["state_name"] != "sweep":
                rx.overflow = True
                continue
            if st["sweep_id"] != rx.sweep_id:
                raise BoardError(f"board lost sweep {rx.sweep_id} (now on {st['sweep_id']})")
            if st["blocks_done"] > rx.expected:
                self._credit(rx, rewind=True)
            elif st["state_name"] != "sweep":
                raise BoardError(f"sweep {rx.sweep_id} stopped at block {st['blocks_done']} "
                                 f"of {rx.n_blocks}")
            if now - rx.progress_t > self.stall_timeout_s:
                raise BoardTimeout(f"sweep made no progress for {self.stall_timeout_s} s "
                                   f"(block {rx.expected} of {rx.n_blocks})")
