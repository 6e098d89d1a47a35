"""End to end: host.board against firmware_sim over a pty (sim://) and TCP."""
from __future__ import annotations

import time

import numpy as np
import pytest

from host.board import (Board, BoardError, IncompatibleBoard, LimitError, RemoteError,
                        RemoteLimitError, RemoteSafeState)
from host.board import protocol as P


@pytest.fixture(scope="module")
def board(linear_url: str):
    with Board.open(linear_url) as b:
        yield b


def test_identify(board: Board) -> None:
    ident = board.identity
    assert ident["channels"] == 7 and ident["dac_bits"] == 16 and ident["adc_bits"] == 16
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
        board._request("SET", tail=codes.astype(np.uint16), rate_mv_per_s=0)
    # a sweep upload with one bad sample deep inside
    board._request("SWEEP_BEGIN", sweep_id=77, n_samples=4, oversample=1, period_ns=10000,
                   block_samples=4)
    sweep = np.tile(board.volts_to_codes(np.zeros((1, 7))), (4, 1)).astype(np.int64)
    sweep[2, 0] = 0                                             # -2.0 V on e0
    with pytest.raises(RemoteLimitError) as e:
        board._request("SWEEP_DATA", tail=sweep.astype(np.uint16).ravel(), sweep_id=77, offset=0)
    assert e.value.arg == (2 << 3) | 0
    with pytest.raises(RemoteError, match="INCOMPLETE"):
        board._request("SWEEP_RUN", sweep_id=77, window=4)
    assert board.counters()["board"]["limit_rejects"] == before + 2
    names = [e["name"] for e in board.errors()]
    assert names.count("LIMIT") >= 2
    np.testing.assert_allclose(board.outputs()["volts"], 0.0, atol=1e-4)   # nothing applied


def test_unknown_command_and_malformed_get_error_replies(board: Board) -> None:
    with pytest.raises(RemoteError, match="UNKNOWN_COMMAND"):
        board._request_raw(0x42, b"hello")
    with pytest.raises(RemoteError, match="UNKNOWN_COMMAND"):
        board._request_raw(P.SCHEMA["ACK"].id, b"")          # a reply id is not a command
    with pytest.raises(RemoteError, match="MALFORMED"):
        board._request_raw(P.SCHEMA["SWEEP_BEGIN"].id, b"\x01\x02")
    with pytest.raises(RemoteError, match="BAD_ARGUMENT"):
        board._request("SWEEP_BEGIN", sweep_id=1, n_samples=0, oversample=0, period_ns=1,
                       block_samples=9999)
    assert board.counters()["board"]["unknown_commands"] >= 2


def test_wrong_version_gets_refused(board: Board, linear_url: str, monkeypatch) -> None:
    r = board._request("HELLO", major=P.PROTOCOL_MAJOR + 1, minor=0, schema=P.SCHEMA_HASH)
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


def test_sim_url_validation_and_process_cleanup(linear_url: str) -> None:
    with pytest.raises(BoardError, match="unknown"):
        Board.open("sim://?seed=1&bogus=2")
    with pytest.raises(BoardError, match="valid int"):
        Board.open("sim://?seed=x")
    b = Board.open(linear_url)
    proc = b._sim.proc
    b.close()
    assert proc.poll() is not None


def test_heartbeat_keeps_board_armed(linear_url: str) -> None:
    with Board.open(linear_url) as b:
        b.set([0.05] * 5 + [0.0] * 2)
        time.sleep(1.2)                      # > 2 watchdog periods of host inactivity
        assert b.status()["armed"] and b.heartbeat_error is None


def test_virtual_dnpu_end_to_end(random_volts) -> None:
    pytest.importorskip("firmware_sim.physics")
    with Board.open("sim://?seed=1&noise=0") as b:
        assert b.identity["device"]["model"].startswith("virtual-dnpu")
        v = random_volts(2000, seed=3)
        na = b.measure(v, oversample=2)
        assert na.shape == (2000,) and np.all(np.isfinite(na))
        assert -300.0 <= na.min() and na.max() <= 100.0 and na.std() > 1.0


def test_null_device_over_tcp(random_volts) -> None:
    pytest.importorskip("firmware_sim.physics")
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--tcp", "0", "--null-device",
                             "--exit-on-stdin-eof"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        url = proc.stdout.readline().decode().strip()
        with Board.open(url) as b:
            assert b.identity["device"]["model"] == "null-linear"
            assert b.measure(random_volts(3000)).shape == (3000,)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        proc.stdin.close()
        proc.stdout.close()
