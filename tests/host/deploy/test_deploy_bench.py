"""bench/deploy_bench.py runs side by side on a small model and reports its ratios."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_json(small_model) -> None:
    model, data = small_model
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "deploy_bench.py"), "--model", str(model), "--data", str(data),
                        "--rounds", "1", "--latency-samples", "10", "--batch", "16", "--json"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for k in ("core_b1_us", "ort_b1_us", "speedup_b1_vs_ort", "speedup_dataset_1t_vs_ort",
              "speedup_dataset_best_vs_best_ort"):
        assert res[k] > 0, k
    assert res["argmax_agreement"] == 1.0
