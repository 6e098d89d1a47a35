"""Dataset folders (host.sample.store): the bad inputs a user can meet, each with a clear error."""
from __future__ import annotations

import json

import numpy as np
import pytest

from host.sample import store
from host.sample.measure import SamplingConfig, run
from host.sample.plans import Plan, PlanConfig


def test_bad_datasets_give_clear_errors(tmp_path, fake_board, test_ranges):
    with pytest.raises(store.DatasetError, match="no such directory"):
        store.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(store.DatasetError, match="no meta.json"):
        store.load(tmp_path / "empty")
    run(fake_board(), Plan(PlanConfig(n=1000, ranges_v=test_ranges)), tmp_path / "d", SamplingConfig(chunk=500),
        progress=False)
    # NaN in a chunk
    a = store.read_chunk(store.chunk_path(tmp_path / "d", 1))
    a["current_na"][3] = np.nan
    np.savez(store.chunk_path(tmp_path / "d", 1), **a)
    with pytest.raises(store.DatasetError, match="NaN"):
        store.load(tmp_path / "d")
    # a missing column
    del a["time_s"]
    np.savez(store.chunk_path(tmp_path / "d", 1), **a)
    with pytest.raises(store.DatasetError, match="missing columns"):
        store.load(tmp_path / "d")
    # volts stored in mV (mixed units) do not fit the recorded ranges
    run(fake_board(), Plan(PlanConfig(n=500, ranges_v=test_ranges)), tmp_path / "mv", SamplingConfig(chunk=500),
        progress=False)
    b = store.read_chunk(store.chunk_path(tmp_path / "mv", 0))
    b["volts"] = b["volts"] * 1000
    np.savez(store.chunk_path(tmp_path / "mv", 0), **b)
    with pytest.raises(store.DatasetError, match=r"has e\d = .* outside the recorded range"):
        store.load(tmp_path / "mv")
    # metadata with other units
    meta = json.loads((tmp_path / "mv" / "meta.json").read_text())
    meta["units"]["current"] = "A"
    (tmp_path / "mv" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(store.DatasetError, match="units"):
        store.load(tmp_path / "mv")
    # another format
    meta["format"] = "dnpu-dataset/0"
    (tmp_path / "mv" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(store.DatasetError, match="format"):
        store.load(tmp_path / "mv")


def test_reference_visits_of_chunks_measured_at_the_same_time_stay_apart() -> None:
    # two boards measured chunks 0 and 1 at the same time: chunk 1's visit starts before chunk 0's
    # ended; each visit holds the 2 reference points twice, with a steady offset between visits
    rid = np.array([0, 0, 1, 1] * 2, np.int16)
    t = np.array([0.000, 0.001, 0.002, 0.003, 0.0005, 0.0015, 0.0025, 0.0035])
    cur = np.array([10.0, 10.2, 20.0, 20.2, 13.0, 13.2, 23.0, 23.2], np.float32)
    refs = store.References(ref_id=rid, volts=np.zeros((8, 7), np.float32), current_na=cur, time_s=t)
    assert len(refs._visits()) == 2
    # within a visit the repeats differ by 0.2 nA; the 3 nA between visits is drift, not noise
    assert refs.noise_floor_na() < 0.2 and refs.drift_na() == pytest.approx(3.0, abs=1e-5)
