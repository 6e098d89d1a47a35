"""The board's firmware logic: command handling, DAC/ADC model, limits, slew, watchdog, sweeps.

`Firmware` is transport-free: the I/O loop (`firmware_sim.server`) feeds it received bytes and
writes out what it returns; a compute worker thread takes sweep blocks with `take_job()`,
runs them through the `AnalogDevice` and hands the result back with `finish_job()`, so the
device computes the next block while the link carries the previous one.
"""
from __future__ import annotations

import json
import math
import threading
import time
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from core.electrodes import ELECTRODE_NAMES, N_ELECTRODES
from firmware_sim import protocol as P
from firmware_sim.analog import TIA_RANGE_NA, AnalogDevice
from firmware_sim.options import option
from firmware_sim.physics.geometry import WORKING_RANGES_V

FIRMWARE_VERSION = "0.1.0"

# The simulated board's hard limits default to its device's working ranges: those a device
# declares (`working_ranges_v`, a twin's file), else the virtual device's.
DEFAULT_LIMITS_V: tuple[tuple[float, float], ...] = tuple(
    (float(lo), float(hi)) for lo, hi in WORKING_RANGES_V)

# The ADC's full scale follows the TIA range of the device: ADC_SCALE_CODES codes of the first
# 1-2-5 step of nA per code that covers the range's larger end (a 16-bit ADC then reads a round
# nA per code: +-327.68 nA, 0.01 nA per code, for the virtual DNPU's -300..100 nA TIA).
ADC_SCALE_CODES = 1 << 15
#: payload bytes a RESULT frame has for its i32 ADC codes (after its head fields)
RESULT_ROOM = P.MAX_PAYLOAD - P.PROTOCOL.by_name["RESULT"].head.size
_STEPS_125 = (1, 2, 5)

COUNTER_NAMES: tuple[str, ...] = (
    "rx_bytes", "rx_frames", "garbage_bytes", "header_errors", "crc_errors", "naks_sent",
    "unknown_commands", "malformed", "cached_replies", "limit_rejects", "watchdog_trips",
    "port_closes", "tx_frames", "blocks_sent", "blocks_resent", "overflows", "errors_dropped",
    "frame_timeouts")

# Commands that a board answers before a successful HELLO: IDENTIFY lets a host whose schema
# differs learn which messages differ (protocol 1.1).
_BEFORE_HELLO = {"HELLO", "IDENTIFY"}

# Commands that a board in the latched safe state still answers.
_SAFE_OK = {"HELLO", "IDENTIFY", "STATUS", "GET_OUTPUTS", "ARM", "SAFE", "GET_ERRORS",
            "GET_COUNTERS", "CREDIT", "SWEEP_ABORT"}


def adc_span_for(tia_range_na: tuple[float, float]) -> tuple[float, float]:
    """The ADC's full scale (lo, hi) nA for a TIA range, symmetric about 0 (see ADC_SCALE_CODES)."""
    need = max(abs(float(tia_range_na[0])), abs(float(tia_range_na[1]))) / ADC_SCALE_CODES
    if not (math.isfinite(need) and need > 0):
        raise ValueError(f"TIA range {tia_range_na!r} must be finite and not all 0")
    k = math.floor(math.log10(need))
    steps = [float(f"{m}e{e}") for e in (k, k + 1) for m in _STEPS_125]    # exact decimals: 0.01, not 0.01000...1
    step = min(x for x in steps if x >= need * (1 - 1e-12))
    return (-step * ADC_SCALE_CODES, step * ADC_SCALE_CODES)


def members_of(device: AnalogDevice) -> tuple[AnalogDevice, ...]:
    """The devices on the analog side: a `DeviceArray`'s members, else the device itself."""
    return tuple(getattr(device, "members", (device,)))


def device_fit(device: AnalogDevice) -> tuple[tuple[tuple[float, float], ...], tuple[float, float]]:
    """(working ranges V, TIA range nA) that `device` declares (`working_ranges_v`, `tia_range_na`,
    as a twin does), else the virtual device's (DEFAULT_LIMITS_V, TIA_RANGE_NA). For several
    devices: every device's ranges in turn (K x 7 pairs) and a TIA range covering all of theirs."""
    members = members_of(device)
    if len(members) > 1:
        fits = [device_fit(m) for m in members]
        return (tuple(p for r, _ in fits for p in r),
                (min(t[0] for _, t in fits), max(t[1] for _, t in fits)))
    ranges = getattr(device, "working_ranges_v", None) or DEFAULT_LIMITS_V
    tia = getattr(device, "tia_range_na", None) or TIA_RANGE_NA
    return (tuple((float(lo), float(hi)) for lo, hi in ranges), (float(tia[0]), float(tia[1])))


