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
