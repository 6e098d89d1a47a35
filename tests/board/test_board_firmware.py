"""The simulated firmware in-process, on a fake clock: power-up state, slew limiter, watchdog,
DAC errors, reply cache. (Frames are built with the host's encoder: two implementations.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from firmware_sim.board import BoardConfig, Firmware
from firmware_sim.devices import LinearDevice
from host.board import protocol as H


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _fw(**cfg) -> tuple[Firmware, Clock]:
    clock = Clock()
    return Firmware(BoardConfig(**cfg), LinearDevice(0), clock=clock), clock


def _ask(fw: Firmware, name: str, seq: int, tail=b"", **fields) -> H.Frame:
    out = fw.receive(H.build(name, seq, tail, **fields))
    frames = H.FrameDecoder().feed(b"".join(out))
    assert len(frames) == 1 and frames[0].seq == seq
    return frames[0]


def _connect(fw: Firmware) -> None:
    assert _ask(fw, "HELLO", 1, major=1, minor=0, schema=H.SCHEMA_HASH).fields()["status"] == 0
    assert _ask(fw, "ARM", 2).name == "ACK"


def test_power_up_is_safe_at_zero_volts() -> None:
    fw, _ = _fw()
    assert not fw.armed and np.all(fw.outputs() == 0.0)
    assert _ask(fw, "STATUS", 1).name == "ERROR"              # no HELLO yet
    _ask(fw, "HELLO", 2, major=1, minor=0, schema=H.SCHEMA_HASH)
    err = _ask(fw, "SET", 3, np.full(7, 32768, np.uint16), rate_mv_per_s=0).fields()
    assert H.ERROR_NAMES[err["code"]] == "SAFE_STATE"


def test_slew_limiter_and_watchdog_ramp() -> None:
    fw, clock = _fw(max_slew_v_per_s=2.0, watchdog_s=0.5)
    _connect(fw)
    code = fw.nominal_to_codes(np.array([0.5] * 5 + [0.2] * 2)).astype(np.uint16)
    r = _ask(fw, "SET", 3, code, rate_mv_per_s=0).fields()
    assert r["ramp_ms"] == 250                                # 0.5 V at 2 V/s
    clock.t += 0.1
    np.testing.assert_allclose(fw.outputs()[0], 0.2, atol=1e-3)
    clock.t += 0.2
    np.testing.assert_allclose(fw.outputs()[0], 0.5, atol=1e-3)
    fw.poll()
    assert fw.armed
    clock.t += 0.6                                            # host silent > 0.5 s
    fw.poll()
    assert not fw.armed and fw.counters["watchdog_trips"] == 1
    v = []
    for _ in range(4):
        v.append(fw.outputs()[0])
        clock.t += 0.1
    np.testing.assert_allclose(v, [0.5, 0.3, 0.1, 0.0], atol=1e-3)


def test_reply_cache_makes_retries_safe() -> None:
    fw, _ = _fw()
    _connect(fw)
    code = fw.nominal_to_codes(np.array([0.1] * 7)).astype(np.uint16)
    first = _ask(fw, "SET", 10, code, rate_mv_per_s=1000)
    ramp = fw.ramp
    again = _ask(fw, "SET", 10, code, rate_mv_per_s=1000)     # the same request again
    assert again.payload == first.payload and fw.ramp is ramp  # answered, not re-executed
    assert fw.counters["cached_replies"] == 1
    other = _ask(fw, "SET", 11, code, rate_mv_per_s=1000)
    assert other.name == "SET_REPLY" and fw.ramp is not ramp


def test_dac_errors_are_seeded_and_small() -> None:
    a, _ = _fw(seed=1)
    b, _ = _fw(seed=1)
    c, _ = _fw(seed=2)
    codes = a.nominal_to_codes(np.array([[0.3] * 7]))
    assert np.array_equal(a.dac_output(codes), b.dac_output(codes))
    assert not np.array_equal(a.dac_output(codes), c.dac_output(codes))
    assert np.max(np.abs(a.dac_output(codes) - 0.3)) < 0.02


def test_identity_describes_the_board() -> None:
    fw, _ = _fw(dac_bits=12, adc_bits=20)
    ident = json.loads(fw._identity)
    assert ident["dac_bits"] == 12 and ident["adc_bits"] == 20
    assert ident["dac"][0]["volts_per_code"] == pytest.approx(4 / 4096)
    lo, hi = ident["limit_codes"][5]
    v = ident["dac"][5]["volts_at_code0"] + np.array([lo, hi]) * ident["dac"][5]["volts_per_code"]
    assert -0.7 <= v[0] < -0.7 + 1e-3 and 0.3 - 1e-3 < v[1] <= 0.3


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="limits_v\\[2\\]"):
        BoardConfig(limits_v=((-1, 0.5),) * 2 + ((0.1, 0.5),) + ((-1, 0.5),) * 4)
    with pytest.raises(ValueError, match="dac_bits"):
        BoardConfig(dac_bits=20)
