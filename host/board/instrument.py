"""`Board`: a DNPU bench board as an instrument (a real one, or the simulator behind sim://).

Opening shakes hands (HELLO), reads the identity, takes the calibration and the electrode limits
from it and re-arms the board; `set`, `measure`, `zero`, `status`, `errors` and `counters` are
the instrument's operations. Volts become DAC codes here (after `check_volts`), travel as
codes through the sweep streamer and the link, and come back as ADC codes that become nA here.

A board may carry several devices (identity `n_devices`, protocol 1.2): K x 7 DAC channels and K
readouts. `set` and `measure` address device 0 unless given `device=`, and leave the other
devices where they are; `set_devices` and `measure_devices` drive several devices at once, one
hardware-timed row setting all of them, so they compute in parallel.
"""
from __future__ import annotations

import dataclasses
import json
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from core._engine import volts_to_codes as quantise_volts
from core.electrodes import N_ELECTRODES
from host.board import protocol as P
from host.board.errors import (BoardError, BoardTimeout, IncompatibleBoard, LimitError,
                               ProtocolError, RemoteError, SafeStateError)
from host.board.limits import check_volts
from host.board.link import HostCounters, Link
from host.board.sweep import LinkAdaptation, SweepSizes, SweepStream
from host.board.transport import Port, open_port

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
    upload_samples: int = 584       # samples per SWEEP_DATA frame (7 x u16 each; at most what fits)
    block_samples: int = 2048       # samples per RESULT block (i32 each; at most the board's max)
    window: int = 16                # RESULT blocks in flight (credits)
    upload_window: int = 8          # SWEEP_DATA frames in flight
    adapt: bool = True              # shrink frames on a noisy link, grow them back while it is clean
    min_upload_samples: int = 32    # adaptation floors
    min_block_samples: int = 64
    adapt_grow_after: int = 8       # clean frames in a row before a size doubles again
    sweep_samples: int = 1 << 16    # samples per sweep (board buffer)
    ramp_v_per_s: float = 1.0       # set(..., ramp=True) rate; ramp=False uses the board's max slew
    arm: bool = True                # re-arm the board's safe state on open
    heartbeat: bool = True          # run the keep-alive thread
    baudrate: int = 1_000_000       # UART bridges only; USB CDC, pty and TCP ignore it

    def __post_init__(self) -> None:
        for name in ("timeout_s", "heartbeat_s", "stall_timeout_s", "ramp_v_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BoardOptions.{name} must be > 0")
        for name in ("upload_samples", "block_samples", "window", "sweep_samples", "upload_window",
                     "min_upload_samples", "min_block_samples", "adapt_grow_after"):
            if getattr(self, name) < 1:
                raise ValueError(f"BoardOptions.{name} must be >= 1")
        if self.retries < 0:
            raise ValueError("BoardOptions.retries must be >= 0")


