"""The C firmware core on a stepped clock (fake HAL, 1 us ticks): every timing rule exact, and its
replies byte for byte those of firmware_sim (the behaviour it must reproduce)."""
from __future__ import annotations

import ctypes
import json
import zlib

import numpy as np
import pytest

from firmware_sim.board import COUNTER_NAMES, BoardConfig, Firmware
from firmware_sim.devices import MAX_DEVICES as SIM_MAX_DEVICES
from firmware_sim.devices import DeviceArray, LinearDevice
from host.board import protocol as H

from fake_board import LIBRARY, MAX_DEVICES, TICKS_PER_S, FakeBoard, codes_of

ZERO = 32768


def test_crc32_and_its_combination_are_zlibs() -> None:
    # the core checks a frame's CRC from its header's and its payload's (one pass over the
    # payload, eight bytes a step on Linux builds): every length and seed must agree with zlib
    lib = ctypes.CDLL(str(LIBRARY))
    u32, sz = ctypes.c_uint32, ctypes.c_size_t
    lib.dnpu_crc32.restype, lib.dnpu_crc32.argtypes = u32, [u32, ctypes.c_char_p, sz]
    lib.dnpu_crc32_combine.restype, lib.dnpu_crc32_combine.argtypes = u32, [u32, u32, sz]
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 9, 15, 16, 63, 1000, 8192):
        a, b = rng.bytes(int(rng.integers(0, 40))), rng.bytes(n)
        seed = int(rng.integers(0, 1 << 32))
        assert lib.dnpu_crc32(seed, b, n) == zlib.crc32(b, seed)
        assert lib.dnpu_crc32_combine(zlib.crc32(a), zlib.crc32(b), n) == zlib.crc32(a + b)
        assert lib.dnpu_crc32_combine(seed, zlib.crc32(b), n) == zlib.crc32(b, seed)


def test_power_up_at_zero_volts_latched_safe() -> None:
    b = FakeBoard()
    b.step()
    assert np.all(b.dac() == ZERO) and not b.armed
    err = b.ask("STATUS", 1).fields()
    assert H.ERROR_NAMES[int(err["code"])] == "NOT_CONNECTED"
    assert b.ask("IDENTIFY", 4, page=0).name == "IDENTITY"        # protocol 1.1: before HELLO too
    b.ask("HELLO", 2, major=1, minor=0, schema=H.SCHEMA_HASH)
    err = b.ask("SET", 3, np.full(7, ZERO, np.uint16), rate_mv_per_s=0).fields()
    assert H.ERROR_NAMES[int(err["code"])] == "SAFE_STATE"


def test_counter_names_and_identity_keys_match_the_simulator() -> None:
    b = FakeBoard()
    assert b.counter_names() == list(COUNTER_NAMES)
    b.connect()
    f = b.ask("IDENTIFY", 3, page=0).fields()
    assert f["n_pages"] == 1
    ident = json.loads(f["tail"])
    sim = json.loads(Firmware(BoardConfig(), LinearDevice(0))._identity)
    assert set(ident) == set(sim)
    for k in ("limits_v", "limit_codes", "zero_code", "dac", "adc", "commands", "counters", "protocol",
              "sample_period_ns", "max_sweep_samples", "max_block_samples", "watchdog_ms", "max_slew_v_per_s"):
        assert ident[k] == sim[k], k


