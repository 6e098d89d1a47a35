#!/usr/bin/env python3
"""Build everything that is derived from the one protocol declaration, schema.toml.

    python firmware/protocol/generate.py c-header OUT.h   the C header the firmware includes
    python firmware/protocol/generate.py docs [PATH]      rewrite docs/protocol.md's generated blocks
    python firmware/protocol/generate.py vectors [PATH]   write tests/host/board/protocol_vectors.json
    python firmware/protocol/generate.py check [--header H ...]
                                                          exit 1 if any of those is out of date
    python firmware/protocol/generate.py --check          the same as `check`

Standard library only (tomllib), so the firmware build needs nothing but Python 3.11. The frame
encoder here is a third, deliberately small reference implementation: the host's and the
simulated board's codecs are checked against the vectors it writes.
"""
from __future__ import annotations

import argparse
import ast
import binascii
import json
import struct
import sys
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCHEMA_PATH = HERE / "schema.toml"
DOCS_PATH = ROOT / "docs" / "protocol.md"
VECTORS_PATH = ROOT / "tests" / "host" / "board" / "protocol_vectors.json"
ELECTRODES_PATH = ROOT / "core" / "electrodes.py"       # the toolkit's electrode count

KINDS = {"cmd": 0, "reply": 1, "stream": 2}
_STRUCT_CODE = {1: "B", 2: "H", 4: "I"}


# ---- the schema, parsed ---------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    name: str
    type: str
    offset: int
    size: int


@dataclass(frozen=True)
class Message:
    id: int
    name: str
    kind: str
    fields: tuple[Field, ...]
    tail: str                       # "", "bytes", a type, or "name:type name:type ..."
    tail_fields: tuple[Field, ...]  # for a record tail
    tail_size: int                  # element size: 0 none, 1 bytes, else the type's / record's
    boot: bool
    reply: str
    doc: str

    @property
    def head_size(self) -> int:
        return sum(f.size for f in self.fields)

    def canonical(self) -> str:
        f = " ".join(f"{x.name}:{x.type}" for x in self.fields)
        return f"{self.id:02x} {self.name} {self.kind} [{f}] [{self.tail}] {int(self.boot)}"


@dataclass(frozen=True)
class Schema:
    raw: dict[str, Any]
    messages: tuple[Message, ...]   # ascending id

    @property
    def major(self) -> int:
        return int(self.raw["protocol"]["major"])

    @property
    def minor(self) -> int:
        return int(self.raw["protocol"]["minor"])

    @property
    def text(self) -> str:
        head = f"{self.raw['protocol']['name']} {self.major}"
        return "\n".join([head] + [m.canonical() for m in self.messages])

    @property
    def hash(self) -> int:
        return zlib.crc32(self.text.encode("ascii")) & 0xFFFFFFFF

    @property
    def framing(self) -> dict[str, Any]:
        return self.raw["framing"]

    def table(self, name: str) -> dict[str, dict[str, Any]]:
        return self.raw[name]

    def by_name(self, name: str) -> Message:
        for m in self.messages:
            if m.name == name:
                return m
        raise KeyError(name)


def _fields(words: list[str], types: dict[str, Any], where: str) -> tuple[Field, ...]:
    out: list[Field] = []
    off = 0
    for w in words:
        name, _, typ = w.partition(":")
        if typ not in types:
            raise ValueError(f"{where}: field {w!r} has unknown type {typ!r}")
        size = int(types[typ]["size"])
        out.append(Field(name, typ, off, size))
        off += size
    return tuple(out)


def load(path: Path = SCHEMA_PATH) -> Schema:
    if not path.is_file():
        raise FileNotFoundError(f"protocol schema not found: {path}")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    types = raw["types"]
    msgs: list[Message] = []
    for m in raw["message"]:
        name = m["name"]
        fields = _fields(list(m.get("fields", [])), types, name)
        tail = m.get("tail", "")
        if tail == "":
            tail_fields, tail_size = (), 0
        elif tail == "bytes":
            tail_fields, tail_size = (), 1
        elif ":" in tail:
            tail_fields = _fields(tail.split(), types, f"{name} tail")
            tail_size = sum(f.size for f in tail_fields)
        elif tail in types:
            tail_fields, tail_size = (), int(types[tail]["size"])
        else:
            raise ValueError(f"{name}: unknown tail {tail!r}")
        if m["kind"] not in KINDS:
            raise ValueError(f"{name}: unknown kind {m['kind']!r}")
        msgs.append(Message(int(m["id"]), name, m["kind"], fields, tail, tail_fields, tail_size,
                            bool(m.get("boot", False)), m.get("reply", ""), m.get("doc", "")))
    msgs.sort(key=lambda m: m.id)
    ids = [m.id for m in msgs]
    names = [m.name for m in msgs]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise ValueError("duplicate message id or name in the schema")
    for m in msgs:
        if m.reply and m.reply not in names:
            raise ValueError(f"{m.name}: reply {m.reply!r} is not a message")
    return Schema(raw, tuple(msgs))


