"""End to end: host.board against firmware_sim over a pty (sim://) and TCP."""
from __future__ import annotations

import time

import numpy as np
import pytest
import serial

from core.electrodes import N_ELECTRODES
from host.board import (Board, BoardError, IncompatibleBoard, LimitError, RemoteError,
                        RemoteLimitError, RemoteSafeState)
from host.board import protocol as P
from host.board.urlhandler.protocol_sim import Serial as SimSerial


@pytest.fixture(scope="module")
def board(linear_url: str):
    with Board.open(linear_url) as b:
        yield b


def test_identify(board: Board) -> None:
    ident = board.identity
    assert ident["channels"] == N_ELECTRODES and ident["dac_bits"] == 16 and ident["adc_bits"] == 16
    assert ident["protocol"]["schema_hash"] == P.SCHEMA_HASH
    assert ident["limits_v"][0] == [-1.2, 0.6] and ident["limits_v"][6] == [-0.7, 0.3]
    assert "SWEEP_RUN" in ident["commands"] and ident["device"]["model"] == "linear-test-device"
    assert board.status()["armed"]


def test_measure_is_exact_and_ordered(board: Board, expected_linear, random_volts) -> None:
    v = random_volts(5000, seed=1)
    got = board.measure(v)
    nominal = board.codes_to_volts(board.volts_to_codes(v))
    np.testing.assert_allclose(got, expected_linear(nominal), atol=1e-9)
    # several sweeps (small board buffer per sweep), odd sizes, oversampling
    got2 = board.measure(v[:7], oversample=4)
    np.testing.assert_allclose(got2, got[:7], atol=1e-9)


def test_measure_spans_sweeps(linear_url: str, expected_linear, random_volts) -> None:
    with Board.open(linear_url, sweep_samples=1000, block_samples=300, window=2) as b:
        v = random_volts(3333, seed=2)
        got = b.measure(v)
        np.testing.assert_allclose(got, expected_linear(b.codes_to_volts(b.volts_to_codes(v))), atol=1e-9)
        assert b.counters_host.samples_received == 3333


def test_set_ramps_and_reads_back(board: Board) -> None:
    board.zero()                  # a sweep leaves the outputs at its last point
    t = board.set([0.1, 0, 0, 0, 0, 0, -0.2], ramp=True)
    assert 0.19 < t < 0.25        # 0.2 V at the default host ramp of 1 V/s
    out = board.outputs()
    np.testing.assert_allclose(out["volts"], [0.1, 0, 0, 0, 0, 0, -0.2], atol=1e-4)
    board.zero()
    np.testing.assert_allclose(board.outputs()["volts"], 0.0, atol=1e-4)


def test_host_rejects_out_of_range_before_sending(board: Board, random_volts) -> None:
    sent = board.counters_host.tx_frames
    with pytest.raises(LimitError, match="e5 sample 0"):
        board.set([0, 0, 0, 0, 0, 0.31, 0])
    v = random_volts(10)
    v[7, 2] = 0.7
    with pytest.raises(LimitError, match="e2 sample 7"):
        board.measure(v)
    with pytest.raises(LimitError, match="finite"):
        board.measure(np.full((2, 7), np.nan))
    with pytest.raises(LimitError, match="shape"):
        board.set([0.0] * 6)
    assert board.counters_host.tx_frames == sent


def test_board_rejects_out_of_range_raw_frames(board: Board) -> None:
    before = board.counters()["board"]["limit_rejects"]
    codes = board.volts_to_codes(np.zeros((1, 7)))[0].astype(np.int64)
    codes[5] = board.identity["limit_codes"][5][1] + 1          # just above e5's hard limit
    with pytest.raises(RemoteLimitError, match="e5"):
        board.link.request("SET", tail=codes.astype(np.uint16), rate_mv_per_s=0)
    # a sweep upload with one bad sample deep inside
    board.link.request("SWEEP_BEGIN", sweep_id=77, n_samples=4, oversample=1, period_ns=10000,
                   block_samples=4)
    sweep = np.tile(board.volts_to_codes(np.zeros((1, 7))), (4, 1)).astype(np.int64)
    sweep[2, 0] = 0                                             # -2.0 V on e0
    with pytest.raises(RemoteLimitError) as e:
        board.link.request("SWEEP_DATA", tail=sweep.astype(np.uint16).ravel(), sweep_id=77, offset=0)
    assert e.value.arg == (2 << 3) | 0
    with pytest.raises(RemoteError, match="INCOMPLETE"):
        board.link.request("SWEEP_RUN", sweep_id=77, window=4)
    assert board.counters()["board"]["limit_rejects"] == before + 2
    names = [e["name"] for e in board.errors()]
    assert names.count("LIMIT") >= 2
    np.testing.assert_allclose(board.outputs()["volts"], 0.0, atol=1e-4)   # nothing applied