def parse_limits(text: str) -> tuple[tuple[float, float], ...]:
    """'lo:hi' for every electrode, or one 'lo:hi' per electrode, comma-separated."""
    try:
        pairs = [tuple(float(x) for x in p.split(":")) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"cannot parse {text!r}; use lo:hi[,lo:hi...]") from None
    if any(len(p) != 2 for p in pairs) or len(pairs) not in (1, N_ELECTRODES):
        raise ValueError(f"need 1 or {N_ELECTRODES} lo:hi pairs, got {text!r}")
    return tuple(pairs * N_ELECTRODES if len(pairs) == 1 else pairs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BoardConfig:
    """Everything that distinguishes one simulated board from another. The fields declared with
    `option` are the simulator's options (`python -m firmware_sim --help`, sim://?name=value)."""

    seed: int = option(0, "board and device seed (which virtual chip, and its DAC errors)")
    dac_bits: int = option(16, "DAC resolution, 8..16", unit="bits")
    dac_span_v: tuple[float, float] = (-2.0, 2.0)
    adc_bits: int = option(16, "ADC resolution, 8..24", unit="bits")
    adc_span_na: tuple[float, float] | None = None       # None: follows the device (adc_span_for)
    limits_v: tuple[tuple[float, float], ...] | None = option(
        None, f"hard limits: lo:hi for every electrode, or {N_ELECTRODES} comma-separated pairs",
        parse=parse_limits, unit="V", name="limits",
        default_text="the device's working ranges (device=surrogate: the file's electrode ranges; else "
                     + ",".join(f"{lo:g}:{hi:g}" for lo, hi in DEFAULT_LIMITS_V) + ")")
    max_slew_v_per_s: float = option(10.0, "slew limit of every output", unit="V/s", name="max_slew")
    watchdog_s: float = option(0.5, "host silence after which the outputs ramp to 0 V and latch",
                               unit="ms", name="watchdog_ms", scale=1e-3)
    sample_period_s: float = option(10e-6, "default sample period of a sweep", unit="us",
                                    name="sample_period_us", scale=1e-6)
    min_period_ns: int = 1_000
    max_period_ns: int = 100_000_000
    max_oversample: int = 1024
    dac_gain_error: float = option(1e-3, "RMS relative DAC gain error of each channel, seeded")
    dac_offset_error_v: float = option(1e-3, "RMS DAC offset of each channel, seeded", unit="mV",
                                       name="dac_offset_error_mv", scale=1e-3)
    max_sweep_samples: int = 1 << 20
    max_block_samples: int = RESULT_ROOM // 4
    fifo_blocks: int = option(64, "depth of the result FIFO", unit="blocks")
    realtime: bool = option(False, "pace sweeps by the sample clock: a slow host overflows the FIFO")
    error_queue: int = 32
    reply_cache: int = 32
    # A frame still incomplete this long after its last byte arrived is discarded (and NAKed when
    # its header was sound): a byte lost on the wire must not make the board swallow the next frame.
    frame_gap_s: float = P.FRAME_GAP_S

    def __post_init__(self) -> None:
        if not 8 <= self.dac_bits <= 16:
            raise ValueError(f"dac_bits must be 8..16, got {self.dac_bits}")
        if not 8 <= self.adc_bits <= 24:
            raise ValueError(f"adc_bits must be 8..24, got {self.adc_bits}")
        if self.limits_v is not None:      # 7 pairs, or K x 7 once completed for K devices
            n = len(self.limits_v)
            check_limits(self.limits_v, self.dac_span_v, n if n and n % N_ELECTRODES == 0 else N_ELECTRODES)
        if self.adc_span_na is not None and not self.adc_span_na[0] < 0 < self.adc_span_na[1]:
            raise ValueError(f"adc_span_na must be (lo, hi) with lo < 0 < hi, got {self.adc_span_na!r}")
        if self.max_slew_v_per_s <= 0 or self.watchdog_s <= 0 or self.sample_period_s <= 0:
            raise ValueError("max_slew_v_per_s, watchdog_s and sample_period_s must be > 0")
        if not 1 <= self.max_block_samples <= RESULT_ROOM // 4:
            raise ValueError("max_block_samples does not fit a RESULT frame")

    def for_device(self, device: AnalogDevice) -> "BoardConfig":
        """This config with what it leaves to the device filled in: the limits (unless given)
        are the device's working ranges, the ADC's full scale (unless given) follows its TIA
        range. ValueError if the device's ranges cannot be the board's limits."""
        ranges, tia = device_fit(device)
        k = len(members_of(device))
        given = None if self.limits_v is None else tuple(self.limits_v[:N_ELECTRODES]) * k
        try:
            limits = given if given is not None else check_limits(ranges, self.dac_span_v, k * N_ELECTRODES)
        except ValueError as e:
            raise ValueError(f"the device's working ranges cannot be the board's limits ({e}); give limits=") from None
        span = self.adc_span_na if self.adc_span_na is not None else adc_span_for(tia)
        return replace(self, limits_v=limits, adc_span_na=span)

    @property
    def dac_lsb_v(self) -> float:
        return (self.dac_span_v[1] - self.dac_span_v[0]) / (1 << self.dac_bits)

    @property
    def adc_lsb_na(self) -> float:
        if self.adc_span_na is None:
            raise ValueError("adc_span_na follows the device: use BoardConfig.for_device(device)")
        return (self.adc_span_na[1] - self.adc_span_na[0]) / (1 << self.adc_bits)


def check_limits(limits_v: tuple[tuple[float, float], ...], dac_span_v: tuple[float, float],
                 channels: int = N_ELECTRODES) -> tuple[tuple[float, float], ...]:
    """`limits_v` if it is `channels` (lo, hi) pairs within the DAC span around 0 V, else ValueError."""
    if len(limits_v) != channels:
        raise ValueError(f"limits_v needs {channels} (lo, hi) pairs, got {len(limits_v)}")
    lo_s, hi_s = dac_span_v
    for c, (lo, hi) in enumerate(limits_v):
        if not (lo_s <= lo <= 0.0 <= hi <= hi_s) or lo >= hi:
            raise ValueError(f"limits_v[{c}] = ({lo}, {hi}) must satisfy "
                             f"{lo_s} <= lo <= 0 <= hi <= {hi_s} and lo < hi")
    return limits_v


@dataclass
class _Sweep:
    id: int
    n: int
    oversample: int
    period_s: float
    block: int
    codes: np.ndarray
    have: np.ndarray
    results: np.ndarray
    n_blocks: int
    produced: int = 0
    computing: int = 0
    acked: int = 0
    next_send: int = 0
    window: int = 0
    running: bool = False
    finished: bool = False
    overflow: bool = False
    fault: bool = False
    overflow_sent: bool = False
    t_start: float = 0.0


@dataclass
class _Ramp:
    start: np.ndarray
    target: np.ndarray
    t0: float
    rate: float

    def at(self, t: float) -> np.ndarray:
        step = self.rate * max(0.0, t - self.t0)
        return self.start + np.clip(self.target - self.start, -step, step)

    def done(self, t: float) -> bool:
        return bool(np.all(self.at(t) == self.target))


@dataclass
class _Job:
    sweep: _Sweep
    block: int
    volts: np.ndarray


class Firmware:
    """One board: protocol state machine + DAC/ADC + safety, driven by an I/O loop."""

    def __init__(self, config: BoardConfig, device: AnalogDevice,
                 clock: Callable[[], float] = time.monotonic,
                 protocol: P.Schema = P.PROTOCOL) -> None:
        """`protocol`: the message table this board speaks (tests build boards that speak
        another one from a modified schema). The board adopts the device: `config` completed
        by `BoardConfig.for_device` (limits, ADC full scale) is `self.cfg`."""
        config = config.for_device(device)
        self.cfg = config
        self.protocol = protocol
        self.device = device
        self.clock = clock
        #: devices on the analog side, each behind N_ELECTRODES DAC channels and one readout
        self.members = members_of(device)
        self.n_devices = len(self.members)
        self.channels = N_ELECTRODES * self.n_devices
        # RESULT frames carry one code per device per sample; the sweep buffer holds as many
        # DAC codes as for one device
        self.max_block_samples = min(config.max_block_samples, RESULT_ROOM // (4 * self.n_devices))
        self.max_sweep_samples = max(1, config.max_sweep_samples // self.n_devices)
        self.lock = threading.Condition()
        self.decoder = P.FrameDecoder(self.protocol)
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.errors: deque[tuple[int, int, int]] = deque()
        self.cache: OrderedDict[int, tuple[int, list[bytes]]] = OrderedDict()
        rng = np.random.default_rng([config.seed, 0xDAC])
        self.dac_gain = 1.0 + config.dac_gain_error * rng.standard_normal(self.channels)
        self.dac_offset = config.dac_offset_error_v * rng.standard_normal(self.channels)
        lsb, v0 = config.dac_lsb_v, config.dac_span_v[0]
        self.limit_codes = np.array(
            [[math.ceil((lo - v0) / lsb - 1e-9), math.floor((hi - v0) / lsb + 1e-9)]
             for lo, hi in config.limits_v], dtype=np.int64)
        self.zero_code = int(round(-v0 / lsb))
        self.t_boot = clock()
        zero = np.zeros(self.channels)
        self.ramp = _Ramp(zero.copy(), zero.copy(), self.t_boot, config.max_slew_v_per_s)
        self.armed = False          # power-up: safe state latched, outputs at 0 V
        self.connected = False
        self.last_rx = self.t_boot
        self.last_rx_byte = self.t_boot
        self.sweep: _Sweep | None = None
        self.overflowed = False
        self.device_error = ""
        self.stop = False
        self._identity = self._build_identity()

    # ---- DAC / ADC model ---------------------------------------------------------------
    def codes_to_nominal(self, codes: np.ndarray) -> np.ndarray:
        return self.cfg.dac_span_v[0] + codes.astype(np.float64) * self.cfg.dac_lsb_v

    def nominal_to_codes(self, volts: np.ndarray) -> np.ndarray:
        return np.rint((volts - self.cfg.dac_span_v[0]) / self.cfg.dac_lsb_v).astype(np.int64)

    def dac_output(self, codes: np.ndarray) -> np.ndarray:
        """What the DAC pins really produce for `codes` (gain/offset error included)."""
        return self.codes_to_nominal(codes) * self.dac_gain + self.dac_offset

    def adc(self, na: np.ndarray) -> np.ndarray:
        half = 1 << (self.cfg.adc_bits - 1)
        return np.clip(np.rint(na / self.cfg.adc_lsb_na), -half, half - 1).astype(np.int32)

    # ---- identity ---------------------------------------------------------------------
    def _build_identity(self) -> bytes:
        c = self.cfg
        lsb, v0 = c.dac_lsb_v, c.dac_span_v[0]
        ident = {
            "protocol": {"major": self.protocol.major, "minor": self.protocol.minor,
                         "schema_hash": self.protocol.hash},
            "schema": self.protocol.text.split("\n"),
            "firmware": f"dnpu-bench-sim {FIRMWARE_VERSION}",
            "model": "DNPU-BENCH-SIM",
            "serial": f"SIM-{c.seed:08d}",
            "channels": self.channels,
            "dac_bits": c.dac_bits,
            "adc_bits": c.adc_bits,
            "dac": [{"volts_per_code": lsb, "volts_at_code0": v0} for _ in range(self.channels)],
            "adc": {"na_per_code": c.adc_lsb_na, "na_at_code0": 0.0,
                    "full_scale_na": list(c.adc_span_na)},
            "limits_v": [list(p) for p in c.limits_v],
            "limit_codes": self.limit_codes.tolist(),
            "zero_code": self.zero_code,
            "max_slew_v_per_s": c.max_slew_v_per_s,
            "watchdog_ms": int(round(c.watchdog_s * 1000)),
            "sample_period_ns": {"default": int(round(c.sample_period_s * 1e9)),
                                 "min": c.min_period_ns, "max": c.max_period_ns},
            "max_oversample": c.max_oversample,
            "max_sweep_samples": self.max_sweep_samples,
            "max_block_samples": self.max_block_samples,
            "max_payload": P.MAX_PAYLOAD,
            "link_bytes_per_s": 0,                 # a pty or socket: not limited by a baud rate
            "fifo_blocks": c.fifo_blocks,
            "realtime": c.realtime,
            "commands": [m.name for m in self.protocol.messages if m.kind == "cmd"],
            "counters": list(COUNTER_NAMES),
            "device": self.members[0].describe,
        }
        if self.n_devices > 1:        # a one-device board declares no n_devices (read as 1), as before 1.2
            ident["n_devices"] = self.n_devices
            ident["devices"] = [
                {"index": k, "channels": [k * N_ELECTRODES, (k + 1) * N_ELECTRODES],
                 "limits_v": [list(p) for p in c.limits_v[k * N_ELECTRODES:(k + 1) * N_ELECTRODES]],
                 "device": self.members[k].describe}
                for k in range(self.n_devices)]
        return json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()

    # ---- helpers ----------------------------------------------------------------------
    def _push_error(self, code: int, seq: int, arg: int) -> None:
        if len(self.errors) >= self.cfg.error_queue:
            self.errors.popleft()
            self.counters["errors_dropped"] += 1
        self.errors.append((code, seq & 0xFFFF, arg))

    def _frame(self, name: str, seq: int, *values: int, tail: bytes | np.ndarray = b"",
               flags: int = 0) -> bytes:
        m = self.protocol.by_name[name]
        self.counters["tx_frames"] += 1
        return P.encode_frame(m.id, seq, m.encode(*values, tail=tail), flags, schema=self.protocol)

    def _error(self, seq: int, code: int, arg: int, text: str) -> list[bytes]:
        self._push_error(code, seq, arg)
        return [self._frame("ERROR", seq, code, arg, tail=text.encode()[:200])]

    def outputs(self, t: float | None = None) -> np.ndarray:
        return self.ramp.at(self.clock() if t is None else t)

    def _ramp_to(self, target: np.ndarray, rate: float, t: float) -> float:
        start = self.ramp.at(t)
        self.ramp = _Ramp(start, target.astype(np.float64), t, rate)
        return float(np.max(np.abs(target - start)) / rate)

    def _trip(self, t: float, reason: int) -> None:
        """Watchdog / port closed / SAFE: ramp to 0 V at max slew and latch the safe state."""
        self._abort_sweep(t)
        self._ramp_to(np.zeros(self.channels), self.cfg.max_slew_v_per_s, t)
        if self.armed and reason != 0:
            self.counters["watchdog_trips"] += 1
            self._push_error(P.ERR_WATCHDOG, 0, reason)
        self.armed = False

    def _abort_sweep(self, t: float) -> None:
        s = self.sweep
        if s is not None and s.running:
            s.running = False
            s.finished = True
            self._hold_last_point(s, t)
            self.lock.notify_all()

    def _hold_last_point(self, s: _Sweep, t: float) -> None:
        done = min(s.produced * s.block, s.n)
        if done > 0:
            last = self.codes_to_nominal(s.codes[done - 1])
            self.ramp = _Ramp(last, last.copy(), t, self.cfg.max_slew_v_per_s)

    def state(self, t: float) -> int:
        if not self.armed:
            return P.STATE_SAFE
        if self.sweep is not None and self.sweep.running:
            return P.STATE_SWEEP
        return P.STATE_IDLE if self.ramp.done(t) else P.STATE_RAMPING

    # ---- link events ------------------------------------------------------------------
    def port_closed(self) -> None:
        with self.lock:
            t = self.clock()
            self.counters["port_closes"] += 1
            self._trip(t, 2)
            self.connected = False
            self.cache.clear()
            self.decoder = P.FrameDecoder(self.protocol)

    def receive(self, data: bytes) -> list[bytes]:
        """Bytes in from the link; frames out (replies and NAKs)."""
        with self.lock:
            if data:
                self.last_rx_byte = self.clock()
            self.counters["rx_bytes"] += len(data)
            before = (self.decoder.stats.garbage_bytes, self.decoder.stats.header_errors,
                      self.decoder.stats.crc_errors)
            frames, bad = self.decoder.feed(data)
            st = self.decoder.stats
            self.counters["garbage_bytes"] += st.garbage_bytes - before[0]
            self.counters["header_errors"] += st.header_errors - before[1]
            self.counters["crc_errors"] += st.crc_errors - before[2]
            out = [self._nak(seq) for _, seq in bad]
            for f in frames:
                out += self._handle(f)
            return out

    def poll(self, room: bool = True) -> list[bytes]:
        """Watchdog and streaming; called by the I/O loop whenever it wakes."""
        with self.lock:
            t = self.clock()
            out = self._expire_partial_frame(t)
            if self.armed and t - self.last_rx > self.cfg.watchdog_s:
                self._trip(t, 1)
            s = self.sweep
            if s is None or not room:
                return out
            limit = min(s.produced, s.acked + s.window)
            while s.next_send < limit and len(out) < 8:
                out.append(self._result_frame(s, s.next_send))
                s.next_send += 1
            if (s.overflow or s.fault) and not s.overflow_sent and s.next_send >= s.produced:
                s.overflow_sent = True
                self.counters["blocks_sent"] += 1
                why = P.RESULT_OVERFLOW if s.overflow else P.RESULT_ABORTED
                out.append(self._frame("RESULT", s.produced, s.id, s.produced,
                                       min(s.produced * s.block, s.n),
                                       why | P.RESULT_LAST, flags=P.FLAG_STREAM))
            if s.running and s.produced >= s.n_blocks:
                s.running = False
                s.finished = True
                self._hold_last_point(s, t)
            return out

    def _nak(self, seq: int) -> bytes:
        self.counters["naks_sent"] += 1
        return self._frame("NAK", seq, P.NAK_CRC)

    def _expire_partial_frame(self, t: float) -> list[bytes]:
        """Discard a frame that stopped arriving `frame_gap_s` ago (NAK it if its header was
        sound, so the host resends at once), then resynchronise on what followed it."""
        out: list[bytes] = []
        while self.decoder.pending and t - self.last_rx_byte >= self.cfg.frame_gap_s:
            self.counters["frame_timeouts"] += 1
            seq = self.decoder.expire()
            if seq is not None:
                out.append(self._nak(seq))
            out += self.receive(b"")
        return out

    def _result_frame(self, s: _Sweep, b: int) -> bytes:
        first = b * s.block
        last = min(first + s.block, s.n)
        flags = P.RESULT_LAST if b == s.n_blocks - 1 else 0
        self.counters["blocks_sent"] += 1
        return self._frame("RESULT", b, s.id, b, first, flags, tail=s.results[first:last].reshape(-1),
                           flags=P.FLAG_STREAM)

    # ---- compute worker interface -----------------------------------------------------
    def take_job(self, timeout: float = 0.1) -> _Job | None:
        with self.lock:
            s = self.sweep
            ok = (s is not None and s.running and s.computing < s.n_blocks
                  and (self.cfg.realtime or s.computing - s.acked < self.cfg.fifo_blocks))
            if not ok:
                self.lock.wait(timeout)
                return None
            b = s.computing
            s.computing += 1
            first = b * s.block
            codes = s.codes[first:min(first + s.block, s.n)]
            return _Job(s, b, np.ascontiguousarray(self.dac_output(codes)))

    def run_job(self, job: _Job) -> np.ndarray:
        """The analog conversion (outside the lock)."""
        return self.convert(job.volts, job.sweep.period_s, job.sweep.oversample)

    def convert(self, volts: np.ndarray, period_s: float, oversample: int) -> np.ndarray:
        """ADC codes for the DAC pins' volts [n, channels]: the device, then the ADC (the only
        caller of device.convert; the qemu port's analog emulator converts through it too);
        [n] for one device, [n, K] for K."""
        na = self.device.convert(volts, period_s, oversample)
        return self.adc(np.asarray(na, dtype=np.float64))

    def fail_job(self, job: _Job, error: Exception) -> None:
        """The analog side raised: end the sweep, tell the host, keep serving."""
        with self.lock:
            s = job.sweep
            self._push_error(P.ERR_DEVICE, 0, job.block)
            self.device_error = f"{type(error).__name__}: {error}"
            if s is self.sweep and s.running:
                s.fault = True
                s.running = False
                s.finished = True
                s.n_blocks = s.produced

    def finish_job(self, job: _Job, codes: np.ndarray) -> None:
        with self.lock:
            s = job.sweep
            if s is not self.sweep or not s.running:
                return
            if self.cfg.realtime and s.produced - s.acked >= self.cfg.fifo_blocks:
                # The sample clock does not wait: a full FIFO loses this block.
                s.overflow = True
                self.overflowed = True
                self.counters["overflows"] += 1
                self._push_error(P.ERR_OVERFLOW, 0, job.block)
                s.running = False
                s.finished = True
                s.n_blocks = s.produced  # nothing after the loss is valid
                return
            first = job.block * s.block
            s.results[first:first + len(codes)] = codes.reshape(len(codes), self.n_devices)
            s.produced += 1

    # ---- command handling -------------------------------------------------------------
    def _handle(self, f: P.Frame) -> list[bytes]:
        t = self.clock()
        self.counters["rx_frames"] += 1
        self.last_rx = t     # any valid frame pets the watchdog
        m = self.protocol.by_id.get(f.msg)
        handler = getattr(self, "_cmd_" + m.name.lower(), None) if m is not None else None
        if m is None or m.kind != "cmd" or handler is None:
            self.counters["unknown_commands"] += 1
            return self._error(f.seq, P.ERR_UNKNOWN_COMMAND, f.msg, f"unknown command 0x{f.msg:02x}")
        if f.flags & P.FLAG_NOREPLY:
            if m.name == "CREDIT" and self.connected:
                self._credit(f)
            return []
        key = zlib.crc32(bytes([f.msg]) + f.payload)
        hit = self.cache.get(f.seq)
        if hit is not None and hit[0] == key:
            self.counters["cached_replies"] += 1
            return list(hit[1])
        out = self._execute(m, f, t)
        if m.name == "HELLO":
            self.cache.clear()
        self.cache[f.seq] = (key, out)
        self.cache.move_to_end(f.seq)
        while len(self.cache) > self.cfg.reply_cache:
            self.cache.popitem(last=False)
        return out

    def _execute(self, m: P.Message, f: P.Frame, t: float) -> list[bytes]:
        try:
            values, tail = m.decode(f.payload)
        except ValueError as e:
            self.counters["malformed"] += 1
            return self._error(f.seq, P.ERR_MALFORMED, f.msg, str(e))
        if m.name not in _BEFORE_HELLO and not self.connected:
            return self._error(f.seq, P.ERR_NOT_CONNECTED, f.msg, "send HELLO first")
        if not self.armed and m.name not in _SAFE_OK:
            return self._error(f.seq, P.ERR_SAFE_STATE, f.msg,
                               "safe state latched (watchdog, port closed or SAFE); send ARM")
        return getattr(self, "_cmd_" + m.name.lower())(f.seq, values, tail, t)

    def _cmd_hello(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        major, _minor, schema = v
        ok = major == self.protocol.major and schema == self.protocol.hash
        self.connected = ok
        if not ok:
            self._push_error(P.ERR_VERSION, seq, major)
        status = P.HELLO_OK if ok else P.HELLO_INCOMPATIBLE
        return [self._frame("HELLO_REPLY", seq, status, self.protocol.major, self.protocol.minor,
                            self.protocol.hash, P.MAX_PAYLOAD)]

    def _cmd_identify(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        (page,) = v
        size = P.MAX_PAYLOAD - 4
        n_pages = max(1, -(-len(self._identity) // size))
        if page >= n_pages:
            return self._error(seq, P.ERR_BAD_PAGE, page, f"identity has {n_pages} pages")
        chunk = self._identity[page * size:(page + 1) * size]
        return [self._frame("IDENTITY", seq, page, n_pages, tail=chunk)]

    def _cmd_status(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        flags = (P.STATUS_ARMED if self.armed else 0) | (P.STATUS_CONNECTED if self.connected else 0)
        flags |= P.STATUS_OVERFLOWED if self.overflowed else 0
        s = self.sweep
        sid, done, total = (s.id, s.produced, s.n_blocks) if s is not None else (0, 0, 0)
        uptime = int((t - self.t_boot) * 1000) & 0xFFFFFFFF
        return [self._frame("STATUS_REPLY", seq, self.state(t), flags, len(self.errors), uptime,
                            sid, done, total)]

    def _cmd_get_outputs(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        out = self.nominal_to_codes(self.ramp.at(t))
        tgt = self.nominal_to_codes(self.ramp.target)
        return [self._frame("OUTPUTS", seq, tail=np.concatenate([out, tgt]).astype(np.uint16))]

    def _check_limits(self, seq: int, codes: np.ndarray, offset: int) -> list[bytes] | None:
        lo, hi = self.limit_codes[:, 0], self.limit_codes[:, 1]
        bad = (codes < lo) | (codes > hi)
        if not bad.any():
            return None
        row, ch = map(int, np.argwhere(bad)[0])
        self.counters["limit_rejects"] += 1
        v = float(self.codes_to_nominal(codes[row, ch]))
        lo_v, hi_v = self.cfg.limits_v[ch]
        dev, e = divmod(ch, N_ELECTRODES)
        name = ELECTRODE_NAMES[e] if self.n_devices == 1 else f"device {dev} {ELECTRODE_NAMES[e]}"
        return self._error(seq, P.ERR_LIMIT, ((offset + row) << 3) | e,
                           f"{name} sample {offset + row}: {v:.6f} V outside [{lo_v}, {hi_v}] V")

    def _cmd_set(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        (rate_mv,) = v
        if len(tail) != self.channels:
            self.counters["malformed"] += 1
            return self._error(seq, P.ERR_MALFORMED, len(tail), f"SET needs {self.channels} codes")
        if self.sweep is not None and self.sweep.running:
            return self._error(seq, P.ERR_BUSY, 0, "a sweep is running")
        codes = np.asarray(tail, dtype=np.int64).reshape(1, self.channels)
        err = self._check_limits(seq, codes, 0)
        if err:
            return err
        rate = self.cfg.max_slew_v_per_s if rate_mv == 0 else min(rate_mv / 1000.0,
                                                                  self.cfg.max_slew_v_per_s)
        ramp_s = self._ramp_to(self.codes_to_nominal(codes[0]), rate, t)
        return [self._frame("SET_REPLY", seq, int(math.ceil(ramp_s * 1000)))]

    def _cmd_arm(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        self.armed = True
        self.last_rx = t
        return [self._frame("ACK", seq)]

    def _cmd_safe(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        self._trip(t, 0)
        return [self._frame("ACK", seq)]

    def _cmd_get_errors(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        (mx,) = v
        items = [self.errors.popleft() for _ in range(min(mx, len(self.errors)))]
        arr = np.array(items, dtype=[("code", "<u2"), ("seq", "<u2"), ("arg", "<i4")])
        return [self._frame("ERRORS", seq, len(self.errors), tail=arr)]

    def _cmd_get_counters(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        vals = np.array([self.counters[k] & 0xFFFFFFFF for k in COUNTER_NAMES], dtype=np.uint32)
        return [self._frame("COUNTERS", seq, tail=vals)]

    def _cmd_sweep_begin(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        sid, n, os_, period_ns, block = v
        c = self.cfg
        if self.sweep is not None and self.sweep.running:
            return self._error(seq, P.ERR_BUSY, self.sweep.id, "a sweep is running; abort it first")
        problems = []
        if not 1 <= n <= self.max_sweep_samples:
            problems.append(f"n_samples {n} not in 1..{self.max_sweep_samples}")
        if not 1 <= os_ <= c.max_oversample:
            problems.append(f"oversample {os_} not in 1..{c.max_oversample}")
        if not c.min_period_ns <= period_ns <= c.max_period_ns:
            problems.append(f"period_ns {period_ns} not in {c.min_period_ns}..{c.max_period_ns}")
        if not 1 <= block <= self.max_block_samples:
            problems.append(f"block_samples {block} not in 1..{self.max_block_samples}")
        if problems:
            return self._error(seq, P.ERR_BAD_ARGUMENT, 0, "; ".join(problems))
        n_blocks = -(-n // block)
        self.overflowed = False
        self.sweep = _Sweep(sid, n, os_, period_ns * 1e-9, block,
                            np.zeros((n, self.channels), np.uint16), np.zeros(n, bool),
                            np.zeros((n, self.n_devices), np.int32), n_blocks)
        return [self._frame("ACK", seq)]

    def _sweep_for(self, seq: int, sid: int) -> tuple[_Sweep | None, list[bytes]]:
        s = self.sweep
        if s is None or s.id != sid:
            return None, self._error(seq, P.ERR_BAD_SWEEP, sid, f"no sweep with id {sid}")
        return s, []

    def _cmd_sweep_data(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        sid, offset = v
        s, err = self._sweep_for(seq, sid)
        if s is None:
            return err
        if s.running or s.finished:
            return self._error(seq, P.ERR_BUSY, sid, "sweep already started")
        if len(tail) % self.channels:
            self.counters["malformed"] += 1
            return self._error(seq, P.ERR_MALFORMED, len(tail), f"codes not a multiple of {self.channels}")
        k = len(tail) // self.channels
        if offset + k > s.n:
            return self._error(seq, P.ERR_BAD_SWEEP, offset, f"offset {offset}+{k} beyond {s.n} samples")
        codes = np.asarray(tail).reshape(k, self.channels)
        err = self._check_limits(seq, codes.astype(np.int64), offset)
        if err:
            return err
        s.codes[offset:offset + k] = codes
        s.have[offset:offset + k] = True
        return [self._frame("ACK", seq)]

    def _cmd_sweep_run(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        sid, window = v
        s, err = self._sweep_for(seq, sid)
        if s is None:
            return err
        if s.running or s.finished:
            return self._error(seq, P.ERR_BUSY, sid, "sweep already started")
        if not s.have.all():
            missing = int(np.argmin(s.have))
            return self._error(seq, P.ERR_INCOMPLETE, missing, f"sample {missing} not uploaded")
        s.window = max(1, window)
        s.running = True
        s.t_start = t
        self.lock.notify_all()
        return [self._frame("ACK", seq)]

    def _credit(self, f: P.Frame) -> None:
        try:
            (sid, nxt, window, flags), _ = self.protocol.by_name["CREDIT"].decode(f.payload)
        except ValueError:
            self.counters["malformed"] += 1
            return
        s = self.sweep
        if s is None or s.id != sid:
            return
        s.acked = max(s.acked, min(nxt, s.n_blocks))
        s.window = max(1, window)
        if flags & P.CREDIT_REWIND and nxt < s.next_send:
            self.counters["blocks_resent"] += s.next_send - max(nxt, s.acked)
            s.next_send = max(nxt, s.acked)
            s.overflow_sent = False
        self.lock.notify_all()

    def _cmd_credit(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        return self._error(seq, P.ERR_MALFORMED, 0, "CREDIT must carry FLAG_NOREPLY")

    def _cmd_sweep_abort(self, seq: int, v: tuple, tail, t: float) -> list[bytes]:
        (sid,) = v
        s = self.sweep
        if s is not None and s.id == sid:
            self._abort_sweep(t)
        return [self._frame("ACK", seq)]
