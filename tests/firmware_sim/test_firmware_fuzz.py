"""Property test of the simulated firmware: frames with good CRCs but arbitrary ids and
payloads are answered or ignored, never crash the board, never move an output past a limit."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.board import BoardConfig, Firmware
from firmware_sim.devices import LinearDevice
from host.board import protocol as H

_ids = sorted(H.BY_ID)

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
    """A command flagged NOREPLY gets no answer, any other frame exactly one with its seq (an
    unknown id: ERROR UNKNOWN_COMMAND); the outputs' targets never leave the limits."""
    fw = Firmware(BoardConfig(), LinearDevice(0))
    fw.receive(H.build("HELLO", 1, major=1, minor=0, schema=H.SCHEMA_HASH) + H.build("ARM", 2))
    for msg, seq, flags, payload in frames:
        replies = H.FrameDecoder().feed(b"".join(fw.receive(H.encode_frame(msg, seq, payload, flags))))
        silent = flags & H.FLAG_NOREPLY and msg in H.BY_ID and H.BY_ID[msg].kind == "cmd"
        assert len(replies) == (0 if silent else 1)
        assert all(f.seq == seq for f in replies)
        fw.poll()
    lo, hi = fw.limit_codes[:, 0], fw.limit_codes[:, 1]
    target = fw.nominal_to_codes(fw.ramp.target)
    assert np.all((lo <= target) & (target <= hi))
