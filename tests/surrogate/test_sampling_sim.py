"""host.sample end to end against the simulated board: a real Ctrl-C, then --resume."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from host import dataset as ds
from host.sampling_plans import Plan, PlanConfig

N, CHUNK = 20000, 1000


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "host.sample", "--board", "sim://?seed=0", "--n", str(N), "--seed", "4",
            "--chunk", str(CHUNK), "--no-progress", "--out", str(out), *extra]


def test_ctrl_c_keeps_chunks_and_resume_completes_the_same_plan(tmp_path):
    out = tmp_path / "d"
    p = subprocess.Popen(_cmd(out), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(ds.chunk_indices(out) if out.exists() else []) < 2:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    kept = ds.chunk_indices(out)
    assert p.returncode == 130, err
    assert "--resume" in err and 2 <= len(kept) < N // CHUNK
    # without --resume the folder is not overwritten
    again = subprocess.run(_cmd(out), capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert ds.chunk_indices(out)[: len(kept)] == kept
    done = subprocess.run(_cmd(out, "--resume", "--json"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["samples"] == N
    d = ds.load(out)
    np.testing.assert_array_equal(d.samples.index, np.arange(N))
    np.testing.assert_allclose(d.samples.volts, Plan(PlanConfig(n=N, seed=4)).rows(0, N), atol=2e-3)
    assert d.meta["complete"]
    assert d.meta["board"]["device"]  # the simulated device's identity is recorded
    # the virtual device's measured noise floor is that of the simulator (about 1.4 nA)
    assert 0.5 < d.references.noise_floor_na() < 3.0
    # a resumed run with another plan seed is refused and nothing is lost
    wrong = subprocess.run([a if a != "4" else "5" for a in _cmd(out, "--resume")], capture_output=True,
                           text=True, timeout=60)
    assert wrong.returncode == 2 and "plan" in wrong.stderr
    assert len(ds.load(out).samples) == N
