"""python -m host.sample against the simulated board: ranges from the board's limits, a real Ctrl-C, --resume."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.board import DEFAULT_LIMITS_V
from host.sample import store
from host.sample.__main__ import main
from host.sample.plans import Plan, PlanConfig

N, CHUNK = 20000, 1000
#: upper bounds against a hang only: a loaded 2-core machine may be many times slower than an idle one
HANG_S = 600
#: narrower limits than the simulator's default, as a sim:// URL option and as (lo, hi) pairs
NARROW_URL, NARROW_V = "sim://?seed=0&limits=0:0.4", ((0.0, 0.4),) * N_ELECTRODES


#: a board paced by its sample clock at 10 kHz: the run lasts a few seconds, so Ctrl-C lands
#: mid-run however fast the host is
PACED_URL = "sim://?seed=0&realtime=1&sample_period_us=100"


def _default_sigint() -> None:
    """In the child: Ctrl-C as at a terminal, even under a shell that started the tests in the
    background (which leaves SIGINT ignored, and a Python started so never sees it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "host.sample", "--board", PACED_URL, "--n", str(N), "--seed", "4",
            "--chunk", str(CHUNK), "--no-progress", "--out", str(out), *extra]


def test_ctrl_c_keeps_chunks_and_resume_completes_the_same_plan(tmp_path):
    out = tmp_path / "d"
    p = subprocess.Popen(_cmd(out), stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + HANG_S
    while p.poll() is None and len(store.chunk_indices(out) if out.exists() else []) < 2:
        assert time.monotonic() < deadline, "no two chunks measured in time"
        time.sleep(0.05)
    assert p.poll() is None, f"the run ended before Ctrl-C (rc {p.returncode}): {p.communicate()[1]}"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=HANG_S)
    kept = store.chunk_indices(out)
    assert p.returncode == 130, err
    assert "--resume" in err and 2 <= len(kept) < N // CHUNK, (kept, err)
    # without --resume the folder is not overwritten
    again = subprocess.run(_cmd(out), capture_output=True, text=True, timeout=HANG_S)
    assert again.returncode == 2 and "--resume" in again.stderr, again.stderr
    assert store.chunk_indices(out)[: len(kept)] == kept
    done = subprocess.run(_cmd(out, "--resume", "--json"), capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["samples"] == N
    d = store.load(out)
    np.testing.assert_array_equal(d.samples.index, np.arange(N))
    # without --ranges the plan spans the board's limits: the simulator's defaults here
    np.testing.assert_array_equal(d.ranges, np.asarray(DEFAULT_LIMITS_V))
    np.testing.assert_allclose(d.samples.volts, Plan(PlanConfig(n=N, seed=4, ranges_v=DEFAULT_LIMITS_V)).rows(0, N),
                               atol=2e-3)
    assert d.meta["complete"]
    assert d.meta["board"]["device"]["seed"] == 0  # the simulated device's identity is recorded
    # the virtual device's measured noise floor is that of the simulator (about 1.4 nA)
    assert 0.5 < d.references.noise_floor_na() < 3.0
    # a resumed run with another plan seed is refused and nothing is lost
    wrong = subprocess.run([a if a != "4" else "5" for a in _cmd(out, "--resume")], capture_output=True,
                           text=True, timeout=HANG_S)
    assert wrong.returncode == 2 and "plan" in wrong.stderr, wrong.stderr
    assert len(store.load(out).samples) == N


def test_without_ranges_sampling_spans_the_boards_limits(tmp_path):
    out = tmp_path / "narrow"
    assert main(["--board", NARROW_URL, "--n", "3000", "--chunk", "1000", "--no-progress", "--out", str(out)]) == 0
    d = store.load(out)
    assert d.meta["board"]["limits_v"] == [list(p) for p in NARROW_V]
    np.testing.assert_array_equal(d.ranges, np.asarray(NARROW_V))
    assert PlanConfig.from_json(d.meta["plan"]).ranges_v == NARROW_V
    lo, hi = np.asarray(NARROW_V).T
    v = d.samples.volts
    assert np.all(v >= lo - 1e-6) and np.all(v <= hi + 1e-6)
    assert np.all((v.max(0) - v.min(0)) / (hi - lo) > 0.9)  # and uses all of them


def test_ranges_override_within_the_limits_is_used_and_outside_them_refused(tmp_path, capsys):
    inner = [[0.1, 0.3]] * N_ELECTRODES
    out = tmp_path / "inner"
    args = ["--board", NARROW_URL, "--n", "1000", "--no-progress"]
    assert main([*args, "--ranges", json.dumps(inner), "--out", str(out)]) == 0
    np.testing.assert_array_equal(store.load(out).ranges, np.asarray(inner))
    wide = [[0.0, 0.4]] * N_ELECTRODES
    wide[2] = [0.0, 0.5]
    assert main([*args, "--ranges", json.dumps(wide), "--out", str(tmp_path / "wide")]) == 2
    assert "e2 [0.0, 0.5] V is outside the board's limits [0.0, 0.4]" in capsys.readouterr().err
    assert not (tmp_path / "wide").exists()  # refused before anything was measured or written
    assert main([*args, "--ranges", "[[0, 1]]", "--out", str(tmp_path / "short")]) == 2
    assert f"{N_ELECTRODES} finite (lo, hi) pairs" in capsys.readouterr().err