def test_slew_limiter_and_watchdog_ramp_are_exact() -> None:
    b = FakeBoard(watchdog_s=0.5, max_slew=2.0)
    b.connect()
    r = b.ask("SET", 3, codes_of([0.5] * 5 + [0.2] * 2), rate_mv_per_s=0).fields()
    assert r["ramp_ms"] == 250                                # 0.5 V at 2 V/s
    b.advance(0.1)
    b.step()
    np.testing.assert_allclose(b.dac_volts()[0], 0.2, atol=1e-4)
    b.advance(0.2)
    b.step()
    assert b.dac()[0] == codes_of(0.5)
    b.advance(0.2)                                            # 0.5 s after the SET: not yet
    b.step()
    assert b.armed
    b.advance(1e-6)                                           # one tick more: tripped
    b.step()
    assert not b.armed
    v = []
    for _ in range(4):
        v.append(b.dac_volts()[0])
        b.advance(0.1)
        b.step()
    np.testing.assert_allclose(v, [0.5, 0.3, 0.1, 0.0], atol=1e-4)
    assert np.all(b.dac() == ZERO)
    errs = b.ask("GET_ERRORS", 9, max=10).fields()["tail"]
    assert [(H.ERROR_NAMES[int(e["code"])], e["arg"]) for e in errs] == [("WATCHDOG", 1)]
    assert b.counters()["watchdog_trips"] == 1


def test_any_frame_pets_the_watchdog() -> None:
    b = FakeBoard(watchdog_s=0.5)
    b.connect()
    for seq in range(10, 20):
        b.advance(0.4)
        b.ask("STATUS", seq)
        assert b.armed
    b.advance(0.5)
    b.step()
    assert b.armed
    b.advance(2e-6)
    b.step()
    assert not b.armed


def test_port_close_ramps_latches_and_forgets_the_session() -> None:
    b = FakeBoard(max_slew=1.0, watchdog_s=5.0)
    b.connect()
    b.ask("SET", 3, codes_of([0.3] + [0.0] * 6), rate_mv_per_s=0)
    b.advance(1.0)
    b.step()
    b.lib.fake_set_open(0)
    b.step()
    assert not b.armed
    b.advance(0.15)
    b.step()
    np.testing.assert_allclose(b.dac_volts()[0], 0.15, atol=1e-4)
    b.advance(0.2)
    b.step()
    assert b.dac()[0] == ZERO
    b.lib.fake_set_open(1)
    err = b.ask("STATUS", 3).fields()                         # seq 3 again: not a cached reply
    assert H.ERROR_NAMES[int(err["code"])] == "NOT_CONNECTED"
    b.connect()
    c = b.counters()
    assert c["port_closes"] == 1 and c["watchdog_trips"] == 1 and c["cached_replies"] == 0
    errs = b.ask("GET_ERRORS", 9, max=10).fields()["tail"]
    assert (H.ERROR_NAMES[int(errs[0]["code"])], errs[0]["arg"]) == ("WATCHDOG", 2)


def test_reply_cache_answers_a_repeat_without_running_it_again() -> None:
    b = FakeBoard(max_slew=1.0)
    b.connect()
    first = b.ask("SET", 10, codes_of([0.1] * 7), rate_mv_per_s=1000)
    b.advance(0.05)
    again = b.ask("SET", 10, codes_of([0.1] * 7), rate_mv_per_s=1000)
    assert again.payload == first.payload
    b.advance(0.05)
    b.step()
    np.testing.assert_allclose(b.dac_volts()[0], 0.1, atol=1e-4)   # not restarted at 0.05 s
    other = b.ask("SET", 10, codes_of([0.0] * 7), rate_mv_per_s=1000)   # same seq, new payload
    assert other.fields()["ramp_ms"] == 100
    assert b.counters()["cached_replies"] == 1


def test_bad_crc_is_naked_and_garbage_is_skipped() -> None:
    b = FakeBoard()
    b.connect()
    good = H.build("STATUS", 7)
    bad = bytearray(H.build("STATUS", 8))
    bad[-1] ^= 0xFF
    b.feed(b"\x00\xa5junk" + bytes(bad) + good[:5])
    b.step()
    b.feed(good[5:])
    b.step()
    got = b.frames()
    assert [(f.name, f.seq) for f in got] == [("NAK", 8), ("STATUS_REPLY", 7)]
    c = b.counters()
    assert c["crc_errors"] == 1 and c["naks_sent"] == 1 and c["garbage_bytes"] >= 5


