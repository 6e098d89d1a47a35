"""Both implementations of the protocol (host and firmware) agree byte for byte with the
shared test vectors (written by firmware/protocol/generate.py's reference encoder from
firmware/protocol/schema.toml, one per message); the schema hash seeds the CRC so a table
mismatch fails loudly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from firmware_sim import protocol as F
from host.board import protocol as H
from host.board.errors import ProtocolError

VECTORS = json.loads((Path(__file__).parent / "protocol_vectors.json").read_text())


def test_schema_hash_matches_vectors_and_spec() -> None:
    assert H.SCHEMA_TEXT == F.schema_text() == VECTORS["schema_text"]
    assert H.SCHEMA_HASH == F.SCHEMA_HASH == VECTORS["schema_hash"]
    spec = (Path(__file__).parents[3] / "docs" / "protocol.md").read_text()
    assert f"0x{H.SCHEMA_HASH:08x}" in spec, "docs/protocol.md must state the schema hash"


def test_framing_constants_agree() -> None:
    for name in ("SYNC", "OFF_LEN", "OFF_MSG", "OFF_FLAGS", "OFF_SEQ", "OFF_HCRC", "HEADER_SIZE",
                 "CRC_SIZE", "MAX_PAYLOAD", "HCRC_INIT", "FLAG_NOREPLY", "FLAG_STREAM",
                 "CREDIT_REWIND", "RESULT_LAST", "RESULT_OVERFLOW", "PROTOCOL_MAJOR",
                 "PROTOCOL_MINOR", "FRAME_OVERHEAD"):
        assert getattr(H, name) == getattr(F, name), name


def test_named_values_agree_and_keep_their_values() -> None:
    prefixes = ("FLAG_", "ERR_", "NAK_", "STATE_", "STATUS_", "HELLO_", "CREDIT_", "RESULT_")
    h = {k: v for k, v in vars(H).items() if k.startswith(prefixes) and isinstance(v, int)}
    f = {k: v for k, v in vars(F).items() if k.startswith(prefixes) and isinstance(v, int)}
    assert h == f
    # the values the wire has always had (the schema reproduces them)
    assert (F.ERR_LIMIT, F.ERR_DEVICE, F.NAK_CRC, F.STATE_RAMPING, F.HELLO_INCOMPATIBLE) == (5, 14, 1, 3, 1)
    assert (H.STATUS_ARMED, H.STATUS_CONNECTED, H.STATUS_OVERFLOWED, H.FLAG_RETRY) == (1, 2, 4, 4)
    assert H.STATE_NAMES == {0: "idle", 1: "safe", 2: "sweep", 3: "ramping"}
    assert H.ERROR_NAMES == {v: k[4:] for k, v in f.items() if k.startswith("ERR_")}
    assert H.ERROR_CODES["LIMIT"] == 5 and H.MAX_PAYLOAD == 8192


def test_every_message_has_a_vector_and_both_tables_agree() -> None:
    names = [v["name"] for v in VECTORS["frames"]]
    assert sorted(names) == sorted(H.SCHEMA) == sorted(F.BY_NAME) and len(names) == len(set(names))
    for name, spec in H.SCHEMA.items():
        m = F.BY_NAME[name]
        assert (spec.id, spec.kind, spec.canonical(), spec.reply) == (m.id, m.kind, m.canonical(), m.reply)


def _tail(v: dict, spec: H.MessageSpec):
    t = v["tail"]
    if t is None:
        return b""
    if spec.tail == "bytes":
        return bytes.fromhex(t)
    if spec.tail_dtype.names:
        return np.array([tuple(r) for r in t], dtype=spec.tail_dtype)
    return np.array(t, dtype=spec.tail_dtype)


@pytest.mark.parametrize("v", VECTORS["frames"], ids=[v["name"] for v in VECTORS["frames"]])
def test_vector(v: dict) -> None:
    spec = H.SCHEMA[v["name"]]
    frame = bytes.fromhex(v["frame"])
    # host encoder
    assert H.build(v["name"], v["seq"], _tail(v, spec), v["flags"], **v["fields"]) == frame
    # host decoder
    (f,) = H.FrameDecoder().feed(frame)
    assert (f.msg, f.seq, f.flags) == (spec.id, v["seq"], v["flags"])
    got = f.fields()
    assert {k: got[k] for k in spec.fields} == v["fields"]
    if spec.tail:
        assert bytes(got["tail"]) == bytes(_tail(v, spec))
    # firmware decoder and encoder
    frames, bad = F.FrameDecoder().feed(frame)
    assert not bad and len(frames) == 1 and frames[0].payload == f.payload
    m = F.BY_NAME[v["name"]]
    values, tail = m.decode(frames[0].payload)
    assert dict(zip(m.names, values)) == v["fields"]
    assert bytes(tail) == bytes(_tail(v, spec))
    fields = tuple(v["fields"][n] for n in m.names)
    assert F.encode_frame(m.id, v["seq"], m.encode(*fields, tail=_tail(v, spec)), v["flags"]) == frame


def test_wrong_schema_seed_fails_crc_but_boot_messages_pass() -> None:
    other = H.SCHEMA_HASH ^ 1
    status = H.encode_frame(H.SCHEMA["STATUS"].id, 5, b"", schema_hash=other)
    hello = H.build("HELLO", 6, major=1, minor=0, schema=other)
    frames, bad = F.FrameDecoder().feed(status + hello)
    assert [f.msg for f in frames] == [H.SCHEMA["HELLO"].id]
    assert bad == [(H.SCHEMA["STATUS"].id, 5)]


def test_codec_rejects_bad_payloads() -> None:
    with pytest.raises(ProtocolError):
        H.SCHEMA["SWEEP_BEGIN"].unpack(b"\x00" * 3)
    with pytest.raises(ProtocolError):
        H.SCHEMA["RESULT"].unpack(b"\x00" * 12)    # ragged i32 tail
    with pytest.raises(ProtocolError):
        H.SCHEMA["STATUS"].unpack(b"\x00")
    with pytest.raises(ProtocolError):
        H.SCHEMA["SET"].pack(rate_mv_per_s=-1)
    with pytest.raises(ValueError):
        F.BY_NAME["SWEEP_BEGIN"].decode(b"\x00" * 3)
