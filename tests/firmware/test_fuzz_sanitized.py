"""The firmware core under AddressSanitizer and UndefinedBehaviorSanitizer: seeded random input
(well-formed frames of every message id with random payloads and lengths, whole sweeps, truncated
and bit-flipped frames, oversized LEN headers, garbage; clock jumps, link closes, transmit stalls,
ADC faults) through a fake HAL, with no finding. `make firmware` builds build/firmware-asan/."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from fake_board import ROOT

ASAN_BUILD = ROOT / "build" / "firmware-asan"
FUZZ = ASAN_BUILD / "fuzz" / "dnpu-fuzz"
BOARD = ASAN_BUILD / "native" / "dnpu-board"
SANITIZER_REPORT = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error")
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
       "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}


def test_the_sanitized_build_is_there_and_sanitized() -> None:
    assert FUZZ.exists() and BOARD.exists(), "run `make firmware`"
    libs = subprocess.run(["ldd", str(FUZZ)], capture_output=True, text=True).stdout
    assert "libasan" in libs and "libubsan" in libs, libs


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_fuzzed_core_has_no_sanitizer_finding(seed: int) -> None:
    r = subprocess.run([str(FUZZ), str(seed), "500000"], capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0 and not SANITIZER_REPORT.search(r.stderr), r.stderr[-4000:]
    stats = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", r.stdout)}
    # the input reached every layer: frames decoded, bad CRCs and headers seen, sweeps converted
    assert stats["frames"] > 500 and stats["crc_errors"] > 0 and stats["header_errors"] > 0, r.stdout
    assert stats["adc_reads"] > 1000, r.stdout


def test_sanitized_native_board_loads_the_virtual_dnpu_cleanly(tmp_path) -> None:
    from firmware_sim.native import dnpu_params_blob
    from firmware_sim.physics import VirtualDNPU
    blob = dnpu_params_blob(VirtualDNPU.from_seed(0))
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(blob)
    bad.write_bytes(blob[: len(blob) // 2])
    r = subprocess.run([str(BOARD), "--pty", "--exit-on-stdin-eof", "--dnpu-params", str(good)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, env=ENV)
    assert r.returncode == 0 and r.stdout.startswith("/dev/") and not SANITIZER_REPORT.search(r.stderr), r.stderr
    r = subprocess.run([str(BOARD), "--pty", "--dnpu-params", str(bad)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30, env=ENV)
    assert r.returncode == 2 and "bad --dnpu-params" in r.stderr and not SANITIZER_REPORT.search(r.stderr)
