"""The board's side of the bench protocol (docs/protocol.md): framing and the message table.

This module plays the part of the C firmware's `protocol.c`: it shares no code with the host.
The spec and the shared test vectors (tests/host/board/protocol_vectors.json) keep the two
implementations in step; the schema hash seeds the CRC, so a mismatch fails loudly.

Frame layout (all little-endian):

    0  SYNC     2 bytes 0xA5 0x5A
    2  LEN      u16  payload length, 0..MAX_PAYLOAD
    4  MSG      u8   message id
    5  FLAGS    u8
    6  SEQ      u16
    8  HCRC     u16  CRC-16/CCITT-FALSE over bytes 0..7
   10  PAYLOAD  LEN bytes
   10+LEN CRC   u32  CRC-32 over bytes 2..10+LEN-1, started from the seed
"""
from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0

SYNC = b"\xa5\x5a"
OFF_SYNC = 0
OFF_LEN = 2
OFF_MSG = 4
OFF_FLAGS = 5
OFF_SEQ = 6
OFF_HCRC = 8
HEADER_SIZE = 10
CRC_SIZE = 4
HCRC_INIT = 0xFFFF
MAX_PAYLOAD = 8192
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE

FLAG_NOREPLY = 0x01   # request that gets no reply (CREDIT)
FLAG_STREAM = 0x02    # unsolicited stream frame (RESULT)
FLAG_RETRY = 0x04     # retransmission of an earlier request (informational)

_HEAD = struct.Struct("<2sHBBH")       # bytes 0..7
_HCRC = struct.Struct("<H")
_CRC = struct.Struct("<I")

# ---- error codes (ERROR.code), NAK reasons, states -----------------------------------------
ERR_UNKNOWN_COMMAND = 1
ERR_MALFORMED = 2
ERR_VERSION = 3
ERR_NOT_CONNECTED = 4
ERR_LIMIT = 5
ERR_SAFE_STATE = 6
ERR_BUSY = 7
ERR_BAD_SWEEP = 8
ERR_OVERFLOW = 9
ERR_WATCHDOG = 10
ERR_BAD_PAGE = 11
ERR_INCOMPLETE = 12
ERR_BAD_ARGUMENT = 13
ERR_DEVICE = 14

NAK_CRC = 1

STATE_IDLE = 0
STATE_SAFE = 1
STATE_SWEEP = 2
STATE_RAMPING = 3

STATUS_ARMED = 0x01
STATUS_CONNECTED = 0x02
STATUS_OVERFLOWED = 0x04

HELLO_OK = 0
HELLO_INCOMPATIBLE = 1

CREDIT_REWIND = 0x01

RESULT_LAST = 0x01
RESULT_OVERFLOW = 0x02
RESULT_ABORTED = 0x04

_TYPES = {"u8": "B", "u16": "H", "u32": "I", "i16": "h", "i32": "i"}
_NP = {"u8": "<u1", "u16": "<u2", "u32": "<u4", "i16": "<i2", "i32": "<i4"}


