"""The simulator's options: declared once on its config dataclasses, read from flags and from a
URL-style query alike, unknown ones refused with the known ones listed."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim.__main__ import OPTIONS, build_parser, configure
from firmware_sim.board import BoardConfig
from firmware_sim.devices import DeviceOptions, LinearDevice, make_device
from firmware_sim.physics import NullDevice

# the sim:// option names that hosts and docs use
URL_OPTIONS = {"seed", "noise", "n_sites", "device", "dac_bits", "adc_bits", "limits", "max_slew",
               "watchdog_ms", "sample_period_us", "dac_gain_error", "dac_offset_error_mv", "fifo_blocks",
               "realtime", "fail_after_rows", "firmware", "model", "noise_na", "drift", "devices", "chips"}


def _configure(*argv: str) -> tuple[BoardConfig, DeviceOptions]:
    return configure(build_parser().parse_args(["--pty", *argv]))


def test_every_option_is_a_declared_field_with_help() -> None:
    assert set(OPTIONS) == URL_OPTIONS
    for spec in OPTIONS.values():
        assert spec.help and spec.field in {f.name for f in dataclasses.fields(spec.cls)}


def test_defaults_are_the_dataclass_defaults() -> None:
    cfg, dev = _configure()
    assert cfg == BoardConfig() and dev == DeviceOptions()


def test_query_and_flags_mean_the_same() -> None:
    q = ("seed=4&watchdog_ms=250&sample_period_us=20&dac_offset_error_mv=2&max_slew=3&realtime=1"
         "&limits=-0.5:0.25&device=linear&fail_after_rows=10")
    by_query = _configure("--options", q)
    by_flags = _configure("--seed", "4", "--watchdog-ms", "250", "--sample-period-us", "20",
                          "--dac-offset-error-mv", "2", "--max-slew", "3", "--realtime",
                          "--limits=-0.5:0.25", "--device", "linear", "--fail-after-rows", "10")
    assert by_query == by_flags
    cfg, dev = by_query
    assert cfg.seed == 4 and cfg.watchdog_s == pytest.approx(0.25) and cfg.realtime
    assert cfg.sample_period_s == pytest.approx(20e-6) and cfg.dac_offset_error_v == pytest.approx(2e-3)
    assert cfg.max_slew_v_per_s == 3.0 and cfg.limits_v == ((-0.5, 0.25),) * N_ELECTRODES
    assert dev == DeviceOptions(device="linear", fail_after_rows=10)
    assert _configure("--options", "seed=1", "--seed", "2")[0].seed == 2      # a flag wins


@pytest.mark.parametrize("query, message", [
    ("seed=1&bogus=2", "unknown option 'bogus'; known options: adc_bits, chips, dac_bits"),
    ("seed=x", "seed='x' is not a valid int"),
    ("device=quantum", "device='quantum' is not one of dnpu, null, linear"),
    ("realtime=maybe", "realtime is a switch"),
    ("limits=1:2:3", "need 1 or 7 lo:hi pairs"),
    ("dac_bits=20", "dac_bits must be 8..16"),
    ("device=dnpu&fail_after_rows=3", "fail_after_rows needs device=linear"),
])
def test_bad_options_are_refused(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _configure("--options", query)


def test_cli_refuses_unknown_option_listing_the_known_ones() -> None:
    r = subprocess.run([sys.executable, "-m", "firmware_sim", "--pty", "--options", "seed=1&bogus=2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "unknown option 'bogus'" in r.stderr
    assert all(name in r.stderr for name in URL_OPTIONS)


def test_help_lists_every_option_with_its_unit() -> None:
    text = build_parser().format_help()
    for name in URL_OPTIONS:
        assert "--" + name.replace("_", "-") in text
    assert "(ms); default 500" in text and "(us); default 10" in text and "(mV); default 1" in text


def test_make_device_follows_the_options() -> None:
    assert isinstance(make_device(DeviceOptions(device="null"), 0), NullDevice)
    lin = make_device(DeviceOptions(device="linear", fail_after_rows=5), 3)
    assert isinstance(lin, LinearDevice) and lin.seed == 3 and lin.fail_after_rows == 5