def _sweep(b: FakeBoard, n: int, block: int, oversample: int = 1, period_ns: int = 10_000, sid: int = 5):
    rows = codes_of(np.linspace(-0.5, 0.5, n)[:, None] * np.ones(7) * np.array([1, 1, 1, 1, 1, 0.5, 0.5]))
    assert b.ask("SWEEP_BEGIN", 20, sweep_id=sid, n_samples=n, oversample=oversample, period_ns=period_ns,
                 block_samples=block).name == "ACK"
    for i, first in enumerate(range(0, n, 500)):
        assert b.ask("SWEEP_DATA", 100 + i, rows[first:first + 500].ravel(), sweep_id=sid, offset=first).name == "ACK"
    return rows


def _run(b: FakeBoard, window: int, sid: int = 5) -> list[H.Frame]:
    """SWEEP_RUN; its ACK and whatever RESULTs came in the same pass."""
    b.feed(H.build("SWEEP_RUN", 22, sweep_id=sid, window=window))
    b.step()
    got = b.frames()
    assert got[0].name == "ACK", got
    return got[1:]


def test_realtime_sweep_blocks_come_when_the_sample_clock_says() -> None:
    b = FakeBoard(realtime=True, fifo_blocks=8)
    b.connect()
    rows = _sweep(b, n=12, block=4, oversample=2, period_ns=10_000)
    assert _run(b, window=8) == []
    seen: dict[int, int] = {}
    t = 0
    while len(seen) < 3 and t < 1000:
        b.advance(1e-6)
        t += 1
        b.step()
        for f in b.frames():
            seen[f.fields()["block"]] = t
    assert seen == {0: 80, 1: 160, 2: 240}       # 4 rows x 2 conversions x 10 us per block
    assert b.lib.fake_adc_reads() == 12 * 2
    assert np.array_equal(b.dac(), rows[-1])      # the outputs stay at the last row


def test_realtime_fifo_overflow_is_reported() -> None:
    b = FakeBoard(realtime=True, fifo_blocks=2)
    b.connect()
    _sweep(b, n=40, block=4)
    frames = _run(b, window=1)
    for _ in range(400):                          # block 2 finds the FIFO (2 blocks) full
        b.advance(10e-6)
        b.step()
        frames += b.frames()
    assert [f.fields()["block"] for f in frames] == [0]
    b.feed(H.build("CREDIT", 0, b"", H.FLAG_NOREPLY, sweep_id=5, next_block=1, window=8, flags=0))
    b.step()
    frames += b.frames()
    flags = [f.fields()["flags"] for f in frames]
    assert flags == [0, H.RESULT_LAST, H.RESULT_OVERFLOW | H.RESULT_LAST]   # as firmware_sim: n_blocks cut
    st = b.ask("STATUS", 30).fields()
    assert st["flags"] & H.STATUS_OVERFLOWED and b.counters()["overflows"] == 1


def test_paced_sweep_waits_for_credit_and_rewinds() -> None:
    b = FakeBoard(fifo_blocks=4)
    b.connect()
    rows = _sweep(b, n=30, block=3)
    got = _run(b, window=2)
    b.step(20)
    got = [f.fields() for f in got + b.frames()]
    assert [g["block"] for g in got] == [0, 1]
    assert b.lib.fake_adc_reads() == 4 * 3                   # the FIFO is full: conversion waits
    np.testing.assert_array_equal(got[1]["tail"], rows[3:6, 0].astype(np.int64) - ZERO)
    b.feed(H.build("CREDIT", 0, b"", H.FLAG_NOREPLY, sweep_id=5, next_block=1, window=2, flags=H.CREDIT_REWIND))
    b.step(3)
    assert [f.fields()["block"] for f in b.frames()] == [1, 2]
    assert b.counters()["blocks_resent"] == 1
    for nxt in range(3, 11):
        b.feed(H.build("CREDIT", 0, b"", H.FLAG_NOREPLY, sweep_id=5, next_block=nxt, window=2, flags=0))
        b.step(3)
    blocks = [f.fields() for f in b.frames()]
    assert [g["block"] for g in blocks] == list(range(3, 10)) and blocks[-1]["flags"] == H.RESULT_LAST


