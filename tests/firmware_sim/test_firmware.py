"""The simulated firmware in-process, on a fake clock: power-up state, slew limiter, watchdog,
port close, DAC errors, reply cache. (Frames are built with the host's encoder: two
implementations.) No test here sleeps: time is `Clock.t`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim.board import DEFAULT_LIMITS_V, BoardConfig, Firmware
from firmware_sim.physics import WORKING_RANGES_V
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
    err = _ask(fw, "SET", 3, np.full(N_ELECTRODES, 32768, np.uint16), rate_mv_per_s=0).fields()
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
    code = fw.nominal_to_codes(np.array([0.1] * N_ELECTRODES)).astype(np.uint16)
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
    codes = a.nominal_to_codes(np.array([[0.3] * N_ELECTRODES]))
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
        BoardConfig(limits_v=((-1, 0.5),) * 2 + ((0.1, 0.5),) + ((-1, 0.5),) * (N_ELECTRODES - 3))
    with pytest.raises(ValueError, match=f"needs {N_ELECTRODES}"):
        BoardConfig(limits_v=((-1, 0.5),) * (N_ELECTRODES - 1))
    with pytest.raises(ValueError, match="dac_bits"):
        BoardConfig(dac_bits=20)


def _codes(fw: Firmware, volts) -> np.ndarray:
    return fw.nominal_to_codes(np.asarray(volts, dtype=np.float64)).astype(np.uint16)


def test_default_limits_are_the_virtual_devices_working_ranges() -> None:
    np.testing.assert_array_equal(np.array(DEFAULT_LIMITS_V), WORKING_RANGES_V)
    fw, _ = _fw()
    assert json.loads(fw._identity)["limits_v"] == WORKING_RANGES_V.tolist()


def test_watchdog_needs_silence_and_any_frame_pets_it() -> None:
    fw, clock = _fw(watchdog_s=0.5)
    _connect(fw)
    for _ in range(10):                       # a host that talks every 0.4 s keeps it armed
        clock.t += 0.4
        _ask(fw, "STATUS", 9)
        fw.poll()
        assert fw.armed
    clock.t += 0.49
    fw.poll()
    assert fw.armed
    clock.t += 0.02
    fw.poll()
    assert not fw.armed and fw.counters["watchdog_trips"] == 1


def test_watchdog_trip_latches_until_rearmed() -> None:
    fw, clock = _fw(max_slew_v_per_s=1.0, watchdog_s=0.3)
    _connect(fw)
    target = [0.6, -0.6, 0.0, 0.0, 0.0, 0.3, -0.3]
    assert _ask(fw, "SET", 3, _codes(fw, target), rate_mv_per_s=0).fields()["ramp_ms"] == 600
    clock.t += 0.6
    np.testing.assert_allclose(fw.outputs(), target, atol=1e-4)
    clock.t += 0.31                                     # host silent past the watchdog
    fw.poll()
    st = _ask(fw, "STATUS", 4).fields()
    assert st["state"] == 1 and not st["flags"] & H.STATUS_ARMED            # 1: safe
    trace = []
    for _ in range(8):                                  # slew-limited ramp to 0 V, no jump
        trace.append(np.abs(fw.outputs()).max())
        clock.t += 0.1
    np.testing.assert_allclose(trace, [0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0], atol=1e-4)
    errs = _ask(fw, "GET_ERRORS", 5, max=8).fields()["tail"]
    assert [(H.ERROR_NAMES[int(e["code"])], int(e["arg"])) for e in errs] == [("WATCHDOG", 1)]
    refused = _ask(fw, "SET", 6, _codes(fw, [0.1] * N_ELECTRODES), rate_mv_per_s=0).fields()
    assert H.ERROR_NAMES[refused["code"]] == "SAFE_STATE"
    assert _ask(fw, "ARM", 7).name == "ACK"
    assert _ask(fw, "SET", 8, _codes(fw, [0.1] * N_ELECTRODES), rate_mv_per_s=0).name == "SET_REPLY"


def test_port_close_ramps_to_zero_and_latches() -> None:
    fw, clock = _fw(max_slew_v_per_s=2.0)
    _connect(fw)
    _ask(fw, "SET", 3, _codes(fw, [0.2] * N_ELECTRODES), rate_mv_per_s=0)
    clock.t += 0.2
    np.testing.assert_allclose(fw.outputs(), 0.2, atol=1e-4)
    fw.port_closed()                                    # a vanished host
    assert not fw.armed and not fw.connected and fw.counters["port_closes"] == 1
    clock.t += 0.05
    np.testing.assert_allclose(fw.outputs(), 0.1, atol=1e-4)
    clock.t += 0.1
    np.testing.assert_allclose(fw.outputs(), 0.0, atol=1e-4)
    assert _ask(fw, "STATUS", 4).name == "ERROR"          # a new host must say HELLO first
    _ask(fw, "HELLO", 5, major=1, minor=0, schema=H.SCHEMA_HASH)
    errs = _ask(fw, "GET_ERRORS", 6, max=8).fields()["tail"]
    assert ("WATCHDOG", 2) in [(H.ERROR_NAMES[int(e["code"])], int(e["arg"])) for e in errs]   # 2: port closed
    assert _ask(fw, "STATUS", 7).fields()["state"] == 1


def test_set_ramp_rate_is_capped_by_the_slew_limit() -> None:
    fw, clock = _fw(max_slew_v_per_s=2.0)
    _connect(fw)
    slow = _ask(fw, "SET", 3, _codes(fw, [0.5] + [0.0] * (N_ELECTRODES - 1)), rate_mv_per_s=500).fields()
    assert slow["ramp_ms"] == 1000                      # 0.5 V at the requested 0.5 V/s
    clock.t += 0.5
    assert fw.outputs()[0] == pytest.approx(0.25, abs=1e-4)
    assert _ask(fw, "STATUS", 4).fields()["state"] == 3    # 3: ramping
    fast = _ask(fw, "SET", 5, _codes(fw, [-0.5] + [0.0] * (N_ELECTRODES - 1)), rate_mv_per_s=50_000).fields()
    assert fast["ramp_ms"] == 375                       # 0.75 V at the 2 V/s cap, not 50 V/s
    clock.t += 0.375
    assert fw.outputs()[0] == pytest.approx(-0.5, abs=1e-4)
    assert _ask(fw, "STATUS", 6).fields()["state"] == 0    # 0: idle
