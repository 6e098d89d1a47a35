"""The host's implementation of the bench protocol (docs/protocol.md).

Independent of `firmware_sim` on purpose: a real board runs C firmware. All three (this module,
the simulated board's `firmware_sim/protocol.py` and the C firmware's generated header) are
built from the one declaration, `firmware/protocol/schema.toml`, which this module reads when
it is imported; the shared test vectors (tests/host/board/protocol_vectors.json) and the
schema-seeded CRC keep the codecs in step.

Three layers, as in the spec: framing (`encode_frame`, `FrameDecoder`) and schema (`SCHEMA`, one
declaration per message from which every codec is derived) here; request/reply in `link.py`.

Named constants, all derived from the schema: FLAG_<name> ([frame_flags]), ERR_<name>
([errors]), NAK_<name>, STATE_<name>, STATUS_<name> (status flag bits), HELLO_<name>,
CREDIT_<name>, RESULT_<name>; `ERROR_NAMES` / `ERROR_CODES` and `STATE_NAMES` by value.
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

from host.board.errors import ProtocolError

#: the one protocol declaration, in the source tree (the project is installed editable)
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "firmware" / "protocol" / "schema.toml"


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ProtocolError(f"protocol schema {path} is missing: host.board reads it from the "
                            f"source tree (install the project editable, from a checkout)") from None


_DECL = _read_schema(SCHEMA_PATH)

PROTOCOL_NAME: str = _DECL["protocol"]["name"]
PROTOCOL_MAJOR: int = _DECL["protocol"]["major"]
PROTOCOL_MINOR: int = _DECL["protocol"]["minor"]

# ---- framing: every offset named (the schema's [framing]) -------------------------------
_FR: dict[str, int] = {k: v for k, v in _DECL["framing"].items() if k != "sync"}
SYNC = bytes(_DECL["framing"]["sync"])
OFF_SYNC = _FR["off_sync"]
OFF_LEN = _FR["off_len"]
OFF_MSG = _FR["off_msg"]
OFF_FLAGS = _FR["off_flags"]
OFF_SEQ = _FR["off_seq"]
OFF_HCRC = _FR["off_hcrc"]
HEADER_SIZE = _FR["header_size"]
CRC_SIZE = _FR["crc_size"]
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE
HCRC_INIT = _FR["hcrc_init"]
MAX_PAYLOAD = _FR["max_payload"]
#: an incomplete frame that got no byte for this long is dropped (a byte was lost on the wire):
#: the host's decoder and both firmwares do this, so a truncated frame never swallows the next
FRAME_GAP_S = _FR["frame_gap_ms"] / 1000.0

# ---- named values: FLAG_NOREPLY, ERR_LIMIT, STATUS_ARMED, RESULT_LAST, ... ----------------
_NAMED = {"frame_flags": ("FLAG_", "bit"), "errors": ("ERR_", "code"), "nak_reasons": ("NAK_", "code"),
          "states": ("STATE_", "code"), "status_flags": ("STATUS_", "bit"),
          "hello_status": ("HELLO_", "code"), "credit_flags": ("CREDIT_", "bit"),
          "result_flags": ("RESULT_", "bit")}
globals().update({prefix + name: int(v[key]) for table, (prefix, key) in _NAMED.items()
                  for name, v in _DECL[table].items()})

STATE_NAMES: dict[int, str] = {int(v["code"]): k.lower() for k, v in _DECL["states"].items()}
ERROR_NAMES: dict[int, str] = {int(v["code"]): k for k, v in _DECL["errors"].items()}
ERROR_CODES = {v: k for k, v in ERROR_NAMES.items()}

# ---- schema: one declaration per message --------------------------------------------------
_TYPE_SIZES: dict[str, int] = {t: int(v["size"]) for t, v in _DECL["types"].items()}
_STRUCT = {(1, False): "B", (2, False): "H", (4, False): "I", (2, True): "h", (4, True): "i"}
_STRUCT_OF = {t: _STRUCT[(int(v["size"]), bool(v["signed"]))] for t, v in _DECL["types"].items()}
_DTYPE_OF = {t: f"<{'i' if v['signed'] else 'u'}{v['size']}" for t, v in _DECL["types"].items()}


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
    reply: str = ""

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
        if isinstance(tail, np.ndarray):     # its buffer, joined to the head in one copy
            tail = np.ascontiguousarray(tail, dtype=self.tail_dtype).reshape(-1).view(np.uint8)
        if len(tail) and not self.tail:
            raise ProtocolError(f"{self.name} takes no tail")
        return b"".join((body, tail))

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


def _spec(m: dict[str, Any]) -> MessageSpec:
    pairs = [f.split(":") for f in m.get("fields", [])]
    names = tuple(n for n, _ in pairs)
    types = tuple(t for _, t in pairs)
    head = struct.Struct("<" + "".join(_STRUCT_OF[t] for t in types))
    tail: str = m.get("tail", "")
    if tail in ("", "bytes"):
        dt = None
    elif ":" in tail:
        dt = np.dtype([(n, _DTYPE_OF[t]) for n, t in (x.split(":") for x in tail.split())])
    else:
        dt = np.dtype(_DTYPE_OF[tail])
    return MessageSpec(int(m["id"]), m["name"], m["kind"], names, types, tail,
                       bool(m.get("boot", False)), head, dt, m.get("reply", ""))


SCHEMA: dict[str, MessageSpec] = {s.name: s for s in sorted(map(_spec, _DECL["message"]),
                                                              key=lambda s: s.id)}
BY_ID: dict[int, MessageSpec] = {m.id: m for m in SCHEMA.values()}
SCHEMA_TEXT = "\n".join([f"{PROTOCOL_NAME} {PROTOCOL_MAJOR}"] + [m.canonical() for m in SCHEMA.values()])
SCHEMA_HASH = zlib.crc32(SCHEMA_TEXT.encode("ascii")) & 0xFFFFFFFF


def schema_difference(board_lines: list[str], host_lines: list[str] | None = None) -> list[str]:
    """Which messages differ between a board's canonical schema lines and the host's:
    "NAME: board [...] vs host [...]", "NAME: board only [...]", "NAME: host only [...]"."""
    host_lines = SCHEMA_TEXT.split("\n") if host_lines is None else host_lines
    out: list[str] = []
    if board_lines[:1] != host_lines[:1]:
        out.append(f"protocol: board {board_lines[:1]} vs host {host_lines[:1]}")

    def by_name(lines: list[str]) -> dict[str, str]:
        return {ln.split()[1]: ln for ln in lines[1:] if len(ln.split()) > 1}

    board, host = by_name(board_lines), by_name(host_lines)
    for name in sorted(set(board) | set(host), key=lambda n: (board.get(n) or host[n])[:2]):
        b, h = board.get(name), host.get(name)
        if b == h:
            continue
        if h is None:
            out.append(f"{name}: board only [{b}]")
        elif b is None:
            out.append(f"{name}: host only [{h}]")
        else:
            out.append(f"{name}: board [{b}] vs host [{h}]")
    return out


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
    crc = zlib.crc32(payload, zlib.crc32(header[OFF_LEN:], seed_for(msg_id, schema_hash)))
    return b"".join((header, payload, _U32.pack(crc)))


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
    frame_timeouts: int = 0


class FrameDecoder:
    """Byte chunks in, whole CRC-checked frames out; skips to the next SYNC after any fault."""

    def __init__(self, schema_hash: int = SCHEMA_HASH) -> None:
        self._buf = bytearray()
        self.schema_hash = schema_hash
        self.stats = LinkStats()

    @property
    def pending(self) -> bool:
        """Whether bytes wait for more (an incomplete frame, or a lone first sync byte)."""
        return bool(self._buf)

    def expire(self) -> list[Frame]:
        """Drop what waits for more bytes, as after any fault (one byte after its sync), and
        decode what follows it: called when the link went quiet in the middle of a frame."""
        if not self._buf:
            return []
        self.stats.frame_timeouts += 1
        del self._buf[:1]
        return self.feed(b"")

    def feed(self, chunk: bytes) -> list[Frame]:
        buf = self._buf
        buf += chunk
        got: list[Frame] = []
        start = 0
        n = len(buf)
        st = self.stats
        while True:
            at = buf.find(SYNC, start)
            if at < 0:
                tail_keep = 1 if buf[-1:] == SYNC[:1] else 0
                st.garbage_bytes += max(0, n - start - tail_keep)
                start = max(start, n - tail_keep)
                break
            st.garbage_bytes += at - start
            start = at
            if n - at < HEADER_SIZE:
                break
            pre = buf[at:at + OFF_HCRC]
            _, length, msg, flags, seq = _PRE.unpack(pre)
            if _U16.unpack_from(buf, at + OFF_HCRC)[0] != binascii.crc_hqx(pre, HCRC_INIT) \
                    or length > MAX_PAYLOAD:
                st.header_errors += 1
                start = at + 1
                continue
            head_end = at + HEADER_SIZE
            end = head_end + length
            if n < end + CRC_SIZE:
                break
            with memoryview(buf) as view:   # one copy of the payload, not two
                payload = bytes(view[head_end:end])
            crc = zlib.crc32(payload, zlib.crc32(buf[at + OFF_LEN:head_end], seed_for(msg, self.schema_hash)))
            if crc != _U32.unpack_from(buf, end)[0]:
                st.crc_errors += 1
                start = at + 1
                continue
            st.frames += 1
            got.append(Frame(msg, flags, seq, payload))
            start = end + CRC_SIZE
        if start:
            del buf[:start]
        return got
