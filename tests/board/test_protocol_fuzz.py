"""Property tests: the frame decoders take arbitrary bytes in arbitrary chunks without
raising, and recover every valid frame from garbage around it."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim import protocol as F
from host.board import protocol as H

_ids = sorted(H.BY_ID)
frames_st = st.lists(
    st.tuples(st.sampled_from(_ids), st.integers(0, 0xFFFF), st.integers(0, 255),
              st.binary(max_size=300)), max_size=6)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    pos = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *pos, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 5000), max_size=12))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    hd, fd = H.FrameDecoder(), F.FrameDecoder()
    for chunk in _chunks(data, cuts):
        for f in hd.feed(chunk):
            assert f.msg in range(256)
        fd.feed(chunk)
    assert len(hd._buf) <= len(data)


@settings(max_examples=150, deadline=None)
@given(frames_st, st.lists(st.binary(max_size=60), min_size=7, max_size=7),
       st.lists(st.integers(0, 5000), max_size=12))
def test_frames_survive_garbage_and_chunking(frames, garbage, cuts) -> None:
    wire = bytearray(garbage[-1])
    sent = []
    for i, (msg, seq, flags, payload) in enumerate(frames):
        wire += H.encode_frame(msg, seq, payload, flags) + garbage[i]
        sent.append((msg, seq, flags, payload))
    wire += H.encode_frame(0x80, 1, b"")        # a final frame flushes any false start
    sent.append((0x80, 1, 0, b""))
    hd, fd = H.FrameDecoder(), F.FrameDecoder()
    got_h, got_f = [], []
    for chunk in _chunks(bytes(wire), cuts):
        got_h += [(f.msg, f.seq, f.flags, f.payload) for f in hd.feed(chunk)]
        got_f += [(f.msg, f.seq, f.flags, f.payload) for f in fd.feed(chunk)[0]]
    # garbage may, very rarely, hide a frame-shaped thing; every sent frame must be there in order
    for got in (got_h, got_f):
        it = iter(got)
        assert all(any(g == s for g in it) for s in sent)


_RANGES = {"u8": (0, 255), "u16": (0, 0xFFFF), "u32": (0, 0xFFFFFFFF), "i32": (-2**31, 2**31 - 1)}


@st.composite
def _command(draw):
    """A command with well-typed (but arbitrary) fields, e.g. SET with random codes."""
    spec = draw(st.sampled_from([m for m in H.SCHEMA.values() if m.kind == "cmd"]))
    values = {n: draw(st.integers(*_RANGES[t])) for n, t in zip(spec.fields, spec.types)}
    if spec.name == "SWEEP_BEGIN":
        values["n_samples"] = draw(st.integers(0, 40))
        values["block_samples"] = draw(st.integers(0, 40))
        values["period_ns"] = draw(st.sampled_from([0, 10_000]))
    if spec.name in ("SWEEP_DATA", "SWEEP_RUN", "CREDIT", "SWEEP_ABORT"):
        values["sweep_id"] = draw(st.integers(0, 2))
    if "offset" in values:
        values["offset"] = draw(st.integers(0, 40))
    tail = b""
    if spec.tail == "u16":
        tail = b"".join(x.to_bytes(2, "little") for x in draw(
            st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=21)))
    flags = 1 if spec.name == "CREDIT" else draw(st.sampled_from([0, 0, 1, 4]))
    return spec.id, draw(st.integers(0, 0xFFFF)), flags, spec.pack(tail, **values)


_raw = st.tuples(st.sampled_from(_ids + [0x00, 0x42, 0xFE]), st.integers(0, 0xFFFF),
                 st.sampled_from([0, 1, 2, 4]), st.binary(max_size=64))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_raw, _command()), max_size=16))
def test_firmware_answers_any_well_framed_input(frames) -> None:
    """Frames with good CRCs but arbitrary ids and payloads: the board answers or ignores them,
    never crashes, and never moves an output outside its limits."""
    import numpy as np

    from firmware_sim.board import BoardConfig, Firmware
    from firmware_sim.devices import LinearDevice

    fw = Firmware(BoardConfig(), LinearDevice(0))
    fw.receive(H.build("HELLO", 1, major=1, minor=0, schema=H.SCHEMA_HASH) + H.build("ARM", 2))
    for msg, seq, flags, payload in frames:
        out = fw.receive(H.encode_frame(msg, seq, payload, flags))
        for f in H.FrameDecoder().feed(b"".join(out)):
            assert f.seq == seq
        fw.poll()
    lo, hi = fw.limit_codes[:, 0], fw.limit_codes[:, 1]
    target = fw.nominal_to_codes(fw.ramp.target)
    assert np.all((lo <= target) & (target <= hi))
