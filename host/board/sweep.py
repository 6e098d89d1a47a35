"""Hardware-timed sweeps over a `Link` (docs/protocol.md, section 6).

`SweepStream.run` uploads DAC codes (several SWEEP_DATA frames in flight), starts the sweep and
collects the RESULT blocks in order under credit flow control: it keeps only the block it
expects next, asks the board to rewind when a block went missing, raises on overflow, abort or a
sweep that stopped making progress, and aborts the sweep on the board when anything (Ctrl-C
included) interrupts it.

The link adapts (`LinkAdaptation`): after NAKs, timeouts or lost RESULT blocks the host uploads
smaller SWEEP_DATA frames with fewer in flight and asks for smaller RESULT blocks in the next
SWEEP_BEGIN (a frame of L bytes at p faults per byte gets through with probability ~exp(-pL)),
and doubles them back after clean frames, so a clean link keeps the largest frames the board's
identity allows.
"""
from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from core.electrodes import N_ELECTRODES
from host.board import protocol as P
from host.board.errors import BoardError, BoardOverflow, BoardTimeout, ProtocolError, SafeStateError
from host.board.link import Link, raise_error_reply


@dataclass(frozen=True)
class SweepSizes:
    """Sizes agreed between the host's options and the board's identity (the ceilings of the
    link adaptation)."""

    block_samples: int      # samples per RESULT block
    upload_samples: int     # samples per SWEEP_DATA frame
    window: int             # RESULT blocks in flight (credits)
    max_samples: int        # samples per sweep (the board's buffer)
    upload_window: int = 1  # SWEEP_DATA frames in flight (each has its own SEQ and reply)
    channels: int = N_ELECTRODES   # DAC codes per sample (7 per device)
    readouts: int = 1              # ADC codes per sample (one per device)

    @classmethod
    def negotiate(cls, identity: dict, block_samples: int, upload_samples: int, window: int,
                  sweep_samples: int, upload_window: int = 1, timeout_s: float = 0.3) -> "SweepSizes":
        """A board whose identity states `link_bytes_per_s` (a slow link: a UART) gets no more
        SWEEP_DATA in flight than its link delivers in half a reply timeout: every frame in
        flight must be answered before its own timeout."""
        head = P.SCHEMA["SWEEP_DATA"].head.size
        channels = int(identity.get("channels", N_ELECTRODES))
        per_frame = (int(identity["max_payload"]) - head) // (2 * channels)
        upload = max(1, min(upload_samples, per_frame, (P.MAX_PAYLOAD - head) // (2 * channels)))
        rate = float(identity.get("link_bytes_per_s", 0) or 0)
        if rate > 0:
            frame = P.FRAME_OVERHEAD + head + upload * 2 * channels
            upload_window = min(upload_window, int(rate * timeout_s / 2 // frame))
        return cls(block_samples=min(block_samples, int(identity["max_block_samples"])),
                   upload_samples=upload, window=max(1, min(window, int(identity["fifo_blocks"]))),
                   max_samples=min(sweep_samples, int(identity["max_sweep_samples"])),
                   upload_window=max(1, upload_window), channels=channels,
                   readouts=int(identity.get("n_devices", 1)))


@dataclass
class AdaptiveSize:
    """A frame size that halves after trouble (a CRC failure, NAK, timeout or lost block) down to
    `floor`, and doubles back toward `ceiling` after `grow_after` clean frames in a row: on a
    clean link it stays at `ceiling`."""

    ceiling: int
    floor: int
    grow_after: int = 8
    size: int = 0
    clean: int = 0
    shrinks: int = 0

    def __post_init__(self) -> None:
        self.floor = max(1, min(self.floor, self.ceiling))
        self.size = self.ceiling if self.size <= 0 else max(self.floor, min(self.size, self.ceiling))

    def trouble(self, times: int = 1) -> None:
        for _ in range(times):
            if self.size > self.floor:
                self.size = max(self.floor, self.size // 2)
                self.shrinks += 1
        self.clean = 0

    def ok(self, frames: int = 1) -> None:
        self.clean += frames
        while self.clean >= self.grow_after and self.size < self.ceiling:
            self.clean -= self.grow_after
            self.size = min(self.ceiling, self.size * 2)
        if self.size >= self.ceiling:
            self.clean = 0


@dataclass
class LinkAdaptation:
    """What the host sends and asks for while the link is noisy: SWEEP_DATA rows per frame and
    frames in flight, and RESULT samples per block (asked for in SWEEP_BEGIN)."""

    upload: AdaptiveSize
    upload_window: AdaptiveSize
    block: AdaptiveSize

    @classmethod
    def for_sizes(cls, sizes: SweepSizes, min_upload: int = 32, min_block: int = 64,
                  grow_after: int = 8, enabled: bool = True) -> "LinkAdaptation":
        def size(ceiling: int, floor: int) -> AdaptiveSize:
            return AdaptiveSize(ceiling, floor if enabled else ceiling, grow_after)
        return cls(size(sizes.upload_samples, min_upload), size(sizes.upload_window, 1),
                   size(sizes.block_samples, min_block))

    def as_dict(self) -> dict[str, int]:
        return {"upload_samples": self.upload.size, "upload_window": self.upload_window.size,
                "block_samples": self.block.size,
                "shrinks": self.upload.shrinks + self.upload_window.shrinks + self.block.shrinks}


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
    troubles: int = 0           # blocks lost or corrupted (rewinds asked for)
    stuck: int = 0              # rewinds since the expected block last arrived
    last_gap_rewind: float = -1.0
    last_block: int = -1        # the block number of the last RESULT that arrived
    errors_at_rewind: int = 0   # the host decoder's error count when the last rewind was sent
    progress_t: float = field(default_factory=time.monotonic)


@dataclass
class _Upload:
    offset: int
    count: int
    sent_t: float


class SweepStream:
    """Runs one sweep at a time on `link`; receives its RESULT frames through `link.stream_sink`."""

    def __init__(self, link: Link, sizes: SweepSizes, stall_timeout_s: float,
                 adapt: LinkAdaptation | None = None) -> None:
        self.link = link
        self.sizes = sizes
        self.adapt = adapt or LinkAdaptation.for_sizes(sizes, enabled=False)
        self.stall_timeout_s = stall_timeout_s
        self.sweep_id = random.randrange(1 << 16)      # the last sweep's id; the next is +1
        self._rx: _SweepRx | None = None
        link.stream_sink = self._on_result

    #: rewinds in a row without the expected block arriving before a sweep whose blocks are
    #: too large for the link is ended and its remaining rows swept again with smaller blocks
    RESIZE_AFTER_REWINDS = 4

    def run(self, codes: np.ndarray, oversample: int, period_ns: int) -> np.ndarray:
        """DAC codes uint16 [n, channels] (n <= sizes.max_samples) -> ADC codes int32 [n, readouts].

        Normally one sweep. When its RESULT blocks keep getting lost (a link too noisy for their
        size: the block size is fixed per sweep), the sweep is aborted after the blocks received
        in order, and the remaining rows run as a new sweep with smaller blocks."""
        out = np.empty((len(codes), self.sizes.readouts), dtype=np.int32)
        done = 0
        while done < len(codes):
            done += self._sweep(codes[done:], oversample, period_ns, out[done:])
        return out

    def _sweep(self, codes: np.ndarray, oversample: int, period_ns: int, out: np.ndarray) -> int:
        """One sweep of `codes` into `out`; the number of samples delivered (all of them, unless
        the sweep was ended early to shrink its blocks)."""
        link = self.link
        n = len(codes)
        block = self.adapt.block.size
        self.sweep_id = sid = (self.sweep_id + 1) & 0xFFFF
        link.request("SWEEP_BEGIN", sweep_id=sid, n_samples=n, oversample=oversample,
                     period_ns=period_ns, block_samples=block)
        self._upload(sid, codes)
        rx = _SweepRx(sid, n, block, -(-n // block), out, errors_at_rewind=self._rx_errors())
        self._rx = rx
        resized = False
        try:
            link.request("SWEEP_RUN", sweep_id=sid, window=self.sizes.window)
            resized = not self._stream(rx)
        except BaseException:
            self._rx = None
            if not link.broken:
                try:
                    link.request("SWEEP_ABORT", sweep_id=sid)
                except BoardError:
                    pass
            raise
        finally:
            self._adapt_blocks(rx)
        self._rx = None
        if resized:
            link.request("SWEEP_ABORT", sweep_id=sid)
            return rx.expected * block
        return n

    def _adapt_blocks(self, rx: _SweepRx) -> None:
        """Smaller RESULT blocks for the next sweep after blocks were lost or corrupted in this
        one (each cost a rewind); larger again after clean ones."""
        if rx.troubles:
            self.adapt.block.trouble(min(rx.troubles, 4))
        else:
            self.adapt.block.ok(rx.expected)

    def _upload(self, sid: int, codes: np.ndarray) -> None:
        """SWEEP_DATA frames, up to `adapt.upload_window` in flight, each with its own SEQ. A frame
        that gets a NAK or no ACK within the timeout is sent again (in smaller pieces and with
        fewer in flight while the link is noisy: SWEEP_DATA rewrites rows, so a piece that
        arrives twice does no harm). BoardTimeout after `retries + 1` failed attempts in a row at
        the smallest size (one frame in flight)."""
        link, ad = self.link, self.adapt
        spec = P.SCHEMA["SWEEP_DATA"]
        nak_id = P.SCHEMA["NAK"].id
        todo: deque[tuple[int, int]] = deque([(0, len(codes))])     # [offset, end) still to send
        inflight: dict[int, _Upload] = {}
        failures = 0
        while todo or inflight:
            while todo and len(inflight) < ad.upload_window.size:
                off, end = todo.popleft()
                k = min(ad.upload.size, end - off)
                if off + k < end:
                    todo.appendleft((off + k, end))
                seq = link.next_seq()
                payload = spec.pack(codes[off:off + k].reshape(-1), sweep_id=sid, offset=off)
                link.send(P.encode_frame(spec.id, seq, payload, P.FLAG_RETRY if failures else 0))
                inflight[seq] = _Upload(off, k, time.monotonic())
            oldest = min(u.sent_t for u in inflight.values())
            f = link.await_reply(set(inflight), oldest + link.timeout_s)
            if f is not None and f.msg != nak_id:
                raise_error_reply(f)              # ERROR -> RemoteError (LIMIT, BUSY, ...)
                del inflight[f.seq]
                failures = 0
                ad.upload.ok()
                ad.upload_window.ok()
                continue
            # a NAK, or the oldest frame's reply is overdue: resend (that one, or all in flight).
            # Only attempts at the smallest size count toward giving up: above it, every failure
            # halves the size, so the larger attempts are few.
            at_floor = ad.upload.size <= ad.upload.floor and ad.upload_window.size <= 1
            failures += at_floor
            if failures > link.retries:
                raise BoardTimeout(f"no reply to SWEEP_DATA after {failures} attempts of {link.timeout_s} s"
                                   f" ({ad.upload.size} rows each)")
            ad.upload.trouble()
            ad.upload_window.trouble(ad.upload_window.size)
            lost = [inflight.pop(f.seq)] if f is not None else list(inflight.values())
            if f is None:
                inflight.clear()
            link.counters.retries += len(lost)
            for u in sorted(lost, key=lambda u: u.offset, reverse=True):
                todo.appendleft((u.offset, u.offset + u.count))

    def _credit(self, rx: _SweepRx, rewind: bool = False) -> None:
        payload = P.SCHEMA["CREDIT"].pack(sweep_id=rx.sweep_id, next_block=rx.expected,
                                          window=self.sizes.window,
                                          flags=P.CREDIT_REWIND if rewind else 0)
        self.link.send(P.encode_frame(P.SCHEMA["CREDIT"].id, 0, payload, P.FLAG_NOREPLY))
        rx.credited = rx.expected
        if rewind:
            self.link.counters.rewinds += 1
            rx.troubles += 1
            rx.stuck += 1
            rx.last_gap_rewind = time.monotonic()
            rx.errors_at_rewind = self._rx_errors()

    def _rx_errors(self) -> int:
        hc = self.link.counters
        return hc.crc_errors + hc.header_errors + hc.frame_timeouts

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
        last, rx.last_block = rx.last_block, b
        if b > rx.expected:
            hc.out_of_order_blocks += 1
            # Blocks arrive in the order the board sent them: a block numbered at or below the
            # one before it starts a resent run that lacks the expected block (lost again), so
            # rewind at once; otherwise at most once per timeout (blocks sent before the rewind
            # are still arriving).
            if b <= last or now - rx.last_gap_rewind > self.link.timeout_s:
                self._credit(rx, rewind=True)
            return
        first = b * rx.block
        count = min(rx.block, rx.n - first)
        data = r["tail"]
        k = self.sizes.readouts
        if r["first"] != first or len(data) != count * k:
            raise ProtocolError(f"RESULT block {b}: first {r['first']} / {len(data) / k:g} samples, "
                                f"expected {first} / {count}")
        rx.codes[first:first + count] = data.reshape(count, k)
        rx.expected += 1
        rx.stuck = 0
        rx.progress_t = now
        hc.samples_received += count
        if rx.expected - rx.credited >= max(1, self.sizes.window // 4) or rx.expected == rx.n_blocks:
            self._credit(rx)

    def _stream(self, rx: _SweepRx) -> bool:
        """Collect the sweep's blocks; True when all arrived, False when its blocks are too
        large for the link (RESIZE_AFTER_REWINDS rewinds in a row got nothing) and smaller
        ones are possible."""
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
            if rx.stuck >= self.RESIZE_AFTER_REWINDS and rx.block > self.adapt.block.floor:
                return False
            if (self._rx_errors() > rx.errors_at_rewind and now - rx.progress_t > 4 * P.FRAME_GAP_S
                    and now - rx.last_gap_rewind > 4 * P.FRAME_GAP_S):
                # a frame failed its CRC (or broke off) and nothing followed: likely the block we
                # wait for, or the last ones of the sweep; ask again now instead of after check_s
                self._credit(rx, rewind=True)
            elif now - link.last_tx > link.heartbeat_s:
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
        return True