def test_stream_pauses_while_the_link_is_slow() -> None:
    b = FakeBoard()
    b.connect()
    _sweep(b, n=4000, block=400)
    b.lib.fake_set_write_limit(100)
    b.feed(H.build("SWEEP_RUN", 22, sweep_id=5, window=10))
    b.step(50)
    assert len(b.sent_bytes()) == 50 * 100                   # a 100-byte link took 100 bytes a pass
    b.lib.fake_set_write_limit(0)
    b.step(30)
    frames = b.frames()
    assert frames[-1].fields()["flags"] == H.RESULT_LAST
    assert b.lib.fake_kicks() > 80                           # the hardware watchdog, every pass


def test_device_fault_ends_the_sweep() -> None:
    b = FakeBoard()
    b.connect()
    _sweep(b, n=10, block=4)
    b.lib.fake_fail_after_reads(5)
    got = _run(b, window=8)
    b.step(5)
    got = [f.fields() for f in got + b.frames()]
    assert [(g["block"], g["flags"]) for g in got] == [(0, 0), (1, H.RESULT_ABORTED | H.RESULT_LAST)]
    errs = b.ask("GET_ERRORS", 9, max=10).fields()["tail"]
    assert [(H.ERROR_NAMES[int(e["code"])], e["arg"]) for e in errs] == [("DEVICE", 1)]


def test_a_row_sets_every_device_and_reads_each_readout() -> None:
    """Three devices: one sweep row latches all 21 channels at once and its RESULT carries three
    codes per sample, sample-major, each oversampled on its own (the fake ADC reads device k's
    e0 code above 0 V)."""
    k = 3
    b = FakeBoard(devices=k)
    b.connect()
    ident = json.loads(b.ask("IDENTIFY", 3, page=0).fields()["tail"])
    assert ident["n_devices"] == k and ident["channels"] == 7 * k and len(ident["devices"]) == k
    assert ident["max_block_samples"] == (ident["max_payload"] - 11) // (4 * k)
    n = 10
    volts = np.zeros((n, 7 * k))
    for d in range(k):
        volts[:, 7 * d] = np.linspace(-0.5, 0.5, n) * (d + 1) / k
    rows = codes_of(volts)
    assert b.ask("SWEEP_BEGIN", 20, sweep_id=5, n_samples=n, oversample=3, period_ns=10_000,
                 block_samples=4).name == "ACK"
    assert b.ask("SWEEP_DATA", 21, rows.ravel(), sweep_id=5, offset=0).name == "ACK"
    reads = b.lib.fake_adc_reads()
    got = _run(b, window=8)
    b.step(10)
    results = [f.fields() for f in got + b.frames() if f.name == "RESULT"]
    assert [r["first"] for r in results] == [0, 4, 8]
    codes = np.concatenate([np.asarray(r["tail"], np.int64) for r in results]).reshape(n, k)
    np.testing.assert_array_equal(codes, rows[:, 0::7].astype(np.int64) - ZERO)
    assert b.lib.fake_adc_reads() - reads == 3 * n          # one conversion reads every device
    np.testing.assert_array_equal(b.dac(), rows[-1])        # the last row held on all 21 channels
    # a row of the wrong width is refused, naming the board's width
    err = b.ask("SET", 30, rows[0, :7], rate_mv_per_s=0).fields()
    assert H.ERROR_NAMES[int(err["code"])] == "MALFORMED" and b"21 codes" in bytes(err["tail"])


def test_the_core_carries_as_many_devices_as_the_simulator() -> None:
    FakeBoard(devices=MAX_DEVICES)
    assert MAX_DEVICES == SIM_MAX_DEVICES
    lib = FakeBoard.lib
    for bad in (0, MAX_DEVICES + 1):
        assert lib.fake_init(TICKS_PER_S, 0.5, 10.0, 0, 64, bad) == -1


