"""`Board`: the host driver for a DNPU bench board (or the simulator behind sim://)."""
from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from host.board import protocol as P
from host.board.errors import (BoardDisconnected, BoardError, BoardOverflow, BoardTimeout,
                               IncompatibleBoard, LimitError, ProtocolError, RemoteError,
                               RemoteLimitError, RemoteSafeState, SafeStateError)
from host.board.transport import ByteLink, Port, SimProcess, open_port

N_CHANNELS = 7
#: float32 rounding of a voltage trained or clipped to a limit, or of a limit itself (e.g. -1.2
#: stored as -1.2000000477): callers checking against the board's limits treat this as on the limit
FLOAT32_SLACK_V = 1e-6
ELECTRODES = tuple(f"e{i}" for i in range(N_CHANNELS))

_IDENTITY_KEYS = ("protocol", "firmware", "serial", "channels", "dac_bits", "adc_bits", "dac",
                  "adc", "limits_v", "limit_codes", "max_slew_v_per_s", "watchdog_ms",
                  "sample_period_ns", "max_oversample", "max_sweep_samples", "max_block_samples",
                  "max_payload", "fifo_blocks", "commands", "counters")


@dataclass(frozen=True)
class BoardOptions:
    """How the host talks to a board. Defaults suit USB CDC serial and the simulator."""

    timeout_s: float = 0.3          # per attempt of a request
    retries: int = 6                # attempts after the first before BoardTimeout
    heartbeat_s: float = 0.15       # keep-alive period (board watchdog is ~0.5 s)
    stall_timeout_s: float = 30.0   # a sweep making no progress this long -> BoardTimeout
    upload_samples: int = 512       # samples per SWEEP_DATA frame (7 x u16 each)
    block_samples: int = 1024       # samples per RESULT block (i32 each)
    window: int = 16                # RESULT blocks in flight (credits)
    sweep_samples: int = 1 << 16    # samples per sweep (board buffer)
    ramp_v_per_s: float = 1.0       # set(..., ramp=True) rate; ramp=False uses the board's max slew
    arm: bool = True                # re-arm the board's safe state on open
    heartbeat: bool = True          # run the keep-alive thread
    baudrate: int = 1_000_000       # UART bridges only; USB CDC, pty and TCP ignore it

    def __post_init__(self) -> None:
        for name in ("timeout_s", "heartbeat_s", "stall_timeout_s", "ramp_v_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BoardOptions.{name} must be > 0")
        for name in ("upload_samples", "block_samples", "window", "sweep_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"BoardOptions.{name} must be >= 1")
        if self.retries < 0:
            raise ValueError("BoardOptions.retries must be >= 0")


@dataclass
class HostCounters:
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


class Board:
    """A connected, identified, armed board. Use as a context manager: it zeroes on exit."""

    def __init__(self, port: Port, options: BoardOptions | None = None,
                 sim: SimProcess | None = None, url: str = "") -> None:
        self.options = options or BoardOptions()
        self.url = url
        self._link = ByteLink(port)
        self._sim = sim
        self._decoder = P.FrameDecoder()
        self._lock = threading.RLock()
        self._seq = random.randrange(1 << 16)
        self._sweep_id = random.randrange(1 << 16)
        self._rx: _SweepRx | None = None
        self._last_tx = 0.0
        self._closed = False
        self._broken = False
        self._stop_hb = threading.Event()
        self.heartbeat_error: BaseException | None = None
        self.counters_host = HostCounters()
        try:
            self._hello()
            self.identity = self._identify()
            self._setup_calibration()
            if self.options.arm:
                self.rearm()
        except BaseException:
            self._broken = True
            self.close()
            raise
        self._hb = threading.Thread(target=self._heartbeat, name="board-heartbeat", daemon=True)
        if self.options.heartbeat:
            self._hb.start()

    # ---- opening / closing ------------------------------------------------------------
    @classmethod
    def open(cls, url: str, options: BoardOptions | None = None,
             wrap: Callable[[Port], Port] | None = None, **kw: Any) -> "Board":
        """Open `url` (/dev/tty*, socket://127.0.0.1:PORT, sim://?seed=N...), handshake, identify, arm.

        Keyword arguments override fields of `options`; `wrap` wraps the port (fault injection)."""
        options = dataclasses.replace(options or BoardOptions(), **kw)
        port, sim = open_port(url, options.baudrate)
        try:
            return cls(wrap(port) if wrap else port, options, sim=sim, url=url)
        except BaseException:
            if sim is not None:
                sim.stop()
            raise

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ramp every output to 0 V (unless the link is broken), then release port and simulator."""
        if self._closed:
            return
        self._stop_hb.set()
        try:
            if not self._broken:
                self.zero()
        except BoardError:
            pass
        finally:
            self._closed = True
            if getattr(self, "_hb", None) is not None and self._hb.is_alive():
                self._hb.join(timeout=2.0)
            self._link.close()
            if self._sim is not None:
                self._sim.stop()

    # ---- link layer -------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _send(self, frame: bytes) -> None:
        self._link.send(frame)
        self._last_tx = time.monotonic()
        self.counters_host.tx_frames += 1

    def _pump(self, wait_s: float) -> list[P.Frame]:
        try:
            data = self._link.recv(wait_s)
        except BoardDisconnected:
            self._broken = True
            raise
        if not data:
            return []
        frames = self._decoder.feed(data)
        st, hc = self._decoder.stats, self.counters_host
        hc.garbage_bytes, hc.header_errors, hc.crc_errors = st.garbage_bytes, st.header_errors, st.crc_errors
        hc.rx_frames += len(frames)
        out = []
        for f in frames:
            if f.msg == P.SCHEMA["RESULT"].id:
                self._on_result(f)
            else:
                out.append(f)
        return out

    def _request(self, name: str, tail: bytes | np.ndarray = b"", **fields: int) -> P.Frame:
        """Send a command and return its reply, retrying on timeout/NAK with the same sequence
        number (the board answers a repeat from its reply cache, so nothing runs twice)."""
        spec = P.SCHEMA[name]
        payload = spec.pack(tail, **fields)
        return self._request_raw(spec.id, payload)

    def _request_raw(self, msg_id: int, payload: bytes, flags: int = 0) -> P.Frame:
        with self._lock:
            seq = self._next_seq()
            opts = self.options
            frame = P.encode_frame(msg_id, seq, payload, flags)
            for attempt in range(opts.retries + 1):
                if attempt:
                    self.counters_host.retries += 1
                    frame = P.encode_frame(msg_id, seq, payload, flags | P.FLAG_RETRY)
                self._send(frame)
                deadline = time.monotonic() + opts.timeout_s
                nak = False
                while not nak:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.counters_host.timeouts += 1
                        break
                    for f in self._pump(min(left, 0.05)):
                        if f.seq != seq:
                            self.counters_host.stale_replies += 1
                        elif f.msg == P.SCHEMA["NAK"].id:
                            self.counters_host.naks_received += 1
                            nak = True
                        else:
                            return self._check_reply(f)
            raise BoardTimeout(f"no reply to {P.BY_ID[msg_id].name if msg_id in P.BY_ID else hex(msg_id)} "
                               f"after {opts.retries + 1} attempts of {opts.timeout_s} s")

    def _check_reply(self, f: P.Frame) -> P.Frame:
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

    def _heartbeat(self) -> None:
        period = self.options.heartbeat_s
        while not self._stop_hb.wait(period / 2):
            if time.monotonic() - self._last_tx < period:
                continue
            if not self._lock.acquire(blocking=False):
                continue        # the operation in progress keeps the link alive itself
            try:
                if not self._closed:
                    self._request("STATUS")
            except RemoteError as e:      # the board answered: the link is alive
                self.heartbeat_error = e
            except BaseException as e:  # noqa: BLE001 - reported through heartbeat_error
                self.heartbeat_error = e
                return
            finally:
                self._lock.release()

    # ---- session ----------------------------------------------------------------------
    def _hello(self) -> None:
        r = self._request("HELLO", major=P.PROTOCOL_MAJOR, minor=P.PROTOCOL_MINOR,
                          schema=P.SCHEMA_HASH)
        if r.msg != P.SCHEMA["HELLO_REPLY"].id:
            raise ProtocolError(f"HELLO answered with {r.name}")
        h = r.fields()
        if h["status"] != P.HELLO_OK or h["major"] != P.PROTOCOL_MAJOR or h["schema"] != P.SCHEMA_HASH:
            raise IncompatibleBoard(
                f"board speaks protocol {h['major']}.{h['minor']} schema 0x{h['schema']:08x}; "
                f"host speaks {P.PROTOCOL_MAJOR}.{P.PROTOCOL_MINOR} schema 0x{P.SCHEMA_HASH:08x}")

    def _identify(self) -> dict[str, Any]:
        chunks: list[bytes] = []
        page, n_pages = 0, 1
        while page < n_pages:
            f = self._expect(self._request("IDENTIFY", page=page), "IDENTITY")
            if f["page"] != page:
                raise ProtocolError(f"IDENTITY page {f['page']} for request {page}")
            n_pages = f["n_pages"]
            chunks.append(f["tail"])
            page += 1
        try:
            ident = json.loads(b"".join(chunks))
        except ValueError as e:
            raise ProtocolError(f"identity is not JSON: {e}") from None
        missing = [k for k in _IDENTITY_KEYS if k not in ident]
        if missing:
            raise ProtocolError(f"identity lacks {missing}")
        if ident["channels"] != N_CHANNELS:
            raise ProtocolError(f"board has {ident['channels']} channels, driver expects {N_CHANNELS}")
        return ident

    def _expect(self, f: P.Frame, name: str) -> dict[str, Any]:
        if f.name != name:
            raise ProtocolError(f"expected {name}, got {f.name}")
        return f.fields()

    def _setup_calibration(self) -> None:
        ident = self.identity
        dac = ident["dac"]
        self._v_per_code = np.array([d["volts_per_code"] for d in dac], dtype=np.float64)
        self._v_at_0 = np.array([d["volts_at_code0"] for d in dac], dtype=np.float64)
        # The electrode limits, declared once: every voltage is validated against these.
        self.limits_v = np.array(ident["limits_v"], dtype=np.float64).reshape(N_CHANNELS, 2)
        self._limit_codes = np.array(ident["limit_codes"], dtype=np.int64).reshape(N_CHANNELS, 2)
        self._na_per_code = float(ident["adc"]["na_per_code"])
        self._na_at_0 = float(ident["adc"]["na_at_code0"])
        self.max_slew_v_per_s = float(ident["max_slew_v_per_s"])
        if not (np.all(self._v_per_code > 0) and self._na_per_code > 0):
            raise ProtocolError("identity calibration has non-positive scale")
        o = self.options
        mb = int(ident["max_block_samples"])
        self._block = min(o.block_samples, mb)
        upl = (int(ident["max_payload"]) - 6) // (2 * N_CHANNELS)
        self._upload = min(o.upload_samples, upl, P.MAX_PAYLOAD // (2 * N_CHANNELS) - 1)
        self._sweep_max = min(o.sweep_samples, int(ident["max_sweep_samples"]))
        self._window = max(1, min(o.window, int(ident["fifo_blocks"])))

    # ---- volts <-> codes ----------------------------------------------------------------
    def validate(self, volts: Any) -> np.ndarray:
        """float64 [n, 7] within the board's limits, or LimitError naming the electrode."""
        v = np.asarray(volts, dtype=np.float64)
        if v.ndim == 1:
            v = v.reshape(1, -1)
        if v.ndim != 2 or v.shape[1] != N_CHANNELS:
            raise LimitError(f"volts must have shape [n, {N_CHANNELS}], got {np.shape(volts)}")
        if not np.all(np.isfinite(v)):
            i, c = np.argwhere(~np.isfinite(v))[0]
            raise LimitError(f"{ELECTRODES[c]} sample {i}: {v[i, c]} is not a finite voltage")
        lo, hi = self.limits_v[:, 0], self.limits_v[:, 1]
        bad = (v < lo) | (v > hi)
        if bad.any():
            i, c = np.argwhere(bad)[0]
            raise LimitError(f"{ELECTRODES[c]} sample {i}: {v[i, c]:.6g} V outside its limits "
                             f"[{lo[c]}, {hi[c]}] V ({int(bad.sum())} values out of range)")
        return v

    def volts_to_codes(self, volts: Any) -> np.ndarray:
        v = self.validate(volts)
        codes = np.rint((v - self._v_at_0) / self._v_per_code).astype(np.int64)
        # A value inside the limits may round one code past them: keep it inside.
        codes = np.clip(codes, self._limit_codes[:, 0], self._limit_codes[:, 1])
        return codes.astype(np.uint16)

    def codes_to_volts(self, codes: np.ndarray) -> np.ndarray:
        return self._v_at_0 + codes.astype(np.float64) * self._v_per_code

    # ---- commands -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        s = self._expect(self._request("STATUS"), "STATUS_REPLY")
        s["state_name"] = P.STATE_NAMES.get(s["state"], "?")
        s["armed"] = bool(s["flags"] & P.STATUS_ARMED)
        return s

    def rearm(self) -> None:
        """Leave the latched safe state (the board then follows commands again)."""
        self._request("ARM")

    def safe(self) -> None:
        """Ask the board to ramp to 0 V and latch its safe state."""
        self._request("SAFE")

    def outputs(self) -> dict[str, np.ndarray]:
        """The DAC outputs now (slew-limited) and their targets, in volts (nominal calibration)."""
        f = self._expect(self._request("GET_OUTPUTS"), "OUTPUTS")
        codes = f["tail"].astype(np.int64)
        if codes.size != 2 * N_CHANNELS:
            raise ProtocolError(f"OUTPUTS carries {codes.size} codes")
        return {"volts": self.codes_to_volts(codes[:N_CHANNELS]),
                "target": self.codes_to_volts(codes[N_CHANNELS:])}

    def set(self, volts7: Any, ramp: bool = True, wait: bool = True) -> float:
        """Set the 7 electrodes. The board slews (never jumps); `ramp` picks the gentle host rate
        (`options.ramp_v_per_s`) instead of the board's max slew. Returns the ramp time in s."""
        v = np.asarray(volts7, dtype=np.float64)
        if v.shape != (N_CHANNELS,):
            raise LimitError(f"set() takes {N_CHANNELS} volts (e0..e6), got shape {v.shape}")
        codes = self.volts_to_codes(v.reshape(1, N_CHANNELS))[0]
        rate_mv = int(round(self.options.ramp_v_per_s * 1000)) if ramp else 0
        with self._lock:
            r = self._expect(self._request("SET", tail=codes, rate_mv_per_s=rate_mv), "SET_REPLY")
            ramp_s = r["ramp_ms"] / 1000.0
            if wait:
                self._wait_settled(ramp_s)
        return ramp_s

    def _wait_settled(self, ramp_s: float) -> None:
        deadline = time.monotonic() + ramp_s * 1.5 + 2.0
        time.sleep(min(ramp_s, 0.05))
        while True:
            st = self.status()
            if st["state_name"] == "safe":
                raise SafeStateError("board latched its safe state while ramping")
            if st["state_name"] != "ramping":
                return
            if time.monotonic() > deadline:
                raise BoardTimeout(f"outputs did not settle within {ramp_s * 1.5 + 2.0:.1f} s")
            time.sleep(min(0.05, self.options.heartbeat_s))

    def zero(self) -> None:
        """Ramp every output to 0 V at the board's max slew and wait until it is there."""
        with self._lock:
            st = self.status()
            if st["state_name"] == "safe":
                return           # the board is already ramping/at 0 V by itself
            self.set(np.zeros(N_CHANNELS), ramp=False, wait=True)

    def errors(self, max_items: int = 32) -> list[dict[str, Any]]:
        """Pop the board's error queue."""
        out: list[dict[str, Any]] = []
        while True:
            f = self._expect(self._request("GET_ERRORS", max=min(max_items, 255)), "ERRORS")
            for rec in f["tail"]:
                code = int(rec["code"])
                out.append({"code": code, "name": P.ERROR_NAMES.get(code, f"E{code}"),
                            "seq": int(rec["seq"]), "arg": int(rec["arg"])})
            if f["remaining"] == 0 or len(out) >= max_items:
                return out

    def counters(self) -> dict[str, dict[str, int]]:
        f = self._expect(self._request("GET_COUNTERS"), "COUNTERS")
        names = self.identity["counters"]
        vals = [int(x) for x in f["tail"]]
        return {"board": dict(zip(names, vals)), "host": dict(self.counters_host.__dict__)}

    # ---- sweeps ---------------------------------------------------------------------------
    def measure(self, volts: Any, oversample: int = 1, sample_period_s: float | None = None,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Apply each row of `volts` [n, 7] in a hardware-timed sweep; return the readout in nA [n].

        Every value is validated before anything is sent. Sweeps are split to fit the board's
        buffer; results stream back in CRC-checked, numbered blocks, so a lost or corrupted
        block is fetched again and never delivered twice."""
        codes = self.volts_to_codes(volts)
        ident = self.identity
        if not 1 <= oversample <= int(ident["max_oversample"]):
            raise ValueError(f"oversample must be in 1..{ident['max_oversample']}, got {oversample}")
        period_ns = (int(ident["sample_period_ns"]["default"]) if sample_period_s is None
                     else int(round(sample_period_s * 1e9)))
        lo, hi = ident["sample_period_ns"]["min"], ident["sample_period_ns"]["max"]
        if not lo <= period_ns <= hi:
            raise ValueError(f"sample_period_s must be within [{lo * 1e-9}, {hi * 1e-9}] s")
        out = np.empty(len(codes), dtype=np.int64)
        with self._lock:
            for start in range(0, len(codes), self._sweep_max):
                part = codes[start:start + self._sweep_max]
                out[start:start + len(part)] = self._sweep(part, oversample, period_ns)
                if progress is not None:
                    progress(start + len(part), len(codes))
        return self._na_at_0 + out * self._na_per_code

    def _sweep(self, codes: np.ndarray, oversample: int, period_ns: int) -> np.ndarray:
        n = len(codes)
        self._sweep_id = sid = (self._sweep_id + 1) & 0xFFFF
        self._request("SWEEP_BEGIN", sweep_id=sid, n_samples=n, oversample=oversample,
                      period_ns=period_ns, block_samples=self._block)
        for off in range(0, n, self._upload):
            self._request("SWEEP_DATA", tail=codes[off:off + self._upload].reshape(-1),
                          sweep_id=sid, offset=off)
        rx = _SweepRx(sid, n, self._block, -(-n // self._block), np.empty(n, dtype=np.int32))
        self._rx = rx
        try:
            self._request("SWEEP_RUN", sweep_id=sid, window=self._window)
            self._stream(rx)
        except BaseException:
            self._rx = None
            if not self._broken:
                try:
                    self._request("SWEEP_ABORT", sweep_id=sid)
                except BoardError:
                    pass
            raise
        self._rx = None
        return rx.codes

    def _credit(self, rx: _SweepRx, rewind: bool = False) -> None:
        payload = P.SCHEMA["CREDIT"].pack(sweep_id=rx.sweep_id, next_block=rx.expected,
                                          window=self._window, flags=P.CREDIT_REWIND if rewind else 0)
        self._send(P.encode_frame(P.SCHEMA["CREDIT"].id, 0, payload, P.FLAG_NOREPLY))
        rx.credited = rx.expected
        if rewind:
            self.counters_host.rewinds += 1

    def _on_result(self, f: P.Frame) -> None:
        rx = self._rx
        try:
            r = P.SCHEMA["RESULT"].unpack(f.payload)
        except ProtocolError:
            self.counters_host.stale_replies += 1
            return
        if rx is None or r["sweep_id"] != rx.sweep_id:
            self.counters_host.stale_replies += 1
            return
        b = r["block"]
        if r["flags"] & P.RESULT_OVERFLOW:
            rx.overflow = True
            return
        if r["flags"] & P.RESULT_ABORTED:
            rx.aborted = True
            return
        if b < rx.expected:
            self.counters_host.duplicate_blocks += 1
            return
        now = time.monotonic()
        if b > rx.expected:
            self.counters_host.out_of_order_blocks += 1
            if now - rx.last_gap_rewind > self.options.timeout_s:
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
        self.counters_host.samples_received += count
        if rx.expected - rx.credited >= max(1, self._window // 4) or rx.expected == rx.n_blocks:
            self._credit(rx)

    def _stream(self, rx: _SweepRx) -> None:
        o = self.options
        last_check = time.monotonic()
        while rx.expected < rx.n_blocks:
            if rx.overflow:
                raise BoardOverflow(f"board FIFO overflowed at block {rx.expected} of sweep "
                                    f"{rx.sweep_id}: samples were lost (host slower than the sample clock)")
            if rx.aborted:
                raise BoardError(f"board aborted sweep {rx.sweep_id} at block {rx.expected} "
                                 f"(analog device fault; see errors())")
            self._pump(0.02)
            now = time.monotonic()
            if rx.expected >= rx.n_blocks or rx.overflow or rx.aborted:
                continue
            if now - self._last_tx > o.heartbeat_s:
                self._credit(rx)
            if now - rx.progress_t < 2 * o.timeout_s or now - last_check < 2 * o.timeout_s:
                continue
            # A quiet link: is the board still computing, or did blocks go missing?
            last_check = now
            st = self.status()            # (its reply may arrive after the last blocks)
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
            if now - rx.progress_t > o.stall_timeout_s:
                raise BoardTimeout(f"sweep made no progress for {o.stall_timeout_s} s "
                                   f"(block {rx.expected} of {rx.n_blocks})")
