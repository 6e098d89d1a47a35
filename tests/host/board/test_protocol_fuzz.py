"""Property tests: the frame decoders (host and firmware) take arbitrary bytes in arbitrary
chunks without raising, and recover every valid frame from garbage around it."""
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
    got_h, got_f = [], []
    for chunk in _chunks(data, cuts):
        got_h += hd.feed(chunk)
        got_f += fd.feed(chunk)[0]
    # whatever they find is a frame that really is in the data, and both find the same
    for f in got_h:
        assert H.encode_frame(f.msg, f.seq, f.payload, f.flags) in data
    assert [(f.msg, f.seq, f.flags, f.payload) for f in got_h] == \
        [(f.msg, f.seq, f.flags, f.payload) for f in got_f]


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
