"""The qemu port: the firmware cross-compiled for an STM32F405 and run in QEMU's netduinoplus2,
opened by the host as sim://?firmware=qemu (its USART1 on a pty). The host driver's conformance
checks against it: identify, set/zero, exact measurements on the linear device, limits, the
watchdog on the wall clock, and the clock's rate against wall time.

Needs qemu-system-arm and the image (`make firmware-qemu`, which `make test` runs when
arm-none-eabi-gcc is installed; .ci/run installs both). Without the tools these tests skip,
naming the missing one: the one allowed skip, an external toolchain."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim.board import DEFAULT_LIMITS_V
from firmware_sim.devices import LinearDevice
from firmware_sim.qemu import QEMU_IMAGE, QEMU_MAX_FIFO_BLOCKS
from host.board import Board, BoardError, LimitError, RemoteLimitError, RemoteSafeState

_missing = [t for t in ("qemu-system-arm", "arm-none-eabi-gcc") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"{' and '.join(_missing)} not installed "
                                "(apt-get install gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm)")

SEED = 3
# A 2 s watchdog: on a loaded 2-core machine QEMU, the host's heartbeat thread and other jobs can
# leave the link quiet for longer than the default 0.5 s (the watchdog test sets its own).
OPTIONS = f"seed={SEED}&device=linear&dac_gain_error=0&dac_offset_error_mv=0&watchdog_ms=2000"
URL = f"sim://?{OPTIONS}&firmware=qemu"
LIMITS_V = np.array(DEFAULT_LIMITS_V)
MAX_SWEEP_SAMPLES = 2048          # DNPU_MAX_SWEEP_SAMPLES of the qemu build
MAX_BLOCK_SAMPLES = 256
MAX_PAYLOAD = 2048                # DNPU_BOARD_MAX_PAYLOAD


def expected_linear(volts: np.ndarray) -> np.ndarray:
    """What the linear board must return for nominal DAC volts (16-bit ADC, 0.01 nA/code), as in
    tests/host/board/conftest.py."""
    na = LinearDevice(SEED).convert(volts, 1e-5)
    return np.clip(np.rint(na / 0.01), -32768, 32767) * 0.01


def random_volts(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(LIMITS_V[:, 0], LIMITS_V[:, 1], (n, N_ELECTRODES))


@pytest.fixture(scope="module")
def board():
    with Board.open(URL) as b:
        yield b


def test_the_image_is_built() -> None:
    assert QEMU_IMAGE.exists(), "run `make firmware-qemu`"


def test_identify_is_the_seeded_board_within_the_parts_sizes(board: Board) -> None:
    with Board.open(f"sim://?{OPTIONS}") as py:
        a = py.identity
    b = board.identity
    assert b["firmware"].startswith("dnpu-bench-qemu") and b["serial"] == a["serial"]
    assert b["max_sweep_samples"] == MAX_SWEEP_SAMPLES and b["max_block_samples"] == MAX_BLOCK_SAMPLES
    assert b["fifo_blocks"] == min(a["fifo_blocks"], QEMU_MAX_FIFO_BLOCKS)
    assert b["max_payload"] == MAX_PAYLOAD          # short frames for a slow link (the host adapts)
    for k in set(a) - {"firmware", "model", "max_sweep_samples", "max_block_samples", "fifo_blocks",
                       "max_payload"}:
        assert a[k] == b[k], k
    assert b["device"]["model"] == "linear-test-device" and board.status()["armed"]


def test_set_ramps_and_zero(board: Board) -> None:
    board.zero()
    t = board.set([0.1, 0, 0, 0, 0, 0, -0.2], ramp=True)
    assert 0.19 < t < 0.3
    np.testing.assert_allclose(board.outputs()["volts"], [0.1, 0, 0, 0, 0, 0, -0.2], atol=1e-4)
    board.zero()
    np.testing.assert_allclose(board.outputs()["volts"], 0.0, atol=1e-4)


def test_measure_is_exact_and_ordered_over_several_sweeps(board: Board) -> None:
    v = random_volts(5000, seed=1)                 # > max_sweep_samples: three sweeps
    got = board.measure(v)
    np.testing.assert_allclose(got, expected_linear(board.codes_to_volts(board.volts_to_codes(v))), atol=1e-9)
    np.testing.assert_allclose(board.measure(v[:7], oversample=4), got[:7], atol=1e-9)


def test_measure_with_small_sweeps_and_blocks() -> None:
    with Board.open(URL, sweep_samples=1000, block_samples=300, window=2) as b:
        v = random_volts(3333, seed=2)
        got = b.measure(v)
        np.testing.assert_allclose(got, expected_linear(b.codes_to_volts(b.volts_to_codes(v))), atol=1e-9)
        assert b.counters_host.samples_received == 3333


def test_limits_are_rejected_by_host_and_board(board: Board) -> None:
    board.zero()                                    # a sweep leaves the outputs at its last point
    with pytest.raises(LimitError, match="e5 sample 0"):
        board.set([0, 0, 0, 0, 0, 0.31, 0])
    before = board.counters()["board"]["limit_rejects"]
    codes = board.volts_to_codes(np.zeros((1, 7)))[0].astype(np.int64)
    codes[5] = board.identity["limit_codes"][5][1] + 1
    with pytest.raises(RemoteLimitError, match="e5"):
        board.link.request("SET", tail=codes.astype(np.uint16), rate_mv_per_s=0)
    assert board.counters()["board"]["limit_rejects"] == before + 1
    np.testing.assert_allclose(board.outputs()["volts"], 0.0, atol=1e-4)


def test_watchdog_ramps_to_zero_and_latches_on_the_wall_clock() -> None:
    with Board.open(URL + "&watchdog_ms=300&max_slew=1") as b:
        b.set([0.3] + [0.0] * 6, ramp=False)
        time.sleep(0.8)                             # the heartbeat keeps it armed
        assert b.status()["armed"] and b.heartbeat_error is None
        b.link.stop_heartbeat()
        silent = time.monotonic()
        time.sleep(0.5)                             # watchdog 0.3 s, then a 0.3 s ramp
        while b.status()["state_name"] != "safe" or np.abs(b.outputs()["volts"]).max() > 1e-4:
            assert time.monotonic() - silent < 0.3 + 0.3 + 1.0, "outputs did not reach 0 V in time"
            time.sleep(0.02)
        assert "WATCHDOG" in [e["name"] for e in b.errors()]
        with pytest.raises(RemoteSafeState):
            b.set([0.1] * N_ELECTRODES)
        b.rearm()


def test_clock_tracks_wall_time(board: Board) -> None:
    s0, w0 = board.status()["uptime_ms"], time.monotonic()
    time.sleep(2.0)
    s1, w1 = board.status()["uptime_ms"], time.monotonic()
    err = (s1 - s0) / 1000.0 / (w1 - w0) - 1.0
    assert abs(err) < 0.01, f"board clock off by {err:+.2%} against wall time"


def test_qemu_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(BoardError, match="firmware=qemu serves device=null|linear"):
        Board.open("sim://?firmware=qemu&device=dnpu")


def test_qemu_stops_when_its_stdin_closes() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--pty", "--exit-on-stdin-eof",
                             "--options", "firmware=qemu&device=null"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().decode().startswith("/dev/pts/")
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1                       # QEMU
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()
    assert not Path(f"/proc/{children[0]}").exists(), "QEMU outlived its launcher"