def test_unknown_command_and_malformed_get_error_replies(board: Board) -> None:
    with pytest.raises(RemoteError, match="UNKNOWN_COMMAND"):
        board.link.request_raw(0x42, b"hello")
    with pytest.raises(RemoteError, match="UNKNOWN_COMMAND"):
        board.link.request_raw(P.SCHEMA["ACK"].id, b"")          # a reply id is not a command
    with pytest.raises(RemoteError, match="MALFORMED"):
        board.link.request_raw(P.SCHEMA["SWEEP_BEGIN"].id, b"\x01\x02")
    with pytest.raises(RemoteError, match="BAD_ARGUMENT"):
        board.link.request("SWEEP_BEGIN", sweep_id=1, n_samples=0, oversample=0, period_ns=1,
                       block_samples=9999)
    assert board.counters()["board"]["unknown_commands"] >= 2


def test_wrong_version_gets_refused(board: Board, linear_url: str, monkeypatch) -> None:
    r = board.link.request("HELLO", major=P.PROTOCOL_MAJOR + 1, minor=0, schema=P.SCHEMA_HASH)
    h = r.fields()
    assert h["status"] != P.HELLO_OK and h["major"] == P.PROTOCOL_MAJOR
    with pytest.raises(RemoteError, match="NOT_CONNECTED"):       # the session is gone
        board.status()
    board._hello()                                                 # a good HELLO restores it
    board.rearm()
    assert board.status()["armed"]
    # a host built from another message table is refused on open
    monkeypatch.setattr(P, "SCHEMA_HASH", P.SCHEMA_HASH ^ 0x1234)
    with pytest.raises(IncompatibleBoard, match="schema"):
        Board.open(linear_url)


def test_safe_state_and_rearm(board: Board) -> None:
    board.safe()
    with pytest.raises(RemoteSafeState):
        board.set([0.0] * 7)
    assert board.status()["state_name"] == "safe"
    board.rearm()
    board.set([0.0] * 7)


def test_keyboard_interrupt_aborts_sweep_and_board_stays_usable(board: Board, random_volts) -> None:
    v = random_volts(200_000, seed=5)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        board.measure(v, progress=interrupt)
    assert board.status()["state_name"] in ("idle", "ramping")
    assert len(board.measure(v[:10])) == 10


def test_tcp_link(tcp_sim, expected_linear, random_volts) -> None:
    with Board.open(tcp_sim.url) as b:
        v = random_volts(3000, seed=7)
        np.testing.assert_allclose(b.measure(v), expected_linear(b.codes_to_volts(b.volts_to_codes(v))),
                                   atol=1e-9)


def test_sim_url_is_a_pyserial_port_and_closing_stops_the_simulator() -> None:
    port = serial.serial_for_url("sim://?seed=1", timeout=0)
    try:
        assert isinstance(port, SimSerial) and port.is_open
        proc = port.simulator.proc
        assert proc.poll() is None
        with Board(port) as b:
            assert b.identity["serial"] == "SIM-00000001"
            assert b.identity["device"]["model"].startswith("virtual-dnpu")
    finally:
        port.close()
    assert proc.poll() is not None and port.simulator is None     # closing stopped it


def test_sim_url_options_are_checked_by_the_simulator() -> None:
    with pytest.raises(BoardError, match=r"unknown option 'bogus'; known options: .*noise.*watchdog_ms"):
        Board.open("sim://?seed=1&bogus=2")
    with pytest.raises(BoardError, match="seed='x' is not a valid int"):
        Board.open("sim://?seed=x")
    with pytest.raises(BoardError, match="bad sim URL"):
        Board.open("sim://somewhere?seed=1")
    with pytest.raises(ValueError, match="watchdog_ms='soon'"):     # pyserial's own convention
        serial.serial_for_url("sim://?watchdog_ms=soon")