@dataclass(frozen=True)
class Message:
    """One row of the message table; the payload codec is derived from it."""

    id: int
    name: str
    kind: str                 # "cmd", "reply", "stream"
    fields: str               # "name:type name:type ..."
    tail: str = ""            # "" | "bytes" | "<type>" | "name:type name:type" (array of records)
    reply: str = ""           # name of the reply message for commands
    boot: bool = False        # CRC seeded with 0 (handshake and link messages)
    head: struct.Struct = field(init=False, repr=False, compare=False)
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    tail_dtype: np.dtype | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pairs = [f.split(":") for f in self.fields.split()]
        object.__setattr__(self, "names", tuple(p[0] for p in pairs))
        object.__setattr__(self, "head", struct.Struct("<" + "".join(_TYPES[p[1]] for p in pairs)))
        dt: np.dtype | None = None
        if self.tail and self.tail != "bytes":
            if ":" in self.tail:
                dt = np.dtype([(n, _NP[t]) for n, t in (x.split(":") for x in self.tail.split())])
            else:
                dt = np.dtype(_NP[self.tail])
        object.__setattr__(self, "tail_dtype", dt)

    def canonical(self) -> str:
        return f"{self.id:02x} {self.name} {self.kind} [{self.fields}] [{self.tail}] {int(self.boot)}"

    def encode(self, *values: int, tail: bytes | np.ndarray = b"") -> bytes:
        body = self.head.pack(*values)
        if isinstance(tail, np.ndarray):
            assert self.tail_dtype is not None
            tail = np.ascontiguousarray(tail, dtype=self.tail_dtype).tobytes()
        return body + bytes(tail)

    def decode(self, payload: bytes) -> tuple[tuple[int, ...], bytes | np.ndarray]:
        """Returns (head values, tail); raises ValueError when the payload does not fit."""
        n = self.head.size
        if len(payload) < n:
            raise ValueError(f"{self.name}: payload {len(payload)} bytes, need {n}")
        values = self.head.unpack_from(payload, 0)
        rest = payload[n:]
        if not self.tail:
            if rest:
                raise ValueError(f"{self.name}: {len(rest)} unexpected trailing bytes")
            return values, b""
        if self.tail_dtype is None:
            return values, bytes(rest)
        if len(rest) % self.tail_dtype.itemsize:
            raise ValueError(f"{self.name}: tail of {len(rest)} bytes is not a whole number of items")
        return values, np.frombuffer(rest, dtype=self.tail_dtype)


def _m(*args, **kw) -> Message:
    return Message(*args, **kw)


MESSAGES: tuple[Message, ...] = (
    _m(0x01, "HELLO", "cmd", "major:u8 minor:u8 schema:u32", reply="HELLO_REPLY", boot=True),
    _m(0x02, "IDENTIFY", "cmd", "page:u16", reply="IDENTITY"),
    _m(0x03, "STATUS", "cmd", "", reply="STATUS_REPLY"),
    _m(0x04, "GET_OUTPUTS", "cmd", "", reply="OUTPUTS"),
    _m(0x05, "SET", "cmd", "rate_mv_per_s:u32", tail="u16", reply="SET_REPLY"),
    _m(0x06, "ARM", "cmd", "", reply="ACK"),
    _m(0x07, "SAFE", "cmd", "", reply="ACK"),
    _m(0x08, "GET_ERRORS", "cmd", "max:u8", reply="ERRORS"),
    _m(0x09, "GET_COUNTERS", "cmd", "", reply="COUNTERS"),
    _m(0x0A, "SWEEP_BEGIN", "cmd",
       "sweep_id:u16 n_samples:u32 oversample:u16 period_ns:u32 block_samples:u16", reply="ACK"),
    _m(0x0B, "SWEEP_DATA", "cmd", "sweep_id:u16 offset:u32", tail="u16", reply="ACK"),
    _m(0x0C, "SWEEP_RUN", "cmd", "sweep_id:u16 window:u16", reply="ACK"),
    _m(0x0D, "CREDIT", "cmd", "sweep_id:u16 next_block:u32 window:u16 flags:u8"),
    _m(0x0E, "SWEEP_ABORT", "cmd", "sweep_id:u16", reply="ACK"),
    _m(0x7F, "NAK", "reply", "reason:u8", boot=True),
    _m(0x80, "ACK", "reply", ""),
    _m(0x81, "HELLO_REPLY", "reply", "status:u8 major:u8 minor:u8 schema:u32 max_payload:u16",
       boot=True),
    _m(0x82, "IDENTITY", "reply", "page:u16 n_pages:u16", tail="bytes"),
    _m(0x83, "STATUS_REPLY", "reply",
       "state:u8 flags:u8 errors_queued:u16 uptime_ms:u32 sweep_id:u16 blocks_done:u32 blocks_total:u32"),
    _m(0x84, "OUTPUTS", "reply", "", tail="u16"),
    _m(0x85, "SET_REPLY", "reply", "ramp_ms:u32"),
    _m(0x88, "ERRORS", "reply", "remaining:u16", tail="code:u16 seq:u16 arg:i32"),
    _m(0x89, "COUNTERS", "reply", "", tail="u32"),
    _m(0x90, "RESULT", "stream", "sweep_id:u16 block:u32 first:u32 flags:u8", tail="i32"),
    _m(0xFF, "ERROR", "reply", "code:u16 arg:i32", tail="bytes"),
)

