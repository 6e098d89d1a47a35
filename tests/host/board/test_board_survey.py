"""`python -m host.board survey`: what a newcomer to a chip reads first, measured on the board."""
from __future__ import annotations

import json

import numpy as np

from firmware_sim.devices import LinearDevice
from host.board.__main__ import main

SEED = 5
LINEAR = f"sim://?seed={SEED}&device=linear&dac_gain_error=0&dac_offset_error_mv=0"


def test_survey_of_a_linear_board_finds_its_weights_and_no_noise(capsys, tmp_path):
    png = tmp_path / "survey.png"
    rc = main(["--port", LINEAR, "survey", "--points", "20", "--samples", "500", "--repeats", "5", "--oversample", "1",
               "--json", "--plot", str(png)])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    w = np.abs(LinearDevice(SEED).w)                 # nA/V, the device's own slopes
    got = np.array([p["median_abs_na_per_v"] for p in rep["electrodes"]])
    # one ADC code (0.01 nA) over a difference across 2 steps of 5 % of the range (>= 0.1 V)
    np.testing.assert_allclose(got, w, rtol=0.01, atol=0.01 / 0.1 * 2)
    order = [f"e{i}" for i in np.argsort(-w * np.diff(np.array([p["range_v"] for p in rep["electrodes"]]), axis=1)[:, 0])]
    assert rep["most_sensitive_first"] == order
    assert rep["noise_floor_na"] < 0.01 and rep["noise_floor_from"] == "measured repeats"
    assert rep["output_na"]["min"] < rep["output_na"]["mean"] < rep["output_na"]["max"]
    assert rep["measurements"] == 20 * 7 * 2 + 500 + 5 * 5
    assert png.stat().st_size > 10_000


def test_survey_of_the_virtual_dnpu_sees_its_noise(capsys):
    rc = main(["--port", "sim://?seed=2", "survey", "--points", "20", "--samples", "500", "--repeats", "20",
               "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert 0.5 < rep["noise_floor_na"] < 5            # the virtual DNPU's white noise is ~1.4 nA
    assert rep["signal_over_noise"] > 10
    # the difference's own noise is stated: the floor / sqrt(8 readings) through a central difference
    res = np.array(rep["sensitivity_resolution_na_per_v"])
    spans = np.diff(np.array([p["range_v"] for p in rep["electrodes"]]), axis=1)[:, 0]
    np.testing.assert_allclose(res, rep["noise_floor_na"] / np.sqrt(8) * np.sqrt(2) / (2 * 0.05 * spans))


def test_survey_refuses_bad_sizes(capsys):
    try:
        main(["--port", LINEAR, "survey", "--points", "1"])
    except SystemExit as e:
        assert "points" in str(e)
    else:
        raise AssertionError("a survey of one point was accepted")