# ---- byte for byte against firmware_sim -------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _script(rng: np.random.Generator, devices: int = 1) -> list[tuple[float, bytes]]:
    """(seconds to wait, frame) pairs: the session, SETs in and out of limits, malformed and
    unknown frames, retries, sweeps that fail their checks, errors and counters (for a board of
    `devices` devices: 7 codes per device in every SET and sweep row)."""
    ch = 7 * devices
    ok = codes_of(np.tile([0.1, -0.2, 0.3, 0.0, 0.5, -0.6, 0.25], devices))
    out = [(0.0, H.build("STATUS", 1)), (0.0, H.build("HELLO", 2, major=1, minor=0, schema=H.SCHEMA_HASH)),
           (0.0, H.build("SET", 3, ok, rate_mv_per_s=0)), (0.01, H.build("ARM", 4))]
    seq = 5
    for _ in range(120):
        k = rng.integers(0, 12)
        dt = float(rng.choice([0.0, 0.001, 0.02, 0.1]))
        if k == 0:
            c = codes_of(rng.uniform(-1.5, 0.8, ch))
            f = H.build("SET", seq, c, rate_mv_per_s=int(rng.choice([0, 500, 20000])))
        elif k == 1:
            f = H.build("GET_OUTPUTS", seq)
        elif k == 2:
            f = H.build("STATUS", seq)
        elif k == 3:
            f = H.build("GET_ERRORS", seq, max=int(rng.integers(0, 5)))
        elif k == 4:
            f = H.encode_frame(int(rng.choice([0x42, 0x80, 0x90, 0x0f])), seq, bytes(rng.integers(0, 256, 3, np.uint8)))
        elif k == 5:
            f = H.encode_frame(int(rng.integers(1, 15)), seq, bytes(rng.integers(0, 256, int(rng.integers(0, 9)), np.uint8)))
        elif k == 6:
            f = H.build("SWEEP_BEGIN", seq, sweep_id=3, n_samples=int(rng.choice([0, 5, 2_000_000])),
                        oversample=int(rng.choice([0, 1, 2000])), period_ns=int(rng.choice([1, 10_000])),
                        block_samples=int(rng.choice([0, 4, 9999])))
        elif k == 7:
            c = codes_of(rng.uniform(-1.3, 0.7, (2, ch)))
            f = H.build("SWEEP_DATA", seq, c.ravel(), sweep_id=int(rng.choice([3, 4])), offset=int(rng.integers(0, 6)))
        elif k == 8:
            f = H.build("SAFE", seq)
        elif k == 9:
            f = H.build("ARM", seq)
        elif k == 10:
            f = H.build("GET_COUNTERS", seq)
        else:
            out.append((dt, out[-1][1]))           # a retry of the previous frame: cached
            continue
        out.append((dt, f))
        seq += 1
    return out


@pytest.mark.parametrize("seed, devices", [(0, 1), (1, 1), (2, 1), (3, 3)])
def test_replies_are_byte_for_byte_the_simulators(seed: int, devices: int) -> None:
    clock = _Clock()
    device = LinearDevice(0) if devices == 1 else DeviceArray(tuple(LinearDevice(k) for k in range(devices)))
    sim = Firmware(BoardConfig(dac_gain_error=0.0, dac_offset_error_v=0.0), device, clock=clock)
    b = FakeBoard(devices=devices)
    ticks = 0
    for dt, frame in _script(np.random.default_rng(seed), devices):
        ticks += int(round(dt * 1e6))
        clock.t = ticks / 1e6                      # the time the core computes from its counter
        b.advance(dt)
        want = b"".join(sim.receive(frame)) + b"".join(sim.poll())
        b.feed(frame)
        b.step()
        got = b.sent_bytes()
        assert got == want, (H.FrameDecoder().feed(got), H.FrameDecoder().feed(want))
    # the script's GET_COUNTERS replies were compared too: every counter the same
    assert sum(1 for _, f in _script(np.random.default_rng(seed)) if f[4] == H.SCHEMA["GET_COUNTERS"].id) > 0
