"""The host's implementation of the bench protocol (docs/protocol.md).

Independent of `firmware_sim` on purpose: a real board runs C firmware. The spec, the shared
test vectors (tests/host/board/protocol_vectors.json) and the schema-seeded CRC keep them in step.

Three layers, as in the spec: framing (`encode_frame`, `FrameDecoder`) and schema (`SCHEMA`, one
declaration per message from which every codec is derived) here; request/reply in `link.py`.
"""
from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from host.board.errors import ProtocolError

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0

# ---- framing: every offset named --------------------------------------------------------
SYNC = b"\xa5\x5a"
OFF_SYNC = 0
OFF_LEN = 2
OFF_MSG = 4
OFF_FLAGS = 5
OFF_SEQ = 6
OFF_HCRC = 8
HEADER_SIZE = 10
CRC_SIZE = 4
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE
HCRC_INIT = 0xFFFF
MAX_PAYLOAD = 8192

FLAG_NOREPLY = 0x01
FLAG_STREAM = 0x02
FLAG_RETRY = 0x04

CREDIT_REWIND = 0x01
RESULT_LAST = 0x01
RESULT_OVERFLOW = 0x02
RESULT_ABORTED = 0x04

HELLO_OK = 0

STATE_NAMES = {0: "idle", 1: "safe", 2: "sweep", 3: "ramping"}
STATUS_ARMED = 0x01
STATUS_CONNECTED = 0x02
STATUS_OVERFLOWED = 0x04

ERROR_NAMES = {
    1: "UNKNOWN_COMMAND", 2: "MALFORMED", 3: "VERSION", 4: "NOT_CONNECTED", 5: "LIMIT",
    6: "SAFE_STATE", 7: "BUSY", 8: "BAD_SWEEP", 9: "OVERFLOW", 10: "WATCHDOG", 11: "BAD_PAGE",
    12: "INCOMPLETE", 13: "BAD_ARGUMENT", 14: "DEVICE",
}
ERROR_CODES = {v: k for k, v in ERROR_NAMES.items()}

# ---- schema: one line per message -------------------------------------------------------
#  id   name          kind    head fields                                   | tail      | boot
_TABLE = """
0x01 HELLO         cmd    major:u8 minor:u8 schema:u32                                  |        | boot
0x02 IDENTIFY      cmd    page:u16                                                       |        |
0x03 STATUS        cmd                                                                   |        |
0x04 GET_OUTPUTS   cmd                                                                   |        |
0x05 SET           cmd    rate_mv_per_s:u32                                              | u16    |
0x06 ARM           cmd                                                                   |        |
0x07 SAFE          cmd                                                                   |        |
0x08 GET_ERRORS    cmd    max:u8                                                         |        |
0x09 GET_COUNTERS  cmd                                                                   |        |
0x0a SWEEP_BEGIN   cmd    sweep_id:u16 n_samples:u32 oversample:u16 period_ns:u32 block_samples:u16 | |
0x0b SWEEP_DATA    cmd    sweep_id:u16 offset:u32                                        | u16    |
0x0c SWEEP_RUN     cmd    sweep_id:u16 window:u16                                        |        |
0x0d CREDIT        cmd    sweep_id:u16 next_block:u32 window:u16 flags:u8                |        |
0x0e SWEEP_ABORT   cmd    sweep_id:u16                                                   |        |
0x7f NAK           reply  reason:u8                                                      |        | boot
0x80 ACK           reply                                                                 |        |
0x81 HELLO_REPLY   reply  status:u8 major:u8 minor:u8 schema:u32 max_payload:u16         |        | boot
0x82 IDENTITY      reply  page:u16 n_pages:u16                                           | bytes  |
0x83 STATUS_REPLY  reply  state:u8 flags:u8 errors_queued:u16 uptime_ms:u32 sweep_id:u16 blocks_done:u32 blocks_total:u32 | |
0x84 OUTPUTS       reply                                                                 | u16    |
0x85 SET_REPLY     reply  ramp_ms:u32                                                    |        |
0x88 ERRORS        reply  remaining:u16                                                  | code:u16 seq:u16 arg:i32 |
0x89 COUNTERS      reply                                                                 | u32    |
0x90 RESULT        stream sweep_id:u16 block:u32 first:u32 flags:u8                      | i32    |
0xff ERROR         reply  code:u16 arg:i32                                               | bytes  |
"""

_STRUCT = {"u8": "B", "u16": "H", "u32": "I", "i16": "h", "i32": "i"}
_DTYPE = {"u8": "<u1", "u16": "<u2", "u32": "<u4", "i16": "<i2", "i32": "<i4"}


@dataclass(frozen=True)
class MessageSpec:
    id: int
    name: str
    kind: str
    fields: tuple[str, ...]
    types: tuple[str, ...]
    tail: str
    boot: bool
    head: struct.Struct = field(repr=False, compare=False)
    tail_dtype: Any = field(repr=False, compare=False)

    def canonical(self) -> str:
        f = " ".join(f"{n}:{t}" for n, t in zip(self.fields, self.types))
        return f"{self.id:02x} {self.name} {self.kind} [{f}] [{self.tail}] {int(self.boot)}"

    def pack(self, tail: bytes | np.ndarray = b"", **values: int) -> bytes:
        if set(values) != set(self.fields):
            raise ProtocolError(f"{self.name}: fields {sorted(values)} != {list(self.fields)}")
        try:
            body = self.head.pack(*(values[n] for n in self.fields))
        except struct.error as e:
            raise ProtocolError(f"{self.name}: {e}") from None
        if isinstance(tail, np.ndarray):
            tail = np.ascontiguousarray(tail, dtype=self.tail_dtype).tobytes()
        if tail and not self.tail:
            raise ProtocolError(f"{self.name} takes no tail")
        return body + tail

    def unpack(self, payload: bytes) -> dict[str, Any]:
        """Field dict; the tail (if any) under "tail". Raises ProtocolError on a bad length."""
        if len(payload) < self.head.size:
            raise ProtocolError(f"{self.name}: {len(payload)}-byte payload, need {self.head.size}")
        out: dict[str, Any] = dict(zip(self.fields, self.head.unpack_from(payload)))
        rest = payload[self.head.size:]
        if not self.tail:
            if rest:
                raise ProtocolError(f"{self.name}: {len(rest)} unexpected trailing bytes")
        elif self.tail_dtype is None:
            out["tail"] = bytes(rest)
        else:
            if len(rest) % self.tail_dtype.itemsize:
                raise ProtocolError(f"{self.name}: ragged tail of {len(rest)} bytes")
            out["tail"] = np.frombuffer(rest, dtype=self.tail_dtype)
        return out


