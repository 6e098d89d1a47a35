"""The board's side of the bench protocol (docs/protocol.md): framing and the message table.

This module plays the part of the C firmware's `protocol.c`: it shares no code with the host.
Both build their tables from the one declaration, `firmware/protocol/schema.toml`, read here
when this module is imported; the shared test vectors (tests/host/board/protocol_vectors.json)
keep the two codecs in step, and the schema hash seeds the CRC, so a mismatch fails loudly.

Frame layout (all little-endian; the offsets are the schema's [framing]):

    0  SYNC     2 bytes 0xA5 0x5A
    2  LEN      u16  payload length, 0..MAX_PAYLOAD
    4  MSG      u8   message id
    5  FLAGS    u8
    6  SEQ      u16
    8  HCRC     u16  CRC-16/CCITT-FALSE over bytes 0..7
   10  PAYLOAD  LEN bytes
   10+LEN CRC   u32  CRC-32 over bytes 2..10+LEN-1, started from the seed

Named constants, all derived from the schema: FLAG_<name> ([frame_flags]), ERR_<name>
([errors]), NAK_<name>, STATE_<name>, STATUS_<name> (status flag bits), HELLO_<name>,
CREDIT_<name>, RESULT_<name>.
"""
from __future__ import annotations

import binascii
import struct
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: the one protocol declaration, in the source tree (the project is installed editable)
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "firmware" / "protocol" / "schema.toml"

_TYPES = {"u8": "B", "u16": "H", "u32": "I", "i16": "h", "i32": "i"}
_NP = {"u8": "<u1", "u16": "<u2", "u32": "<u4", "i16": "<i2", "i32": "<i4"}
_HEAD = struct.Struct("<2sHBBH")       # bytes 0..7
_HCRC = struct.Struct("<H")
_CRC = struct.Struct("<I")


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


# The schema's tables of named values: (table, prefix of the module constant, value key).
_CONSTANT_TABLES = (("frame_flags", "FLAG_", "bit"), ("errors", "ERR_", "code"),
                    ("nak_reasons", "NAK_", "code"), ("states", "STATE_", "code"),
                    ("status_flags", "STATUS_", "bit"), ("hello_status", "HELLO_", "code"),
                    ("credit_flags", "CREDIT_", "bit"), ("result_flags", "RESULT_", "bit"))


@dataclass(frozen=True)
class Schema:
    """One protocol declaration, parsed: versions, framing, the message table, named values.

    The module's own tables come from `SCHEMA_PATH`; a test builds a board that speaks another
    table from a modified declaration (`Schema.from_toml`)."""

    name: str
    major: int
    minor: int
    framing: dict[str, Any]
    messages: tuple[Message, ...]                 # ascending id
    constants: dict[str, int]                     # "ERR_LIMIT" -> 5, ...
    by_id: dict[int, Message] = field(init=False, repr=False, compare=False)
    by_name: dict[str, Message] = field(init=False, repr=False, compare=False)
    text: str = field(init=False, repr=False, compare=False)
    hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {m.id: m for m in self.messages})
        object.__setattr__(self, "by_name", {m.name: m for m in self.messages})
        if len(self.by_id) != len(self.messages) or len(self.by_name) != len(self.messages):
            raise ValueError("protocol schema: duplicate message id or name")
        text = "\n".join([f"{self.name} {self.major}"] + [m.canonical() for m in self.messages])
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "hash", zlib.crc32(text.encode("ascii")) & 0xFFFFFFFF)

    @classmethod
    def from_toml(cls, raw: dict[str, Any]) -> "Schema":
        msgs = sorted((Message(int(m["id"]), m["name"], m["kind"], " ".join(m.get("fields", [])),
                               m.get("tail", ""), m.get("reply", ""), bool(m.get("boot", False)))
                       for m in raw["message"]), key=lambda m: m.id)
        consts = {prefix + name: int(v[key]) for table, prefix, key in _CONSTANT_TABLES
                  for name, v in raw[table].items()}
        p = raw["protocol"]
        return cls(p["name"], int(p["major"]), int(p["minor"]), dict(raw["framing"]),
                   tuple(msgs), consts)

    @classmethod
    def load(cls, path: Path = SCHEMA_PATH) -> "Schema":
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"protocol schema {path} is missing: firmware_sim reads it from the source tree "
                f"(install the project editable, from a checkout)") from None
        return cls.from_toml(raw)

    def crc_seed(self, msg_id: int) -> int:
        m = self.by_id.get(msg_id)
        return 0 if (m is not None and m.boot) else self.hash