class Board:
    """A connected, identified, armed board. Use as a context manager: it zeroes on exit."""

    def __init__(self, port: Port, options: BoardOptions | None = None, url: str = "") -> None:
        self.options = o = options or BoardOptions()
        self.url = url
        self.link = Link(port, o.timeout_s, o.retries, o.heartbeat_s)
        self._closed = False
        try:
            self._hello()
            self.identity = self._identify()
            self._setup_calibration()
            if o.arm:
                self.rearm()
        except BaseException:
            self.link.broken = True
            self.close()
            raise
        if o.heartbeat:
            self.link.start_heartbeat()

    # ---- opening / closing ------------------------------------------------------------
    @classmethod
    def open(cls, url: str, options: BoardOptions | None = None,
             wrap: Callable[[Port], Port] | None = None, **kw: Any) -> "Board":
        """Open `url` (/dev/tty*, socket://127.0.0.1:PORT, sim://?seed=N...), handshake, identify, arm.

        Keyword arguments override fields of `options`; `wrap` wraps the port (fault injection)."""
        options = dataclasses.replace(options or BoardOptions(), **kw)
        port = open_port(url, options.baudrate)
        try:
            wrapped = wrap(port) if wrap else port
        except BaseException:
            port.close()
            raise
        return cls(wrapped, options, url=url)

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ramp every output to 0 V (unless the link is broken), then release the port."""
        if self._closed:
            return
        self.link.stop_heartbeat()
        try:
            if not self.link.broken:
                self.zero()
        except BoardError:
            pass
        finally:
            self._closed = True
            self.link.close()

    @property
    def counters_host(self) -> HostCounters:
        return self.link.counters

    @property
    def adaptation(self) -> dict[str, int]:
        """The frame sizes the host uses now (they shrink on a noisy link): SWEEP_DATA rows per
        frame and frames in flight, RESULT samples per block, and how often any shrank."""
        return self.sweeps.adapt.as_dict()

    @property
    def heartbeat_error(self) -> BaseException | None:
        """What stopped (or troubled) the keep-alive thread, if anything."""
        return self.link.heartbeat_error

    # ---- session ----------------------------------------------------------------------
    def _hello(self) -> None:
        r = self.link.request("HELLO", major=P.PROTOCOL_MAJOR, minor=P.PROTOCOL_MINOR,
                              schema=P.SCHEMA_HASH)
        if r.msg != P.SCHEMA["HELLO_REPLY"].id:
            raise ProtocolError(f"HELLO answered with {r.name}")
        h = r.fields()
        if h["status"] != P.HELLO_OK or h["major"] != P.PROTOCOL_MAJOR or h["schema"] != P.SCHEMA_HASH:
            raise IncompatibleBoard(
                f"board speaks protocol {h['major']}.{h['minor']} schema 0x{h['schema']:08x}; "
                f"host speaks {P.PROTOCOL_MAJOR}.{P.PROTOCOL_MINOR} schema 0x{P.SCHEMA_HASH:08x}; "
                + self._schema_difference(h["schema"]))

    def _schema_difference(self, board_hash: int) -> str:
        """Which messages differ, from the schema the board serves in its identity. IDENTIFY is
        sent with the board's hash as CRC seed, which works when IDENTIFY and IDENTITY are laid
        out alike on both sides (checked on the served schema before anything else is used)."""
        try:
            ident = self._read_identity(board_hash)
        except RemoteError as e:
            return f"the board does not serve its schema before HELLO (protocol < 1.1?): {e}"
        except BoardError as e:
            return f"could not read the board's schema: {e}"
        lines = ident.get("schema")
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            return "the board's identity lists no schema"
        if zlib.crc32("\n".join(lines).encode("ascii", "replace")) != board_hash:
            return "the schema the board serves does not match its hash"
        own = P.SCHEMA_TEXT.split("\n")
        for name in ("IDENTIFY", "IDENTITY"):
            if [x for x in lines if x.split()[1:2] == [name]] != [x for x in own if x.split()[1:2] == [name]]:
                return f"{name} itself differs, so the board's schema cannot be read"
        diff = P.schema_difference(lines, own)
        return "messages that differ: " + "; ".join(diff) if diff else "no message differs"

    def _read_identity(self, schema_hash: int | None = None) -> dict[str, Any]:
        """IDENTIFY pages 0..n_pages-1, the concatenated tails as one JSON object."""
        chunks: list[bytes] = []
        page, n_pages = 0, 1
        while page < n_pages:
            f = self.link.expect("IDENTITY", "IDENTIFY", schema_hash=schema_hash, page=page)
            if f["page"] != page:
                raise ProtocolError(f"IDENTITY page {f['page']} for request {page}")
            n_pages = f["n_pages"]
            chunks.append(f["tail"])
            page += 1
        try:
            ident = json.loads(b"".join(chunks))
        except ValueError as e:
            raise ProtocolError(f"identity is not JSON: {e}") from None
        if not isinstance(ident, dict):
            raise ProtocolError("identity is not a JSON object")
        return ident

    def _identify(self) -> dict[str, Any]:
        ident = self._read_identity()
        missing = [k for k in _IDENTITY_KEYS if k not in ident]
        if missing:
            raise ProtocolError(f"identity lacks {missing}")
        k = ident.get("n_devices", 1)          # protocol < 1.2: one device
        if not (isinstance(k, int) and k >= 1) or ident["channels"] != N_ELECTRODES * k:
            raise ProtocolError(f"board has {ident['channels']} channels for {k!r} devices; the driver "
                                f"expects {N_ELECTRODES} per device")
        return ident

    def _setup_calibration(self) -> None:
        ident = self.identity
        dac = ident["dac"]
        #: devices on the board, and DAC channels (N_ELECTRODES per device)
        self.n_devices = int(ident.get("n_devices", 1))
        self.channels = c = N_ELECTRODES * self.n_devices
        if len(dac) != c:
            raise ProtocolError(f"identity calibrates {len(dac)} DAC channels of {c}")
        self._v_per_code = np.array([d["volts_per_code"] for d in dac], dtype=np.float64)
        self._v_at_0 = np.array([d["volts_at_code0"] for d in dac], dtype=np.float64)
        # The electrode limits, declared by the board: every voltage is checked against these.
        #: [K, 7, 2]: each device's electrode limits; `limits_v` is device 0's
        self.device_limits_v = np.array(ident["limits_v"], dtype=np.float64).reshape(self.n_devices, N_ELECTRODES, 2)
        self.limits_v = self.device_limits_v[0]
        self._limit_codes = np.array(ident["limit_codes"], dtype=np.int64).reshape(c, 2)
        self._limit_codes_f = [np.ascontiguousarray(self._limit_codes[:, k], dtype=np.float64) for k in (0, 1)]
        self._na_per_code = float(ident["adc"]["na_per_code"])
        self._na_at_0 = float(ident["adc"]["na_at_code0"])
        self.max_slew_v_per_s = float(ident["max_slew_v_per_s"])
        if not (np.all(self._v_per_code > 0) and self._na_per_code > 0):
            raise ProtocolError("identity calibration has non-positive scale")
        o = self.options
        rate = float(ident.get("link_bytes_per_s", 0) or 0)
        if rate > 0:
            # A slow link (a UART): a reply may wait behind a full frame each way.
            self.link.timeout_s = o.timeout_s + 2 * (P.FRAME_OVERHEAD + int(ident["max_payload"])) / rate
        sizes = SweepSizes.negotiate(ident, o.block_samples, o.upload_samples, o.window,
                                     o.sweep_samples, o.upload_window, self.link.timeout_s)
        adapt = LinkAdaptation.for_sizes(sizes, o.min_upload_samples, o.min_block_samples,
                                         o.adapt_grow_after, enabled=o.adapt)
        self.sweeps = SweepStream(self.link, sizes, o.stall_timeout_s, adapt)

    # ---- devices --------------------------------------------------------------------------
    def device_index(self, device: int) -> int:
        """`device` if the board has it, else ValueError."""
        if isinstance(device, bool) or not isinstance(device, (int, np.integer)) or not 0 <= device < self.n_devices:
            raise ValueError(f"device {device!r}: the board carries devices 0..{self.n_devices - 1}")
        return int(device)

    def _columns(self, device: int) -> slice:
        d = self.device_index(device)
        return slice(d * N_ELECTRODES, (d + 1) * N_ELECTRODES)

    def _device_list(self, devices: Sequence[int] | None) -> list[int]:
        ds = list(range(self.n_devices)) if devices is None else [self.device_index(d) for d in devices]
        if len(set(ds)) != len(ds) or not ds:
            raise ValueError(f"devices {devices!r} must be distinct and not empty")
        return ds

    def device_view(self, device: int) -> "DeviceView":
        """One device of this board as a board of its own (identity, limits_v, measure, set,
        zero): what sampling and the experiments take; the other devices hold their targets."""
        return DeviceView(self, self.device_index(device))

    # ---- volts <-> codes ----------------------------------------------------------------
    def validate(self, volts: Any, device: int = 0) -> np.ndarray:
        """float64 [n, 7] within the limits of `device`, or LimitError naming the electrode."""
        what = "volts" if self.n_devices == 1 else f"device {device} volts"
        return check_volts(volts, self.device_limits_v[self.device_index(device)], what)

    def volts_to_codes(self, volts: Any, device: int = 0) -> np.ndarray:
        """DAC codes uint16 [n, 7] of `device` for volts [n, 7] (checked against its limits)."""
        return self._device_codes(volts, device)

    def _device_codes(self, volts: Any, device: int) -> np.ndarray:
        """DAC codes of `device` for volts [n, 7], checked against its limits: the common case
        (a float64 array, every value inside) in one pass of the core's quantiser; anything else
        through `validate` first (its errors, and values past a limit by float32 rounding
        taken as the limit)."""
        v = volts
        if not (isinstance(v, np.ndarray) and v.dtype == np.float64 and v.ndim == 2
                and v.shape[1] == N_ELECTRODES and v.flags.c_contiguous):
            v = np.ascontiguousarray(self.validate(v, device))
        cols = self._columns(device)
        lim = self.device_limits_v[self.device_index(device)]
        out = np.empty(v.shape, np.uint16)
        args = tuple(np.ascontiguousarray(a) for a in (
            self._v_at_0[cols], self._v_per_code[cols], lim[:, 0], lim[:, 1],
            self._limit_codes_f[0][cols], self._limit_codes_f[1][cols]))
        if quantise_volts(v, *args, out) >= 0:        # some value outside: the full check decides
            v = np.ascontiguousarray(self.validate(v, device))
            if quantise_volts(v, *args, out) >= 0:
                raise AssertionError("volts inside their limits after validate were refused")
        return out

    def _full_codes(self, volts: dict[int, np.ndarray]) -> np.ndarray:
        """Codes [n, channels]: each device of `volts` ({device: [n, 7]}) at its volts (all checked
        first), the devices not named at their present targets (read from the board)."""
        codes = {d: self._device_codes(v, d) for d, v in volts.items()}
        n = len(next(iter(codes.values())))
        if any(len(c) != n for c in codes.values()):
            raise LimitError("every device needs the same number of rows")
        if len(codes) == self.n_devices == 1:
            return codes[next(iter(codes))]
        if len(codes) == self.n_devices:
            out = np.empty((n, self.channels), np.uint16)
        else:
            out = np.tile(self._output_codes()[1].astype(np.uint16), (n, 1))
        for d, c in codes.items():
            out[:, self._columns(d)] = c
        return out

    def codes_to_volts(self, codes: np.ndarray, device: int = 0) -> np.ndarray:
        """Nominal volts of DAC codes [..., 7] of `device`, or of all channels [..., channels]."""
        c = np.asarray(codes)
        cols = slice(None) if c.shape[-1] == self.channels else self._columns(device)
        return self._v_at_0[cols] + c.astype(np.float64) * self._v_per_code[cols]

    # ---- commands -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """STATUS_REPLY fields, plus `state_name` (idle, safe, sweep, ramping) and `armed`."""
        return self.link.status()

    def rearm(self) -> None:
        """Leave the latched safe state (the board then follows commands again)."""
        self.link.request("ARM")

    def safe(self) -> None:
        """Ask the board to ramp to 0 V and latch its safe state."""
        self.link.request("SAFE")

    def _output_codes(self) -> np.ndarray:
        """[2, channels]: the DAC output codes now, and their targets."""
        f = self.link.expect("OUTPUTS", "GET_OUTPUTS")
        codes = f["tail"].astype(np.int64)
        if codes.size != 2 * self.channels:
            raise ProtocolError(f"OUTPUTS carries {codes.size} codes for {self.channels} channels")
        return codes.reshape(2, self.channels)

    def outputs(self, device: int | None = None) -> dict[str, np.ndarray]:
        """The DAC outputs now (slew-limited) and their targets, in volts (nominal calibration):
        of every channel ([7] on a one-device board, [K x 7] on K), or of `device` only ([7])."""
        codes = self._output_codes()
        cols = slice(None) if device is None else self._columns(device)
        return {"volts": self.codes_to_volts(codes[0])[cols], "target": self.codes_to_volts(codes[1])[cols]}

    def set(self, volts7: Any, ramp: bool = True, wait: bool = True, device: int = 0) -> float:
        """Set the 7 electrodes of `device` (the others keep their targets). The board slews
        (never jumps); `ramp` picks the gentle host rate (`options.ramp_v_per_s`) instead of the
        board's max slew. Returns the ramp time in s."""
        v = np.asarray(volts7, dtype=np.float64)
        if v.shape != (N_ELECTRODES,):
            raise LimitError(f"set() takes {N_ELECTRODES} volts (e0..e6), got shape {v.shape}")
        return self.set_devices(v.reshape(1, N_ELECTRODES), [device], ramp=ramp, wait=wait)

    def set_devices(self, volts: Any, devices: Sequence[int] | None = None, ramp: bool = True,
                    wait: bool = True) -> float:
        """Set several devices in one ramp: volts [m, 7] for `devices` (default: all, m = K); the
        devices not named keep their targets. Returns the ramp time in s."""
        ds = self._device_list(devices)
        v = np.asarray(volts, dtype=np.float64)
        if v.shape != (len(ds), N_ELECTRODES):
            raise LimitError(f"set_devices() takes [{len(ds)}, {N_ELECTRODES}] volts, got shape {v.shape}")
        rate_mv = int(round(self.options.ramp_v_per_s * 1000)) if ramp else 0
        with self.link.lock:
            codes = self._full_codes({d: v[i:i + 1] for i, d in enumerate(ds)})[0]
            r = self.link.expect("SET_REPLY", "SET", tail=codes, rate_mv_per_s=rate_mv)
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
        with self.link.lock:
            st = self.status()
            if st["state_name"] == "safe":
                return           # the board is already ramping/at 0 V by itself
            self.set_devices(np.zeros((self.n_devices, N_ELECTRODES)), ramp=False, wait=True)

    def errors(self, max_items: int = 32) -> list[dict[str, Any]]:
        """Pop the board's error queue."""
        out: list[dict[str, Any]] = []
        while True:
            f = self.link.expect("ERRORS", "GET_ERRORS", max=min(max_items, 255))
            for rec in f["tail"]:
                code = int(rec["code"])
                out.append({"code": code, "name": P.ERROR_NAMES.get(code, f"E{code}"),
                            "seq": int(rec["seq"]), "arg": int(rec["arg"])})
            if f["remaining"] == 0 or len(out) >= max_items:
                return out

    def counters(self) -> dict[str, dict[str, int]]:
        """The board's counters (named by its identity) and the host's."""
        f = self.link.expect("COUNTERS", "GET_COUNTERS")
        vals = [int(x) for x in f["tail"]]
        return {"board": dict(zip(self.identity["counters"], vals)), "host": self.link.counters.as_dict()}

    # ---- sweeps ---------------------------------------------------------------------------
    def measure(self, volts: Any, oversample: int = 1, sample_period_s: float | None = None,
                progress: Callable[[int, int], None] | None = None, device: int = 0) -> np.ndarray:
        """Apply each row of `volts` [n, 7] to `device` in a hardware-timed sweep; return its
        readout in nA [n]. The other devices of the board hold their targets.

        Every value is checked before anything is sent. Sweeps are split to fit the board's
        buffer; results stream back in CRC-checked, numbered blocks, so a lost or corrupted
        block is fetched again and never delivered twice."""
        v = np.asarray(volts)
        if v.ndim != 2 or v.shape[1] != N_ELECTRODES:
            v = self.validate(v, device)          # one row as [1, 7], or says what shape it needs
        return self.measure_devices(v[:, None, :], [device], oversample, sample_period_s, progress)[:, 0]

    def measure_devices(self, volts: Any, devices: Sequence[int] | None = None, oversample: int = 1,
                        sample_period_s: float | None = None,
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Row r of `volts` [n, m, 7] drives device devices[j] with volts[r, j] (default: every
        device, m = K), all in the same sample period; returns nA [n, m]. Devices not named hold
        their targets. One sweep serves all of them: they compute in parallel."""
        ds = self._device_list(devices)
        v = np.asarray(volts, dtype=np.float64)
        if v.ndim != 3 or v.shape[1:] != (len(ds), N_ELECTRODES):
            raise LimitError(f"measure_devices() takes [n, {len(ds)}, {N_ELECTRODES}] volts, got shape {v.shape}")
        with self.link.lock:
            codes = self._full_codes({d: v[:, j] for j, d in enumerate(ds)})
            na = self._sweep_codes(codes, oversample, sample_period_s, progress)
        return na[:, ds]

    def _sweep_codes(self, codes: np.ndarray, oversample: int, sample_period_s: float | None,
                     progress: Callable[[int, int], None] | None) -> np.ndarray:
        """Codes [n, channels] swept; nA [n, K]."""
        ident = self.identity
        if not 1 <= oversample <= int(ident["max_oversample"]):
            raise ValueError(f"oversample must be in 1..{ident['max_oversample']}, got {oversample}")
        period_ns = (int(ident["sample_period_ns"]["default"]) if sample_period_s is None
                     else int(round(sample_period_s * 1e9)))
        lo, hi = ident["sample_period_ns"]["min"], ident["sample_period_ns"]["max"]
        if not lo <= period_ns <= hi:
            raise ValueError(f"sample_period_s must be within [{lo * 1e-9}, {hi * 1e-9}] s")
        out = np.empty((len(codes), self.n_devices), dtype=np.float64)
        step = self.sweeps.sizes.max_samples
        with self.link.lock:
            for start in range(0, len(codes), step):
                part = codes[start:start + step]
                na = out[start:start + len(part)]
                np.multiply(self.sweeps.run(part, oversample, period_ns), self._na_per_code, out=na)
                na += self._na_at_0
                if progress is not None:
                    progress(start + len(part), len(codes))
        return out


@dataclass(frozen=True)
class DeviceView:
    """Device `device` of `board`, seen as a one-device board: `identity` is the board's with
    `device` and `limits_v` of this device (and `device_index`), so what is measured through a
    view records the chip it was measured on. `zero` ramps every device of the board to 0 V."""

    board: Board
    device: int

    @property
    def identity(self) -> dict[str, Any]:
        ident = dict(self.board.identity)
        if self.board.n_devices > 1:
            d = ident["devices"][self.device]
            ident.update(device=d["device"], limits_v=d["limits_v"], device_index=self.device)
        return ident

    @property
    def limits_v(self) -> np.ndarray:
        return self.board.device_limits_v[self.device]

    @property
    def url(self) -> str:
        return self.board.url

    def measure(self, volts: Any, oversample: int = 1, sample_period_s: float | None = None,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        return self.board.measure(volts, oversample, sample_period_s, progress, device=self.device)

    def set(self, volts7: Any, ramp: bool = True, wait: bool = True) -> float:
        return self.board.set(volts7, ramp=ramp, wait=wait, device=self.device)

    def zero(self) -> None:
        self.board.zero()

    def status(self) -> dict[str, Any]:
        return self.board.status()