def test_sim_url_options_reach_the_board(linear_url: str) -> None:
    url = linear_url + "&watchdog_ms=250&max_slew=2.5&limits=-0.5:0.25&dac_bits=12&realtime=1&fifo_blocks=7"
    with Board.open(url) as b:
        ident = b.identity
    assert ident["watchdog_ms"] == 250 and ident["max_slew_v_per_s"] == 2.5 and ident["dac_bits"] == 12
    assert ident["limits_v"] == [[-0.5, 0.25]] * N_ELECTRODES
    assert ident["realtime"] is True and ident["fifo_blocks"] == 7


def test_heartbeat_and_watchdog_in_real_time(linear_url: str) -> None:
    """The one timing test on a real pty and a real clock (the rest run on the firmware's fake
    clock, tests/firmware_sim/test_firmware.py): the heartbeat keeps a quiet host's board armed;
    when the host really goes silent, the board ramps to 0 V at its slew limit and latches."""
    with Board.open(linear_url + "&watchdog_ms=300&max_slew=1") as b:
        b.set([0.3] + [0.0] * 6, ramp=False)
        time.sleep(0.8)                          # > 2 watchdog periods without a command
        assert b.status()["armed"] and b.heartbeat_error is None
        b.link.stop_heartbeat()
        time.sleep(0.5)                          # silent: the watchdog trips, the ramp takes 0.3 s
        t0 = time.monotonic()
        while b.status()["state_name"] == "safe" and np.abs(b.outputs()["volts"]).max() > 1e-4:
            assert time.monotonic() - t0 < 2.0, "outputs did not reach 0 V"
            time.sleep(0.02)
        assert b.status()["state_name"] == "safe"
        assert "WATCHDOG" in [e["name"] for e in b.errors()]
        with pytest.raises(RemoteSafeState):
            b.set([0.1] * N_ELECTRODES)
        b.rearm()


def test_virtual_dnpu_end_to_end_is_the_same_chip_on_every_firmware(random_volts, served_by) -> None:
    """One seed, one chip: the noise-free virtual DNPU measures the same currents on each firmware
    as on the Python one (the native port runs the same kernel in C, the qemu port's analog
    emulator the Python device)."""
    v = random_volts(2000, seed=3)
    with Board.open("sim://?seed=1&noise=0") as ref:
        want = ref.measure(v, oversample=2)
    with Board.open(served_by("sim://?seed=1&noise=0")) as b:
        assert b.identity["device"]["model"].startswith("virtual-dnpu")
        na = b.measure(v, oversample=2)
    assert na.shape == (2000,) and np.all(np.isfinite(na))
    assert -300.0 <= na.min() and na.max() <= 100.0 and na.std() > 1.0
    np.testing.assert_allclose(na, want, atol=0.02)       # two ADC codes (0.01 nA each)


def test_null_device_over_tcp(null_tcp_sim, random_volts) -> None:
    with Board.open(null_tcp_sim.url) as b:
        assert b.identity["device"]["model"] == "null-linear"
        na = b.measure(random_volts(3000))
        assert na.shape == (3000,) and np.all(np.isfinite(na)) and na.std() > 0


def test_float32_clipped_controls_are_accepted_at_the_limit_code(board: Board) -> None:
    lim = board.limits_v
    v = np.clip(np.random.default_rng(4).uniform(-2, 2, (40, 7)), lim[:, 0], lim[:, 1]).astype(np.float32)
    assert float(v[:, 0].min()) < -1.2   # -1.2000000477: refused as "-1.2 V outside [-1.2, 0.6]" before
    codes = board.volts_to_codes(v).astype(np.int64)
    lc = np.array(board.identity["limit_codes"])
    assert np.all(codes >= lc[:, 0]) and np.all(codes <= lc[:, 1])
    assert np.any(codes[:, 0] == lc[0, 0])
    assert board.measure(v).shape == (40,)