#: the protocol this board speaks
PROTOCOL: Schema = Schema.load()

PROTOCOL_MAJOR = PROTOCOL.major
PROTOCOL_MINOR = PROTOCOL.minor

_FR = PROTOCOL.framing
SYNC = bytes(_FR["sync"])
OFF_SYNC: int = _FR["off_sync"]
OFF_LEN: int = _FR["off_len"]
OFF_MSG: int = _FR["off_msg"]
OFF_FLAGS: int = _FR["off_flags"]
OFF_SEQ: int = _FR["off_seq"]
OFF_HCRC: int = _FR["off_hcrc"]
HEADER_SIZE: int = _FR["header_size"]
CRC_SIZE: int = _FR["crc_size"]
HCRC_INIT: int = _FR["hcrc_init"]
MAX_PAYLOAD: int = _FR["max_payload"]
FRAME_GAP_S: float = _FR["frame_gap_ms"] / 1000.0
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE
if (_HEAD.size, _HEAD.size + _HCRC.size, _CRC.size) != (OFF_HCRC, HEADER_SIZE, CRC_SIZE):
    raise ValueError("protocol schema: [framing] does not match this codec's header layout")

# FLAG_NOREPLY, ERR_LIMIT, STATE_SAFE, STATUS_ARMED, ... (see the module docstring)
globals().update(PROTOCOL.constants)

MESSAGES: tuple[Message, ...] = PROTOCOL.messages
BY_ID: dict[int, Message] = PROTOCOL.by_id
BY_NAME: dict[str, Message] = PROTOCOL.by_name
SCHEMA_HASH: int = PROTOCOL.hash


def schema_text() -> str:
    return PROTOCOL.text


def crc_seed(msg_id: int) -> int:
    return PROTOCOL.crc_seed(msg_id)


def encode_frame(msg_id: int, seq: int, payload: bytes, flags: int = 0, seed: int | None = None,
                 schema: Schema = PROTOCOL) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    head = _HEAD.pack(SYNC, len(payload), msg_id, flags, seq & 0xFFFF)
    head += _HCRC.pack(binascii.crc_hqx(head, HCRC_INIT))
    s = schema.crc_seed(msg_id) if seed is None else seed
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

    def __init__(self, schema: Schema = PROTOCOL) -> None:
        self.buf = bytearray()
        self.stats = DecoderStats()
        self.schema = schema

    @property
    def pending(self) -> bool:
        """Whether bytes wait for more (an incomplete frame, or a lone first sync byte)."""
        return bool(self.buf)

    def expire(self) -> int | None:
        """Drop what waits for more bytes, as after any fault (one byte after its sync): called
        when the link went quiet in the middle of a frame. The frame's SEQ when its header was
        whole (and so sound: feed() skips bad headers), else None; feed(b"") decodes what
        followed it."""
        buf = self.buf
        seq = None
        if len(buf) >= HEADER_SIZE and buf[:2] == SYNC:
            seq = _HEAD.unpack_from(buf, 0)[4]
        del buf[:1]
        return seq

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
            if zlib.crc32(body, self.schema.crc_seed(msg)) != crc:
                st.crc_errors += 1
                bad.append((msg, seq))
                pos = i + 1
                continue
            st.frames += 1
            frames.append(Frame(msg, flags, seq, body[HEADER_SIZE - OFF_LEN:]))
            pos = end + CRC_SIZE
        del buf[:pos]
        return frames, bad