def _parse_table(text: str) -> dict[str, MessageSpec]:
    specs: dict[str, MessageSpec] = {}
    for line in text.strip().splitlines():
        main, tail, boot = (s.strip() for s in line.split("|"))
        words = main.split()
        mid, name, kind, fl = int(words[0], 16), words[1], words[2], words[3:]
        names = tuple(f.split(":")[0] for f in fl)
        types = tuple(f.split(":")[1] for f in fl)
        head = struct.Struct("<" + "".join(_STRUCT[t] for t in types))
        if tail in ("", "bytes"):
            dt = None
        elif ":" in tail:
            dt = np.dtype([(n, _DTYPE[t]) for n, t in (x.split(":") for x in tail.split())])
        else:
            dt = np.dtype(_DTYPE[tail])
        specs[name] = MessageSpec(mid, name, kind, names, types, tail, boot == "boot", head, dt)
    return specs


SCHEMA: dict[str, MessageSpec] = _parse_table(_TABLE)
BY_ID: dict[int, MessageSpec] = {m.id: m for m in SCHEMA.values()}
SCHEMA_TEXT = "\n".join([f"dnpu-bench-protocol {PROTOCOL_MAJOR}"]
                        + [m.canonical() for m in sorted(SCHEMA.values(), key=lambda m: m.id)])
SCHEMA_HASH = zlib.crc32(SCHEMA_TEXT.encode("ascii")) & 0xFFFFFFFF


def seed_for(msg_id: int, schema_hash: int = SCHEMA_HASH) -> int:
    spec = BY_ID.get(msg_id)
    return 0 if spec is not None and spec.boot else schema_hash


_PRE = struct.Struct("<2sHBBH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def encode_frame(msg_id: int, seq: int, payload: bytes = b"", flags: int = 0,
                 schema_hash: int = SCHEMA_HASH) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    pre = _PRE.pack(SYNC, len(payload), msg_id, flags, seq & 0xFFFF)
    header = pre + _U16.pack(binascii.crc_hqx(pre, HCRC_INIT))
    crc = zlib.crc32(header[OFF_LEN:] + payload, seed_for(msg_id, schema_hash))
    return header + payload + _U32.pack(crc)


def build(name: str, seq: int, tail: bytes | np.ndarray = b"", frame_flags: int = 0,
          **values: int) -> bytes:
    spec = SCHEMA[name]
    return encode_frame(spec.id, seq, spec.pack(tail, **values), frame_flags)


@dataclass(frozen=True)
class Frame:
    msg: int
    flags: int
    seq: int
    payload: bytes

    @property
    def name(self) -> str:
        spec = BY_ID.get(self.msg)
        return spec.name if spec else f"UNKNOWN_0x{self.msg:02x}"

    def fields(self) -> dict[str, Any]:
        spec = BY_ID.get(self.msg)
        if spec is None:
            raise ProtocolError(f"unknown message id 0x{self.msg:02x}")
        return spec.unpack(self.payload)


@dataclass
class LinkStats:
    frames: int = 0
    garbage_bytes: int = 0
    header_errors: int = 0
    crc_errors: int = 0


class FrameDecoder:
    """Byte chunks in, whole CRC-checked frames out; skips to the next SYNC after any fault."""

    def __init__(self, schema_hash: int = SCHEMA_HASH) -> None:
        self._buf = bytearray()
        self.schema_hash = schema_hash
        self.stats = LinkStats()

    def feed(self, chunk: bytes) -> list[Frame]:
        buf = self._buf
        buf.extend(chunk)
        got: list[Frame] = []
        start = 0
        while True:
            at = buf.find(SYNC, start)
            if at < 0:
                tail_keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.stats.garbage_bytes += max(0, len(buf) - start - tail_keep)
                start = max(start, len(buf) - tail_keep)
                break
            self.stats.garbage_bytes += at - start
            start = at
            if len(buf) - at < HEADER_SIZE:
                break
            pre = bytes(buf[at:at + OFF_HCRC])
            _, length, msg, flags, seq = _PRE.unpack(pre)
            if _U16.unpack_from(buf, at + OFF_HCRC)[0] != binascii.crc_hqx(pre, HCRC_INIT) \
                    or length > MAX_PAYLOAD:
                self.stats.header_errors += 1
                start = at + 1
                continue
            end = at + HEADER_SIZE + length
            if len(buf) < end + CRC_SIZE:
                break
            body = bytes(buf[at + OFF_LEN:end])
            if zlib.crc32(body, seed_for(msg, self.schema_hash)) != _U32.unpack_from(buf, end)[0]:
                self.stats.crc_errors += 1
                start = at + 1
                continue
            self.stats.frames += 1
            got.append(Frame(msg, flags, seq, body[HEADER_SIZE - OFF_LEN:]))
            start = end + CRC_SIZE
        del buf[:start]
        return got
