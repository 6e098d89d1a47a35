"""Sampling plans, dataset files, resume and the bad inputs of host.sample / host.dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest

from host import dataset as ds
from host.sample import ResumeMismatch, SamplingConfig, run
from host.sampling_plans import WORKING_RANGES_V, Plan, PlanConfig


@pytest.mark.parametrize("strategy,extra", [("uniform", {}), ("sine", {}), ("sawtooth", {}),
                                            ("grid", {"grid_points": 3, "n": 3 ** 7})])
def test_plans_stay_in_ranges_and_are_reproducible_in_pieces(strategy, extra):
    cfg = PlanConfig(**{"strategy": strategy, "n": 5000, "seed": 3, **extra})
    plan = Plan(cfg)
    whole = plan.rows(0, len(plan))
    pieces = np.concatenate([plan.rows(a, min(a + 777, len(plan))) for a in range(0, len(plan), 777)])
    np.testing.assert_array_equal(whole, pieces)
    r = np.asarray(WORKING_RANGES_V)
    assert np.all(whole >= r[:, 0]) and np.all(whole <= r[:, 1])
    # every electrode explores most of its range
    span = (whole.max(0) - whole.min(0)) / (r[:, 1] - r[:, 0])
    assert np.all(span > 0.9)


def test_uniform_plans_differ_by_seed():
    a = Plan(PlanConfig(n=100, seed=0)).rows(0, 100)
    b = Plan(PlanConfig(n=100, seed=1)).rows(0, 100)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("kwargs,msg", [
    ({"strategy": "spiral"}, "strategy"),
    ({"n": 0}, "n must be positive"),
    ({"ranges_v": ((0.5, -0.5),) * 7}, "lo < hi"),
    ({"strategy": "grid", "grid_points": 3, "n": 10}, "grid"),
])
def test_bad_plan_settings_are_refused(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        PlanConfig(**kwargs)


def test_run_writes_chunks_references_and_metadata(tmp_path, fake_board):
    board = fake_board()
    meta = run(board, Plan(PlanConfig(n=3000, seed=0)), tmp_path / "d", SamplingConfig(chunk=1000), progress=False)
    assert meta["complete"] and board.zeroed >= 1
    d = ds.load(tmp_path / "d")
    assert len(d.samples) == 3000
    np.testing.assert_array_equal(d.samples.index, np.arange(3000))
    np.testing.assert_allclose(d.samples.volts, Plan(PlanConfig(n=3000, seed=0)).rows(0, 3000), atol=1e-6)
    assert d.meta["board"]["serial"] == "FAKE-1"
    # 3 visits x 4 points x 4 repeats; the noise floor is recovered from them
    assert d.references.ref_id.size == 48
    assert 0.8 < d.references.noise_floor_na() < 2.2


def test_interrupted_run_keeps_chunks_and_resumes_to_the_same_data(tmp_path, fake_board):
    plan = Plan(PlanConfig(n=5000, seed=2))
    cfg = SamplingConfig(chunk=1000)
    with pytest.raises(ConnectionError):
        run(fake_board(noise=0.0, fail_after=3), plan, tmp_path / "d", cfg, progress=False)
    assert ds.chunk_indices(tmp_path / "d") == [0, 1, 2]
    with pytest.raises(FileExistsError):
        run(fake_board(noise=0.0), plan, tmp_path / "d", cfg, progress=False)
    board = fake_board(noise=0.0)
    run(board, plan, tmp_path / "d", cfg, resume=True, progress=False)
    assert board.calls == 2  # only the two missing chunks were measured
    d = ds.load(tmp_path / "d")
    np.testing.assert_array_equal(d.samples.index, np.arange(5000))
    np.testing.assert_allclose(d.samples.current_na, fake_board.clean(plan.rows(0, 5000)), atol=1e-3)


def test_resume_with_other_settings_or_board_is_refused(tmp_path, fake_board):
    plan = Plan(PlanConfig(n=2000, seed=0))
    with pytest.raises(ConnectionError):
        run(fake_board(fail_after=1), plan, tmp_path / "d", SamplingConfig(chunk=1000), progress=False)
    with pytest.raises(ResumeMismatch, match="plan"):
        run(fake_board(), Plan(PlanConfig(n=2000, seed=1)), tmp_path / "d", SamplingConfig(chunk=1000),
            resume=True, progress=False)
    with pytest.raises(ResumeMismatch, match="board or device"):
        run(fake_board(serial="OTHER"), plan, tmp_path / "d", SamplingConfig(chunk=1000), resume=True, progress=False)
    assert ds.chunk_indices(tmp_path / "d") == [0]  # nothing measured was lost


def test_bad_datasets_give_clear_errors(tmp_path, fake_board):
    with pytest.raises(ds.DatasetError, match="no such directory"):
        ds.load(tmp_path / "missing")
    run(fake_board(), Plan(PlanConfig(n=1000)), tmp_path / "d", SamplingConfig(chunk=500), progress=False)
    # NaN in a chunk
    a = ds.read_chunk(ds.chunk_path(tmp_path / "d", 1))
    a["current_na"][3] = np.nan
    np.savez(ds.chunk_path(tmp_path / "d", 1), **a)
    with pytest.raises(ds.DatasetError, match="NaN"):
        ds.load(tmp_path / "d")
    # a missing column
    del a["time_s"]
    np.savez(ds.chunk_path(tmp_path / "d", 1), **a)
    with pytest.raises(ds.DatasetError, match="missing columns"):
        ds.load(tmp_path / "d")
    # volts stored in mV (mixed units) do not fit the recorded ranges
    run(fake_board(), Plan(PlanConfig(n=500)), tmp_path / "mv", SamplingConfig(chunk=500), progress=False)
    b = ds.read_chunk(ds.chunk_path(tmp_path / "mv", 0))
    b["volts"] = b["volts"] * 1000
    np.savez(ds.chunk_path(tmp_path / "mv", 0), **b)
    with pytest.raises(ds.DatasetError, match="outside the recorded range"):
        ds.load(tmp_path / "mv")
    # metadata with other units
    meta = json.loads((tmp_path / "mv" / "meta.json").read_text())
    meta["units"]["current"] = "A"
    (tmp_path / "mv" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ds.DatasetError, match="units"):
        ds.load(tmp_path / "mv")
