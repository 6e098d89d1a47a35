"""`python -m host.surrogate report FILE`: a chip at a glance from its surrogate."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from host.surrogate.__main__ import main  # noqa: E402
from host.surrogate.variant import make_variant  # noqa: E402

SURROGATE = "models/surrogate.onnx"


def _report(capsys, *args: str) -> dict:
    assert main(["report", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_scales_with_the_chip_it_describes(tmp_path, capsys):
    base = _report(capsys, SURROGATE, "--no-xor", "--points", "50")
    wide = tmp_path / "wide.onnx"
    make_variant(SURROGATE, wide, widen=1.5, amplification=28.5)
    other = _report(capsys, str(wide), "--no-xor", "--points", "50")
    # the same base points (same seed, corresponding places in the ranges): slopes 1.5x flatter,
    # the swing over the whole range, the output and the noise the same
    g0 = np.array([p["median_abs_na_per_v"] for p in base["electrodes"]])
    g1 = np.array([p["median_abs_na_per_v"] for p in other["electrodes"]])
    np.testing.assert_allclose(g1, g0 / 1.5, rtol=1e-3)
    np.testing.assert_allclose([p["typical_swing_na"] for p in other["electrodes"]],
                               [p["typical_swing_na"] for p in base["electrodes"]], rtol=1e-3)
    assert other["amplification"] == 28.5
    assert other["noise_floor_na"] == base["noise_floor_na"] and base["noise_floor_from"] == "given"
    assert other["output_na"]["std"] == pytest.approx(base["output_na"]["std"], rel=1e-3)


def test_report_finds_the_xor_pairs_and_writes_json_and_a_plot(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["report", SURROGATE, "--points", "20", "--xor-trials", "2", "--xor-epochs", "150",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "XOR through the surrogate" in text and "noise floor" in text
    rep = json.loads(out.read_text())
    x = rep["xor"]
    assert len(x["table"]) == 21
    margins = [r["score"] for r in x["table"]]
    assert margins == sorted(margins, reverse=True)
    assert x["pairs_realising_xor"] == [r["electrodes"] for r in x["table"] if r["score"] > x["noise_floor_na"]]
    assert x["pairs_realising_xor"], "the shipped surrogate realises XOR on some pair"
    assert out.with_suffix(".png").stat().st_size > 10_000
