"""Measuring a plan into a dataset folder (host.sample.measure): chunks, references, resume."""
from __future__ import annotations

import numpy as np
import pytest

from host.sample import store
from host.sample.measure import ResumeMismatch, SamplingConfig, board_fingerprint, run
from host.sample.plans import Plan, PlanConfig


def test_run_writes_chunks_references_and_metadata(tmp_path, fake_board, test_ranges):
    board = fake_board()
    plan = Plan(PlanConfig(n=3000, seed=0, ranges_v=test_ranges))
    meta = run(board, plan, tmp_path / "d", SamplingConfig(chunk=1000), progress=False)
    assert meta["complete"] and board.zeroed >= 1
    d = store.load(tmp_path / "d")
    assert len(d.samples) == 3000
    np.testing.assert_array_equal(d.samples.index, np.arange(3000))
    np.testing.assert_allclose(d.samples.volts, plan.rows(0, 3000), atol=1e-6)
    np.testing.assert_array_equal(d.ranges, np.asarray(test_ranges))
    assert d.meta["plan"] == plan.config.to_json()
    assert d.meta["board"]["serial"] == "FAKE-1"
    # 3 visits x 4 points x 4 repeats; the noise floor (1.4 nA) is recovered from them
    assert d.references.ref_id.size == 48
    assert 0.8 < d.references.noise_floor_na() < 2.2


def test_interrupted_run_keeps_chunks_and_resumes_to_the_same_data(tmp_path, fake_board, test_ranges):
    plan = Plan(PlanConfig(n=5000, seed=2, ranges_v=test_ranges))
    cfg = SamplingConfig(chunk=1000)
    with pytest.raises(ConnectionError):
        run(fake_board(noise=0.0, fail_after=3), plan, tmp_path / "d", cfg, progress=False)
    assert store.chunk_indices(tmp_path / "d") == [0, 1, 2]
    with pytest.raises(FileExistsError):
        run(fake_board(noise=0.0), plan, tmp_path / "d", cfg, progress=False)
    board = fake_board(noise=0.0)
    run(board, plan, tmp_path / "d", cfg, resume=True, progress=False)
    assert board.calls == 2  # only the two missing chunks were measured
    d = store.load(tmp_path / "d")
    np.testing.assert_array_equal(d.samples.index, np.arange(5000))
    np.testing.assert_allclose(d.samples.current_na, fake_board.clean(plan.rows(0, 5000)), atol=1e-3)


def test_resume_with_other_settings_or_board_is_refused(tmp_path, fake_board, test_ranges):
    plan = Plan(PlanConfig(n=2000, seed=0, ranges_v=test_ranges))
    cfg = SamplingConfig(chunk=1000)
    with pytest.raises(ConnectionError):
        run(fake_board(fail_after=1), plan, tmp_path / "d", cfg, progress=False)
    with pytest.raises(ResumeMismatch, match="plan"):
        run(fake_board(), Plan(PlanConfig(n=2000, seed=1, ranges_v=test_ranges)), tmp_path / "d", cfg,
            resume=True, progress=False)
    narrower = tuple((lo / 2, hi / 2) for lo, hi in test_ranges)
    with pytest.raises(ResumeMismatch, match="plan"):
        run(fake_board(), Plan(PlanConfig(n=2000, seed=0, ranges_v=narrower)), tmp_path / "d", cfg,
            resume=True, progress=False)
    with pytest.raises(ResumeMismatch, match="board or device"):
        run(fake_board(serial="OTHER"), plan, tmp_path / "d", cfg, resume=True, progress=False)
    other_firmware = fake_board()
    other_firmware.identity["firmware"] = "0.1-test"
    with pytest.raises(ResumeMismatch, match="board or device"):
        run(other_firmware, plan, tmp_path / "d", cfg, resume=True, progress=False)
    assert store.chunk_indices(tmp_path / "d") == [0]  # nothing measured was lost


def test_board_fingerprint_keeps_what_identifies_board_and_device():
    ident = {"serial": "S", "firmware": "f 1", "protocol": {"major": 1}, "device": {"seed": 3},
             "watchdog_ms": 500, "counters": ["rx_bytes"]}
    assert board_fingerprint(ident) == {"serial": "S", "firmware": "f 1", "protocol": {"major": 1},
                                        "device": {"seed": 3}}
