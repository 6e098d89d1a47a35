"""A noisy link still delivers: at ~3e-4 faults per byte each way (bit flips, dropped byte spans,
garbage) the host shrinks its SWEEP_DATA and RESULT frames until they get through, the boards
drop frames that broke off (and NAK them), and every completed measurement is exact. On a clean
link the frames stay at their largest, and after the noise they grow back."""
from __future__ import annotations

import time

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from host.board import Board, BoardError
from host.board.instrument import BoardOptions
from host.board import protocol as P
from host.board.faults import FaultPlan, FaultyPort

RATE = 3e-4                 # faults per byte, each direction
N_MEASUREMENTS = 5
N_SAMPLES = 3_000
SEEDS = range(100, 100 + N_MEASUREMENTS)


def _open_quiet(url: str, plan: FaultPlan, **options) -> tuple[Board, FaultyPort]:
    """A board behind a FaultyPort that injects nothing until `.enabled` is set."""
    ports: list[FaultyPort] = []

    def wrap(p):
        ports.append(FaultyPort(p, plan))
        ports[0].enabled = False
        return ports[0]

    return Board.open(url, wrap=wrap, **options), ports[0]


def _starved(b: Board, before: dict) -> bool:
    """Whether replies came late since `before` (host counters) on a slow link: QEMU's emulated
    board on a machine whose CPU is taken by others (50 % steal time seen here) answers late,
    which the host rightly takes for trouble and shrinks its frames for. A pty or a socket is
    never let off so."""
    return bool(b.identity["link_bytes_per_s"]) and b.counters()["host"]["timeouts"] > before["timeouts"]


def _ceilings(b: Board) -> dict[str, int]:
    sz = b.sweeps.sizes
    return {"upload_samples": sz.upload_samples, "upload_window": sz.upload_window,
            "block_samples": sz.block_samples}


def test_noisy_link_measurements_complete_exactly(linear_url, expected_linear, random_volts, link_profile) -> None:
    completed, failures, injected, carried = 0, [], 0, 0
    for seed in SEEDS:
        b, port = _open_quiet(linear_url, FaultPlan.noisy(RATE, seed=seed),
                              timeout_s=max(BoardOptions().timeout_s, link_profile.timeout_s))
        with b:
            v = random_volts(N_SAMPLES, seed=seed)
            want = expected_linear(b.codes_to_volts(b.volts_to_codes(v)))
            port.enabled = True
            try:
                got = b.measure(v)
            except BoardError as e:          # allowed (rarely), but never a wrong sample
                failures.append(f"seed {seed}: {type(e).__name__}: {e}")
                continue
            finally:
                port.enabled = False
                injected += port.counts.total()
                carried += port.rx_bytes + port.tx_bytes
            np.testing.assert_array_equal(got, want)      # 0 corrupted, lost or duplicated samples
            completed += 1
            if seed == SEEDS[-1]:
                # the link is clean again: the sizes grow back to their maximum
                assert b.adaptation["shrinks"] > 0
                clean = random_volts(2 * link_profile.samples, seed=1)
                before = b.counters()["host"]
                for _ in range(2):
                    np.testing.assert_array_equal(b.measure(clean),
                                                  expected_linear(b.codes_to_volts(b.volts_to_codes(clean))))
                got_sizes = {k: b.adaptation[k] for k in _ceilings(b)}
                if not _starved(b, before):
                    assert got_sizes == _ceilings(b)
    # faults are Poisson with mean RATE x bytes carried (over 100 here): half the mean is >4 sd off
    expected = RATE * carried
    assert expected > 10 * N_MEASUREMENTS and injected > expected / 2, f"the link was not noisy ({injected} faults in {carried} bytes)"
    assert completed >= N_MEASUREMENTS - 1, failures


def test_clean_link_keeps_the_largest_frames(linear_url, expected_linear, random_volts, link_profile) -> None:
    # the profile's reply timeout: on a loaded 2-core machine the emulator behind QEMU's UART can
    # stall longer than the default allows, which the host would (rightly) take for trouble
    with Board.open(linear_url, timeout_s=max(BoardOptions().timeout_s, link_profile.timeout_s)) as b:
        top, ident = _ceilings(b), b.identity
        head = P.SCHEMA["SWEEP_DATA"].head.size
        assert top["upload_samples"] == (ident["max_payload"] - head) // (2 * N_ELECTRODES)
        assert top["block_samples"] == min(b.options.block_samples, ident["max_block_samples"])
        if ident["link_bytes_per_s"] == 0:        # a pty or a socket: all the frames allowed in flight
            assert top["upload_window"] == b.options.upload_window > 1
        v = random_volts(5 * link_profile.samples // 2, seed=4)
        counted = b.counters()                 # (a pty QEMU has not polled yet loses the first HELLO)
        before, board_before = counted["host"], counted["board"]
        np.testing.assert_array_equal(b.measure(v), expected_linear(b.codes_to_volts(b.volts_to_codes(v))))
        counted = b.counters()
        host, board = counted["host"], counted["board"]
        # every byte arrived intact both ways
        assert [host[k] - before[k] for k in ("crc_errors", "header_errors")] == [0, 0]
        assert [board[k] - board_before[k] for k in ("crc_errors", "header_errors", "naks_sent")] == [0, 0, 0]
        if _starved(b, before):
            return                             # late replies (see _starved), not link faults
        assert {k: b.adaptation[k] for k in top} == top and b.adaptation["shrinks"] == 0
        assert host["retries"] == before["retries"] and host["rewinds"] == before["rewinds"] == 0
        if ident["link_bytes_per_s"] == 0:        # no reply ever overdue on a fast link
            assert host["keepalives"] == before["keepalives"] == 0


@pytest.mark.parametrize("adapt", [False, True], ids=["fixed", "adaptive"])
def test_sizes_stay_within_the_boards_limits(linear_url, adapt: bool) -> None:
    with Board.open(linear_url, adapt=adapt, block_samples=1 << 15, upload_samples=1 << 15) as b:
        ident, ad = b.identity, b.sweeps.adapt
        assert ad.block.ceiling <= ident["max_block_samples"]
        assert ad.upload.ceiling * 14 + 6 <= ident["max_payload"]
        floor = (ad.upload.floor, ad.block.floor)
        assert floor == ((32, 64) if adapt else (ad.upload.ceiling, ad.block.ceiling))


def test_board_drops_and_naks_a_frame_that_broke_off(linear_url) -> None:
    """A frame whose last bytes were lost: the board NAKs it once the link has been quiet for
    its frame gap (instead of waiting for bytes that never come and swallowing the next
    frame), and the next request is answered at once."""
    with Board.open(linear_url, heartbeat=False) as b:
        link = b.link
        with link.lock:
            seq = link.next_seq()
            frame = P.build("GET_OUTPUTS", seq)
            t0 = time.monotonic()
            link.send(frame[:-3])
            reply = link.await_reply({seq}, t0 + 1.0)
            waited = time.monotonic() - t0
        assert reply is not None and reply.name == "NAK", reply
        assert P.FRAME_GAP_S <= waited < b.options.timeout_s     # sooner than a timeout and retry
        assert b.status()["armed"]
        assert b.counters()["board"]["frame_timeouts"] == 1