# ---- C header -------------------------------------------------------------------------------
def _c_string(text: str) -> str:
    lines = text.split("\n")
    parts = []
    for i, line in enumerate(lines):
        esc = line.replace("\\", "\\\\").replace('"', '\\"')
        nl = "\\n" if i < len(lines) - 1 else ""
        parts.append(f'    "{esc}{nl}"')
    return " \\\n".join(parts)


def electrode_count(path: Path = ELECTRODES_PATH) -> int:
    """N_ELECTRODES as core/electrodes.py declares it: read, not imported (this script needs the
    standard library only), so the firmware's channel count is that one declaration too."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "N_ELECTRODES"
                                                for t in node.targets):
            return int(ast.literal_eval(node.value))
    raise SystemExit(f"{path}: no N_ELECTRODES = <int>")


def c_header(s: Schema) -> str:
    fr = s.framing
    out: list[str] = []
    w = out.append
    w("/* Generated from firmware/protocol/schema.toml by firmware/protocol/generate.py.")
    w(" * Do not edit: change the schema and regenerate. */")
    w("#ifndef DNPU_PROTOCOL_H")
    w("#define DNPU_PROTOCOL_H")
    w("")
    w("#include <stdint.h>")
    w("")
    w(f"#define DNPU_PROTOCOL_MAJOR {s.major}")
    w(f"#define DNPU_PROTOCOL_MINOR {s.minor}")
    w(f"#define DNPU_SCHEMA_HASH 0x{s.hash:08x}u")
    w("")
    w("/* framing */")
    w(f"#define DNPU_SYNC0 0x{fr['sync'][0]:02X}")
    w(f"#define DNPU_SYNC1 0x{fr['sync'][1]:02X}")
    for key in ("off_sync", "off_len", "off_msg", "off_flags", "off_seq", "off_hcrc",
                "header_size", "crc_size"):
        w(f"#define DNPU_{key.upper()} {fr[key]}")
    w(f"#define DNPU_HCRC_INIT 0x{fr['hcrc_init']:04X}u")
    w(f"#define DNPU_MAX_PAYLOAD {fr['max_payload']}")
    w(f"#define DNPU_FRAME_GAP_MS {fr['frame_gap_ms']}u")
    w("")
    w("/* the board's electrodes (core/electrodes.py: N_ELECTRODES) */")
    w(f"#define DNPU_CHANNELS {electrode_count()}")
    w("")

    def consts(title: str, table: str, prefix: str, key: str, hexa: bool) -> None:
        w(f"/* {title} */")
        for name, v in s.table(table).items():
            val = f"0x{v[key]:02x}" if hexa else str(v[key])
            w(f"#define DNPU_{prefix}{name} {val}  /* {v.get('doc', '')} */")
        w("")

    consts("frame flags", "frame_flags", "FLAG_", "bit", True)
    w("/* message ids */")
    for m in s.messages:
        w(f"#define DNPU_MSG_{m.name} 0x{m.id:02x}")
    w("")
    consts("ERROR.code and error-queue codes", "errors", "ERR_", "code", False)
    consts("NAK.reason", "nak_reasons", "NAK_", "code", False)
    consts("STATUS_REPLY.state", "states", "STATE_", "code", False)
    consts("STATUS_REPLY.flags", "status_flags", "STATUS_", "bit", True)
    consts("HELLO_REPLY.status", "hello_status", "HELLO_", "code", False)
    consts("CREDIT.flags", "credit_flags", "CREDIT_", "bit", True)
    consts("RESULT.flags", "result_flags", "RESULT_", "bit", True)

    w("/* payload layouts: little-endian, packed; offsets in bytes from the payload start */")
    for m in s.messages:
        w(f"#define DNPU_{m.name}_HEAD_SIZE {m.head_size}")
        for f in m.fields:
            w(f"#define DNPU_{m.name}_{f.name.upper()}_OFF {f.offset}  /* {f.type} */")
        w(f"#define DNPU_{m.name}_TAIL_SIZE {m.tail_size}  /* [{m.tail}] */")
        for f in m.tail_fields:
            w(f"#define DNPU_{m.name}_TAIL_{f.name.upper()}_OFF {f.offset}  /* {f.type} */")
    w("")
    w("/* the message table */")
    for k, v in KINDS.items():
        w(f"#define DNPU_KIND_{k.upper()} {v}")
    w("#define DNPU_NO_REPLY 0x00")
    w(f"#define DNPU_N_MESSAGES {len(s.messages)}")
    w("")
    w("typedef struct dnpu_msg_info {")
    w("    uint8_t id, kind, boot, reply;")
    w("    uint16_t head_size, tail_size;")
    w("    const char *name;")
    w("} dnpu_msg_info;")
    w("")
    w("static const dnpu_msg_info DNPU_MESSAGES[DNPU_N_MESSAGES] = {")
    for m in s.messages:
        reply = f"DNPU_MSG_{m.reply}" if m.reply else "DNPU_NO_REPLY"
        w(f"    {{DNPU_MSG_{m.name}, DNPU_KIND_{m.kind.upper()}, {int(m.boot)}, {reply}, "
          f"DNPU_{m.name}_HEAD_SIZE, DNPU_{m.name}_TAIL_SIZE, \"{m.name}\"}},")
    w("};")
    w("")
    w("/* the canonical schema text; SCHEMA_HASH is its CRC-32 (seed 0) */")
    w("#define DNPU_SCHEMA_TEXT \\")
    w(_c_string(s.text))
    w("")
    w("#endif /* DNPU_PROTOCOL_H */")
    return "\n".join(out) + "\n"


# ---- reference frame encoder ----------------------------------------------------------------
def _pack(fields: tuple[Field, ...], values: dict[str, int], types: dict[str, Any]) -> bytes:
    out = b""
    for f in fields:
        code = _STRUCT_CODE[f.size]
        out += struct.pack("<" + (code.lower() if types[f.type]["signed"] else code), values[f.name])
    return out


def encode_payload(s: Schema, m: Message, values: dict[str, int], tail: Any) -> bytes:
    """Head fields packed little-endian without padding, then the tail: bytes, a list of
    scalars or a list of records (each a list of values in the record's field order)."""
    types = s.raw["types"]
    body = _pack(m.fields, values, types)
    if m.tail == "bytes":
        body += bytes(tail)
    elif m.tail_fields:
        for rec in tail:
            body += _pack(m.tail_fields, dict(zip((f.name for f in m.tail_fields), rec)), types)
    elif m.tail:
        elem = Field("", m.tail, 0, m.tail_size)
        for x in tail:
            body += _pack((elem,), {"": x}, types)
    return body


def encode_frame(s: Schema, m: Message, seq: int, payload: bytes, flags: int = 0) -> bytes:
    fr = s.framing
    pre = bytes(fr["sync"]) + struct.pack("<HBBH", len(payload), m.id, flags, seq)
    header = pre + struct.pack("<H", binascii.crc_hqx(pre, fr["hcrc_init"]))
    seed = 0 if m.boot else s.hash
    return header + payload + struct.pack("<I", zlib.crc32(header[fr["off_len"]:] + payload, seed))


# ---- test vectors ---------------------------------------------------------------------------
def _examples(s: Schema) -> dict[str, dict[str, Any]]:
    """Example frames: (seq, flags, field values, tail). The values are arbitrary but fixed, so
    the vectors' bytes change only when the schema does."""
    nr, st = s.table("frame_flags")["NOREPLY"]["bit"], s.table("frame_flags")["STREAM"]["bit"]
    retry = s.table("frame_flags")["RETRY"]["bit"]
    text = b"e5 sample 12: 0.5 V outside [-0.7, 0.3] V"
    return {
        "HELLO": dict(seq=1, fields={"major": 1, "minor": 0, "schema": s.hash}),
        "IDENTIFY": dict(seq=2, fields={"page": 0}),
        "STATUS": dict(seq=65535),
        "GET_OUTPUTS": dict(seq=13),
        "SET": dict(seq=7, fields={"rate_mv_per_s": 1000},
                    tail=[32768, 32769, 0, 65535, 12345, 2, 40000]),
        "ARM": dict(seq=14),
        "SAFE": dict(seq=15, flags=retry),
        "GET_ERRORS": dict(seq=16, fields={"max": 32}),
        "GET_COUNTERS": dict(seq=17),
        "SWEEP_BEGIN": dict(seq=300, fields={"sweep_id": 5, "n_samples": 100000, "oversample": 4,
                                             "period_ns": 10000, "block_samples": 1024}),
        "SWEEP_DATA": dict(seq=301, flags=retry, fields={"sweep_id": 5, "offset": 512},
                           tail=list(range(0, 14000, 1000))),
        "SWEEP_RUN": dict(seq=302, fields={"sweep_id": 5, "window": 16}),
        "CREDIT": dict(seq=0, flags=nr, fields={"sweep_id": 5, "next_block": 17, "window": 16,
                                                "flags": 1}),
        "SWEEP_ABORT": dict(seq=303, fields={"sweep_id": 5}),
        "NAK": dict(seq=11, fields={"reason": 1}),
        "ACK": dict(seq=12),
        "HELLO_REPLY": dict(seq=1, fields={"status": 0, "major": 1, "minor": 0, "schema": s.hash,
                                           "max_payload": 8192}),
        "IDENTITY": dict(seq=2, fields={"page": 0, "n_pages": 1},
                         tail=b'{"channels":7,"model":"DNPU-BENCH-SIM"}'),
        "STATUS_REPLY": dict(seq=65535, fields={"state": 2, "flags": 3, "errors_queued": 1,
                                                "uptime_ms": 123456, "sweep_id": 5,
                                                "blocks_done": 40, "blocks_total": 98}),
        "OUTPUTS": dict(seq=13, tail=[32768] * 7 + [32768, 33000, 32000, 32768, 32768, 40000, 1]),
        "SET_REPLY": dict(seq=7, fields={"ramp_ms": 600}),
        "ERRORS": dict(seq=9, fields={"remaining": 2}, tail=[[5, 7, 40], [10, 0, 1]]),
        "COUNTERS": dict(seq=17, tail=[1, 2, 0, 0, 4294967295, 65536]),
        "RESULT": dict(seq=3, flags=st, fields={"sweep_id": 5, "block": 3, "first": 3072, "flags": 1},
                       tail=[0, -1, 2147483647, -2147483648, 1234]),
        "ERROR": dict(seq=10, fields={"code": 5, "arg": 101}, tail=text),
    }


def _synthetic(s: Schema, m: Message) -> dict[str, Any]:
    """Values for a message without an example: field i is i + 1, a tail of three elements."""
    types = s.raw["types"]
    def val(i: int, typ: str) -> int:
        return (i + 1) * (-1 if types[typ]["signed"] and i % 2 else 1)
    ex: dict[str, Any] = dict(seq=m.id, fields={f.name: val(i, f.type) for i, f in enumerate(m.fields)})
    if m.kind == "stream":
        ex["flags"] = s.table("frame_flags")["STREAM"]["bit"]
    if m.tail == "bytes":
        ex["tail"] = b"abc"
    elif m.tail_fields:
        ex["tail"] = [[val(i + j, f.type) for i, f in enumerate(m.tail_fields)] for j in range(3)]
    elif m.tail:
        ex["tail"] = [val(j, m.tail) for j in range(3)]
    return ex


def vectors(s: Schema) -> str:
    examples = _examples(s)
    frames = []
    for m in s.messages:
        ex = examples.get(m.name) or _synthetic(s, m)
        values = ex.get("fields", {})
        if set(values) != {f.name for f in m.fields}:     # the schema changed: synthesise
            ex = _synthetic(s, m)
            values = ex["fields"]
        tail = ex.get("tail")
        if not m.tail:
            tail = None
        seq, flags = ex["seq"], ex.get("flags", 0)
        payload = encode_payload(s, m, values, tail if tail is not None else b"")
        frames.append({
            "name": m.name, "seq": seq, "flags": flags, "fields": values,
            "tail": tail.hex() if isinstance(tail, bytes) else tail,
            "frame": encode_frame(s, m, seq, payload, flags).hex(),
        })
    doc = {"generated": "by firmware/protocol/generate.py from firmware/protocol/schema.toml; "
                        "do not edit", "schema_hash": s.hash, "schema_text": s.text, "frames": frames}
    return json.dumps(doc, indent=1) + "\n"


# ---- docs/protocol.md -------------------------------------------------------------------------
def _cell(x: str) -> str:
    """Text for a Markdown table cell."""
    return x.replace("|", "\\|")


def docs_blocks(s: Schema) -> dict[str, str]:
    """The generated blocks of docs/protocol.md, by marker name."""
    hashline = (f"Protocol version **{s.major}.{s.minor}**; for this version "
                f"**SCHEMA_HASH = 0x{s.hash:08x}**")
    rows = ["| id | name | kind | fields | tail | reply | notes |", "|---|---|---|---|---|---|---|"]
    for m in s.messages:
        kind = m.kind + (", boot" if m.boot else "")
        fields = " ".join(f"{f.name}:{f.type}" for f in m.fields)
        reply = m.reply or ("none" if m.kind == "cmd" else "")
        rows.append(f"| 0x{m.id:02x} | {m.name} | {kind} | {fields} | {m.tail} | {reply} | {_cell(m.doc)} |")

    def flags(table: str, what: str) -> str:
        items = "; ".join(f"0x{v['bit']:02x} `{k}`: {v['doc']}" for k, v in s.table(table).items())
        return f"* {what}: {items}."

    def codes(table: str, what: str) -> str:
        items = "; ".join(f"{v['code']} `{k}`: {v['doc']}" for k, v in s.table(table).items())
        return f"* {what}: {items}."

    consts = [
        flags("frame_flags", "Frame `FLAGS`"),
        codes("states", "`STATUS_REPLY.state`"),
        flags("status_flags", "`STATUS_REPLY.flags`"),
        codes("hello_status", "`HELLO_REPLY.status`"),
        codes("nak_reasons", "`NAK.reason`"),
        flags("credit_flags", "`CREDIT.flags`"),
        flags("result_flags", "`RESULT.flags`"),
    ]
    errs = ["| code | name | meaning |", "|---|---|---|"]
    errs += [f"| {v['code']} | `{k}` | {_cell(v['doc'])} |" for k, v in s.table("errors").items()]
    return {"hash": hashline, "messages": "\n".join(rows), "constants": "\n".join(consts),
            "errors": "\n".join(errs)}


def render_docs(s: Schema, text: str) -> str:
    """`text` (docs/protocol.md) with every generated block replaced; each block must exist."""
    for name, body in docs_blocks(s).items():
        begin, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            raise ValueError(f"docs: markers {begin} ... {end} not found")
        text = text[:i + len(begin)] + "\n" + body + "\n" + text[j:]
    return text


# ---- CLI ------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def stale(s: Schema, docs: Path = DOCS_PATH, vecs: Path = VECTORS_PATH,
          headers: tuple[Path, ...] = ()) -> list[str]:
    """The generated files that differ from what the schema gives (each with why)."""
    out = []
    if not docs.is_file() or render_docs(s, docs.read_text()) != docs.read_text():
        out.append(f"{docs}: generated blocks out of date")
    if not vecs.is_file() or vecs.read_text() != vectors(s):
        out.append(f"{vecs}: out of date")
    for h in headers:
        if not h.is_file() or h.read_text() != c_header(s):
            out.append(f"{h}: out of date")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n")[1])
    p.add_argument("--schema", type=Path, default=SCHEMA_PATH)
    p.add_argument("--check", action="store_true", help="the same as the check subcommand")
    p.add_argument("--header", type=Path, action="append", default=[],
                   help="with --check: also compare this generated C header")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("c-header", help="write the C header").add_argument("out", type=Path)
    sub.add_parser("docs", help="rewrite docs/protocol.md's generated blocks").add_argument(
        "path", type=Path, nargs="?", default=DOCS_PATH)
    sub.add_parser("vectors", help="write the test vectors").add_argument(
        "path", type=Path, nargs="?", default=VECTORS_PATH)
    c = sub.add_parser("check", help="exit 1 if docs, vectors or given headers are out of date")
    c.add_argument("--header", type=Path, action="append", default=[], dest="check_headers")
    a = p.parse_args(argv)
    s = load(a.schema)
    if a.check or a.cmd == "check":
        headers = tuple(a.header) + tuple(getattr(a, "check_headers", []) or [])
        bad = stale(s, headers=headers)
        for line in bad:
            print(f"out of date: {line}", file=sys.stderr)
        if bad:
            print("regenerate: make protocol (and rebuild the firmware header)", file=sys.stderr)
        return 1 if bad else 0
    if a.cmd == "c-header":
        _write(a.out, c_header(s))
    elif a.cmd == "docs":
        _write(a.path, render_docs(s, a.path.read_text()))
    elif a.cmd == "vectors":
        _write(a.path, vectors(s))
    else:
        p.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
