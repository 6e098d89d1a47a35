"""The qemu port: the firmware cross-compiled for an STM32F405 and run in QEMU's netduinoplus2,
opened by the host as sim://?firmware=qemu (its USART1 on a pty, its USART2 the analog link to the
host-side emulator). The conformance suite (tests/host/board) runs against it as against the other
firmwares; these are the port's own checks: its identity within the part's sizes, the emulated
clock against wall time, the sample clock of real-time sweeps, and the launcher.

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
from firmware_sim.board import DEFAULT_LIMITS_V, BoardConfig
from firmware_sim.devices import DeviceOptions, LinearDevice
from firmware_sim.qemu import QEMU_IMAGE, QEMU_MAX_FIFO_BLOCKS, run_qemu
from host.board import Board

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
LINK_BYTES_PER_S = 16000          # DNPU_LINK_BYTES_PER_S


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
    assert b["link_bytes_per_s"] == LINK_BYTES_PER_S and a["link_bytes_per_s"] == 0
    sizes = board.sweeps.sizes                      # no more in flight than the UART delivers in time
    frame = 14 + 6 + 14 * sizes.upload_samples
    assert 1 <= sizes.upload_window and sizes.upload_window * frame <= LINK_BYTES_PER_S * board.link.timeout_s / 2
    for k in set(a) - {"firmware", "model", "max_sweep_samples", "max_block_samples", "fifo_blocks",
                       "max_payload", "link_bytes_per_s"}:
        assert a[k] == b[k], k
    assert b["device"]["model"] == "linear-test-device" and board.status()["armed"]


def test_clock_tracks_wall_time(board: Board) -> None:
    s0, w0 = board.status()["uptime_ms"], time.monotonic()
    time.sleep(2.0)
    s1, w1 = board.status()["uptime_ms"], time.monotonic()
    err = (s1 - s0) / 1000.0 / (w1 - w0) - 1.0
    assert abs(err) < 0.01, f"board clock off by {err:+.2%} against wall time"


def test_qemu_serves_a_pty_only() -> None:
    r = subprocess.run([sys.executable, "-m", "firmware_sim", "--tcp", "0", "--options", "firmware=qemu"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "firmware=qemu serves a pty only" in r.stderr


def test_real_time_sweep_blocks_are_converted_on_the_sample_clock() -> None:
    """The emulated counter paces a real-time sweep: no block is converted before its samples are
    due, every block reaches the analog emulator once, in order, and the results are exact."""
    cfg = BoardConfig(seed=SEED, dac_gain_error=0.0, dac_offset_error_v=0.0, realtime=True,
                      sample_period_s=200e-6, watchdog_s=2.0)
    with run_qemu(cfg, DeviceOptions(device="linear")) as q, Board.open(q.pty, block_samples=64) as b:
        v = random_volts(640, seed=4)
        got = b.measure(v)
        np.testing.assert_allclose(got, expected_linear(b.codes_to_volts(b.volts_to_codes(v))), atol=1e-9)
        blocks = [t for t in q.analog.timings if t.due_ticks]
    assert [t.block for t in blocks] == list(range(10)) and all(t.rows == 64 for t in blocks)
    late_us = np.array([t.now_ticks - t.due_ticks for t in blocks])
    assert np.all(late_us >= 0), late_us
    due = np.array([t.due_ticks for t in blocks])
    np.testing.assert_array_equal(np.diff(due), 64 * 200)     # 64 samples of 200 us each


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


def test_qemu_dies_with_a_killed_launcher() -> None:
    """A launcher killed outright (SIGKILL: no clean-up runs) takes QEMU with it, so the pty
    closes and the host sees the board go instead of a silent board."""
    proc = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--pty", "--exit-on-stdin-eof",
                             "--options", "firmware=qemu&device=null"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().decode().startswith("/dev/pts/")
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1
    proc.kill()
    proc.wait(timeout=10)
    for f in (proc.stdin, proc.stdout):
        f.close()
    t0 = time.monotonic()
    while Path(f"/proc/{children[0]}").exists() and "Z" not in _state(children[0]):
        assert time.monotonic() - t0 < 10, "QEMU outlived its killed launcher"
        time.sleep(0.05)


def _state(pid: str) -> str:
    try:
        return next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State:"))
    except (OSError, StopIteration):
        return "Z"


def test_a_board_of_several_chips_is_the_simulators_board() -> None:
    """chips=0,3,0 in QEMU: every sweep row carries 21 codes over the analog link and three
    currents come back per row; the same chips as the Python simulator's board of those options."""
    query = "chips=0,3,0&noise=0&watchdog_ms=2000"
    v = np.stack([random_volts(300, seed=31), random_volts(300, seed=32), random_volts(300, seed=31)], axis=1)
    got = {}
    for fw in ("", "&firmware=qemu"):
        with Board.open(f"sim://?{query}{fw}") as b:
            assert b.n_devices == 3 and [d["device"]["seed"] for d in b.identity["devices"]] == [0, 3, 0]
            got[fw] = b.measure_devices(v)
    np.testing.assert_allclose(got["&firmware=qemu"], got[""], atol=0.01 + 1e-9)
    assert np.abs(got[""][:, 0] - got[""][:, 1]).mean() > 5.0           # two chips, not one


def test_the_image_carries_as_many_devices_as_the_launcher_allows_and_no_more() -> None:
    from firmware_sim.qemu import QEMU_MAX_DEVICES
    from host.board import BoardError
    # the launcher's QEMU_MAX_DEVICES is the image's DNPU_MAX_DEVICES: a block of that many loads
    # (an image carrying fewer would ignore the block and boot as one device)
    with Board.open(f"sim://?devices={QEMU_MAX_DEVICES}&device=linear&watchdog_ms=2000&firmware=qemu") as b:
        assert b.n_devices == QEMU_MAX_DEVICES and b.identity["firmware"].startswith("dnpu-bench-qemu")
    with pytest.raises((ValueError, BoardError), match=f"at most {QEMU_MAX_DEVICES} devices"):
        Board.open(f"sim://?devices={QEMU_MAX_DEVICES + 1}&firmware=qemu")


@pytest.mark.parametrize("spoil, why", [
    ("version", "layout version is not the image's"),
    ("devices", "device count is outside what the image carries"),
])
def test_a_block_the_image_does_not_take_is_an_error_not_a_board_on_defaults(monkeypatch, spoil, why) -> None:
    """The image says at boot what it adopted (the analog link's BOOT record); the launcher stops
    with the reason instead of serving the image's defaults as if they were the board asked for
    (a stale image carrying fewer devices, a block of another layout)."""
    import struct

    import firmware_sim.qemu as q

    packed = q.config_block
    if spoil == "version":
        monkeypatch.setattr(q, "QCFG_VERSION", q.QCFG_VERSION + 1)
    else:       # n_devices, the ninth u32 of the head, beyond any image's DNPU_MAX_DEVICES
        monkeypatch.setattr(q, "config_block", lambda b: (lambda blk: blk[:32] + struct.pack("<I", 99) + blk[36:])(
            packed(b)))
    with pytest.raises(RuntimeError, match=why):
        with run_qemu(BoardConfig(seed=SEED, watchdog_s=2.0), DeviceOptions(device="linear")):
            pass
