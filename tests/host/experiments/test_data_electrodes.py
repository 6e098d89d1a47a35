"""Experiments on a chip they were not tuned for: the paper's input voltages placed into another
chip's ranges, `--data-electrodes auto` screening every pair, and what happens when no pair works."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.electrodes import N_ELECTRODES, place_volts  # noqa: E402
from host.experiments.__main__ import main  # noqa: E402
from host.experiments.capacity import CAPACITY_POINTS_V  # noqa: E402
from host.experiments.data_electrodes import (PAPER_INPUT_RANGE_V, all_pairs, parse_data_electrodes,  # noqa: E402
                                              place_paper_points)
from host.experiments.errors import ExperimentError  # noqa: E402
from host.surrogate import onnx_file  # noqa: E402
from host.surrogate.variant import make_variant  # noqa: E402

SURROGATE = "models/surrogate.onnx"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_paper_points_are_kept_where_they_fit_and_scaled_where_they_do_not():
    ranges = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)
    kept = place_paper_points(CAPACITY_POINTS_V, ranges, (1, 2))
    assert not kept.scaled and np.array_equal(kept.volts, CAPACITY_POINTS_V)
    mixed = place_paper_points(CAPACITY_POINTS_V, ranges, (1, 5))
    assert mixed.mapping == {"e1": "kept", "e5": mixed.mapping["e5"]} and "scaled" in mixed.mapping["e5"]
    np.testing.assert_array_equal(mixed.volts[:, 0], CAPACITY_POINTS_V[:, 0])
    col = mixed.volts[:, 1]
    assert col.min() > -0.7 and col.max() < 0.3                     # inside e5's range, with room
    # the map is the affine one from the paper's range: order and proportions survive
    p_lo, p_hi = PAPER_INPUT_RANGE_V
    frac = (CAPACITY_POINTS_V[:, 1] - p_lo) / (p_hi - p_lo)
    np.testing.assert_allclose((col - col.min()) / np.ptp(col), (frac - frac.min()) / np.ptp(frac), atol=1e-12)
    assert "e5" in mixed.note() and "scaled" in mixed.note()


def test_data_electrodes_option_is_checked():
    assert parse_data_electrodes("auto") == "auto" and parse_data_electrodes(" 3,5 ") == (3, 5)
    for bad in ("1", "1,1", "0,7", "a,b", "1,2,3"):
        with pytest.raises(ExperimentError, match="--data-electrodes"):
            parse_data_electrodes(bad)
    assert len(all_pairs()) == 21 and len(set(all_pairs())) == 21


def test_a_dnpu_classifier_takes_volts_unchanged_on_electrodes_of_different_ranges():
    from host.networks.classifiers import TrialDNPUClassifier
    from host.surrogate.torch_model import load_torch

    sur = load_torch(SURROGATE)
    ranges = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)
    clf = TrialDNPUClassifier(sur, ranges, 2, data_electrodes=(1, 5), generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[-1.0, -0.5], [0.4, 0.2], [0.0, 0.0]])
    clf.eval()
    with torch.no_grad():
        got = clf.dnpu(((x - clf._unit[0]) / clf._unit[1]).unsqueeze(1))[..., 0]
        ctrl = clf.solution()
        want = torch.stack([sur(torch.as_tensor(place_volts(x.numpy()[None], ctrl[t][None, None], (1, 5))[0],
                                                 dtype=torch.float32))[:, 0] for t in range(2)])
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-4)


def _other_chip(tmp_path: Path) -> Path:
    """The shipped surrogate as another chip: ranges 1.5x as wide, amplification 28.5."""
    out = tmp_path / "other_chip.onnx"
    make_variant(SURROGATE, out, widen=1.5, amplification=28.5)
    return out


def test_a_variant_chip_has_wider_ranges_another_amplification_and_the_same_currents(tmp_path):
    a, b = onnx_file.read(SURROGATE), onnx_file.read(_other_chip(tmp_path))
    assert b.amplification == 28.5 and a.amplification != 28.5
    np.testing.assert_allclose(np.diff(b.ranges_v, axis=1), 1.5 * np.diff(a.ranges_v, axis=1), rtol=1e-12)
    u = np.random.default_rng(0).random((500, N_ELECTRODES))
    ia = a.evaluate_numpy(a.ranges_v[:, 0] + u * np.diff(a.ranges_v, axis=1)[:, 0])
    ib = b.evaluate_numpy(b.ranges_v[:, 0] + u * np.diff(b.ranges_v, axis=1)[:, 0])
    np.testing.assert_allclose(ib, ia, atol=1e-3)


def test_gates_auto_screens_every_pair_and_reports_the_choice(tmp_path, capsys):
    chip = _other_chip(tmp_path)
    out = tmp_path / "gates"
    rc = main(["gates", "--surrogate", str(chip), "--data-electrodes", "auto", "--gates", "AND,XOR",
               "--trials", "3", "--epochs", "150", "--no-board", "--quiet", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    choice = res["data_electrodes_choice"]
    assert choice["mode"] == "auto" and len(choice["table"]) == 21
    scores = [r["score"] for r in choice["table"]]
    assert scores == sorted(scores, reverse=True)
    assert res["data_electrodes"] == choice["chosen"] == choice["table"][0]["electrodes"]
    # the run's own trials and epochs are within the screening budget: its training is the
    # chosen pair's screening run again, so the scores agree
    assert choice["table"][0]["score"] == pytest.approx(min(res["gates"][g]["surrogate_margin_na"]
                                                            for g in ("AND", "XOR")), abs=1e-4)
    assert "screened 21 electrode pairs" in capsys.readouterr().out
    ctrl = res["gates"]["XOR"]["control_electrodes"]
    assert sorted(ctrl + res["data_electrodes"]) == list(range(N_ELECTRODES))


def test_auto_where_no_pair_works_says_so_and_still_reports_the_best(tmp_path, capsys):
    sf = onnx_file.read(SURROGATE)
    dead = tmp_path / "dead_chip.onnx"
    weights, biases = list(sf.weights), list(sf.biases)
    weights[-1] = np.zeros_like(weights[-1])          # a chip whose current never changes
    onnx_file.write(dead, weights, biases, {k: v for k, v in sf.metadata.items() if k != "format"})
    out = tmp_path / "gates"
    rc = main(["gates", "--surrogate", str(dead), "--data-electrodes", "auto", "--gates", "XOR",
               "--trials", "2", "--epochs", "50", "--no-board", "--quiet", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["data_electrodes_choice"]["ok"] is False
    assert any("no electrode pair reached the bar" in w for w in res["warnings"])
    assert "no electrode pair reached the bar" in capsys.readouterr().out
    assert res["gates"]["XOR"]["surrogate_ok"] is False


def test_capacity_auto_places_the_points_on_the_chosen_pair(tmp_path):
    out = tmp_path / "capacity"
    rc = main(["capacity", "--surrogate", str(_other_chip(tmp_path)), "--data-electrodes", "auto",
               "--systems", "surrogate", "--n-min", "4", "--n-max", "5", "--attempts", "1", "--epochs", "100",
               "--quiet", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    pair = tuple(res["data_electrodes"])
    assert res["data_electrodes_choice"]["chosen"] == list(pair)
    want = place_paper_points(CAPACITY_POINTS_V, onnx_file.read(_other_chip(tmp_path)).ranges_v, pair).volts
    np.testing.assert_allclose(np.asarray(res["points_v"]), want)


def test_ring_auto_trains_on_the_screened_pair(tmp_path):
    out = tmp_path / "ring"
    rc = main(["ring", "--data-electrodes", "auto", "--archs", "single", "--trials", "2", "--chunk", "2",
               "--epochs", "5", "--n-per-class", "8", "--noise-draws", "2", "--nn-baselines", "", "--no-board",
               "--no-export", "--quiet", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["ring"]["data_electrodes"] == res["data_electrodes"] == res["data_electrodes_choice"]["chosen"]
    assert len(res["data_electrodes_choice"]["table"]) == 21
