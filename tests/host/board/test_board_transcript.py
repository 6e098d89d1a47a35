"""Transcript tests of the host client (PyMeasure style): every frame the host writes is
checked against the expected command, answered from the transcript (encoded by the firmware's
independent implementation), and the transcript must be consumed completely."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim import protocol as F
from firmware_sim.board import BoardConfig, Firmware
from firmware_sim.devices import LinearDevice
from host.board import Board, BoardOptions, BoardTimeout

IDENTITY = Firmware(BoardConfig(), LinearDevice(0))._identity


@dataclass
class Step:
    cmd: str
    fields: dict = field(default_factory=dict)
    tail: list | None = None
    replies: list = field(default_factory=list)      # [(name, values, tail)]; [] = no answer
    retry: bool = False                              # expect the same seq as the step before


class TranscriptPort:
    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.timeout = 0
        self.inbox = bytearray()
        self.r, self.w = os.pipe()
        self.decoder = F.FrameDecoder()
        self.last_seq: int | None = None

    def fileno(self) -> int:
        return self.r

    def read(self, size: int = 1) -> bytes:
        data = bytes(self.inbox[:size])
        del self.inbox[:size]
        if data:
            os.read(self.r, 1 << 16)
        return data

    def write(self, data: bytes) -> int:
        frames, bad = self.decoder.feed(data)
        assert not bad
        for f in frames:
            assert self.steps, f"unexpected extra frame {F.BY_ID[f.msg].name}"
            step = self.steps.pop(0)
            m = F.BY_ID[f.msg]
            assert m.name == step.cmd, f"host sent {m.name}, transcript expects {step.cmd}"
            values, tail = m.decode(f.payload)
            assert dict(zip(m.names, values)) == {**dict(zip(m.names, values)), **step.fields}
            if step.tail is not None:
                assert list(np.asarray(tail)) == step.tail
            if step.retry:
                assert f.seq == self.last_seq and f.flags & F.FLAG_RETRY
            self.last_seq = f.seq
            for name, vals, t in step.replies:
                r = F.BY_NAME[name]
                self.inbox += F.encode_frame(r.id, f.seq, r.encode(*vals, tail=t),
                                             F.FLAG_STREAM if r.kind == "stream" else 0)
            if step.replies:
                os.write(self.w, b"x")
        return len(data)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


OPEN = [
    Step("HELLO", {"major": F.PROTOCOL_MAJOR, "schema": F.SCHEMA_HASH},
         replies=[("HELLO_REPLY", (0, F.PROTOCOL_MAJOR, F.PROTOCOL_MINOR, F.SCHEMA_HASH, F.MAX_PAYLOAD), b"")]),
    Step("IDENTIFY", {"page": 0}, replies=[("IDENTITY", (0, 1), IDENTITY)]),
    Step("ARM", replies=[("ACK", (), b"")]),
]
IDLE = ("STATUS_REPLY", (F.STATE_IDLE, F.STATUS_ARMED | F.STATUS_CONNECTED, 0, 1000, 0, 0, 0), b"")
CLOSE = [
    Step("STATUS", replies=[IDLE]),
    Step("SET", {"rate_mv_per_s": 0}, tail=[32768] * N_ELECTRODES, replies=[("SET_REPLY", (0,), b"")]),
    Step("STATUS", replies=[IDLE]),
]
OPTS = BoardOptions(heartbeat=False, timeout_s=0.05, block_samples=2, window=8)


def _play(steps: list[Step], body) -> None:
    port = TranscriptPort(steps)
    with Board(port, OPTS) as b:
        body(b)
    assert not port.steps, f"transcript not consumed: {[s.cmd for s in port.steps]}"


def test_open_set_close() -> None:
    code = 32768 + round(0.1 / (4 / 65536))
    steps = OPEN + [
        Step("SET", {"rate_mv_per_s": 1000}, tail=[code] + [32768] * (N_ELECTRODES - 1),
             replies=[("SET_REPLY", (100,), b"")]),
        Step("STATUS", replies=[IDLE]),
    ] + CLOSE
    _play(steps, lambda b: b.set([0.1, 0, 0, 0, 0, 0, 0]))


def test_measure_streams_blocks_and_credits() -> None:
    codes = [32768] * N_ELECTRODES * 3
    steps = OPEN + [
        Step("SWEEP_BEGIN", {"n_samples": 3, "oversample": 1, "block_samples": 2}, replies=[("ACK", (), b"")]),
        Step("SWEEP_DATA", {"offset": 0}, tail=codes, replies=[("ACK", (), b"")]),
        Step("SWEEP_RUN", {"window": 8}, replies=[
            ("ACK", (), b""),
            ("RESULT", (0, 0, 0, 0), np.array([100, -200], np.int32)),
            ("RESULT", (0, 1, 2, F.RESULT_LAST), np.array([7], np.int32)),
        ]),
        Step("CREDIT", {"next_block": 2, "window": 8, "flags": 0}),
    ] + CLOSE
    got = []

    def body(b: Board) -> None:
        b.sweeps.sweep_id = 0xFFFF       # the next sweep id is 0, as in the transcript
        got.append(b.measure(np.zeros((3, N_ELECTRODES))))

    _play(steps, body)
    np.testing.assert_allclose(got[0], [1.0, -2.0, 0.07])


def test_lost_reply_is_retried_with_the_same_sequence_number() -> None:
    steps = OPEN + [
        Step("STATUS", replies=[]),                       # reply lost on the wire
        Step("STATUS", retry=True, replies=[IDLE]),
    ] + CLOSE
    _play(steps, lambda b: b.status())


def test_no_reply_at_all_raises_timeout() -> None:
    steps = OPEN + [Step("STATUS")] * (OPTS.retries + 1) + CLOSE[:0]
    port = TranscriptPort(steps)
    b = Board(port, OPTS)
    with pytest.raises(BoardTimeout):
        b.status()
    assert not port.steps
    b.link.broken = True
    b.close()
