"""Capacity (empirical VC dimension): can a system realise every labelling of N fixed points?

For N = 4..10 the first N of the paper's ten points (volts on e1, e2) get all 2^N labellings;
each non-constant labelling is trained (BCE through a batch-norm + logistic decision node, Adam
lr 0.03, betas (0.995, 0.999), 1500 full-batch epochs) for up to 15 attempts, with output noise
whose variance shrinks per attempt, sigma_{n+1}^2 = (1 - (n+1)/15) sigma_n^2. All labellings of an
attempt train at once as one batched tensor program (trial dimension T).

C_N is the share of the 2^N labellings found (the two constant ones count as found). Because a
labelling "found" with a class margin below the measurement noise would not survive on a device,
the margin (gap between the classes' output ranges) is recorded and a noise-robust C_N (found
with margin above the noise RMS) is reported beside the paper's count.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from host.dnpu_modules import bce_per_trial

#: The paper's capacity test points, volts on (e1, e2).
CAPACITY_POINTS_V = np.array([(-0.7, -0.7), (-0.7, 0.5), (0.5, -0.7), (0.5, 0.5), (-0.35, 0.0),
                              (0.25, 0.0), (0.0, -0.35), (0.0, 0.25), (-1.1, 0.35), (0.35, -1.1)])


@dataclass(frozen=True)
class CapacityConfig:
    n_min: int = 4
    n_max: int = 10
    attempts: int = 15
    epochs: int = 1500
    lr: float = 0.03
    betas: tuple[float, float] = (0.995, 0.999)
    alpha: float = 1.0              # L1 penalty on control voltages outside their ranges
    noise_std0: float = 1.4         # output noise std of the first attempt (the surrogate's test RMSE)
    noise_rms: float = 1.4          # measurement noise that a robust solution must beat (nA)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_min <= self.n_max <= len(CAPACITY_POINTS_V):
            raise ValueError(f"need 1 <= n_min <= n_max <= {len(CAPACITY_POINTS_V)}")
        if self.attempts < 1 or self.epochs < 1:
            raise ValueError("attempts and epochs must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def labellings(n: int) -> np.ndarray:
    """All non-constant binary labellings of n points, [2^n - 2, n] of {0, 1}."""
    codes = np.arange(1, 2 ** n - 1)
    return ((codes[:, None] >> np.arange(n)[None, :]) & 1).astype(np.float32)


def noise_schedule(std0: float, attempts: int) -> list[float]:
    """sigma_{n+1}^2 = (1 - (n+1)/attempts) sigma_n^2, starting at std0."""
    var, out = std0 ** 2, []
    for a in range(attempts):
        out.append(float(np.sqrt(max(var, 0.0))))
        var *= 1.0 - (a + 1) / attempts
    return out


def margins(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gap between the two classes' output ranges per trial (negative: they overlap). [T]"""
    big = torch.finfo(out.dtype).max
    y = labels.bool()
    min1 = torch.where(y, out, big).amin(dim=1)
    max1 = torch.where(y, out, -big).amax(dim=1)
    min0 = torch.where(~y, out, big).amin(dim=1)
    max0 = torch.where(~y, out, -big).amax(dim=1)
    return torch.maximum(min1 - max0, min0 - max1)


def train_labellings(make_model: Callable[[int, torch.Generator], nn.Module], x: torch.Tensor,
                     labels: torch.Tensor, cfg: CapacityConfig, noise_std: float,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """Train one attempt for each labelling (row of `labels`); returns (found [T], margin [T], model)."""
    model = make_model(labels.shape[0], gen)
    model.set_noise(noise_std)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    model.train()
    for _ in range(cfg.epochs):
        out = model(x)
        loss = bce_per_trial(model.decision.logits(out), labels).sum() + cfg.alpha * model.penalty().sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return evaluate(model, x, labels) + (model,)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-free: all points right (decision over the full batch) and the class margin, per trial."""
    noise = getattr(model, "noise_std", None) if not hasattr(model, "dnpu") else model.dnpu.noise_std_na
    model.set_noise(0.0)
    model.train()  # the decision node standardises over the N points, as in training
    out = model(x)
    ok = ((model.decision.logits(out) > 0).float() == labels).all(dim=1)
    model.set_noise(noise or 0.0)
    return ok, margins(out, labels)


def capacity(make_model: Callable[[int, torch.Generator], nn.Module], cfg: CapacityConfig,
             progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """C_N for N = n_min..n_max of one system; a row per N."""
    rows = []
    stds = noise_schedule(cfg.noise_std0, cfg.attempts)
    for n in range(cfg.n_min, cfg.n_max + 1):
        t0 = time.monotonic()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + n)
        x = torch.as_tensor(CAPACITY_POINTS_V[:n], dtype=torch.float32)
        labs = torch.as_tensor(labellings(n))
        found = torch.zeros(labs.shape[0], dtype=torch.bool)
        margin = torch.full((labs.shape[0],), float("nan"))
        attempts_used = torch.zeros(labs.shape[0], dtype=torch.int32)
        for a, std in enumerate(stds):
            todo = torch.nonzero(~found).flatten()
            if todo.numel() == 0:
                break
            ok, m, _ = train_labellings(make_model, x, labs[todo], cfg, std, gen)
            attempts_used[todo] += 1
            found[todo[ok]] = True
            margin[todo[ok]] = m[ok]
            if progress:
                progress(f"N={n} attempt {a + 1}: {int(found.sum())}/{labs.shape[0]} found")
        total = 2 ** n
        n_found = int(found.sum()) + 2
        robust = int((margin[found] > cfg.noise_rms).sum()) + 2
        fm = margin[found].numpy()
        rows.append({
            "n": n, "labellings": total, "found": n_found, "capacity": n_found / total,
            "robust_found": robust, "robust_capacity": robust / total,
            "median_margin": float(np.median(fm)) if fm.size else float("nan"),
            "min_margin": float(np.min(fm)) if fm.size else float("nan"),
            "mean_attempts": float(attempts_used.float().mean()),
            "failed_labellings": [int(i) + 1 for i in torch.nonzero(~found).flatten().tolist()],
            "wall_s": round(time.monotonic() - t0, 2),
        })
    return rows


def vc_estimate(rows: list[dict[str, Any]], key: str = "capacity") -> int:
    """Largest N such that every N' <= N in the table has C_N' = 1 (0 if none)."""
    best = 0
    for r in sorted(rows, key=lambda r: r["n"]):
        if r[key] < 1.0:
            break
        best = r["n"]
    return best
