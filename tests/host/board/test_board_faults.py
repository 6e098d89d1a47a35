"""A faulty link between host and board: the host recovers by retrying, or raises a clear
error within its timeout. Never a hang, never a corrupted or duplicated sample."""
from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import pytest

from host.board import Board, BoardDisconnected, BoardError, BoardOverflow, BoardTimeout
from host.board.faults import FaultPlan, FaultyPort

FAST = dict(timeout_s=0.1, retries=15, block_samples=256, window=8)


@pytest.fixture
def run_faulty(linear_url, expected_linear, random_volts, link_profile):
    """f(plan, scale=1, **options) -> (faults injected, counters); asserts exact results of a
    measurement of scale x the firmware's profile's samples."""

    def run(plan: FaultPlan, scale: int = 1, **opts):
        n = scale * link_profile.samples
        opts = {"timeout_s": link_profile.timeout_s, **opts}
        ports: list[FaultyPort] = []

        def wrap(p):
            ports.append(FaultyPort(p, plan))
            return ports[0]

        # Opening (IDENTIFY's pages, a few KB whatever the run's length) meets the plan's own
        # rates; the measurement meets the rates raised for the profile's shorter run. Raised
        # rates on a slow board's KB-sized identity pages would lose most replies on purpose.
        with Board.open(linear_url, wrap=wrap, **{**FAST, **opts}) as b:
            ports[0].plan = link_profile.faults(plan)
            v = random_volts(n, seed=plan.seed)
            got = b.measure(v)
            want = expected_linear(b.codes_to_volts(b.volts_to_codes(v)))
            counters = b.counters()
        np.testing.assert_array_equal(got, want)  # nothing corrupted, lost, duplicated or reordered
        return ports[0].counts, counters

    return run


@pytest.mark.parametrize("plan, what", [
    (FaultPlan(seed=1, rx_flip=1e-4), "rx_flips"),
    (FaultPlan(seed=2, rx_drop_frame=1e-4), "rx_frames_dropped"),
    (FaultPlan(seed=3, rx_drop_span=1e-4), "rx_spans_dropped"),
    (FaultPlan(seed=4, rx_garbage=1e-4), "rx_garbage_inserts"),
    (FaultPlan(seed=5, tx_drop=0.08), "tx_dropped"),
    (FaultPlan(seed=6, tx_flip=0.08), "tx_flipped"),
    (FaultPlan(seed=7, tx_truncate=0.08), "tx_truncated"),
], ids=["flipped-bits", "dropped-frames", "truncated-frames", "garbage", "tx-dropped",
        "tx-flipped", "tx-truncated"])
def test_recovers_from_link_faults(plan: FaultPlan, what: str, run_faulty) -> None:
    counts, counters = run_faulty(plan)
    assert getattr(counts, what) > 0, "the fault was never injected"
    host = counters["host"]
    assert host["retries"] + host["rewinds"] + host["crc_errors"] + host["header_errors"] > 0


def test_all_faults_at_once(run_faulty) -> None:
    plan = FaultPlan(seed=11, rx_flip=1e-5, rx_drop_frame=1e-5, rx_drop_span=1e-5,
                     rx_garbage=1e-5, tx_drop=0.03, tx_flip=0.03, tx_truncate=0.03)
    run_faulty(plan, scale=2)


def test_stall_mid_stream_recovers(run_faulty, link_profile) -> None:
    counts, counters = run_faulty(FaultPlan(seed=8, stall_after_rx_bytes=3 * link_profile.samples,
                                            stall_s=6 * link_profile.timeout_s),
                                  scale=2, timeout_s=1.5 * link_profile.timeout_s)
    assert counts.stalls == 1 and counters["host"]["timeouts"] > 0


def test_permanent_stall_raises_timeout_promptly(linear_url, random_volts, link_profile) -> None:
    plan = FaultPlan(seed=9, stall_after_rx_bytes=3 * link_profile.samples, stall_s=math.inf)
    opts = {**FAST, "timeout_s": link_profile.timeout_s, "retries": 5}
    b = Board.open(linear_url, wrap=lambda p: FaultyPort(p, plan), **opts)
    budget = (2 + opts["retries"] + 1) * b.link.timeout_s    # stall check + one request's retries
    t0 = time.monotonic()
    with pytest.raises(BoardTimeout):
        b.measure(random_volts(5 * link_profile.samples))
    assert time.monotonic() - t0 < (budget + 2.0) * link_profile.slowness
    t0 = time.monotonic()
    b.close()                                   # tries to zero, gives up, still closes
    assert time.monotonic() - t0 < 5.0 * link_profile.slowness


def test_killed_peer_raises_disconnected(linear_url, random_volts, link_profile) -> None:
    ports = []
    b = Board.open(linear_url, wrap=lambda p: ports.append(p) or p, sweep_samples=5_000,
                   timeout_s=link_profile.timeout_s, retries=3)
    pid = ports[0].simulator.proc.pid

    def kill(done: int, total: int) -> None:
        os.kill(pid, signal.SIGKILL)

    t0 = time.monotonic()
    with pytest.raises((BoardDisconnected, BoardTimeout)) as e:
        b.measure(random_volts(5 * link_profile.samples), progress=kill)
    assert time.monotonic() - t0 < 3.0 * link_profile.slowness
    assert isinstance(e.value, BoardDisconnected), e.value
    b.close()


# QEMU's UART neither times nor drops bytes (a guest writing to a full pty waits, sample clock and
# all): the overflow path is tested on the Python and the native firmware.
@pytest.mark.parametrize("firmware", ["python", "native"], indirect=True)
def test_fifo_overflow_is_reported_not_hidden(linear_url, random_volts) -> None:
    # A real-time board with a tiny FIFO and a host that stops reading: samples are lost,
    # and the host must say so instead of returning a sweep with holes.
    url = linear_url + "&realtime=1&fifo_blocks=2&sample_period_us=5"
    plan = FaultPlan(seed=10, stall_after_rx_bytes=30_000, stall_s=0.5)
    with Board.open(url, wrap=lambda p: FaultyPort(p, plan), timeout_s=0.3, block_samples=256) as b:
        with pytest.raises(BoardOverflow):
            b.measure(random_volts(50_000))
        assert any(e["name"] == "OVERFLOW" for e in b.errors())
        assert len(b.measure(random_volts(100))) == 100     # the next sweep works


def test_device_fault_ends_sweep_with_clear_error(linear_url, random_volts, link_profile) -> None:
    with Board.open(linear_url + "&fail_after_rows=3000", block_samples=256) as b:
        t0 = time.monotonic()
        with pytest.raises(BoardError, match="aborted"):
            b.measure(random_volts(10_000))
        assert time.monotonic() - t0 < 3.0 * link_profile.slowness
        assert "DEVICE" in [e["name"] for e in b.errors()]
        assert b.status()["armed"]