BY_ID: dict[int, Message] = {m.id: m for m in MESSAGES}
BY_NAME: dict[str, Message] = {m.name: m for m in MESSAGES}


def schema_text() -> str:
    lines = [f"dnpu-bench-protocol {PROTOCOL_MAJOR}"]
    lines += [m.canonical() for m in sorted(MESSAGES, key=lambda m: m.id)]
    return "\n".join(lines)


SCHEMA_HASH = zlib.crc32(schema_text().encode("ascii")) & 0xFFFFFFFF


def crc_seed(msg_id: int) -> int:
    m = BY_ID.get(msg_id)
    return 0 if (m is not None and m.boot) else SCHEMA_HASH


def encode_frame(msg_id: int, seq: int, payload: bytes, flags: int = 0, seed: int | None = None) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    head = _HEAD.pack(SYNC, len(payload), msg_id, flags, seq & 0xFFFF)
    head += _HCRC.pack(binascii.crc_hqx(head, HCRC_INIT))
    s = crc_seed(msg_id) if seed is None else seed
    crc = zlib.crc32(payload, zlib.crc32(head[OFF_LEN:], s))
    return head + payload + _CRC.pack(crc)


@dataclass(frozen=True)
class Frame:
    msg: int
    flags: int
    seq: int
    payload: bytes


@dataclass
class DecoderStats:
    frames: int = 0
    garbage_bytes: int = 0
    header_errors: int = 0
    crc_errors: int = 0


class FrameDecoder:
    """Splits a byte stream into frames; resynchronises on the next SYNC after anything bad.

    `feed()` returns (good frames, (msg, seq) of frames whose header was sound but whose CRC
    failed) so the caller can NAK them.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.stats = DecoderStats()

    def feed(self, data: bytes) -> tuple[list[Frame], list[tuple[int, int]]]:
        buf = self.buf
        buf += data
        frames: list[Frame] = []
        bad: list[tuple[int, int]] = []
        pos = 0
        st = self.stats
        while True:
            i = buf.find(SYNC, pos)
            if i < 0:
                keep = 1 if (len(buf) > pos and buf[-1] == SYNC[0]) else 0
                st.garbage_bytes += len(buf) - pos - keep
                pos = len(buf) - keep
                break
            st.garbage_bytes += i - pos
            pos = i
            if len(buf) - i < HEADER_SIZE:
                break
            head = bytes(buf[i:i + OFF_HCRC])
            (hcrc,) = _HCRC.unpack_from(buf, i + OFF_HCRC)
            _, length, msg, flags, seq = _HEAD.unpack(head)
            if hcrc != binascii.crc_hqx(head, HCRC_INIT) or length > MAX_PAYLOAD:
                st.header_errors += 1
                pos = i + 1
                continue
            end = i + HEADER_SIZE + length
            if len(buf) < end + CRC_SIZE:
                break
            (crc,) = _CRC.unpack_from(buf, end)
            body = bytes(buf[i + OFF_LEN:end])
            if zlib.crc32(body, crc_seed(msg)) != crc:
                st.crc_errors += 1
                bad.append((msg, seq))
                pos = i + 1
                continue
            st.frames += 1
            frames.append(Frame(msg, flags, seq, body[HEADER_SIZE - OFF_LEN:]))
            pos = end + CRC_SIZE
        del buf[:pos]
        return frames, bad
