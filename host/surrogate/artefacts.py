"""What training leaves behind: the surrogate's ONNX file with its dnpu.* metadata, the JSON
report beside it and the training plots, written in one place for `python -m host.surrogate
train` and for the farm's training of one surrogate per device (`python -m host.farm train`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from host.sample import store as ds
from host.surrogate.train import TrainConfig, TrainResult, config_json


def check_same_device(a: ds.Dataset, b: ds.Dataset) -> None:
    """Refuse a test set measured on another board/device or in other electrode ranges."""
    from host.sample.measure import board_fingerprint
    fa, fb = board_fingerprint(a.meta.get("board", {})), board_fingerprint(b.meta.get("board", {}))
    if fa != fb:
        raise ds.DatasetError(f"train and test data come from different boards/devices: {fa} vs {fb}")
    if not np.allclose(a.ranges, b.ranges):
        raise ds.DatasetError("train and test data were sampled in different electrode ranges")


def rmse(p: np.ndarray, y: np.ndarray) -> float:
    d = np.asarray(p, np.float64) - np.asarray(y, np.float64)
    return float(np.sqrt(np.mean(d * d)))


def write_trained(res: TrainResult, cfg: TrainConfig, train: ds.Dataset, test: ds.Dataset | None, out: Path,
                  *, n: int, plots: bool = True) -> dict[str, Any]:
    """Export `res` (fitted on the first `n` samples of `train`) to `out` with its metadata, write
    `out`.json (the report, returned) and, with `plots`, the fit and learning-curve plots."""
    from host.surrogate import report
    from host.surrogate.torch_model import export_onnx, predict

    cur = train.samples.current_na[:n].astype(np.float64)
    out_lo, out_hi = float(np.min(cur)), float(np.max(cur))
    span = out_hi - out_lo
    noise = train.references.noise_floor_na()
    pred_train = predict(res.model, train.samples.volts[:n].astype(np.float32))
    rep: dict[str, Any] = {
        "model": str(out),
        "architecture": {"hidden": cfg.hidden, "layers": cfg.layers, "activation": "relu"},
        "train_config": config_json(cfg),
        "data": {"train": str(train.path), "train_samples": n, "test": str(test.path) if test else None,
                 "test_samples": len(test.samples) if test else 0, "board": train.meta.get("board", {})},
        "output_range_na": [out_lo, out_hi],
        "noise_floor_na": noise,
        "drift_na": train.references.drift_na(),
        "train_rmse_na": rmse(pred_train, cur),
        "val_rmse_na": min(h["val_rmse_na"] for h in res.history) if res.history else float("nan"),
        "epochs": len(res.history), "best_epoch": res.best_epoch, "stopped": res.stopped,
        "wall_s": round(res.wall_s, 1), "device": res.device,
    }
    test_pred = None
    if test is not None:
        test_pred = predict(res.model, test.samples.volts)
        rep["test_rmse_na"] = rmse(test_pred, test.samples.current_na)
        rep["test_noise_floor_na"] = test.references.noise_floor_na()
    for k in ("train_rmse_na", "val_rmse_na", "test_rmse_na"):
        if k in rep:
            rep[k.replace("_na", "_pct_range")] = 100.0 * rep[k] / span
    if test is not None and noise > 0:          # NaN (no references) and 0 (a noise-free board) give no ratio
        rep["test_rmse_over_noise"] = rep["test_rmse_na"] / noise
    meta = {
        "electrode_ranges_v": train.ranges.tolist(),
        "output_range_na": [out_lo, out_hi],
        "amplification": 1.0,
        "noise_floor_na": noise,
        "test_rmse_na": rep.get("test_rmse_na"),
        "source": {"board": train.meta.get("board", {}), "train_data": str(train.path),
                   "test_data": str(test.path) if test else None, "train_samples": n},
        "architecture": rep["architecture"],
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(res.model, out, meta)
    out.with_suffix(".json").write_text(json.dumps(rep, indent=2) + "\n")
    if plots:
        report.plots(out.with_suffix(""), res.history, test.samples.current_na if test is not None else cur,
                     test_pred if test_pred is not None else pred_train)
    return rep
