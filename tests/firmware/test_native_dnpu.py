"""The virtual DNPU behind the native port: a seed means the same chip in both firmwares.

sim://?firmware=native&seed=N runs firmware_sim's C kernel (linked into dnpu-board) on the
device the Python simulator draws from seed N, behind the same analog chain (settling, drift,
1/f and white noise, TIA, clipping), so both measure the same currents within the noise; with
noise=0 they agree to float rounding (here: exactly, same kernel, same flags)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim.board import DEFAULT_LIMITS_V
from firmware_sim.native import dnpu_params_blob
from firmware_sim.physics import VirtualDNPU
from host.board import Board

from fake_board import NATIVE_BINARY

LIMITS = np.array(DEFAULT_LIMITS_V)
ADC_LSB_NA = 0.01


def _volts(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(LIMITS[:, 0], LIMITS[:, 1], (n, N_ELECTRODES))


def _measure(query: str, v: np.ndarray, **kw) -> np.ndarray:
    with Board.open(f"sim://?{query}") as b:
        assert b.identity["device"]["model"] == "virtual-dnpu-meanfield"
        return b.measure(v, **kw)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


@pytest.mark.parametrize("seed", [0, 3])
def test_same_seed_same_chip_within_the_noise(seed: int) -> None:
    v = _volts(2000, seed=100 + seed)
    py = _measure(f"seed={seed}", v)
    c = _measure(f"seed={seed}&firmware=native", v)
    py_clean = _measure(f"seed={seed}&noise=0", v)
    c_clean = _measure(f"seed={seed}&noise=0&firmware=native", v)
    # the noise-free parts (settling, kernel, scale, TIA, clipping, ADC) agree to float rounding
    assert np.abs(py_clean - c_clean).max() <= ADC_LSB_NA + 1e-9
    assert py_clean.std() > 10.0                                 # a real signal, not a constant
    # each implementation's noise floor, and the difference between them: ~ sqrt(2) x the floor
    floor_py, floor_c = _rms(py - py_clean), _rms(c - c_clean)
    assert 0.8 < floor_c / floor_py < 1.25, (floor_py, floor_c)  # same noise model and level
    ratio = _rms(py - c) / (np.sqrt(2) * floor_py)
    assert 0.8 < ratio < 1.25, (ratio, floor_py, _rms(py - c))
    assert abs(float(np.mean(py - c))) < 0.5 * floor_py           # no offset between the two


def test_oversampled_rows_agree_exactly_without_noise() -> None:
    v = _volts(300, seed=9)
    py = _measure("seed=1&noise=0", v, oversample=4)
    c = _measure("seed=1&noise=0&firmware=native", v, oversample=4)
    assert np.abs(py - c).max() <= ADC_LSB_NA + 1e-9


def _run_with_params(tmp_path, data: bytes) -> subprocess.CompletedProcess:
    p = tmp_path / "params.bin"
    p.write_bytes(data)
    return subprocess.run([str(NATIVE_BINARY), "--pty", "--dnpu-params", str(p)], capture_output=True,
                          text=True, timeout=10, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def blob() -> bytes:
    return dnpu_params_blob(VirtualDNPU.from_seed(2))


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b[:-100], "bytes"),                                    # truncated (checksum or size)
    (lambda b: b"XXXXXXXX" + b[8:], "not a virtual-DNPU parameter file"),
    (lambda b: b[:200] + bytes([b[200] ^ 1]) + b[201:], "checksum mismatch"),
    (lambda b: b"", "too short"),
    (lambda b: b + b"\0" * (5 << 20), "larger than"),
])
def test_bad_parameter_files_are_refused_clearly(tmp_path, blob: bytes, mangle, message) -> None:
    r = _run_with_params(tmp_path, mangle(blob))
    assert r.returncode == 2 and "bad --dnpu-params" in r.stderr, r.stderr
    if message != "bytes":
        assert message in r.stderr, r.stderr


def test_bad_values_are_refused_even_with_a_valid_checksum(tmp_path, blob: bytes) -> None:
    import struct

    from firmware_sim.native import DNPU_SCALARS, _fnv1a64
    body = bytearray(blob[:-8])
    at = 8 + 5 * 4 + 8 + 8 * DNPU_SCALARS.index("line_tau_s")
    body[at:at + 8] = struct.pack("<d", float("nan"))
    r = _run_with_params(tmp_path, bytes(body) + struct.pack("<Q", _fnv1a64(bytes(body))))
    assert r.returncode == 2 and "line_tau_s is not finite" in r.stderr, r.stderr
    r = subprocess.run([str(NATIVE_BINARY), "--pty", "--dnpu-params", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "No such file" in r.stderr


def test_a_board_of_several_chips_measures_each_chip_as_the_simulator_does() -> None:
    """chips=0,3,0 on the C firmware: device k is chip k (a one-device board of that seed), the
    copy of chip 0 gives chip 0's currents, and the board agrees with the Python simulator's."""
    ideal = "dac_gain_error=0&dac_offset_error_mv=0&noise=0"
    v = np.stack([_volts(500, seed=21), _volts(500, seed=22), _volts(500, seed=21)], axis=1)   # [n, 3, 7]

    def devices(query: str) -> np.ndarray:
        with Board.open(f"sim://?chips=0,3,0&{ideal}{query}") as b:
            assert [d["device"]["seed"] for d in b.identity["devices"]] == [0, 3, 0]
            return b.measure_devices(v)

    c, py = devices("&firmware=native"), devices("")
    assert np.abs(c - py).max() <= ADC_LSB_NA + 1e-9
    alone = _measure(f"seed=3&{ideal}&firmware=native", v[:, 1])
    assert np.abs(c[:, 1] - alone).max() <= ADC_LSB_NA + 1e-9
    assert np.abs(c[:, 0] - c[:, 2]).max() <= ADC_LSB_NA + 1e-9          # a copy of one chip
    assert np.abs(c[:, 0] - c[:, 1]).mean() > 5.0                         # two chips differ
