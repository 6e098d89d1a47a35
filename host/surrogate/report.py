"""Plots and a text summary for a surrogate training report."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plots(stem: Path, history: list[dict[str, float]], measured: np.ndarray, predicted: np.ndarray) -> list[Path]:
    """Write <stem>_fit.png (predicted vs measured, error histogram) and <stem>_learning.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = np.asarray(measured, np.float64)
    predicted = np.asarray(predicted, np.float64)
    err = predicted - measured
    files = []
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
    k = np.random.default_rng(0).permutation(len(measured))[:20000]
    ax[0].scatter(measured[k], predicted[k], s=1, alpha=0.3)
    lim = [float(measured.min()), float(measured.max())]
    ax[0].plot(lim, lim, "k--", lw=0.8)
    ax[0].set_xlabel("measured current (nA)")
    ax[0].set_ylabel("surrogate prediction (nA)")
    ax[0].set_title(f"test: RMSE {np.sqrt(np.mean(err ** 2)):.3f} nA")
    ax[1].hist(err, bins=200, range=tuple(np.percentile(err, [0.1, 99.9])))
    ax[1].set_xlabel("prediction error (nA)")
    ax[1].set_ylabel("samples")
    fig.tight_layout()
    files.append(Path(f"{stem}_fit.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    if history:
        fig, ax = plt.subplots(figsize=(6, 4))
        ep = [h["epoch"] for h in history]
        ax.semilogy(ep, [h["train_rmse_na"] for h in history], label="train")
        ax.semilogy(ep, [h["val_rmse_na"] for h in history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("RMSE (nA)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        files.append(Path(f"{stem}_learning.png"))
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


def curve_plot(path: Path, result: dict[str, Any]) -> Path:
    """Log-log plot of test RMSE against training-set size, with the noise floor."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog([r["train_samples"] for r in rows], [r["test_rmse_na"] for r in rows], "o-", label="test RMSE")
    ax.axhline(result["noise_floor_na"], color="k", ls="--", lw=0.8, label="noise floor")
    ax.axhline(1.5 * result["noise_floor_na"], color="gray", ls=":", lw=0.8, label="1.5 x noise floor")
    ax.set_xlabel("training samples")
    ax.set_ylabel("test RMSE (nA)")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def summary(rep: dict[str, Any]) -> str:
    lines = [f"surrogate written to {rep['model']} ({rep['epochs']} epochs, best {rep['best_epoch']}, "
             f"{rep['stopped']}, {rep['wall_s']} s on {rep['device']})"]
    for k in ("train", "val", "test"):
        if f"{k}_rmse_na" in rep:
            lines.append(f"  {k:5s} RMSE {rep[f'{k}_rmse_na']:.3f} nA = {rep[f'{k}_rmse_pct_range']:.3f} % of range")
    lines.append(f"  noise floor {rep['noise_floor_na']:.3f} nA, drift {rep['drift_na']:.3f} nA")
    if "test_rmse_over_noise" in rep:
        lines.append(f"  test RMSE / noise floor = {rep['test_rmse_over_noise']:.2f}")
    return "\n".join(lines)
