"""Capacity (empirical VC dimension): can a system realise every labelling of N fixed points?

For N = 4..10 the first N of the paper's ten points (volts on e1, e2) get all 2^N labellings;
each non-constant labelling is trained (BCE through a batch-norm + logistic decision node, Adam
lr 0.03, betas (0.995, 0.999), 1500 full-batch epochs) for up to 15 attempts, with output noise
whose variance shrinks per attempt, sigma_{n+1}^2 = (1 - (n+1)/15) sigma_n^2. All labellings of an
attempt train at once as one batched tensor program (trial dimension T).

C_N is the share of the 2^N labellings found (the two constant ones count as found). A labelling
counts as found when the trained system's noise-free output separates the two classes (class
margin > 0, control voltages clipped into their ranges): the batch-norm + logistic decision node
is monotonic in that output, so it realises the labelling with its threshold in the gap. Because a
labelling "found" with a class margin below the measurement noise would not survive on a device,
the margin (gap between the classes' output ranges) is recorded and a noise-robust C_N (found
with margin above the noise RMS) is reported beside the paper's count.

Speed: trials leave the batch once their margin reaches a goal or stops improving, so the
1,500-epoch budget is spent only on the labellings that need it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from host.experiments.capacity_config import CAPACITY_POINTS_V, CapacityConfig, config_for  # noqa: F401 (re-exported)
from host.experiments.data_electrodes import PAPER_DATA_ELECTRODES  # noqa: F401 (the capacity's default)
from host.networks.losses import bce_per_trial

def labellings(n: int) -> np.ndarray:
    """All non-constant binary labellings of n points, [2^n - 2, n] of {0, 1}."""
    codes = np.arange(1, 2 ** n - 1)
    return ((codes[:, None] >> np.arange(n)[None, :]) & 1).astype(np.float32)


def searched_labellings(cfg: CapacityConfig, n: int) -> np.ndarray:
    """The labellings of n points a search trains: the first half of labellings(n) when each
    complement gets its partner's result (cfg.use_complements, mirrored by with_complements)."""
    labs = labellings(n)
    return labs[:len(labs) // 2] if cfg.use_complements else labs


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


@dataclass
class AttemptResult:
    """One attempt for T labellings: separable ever, best class margin, its solution, epochs run."""

    found: torch.Tensor         # [T] bool: margin > 0 at some check
    margin: torch.Tensor        # [T] best margin seen (nA for a DNPU)
    epochs: torch.Tensor        # [T] epochs trained before the trial stopped
    solution: np.ndarray | None  # [T, ...] the parameters at the best margin (DNPU: control voltages)


@torch.no_grad()
def clean_margins(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class margin per trial, float32, noise-free, with the control voltages clipped into range."""
    saved = None
    if hasattr(model, "dnpu"):
        saved = model.dnpu.control.detach().clone()
        model.dnpu.clip_controls()
    was = model.training
    model.eval()
    out = model(x).float()
    model.train(was)
    if saved is not None:
        model.dnpu.control.copy_(saved)
    return margins(out, labels)


def train_labellings(make_model: Callable[[int, torch.Generator], nn.Module], x: torch.Tensor,
                     labels: torch.Tensor, cfg: CapacityConfig, noise_std: float,
                     gen: torch.Generator) -> AttemptResult:
    """Train one attempt for every labelling (row of `labels`) as one batched program.

    BCE through the decision node plus alpha times the L1 range penalty; Adam per trial. A trial
    leaves the batch when its margin reaches cfg.margin_goal or stops improving (cfg.patience)."""
    from host.networks.trials import TrialAdam

    t_all = labels.shape[0]
    model = make_model(t_all, gen)
    model.set_noise(noise_std)
    opt = TrialAdam(model, cfg.lr, cfg.betas)
    model.train()
    active = torch.arange(t_all)
    best = torch.full((t_all,), -float("inf"))
    stale = torch.zeros(t_all, dtype=torch.int64)
    epochs = torch.zeros(t_all, dtype=torch.int64)
    sol = model.solution() if hasattr(model, "solution") else None
    lab = labels
    for ep in range(1, cfg.epochs + 1):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            out = model(x)
        loss = bce_per_trial(model.decision.logits(out.float()), lab).sum() + cfg.alpha * model.penalty().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ep % cfg.check_every and ep != cfg.epochs:
            continue
        m = clean_margins(model, x, lab)
        prev = best[active]
        better = (m > prev + cfg.min_delta) | ((m > 0) & (prev <= 0))   # crossing into separable counts
        if sol is not None and bool(better.any()):
            cur = model.solution()
            sol[active[better].numpy()] = cur[better.numpy()]
        best[active] = torch.where(better, m, best[active])
        stale[active] = torch.where(better, 0, stale[active] + cfg.check_every)
        epochs[active] = ep
        done = (best[active] >= cfg.margin_goal) | (stale[active] >= cfg.patience)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            opt.keep(keep)
            active, lab = active[keep], lab[keep]
    if sol is not None and hasattr(model, "dnpu"):      # the margins were measured with clipped controls
        sol = np.clip(sol, model.dnpu.ctrl_lo.numpy(), model.dnpu.ctrl_hi.numpy())
    return AttemptResult(best > 0, best, epochs, sol)


@dataclass
class CapacityN:
    """Everything one N produced: the row for the table and the solutions for the board."""

    n: int
    labels: np.ndarray          # [L, n] the non-constant labellings
    found: np.ndarray           # [L] bool
    margin: np.ndarray          # [L] best margin over the attempts run
    attempts: np.ndarray        # [L] attempts used
    solution: np.ndarray | None  # [L, ...] best solution per labelling
    wall_s: float
    noise_rms: float

    def row(self) -> dict[str, Any]:
        total = 2 ** self.n
        n_found = int(self.found.sum()) + 2
        robust = int((self.margin[self.found] > self.noise_rms).sum()) + 2
        fm = self.margin[self.found]
        return {
            "n": self.n, "labellings": total, "found": n_found, "capacity": n_found / total,
            "robust_found": robust, "robust_capacity": robust / total,
            "median_margin": float(np.median(fm)) if fm.size else float("nan"),
            "min_margin": float(np.min(fm)) if fm.size else float("nan"),
            "mean_attempts": float(self.attempts.mean()),
            "failed_labellings": [int(i) + 1 for i in np.nonzero(~self.found)[0]],
            "wall_s": round(self.wall_s, 2),
        }


def search(make_model: Callable[[int, torch.Generator], nn.Module], n: int, labs: torch.Tensor,
           cfg: CapacityConfig, gen: torch.Generator,
           progress: Callable[[str], None] | None = None, points: np.ndarray = CAPACITY_POINTS_V) -> CapacityN:
    """Up to cfg.attempts attempts (shrinking noise) for each labelling in labs [L, n] of the
    first n of `points` (the paper's, or those placed on another chip's data electrodes)."""
    t0 = time.monotonic()
    x = torch.as_tensor(np.asarray(points)[:n], dtype=torch.float32)
    L = labs.shape[0]
    found = torch.zeros(L, dtype=torch.bool)
    margin = torch.full((L,), -float("inf"))
    attempts_used = torch.zeros(L, dtype=torch.int64)
    solution: np.ndarray | None = None
    for a, std in enumerate(noise_schedule(cfg.noise_std0, cfg.attempts)):
        # searched again: labellings not found yet (optionally: found with a margin inside the noise)
        redo = ~found | (margin <= cfg.noise_rms) if cfg.research_non_robust else ~found
        todo = torch.nonzero(redo).flatten()
        if todo.numel() == 0:
            break
        r = train_labellings(make_model, x, labs[todo], cfg, std, gen)
        attempts_used[todo] += 1
        better = r.margin > margin[todo]
        if r.solution is not None:
            if solution is None:
                solution = np.zeros((L,) + r.solution.shape[1:], dtype=r.solution.dtype)
            solution[todo[better].numpy()] = r.solution[better.numpy()]
        margin[todo] = torch.maximum(margin[todo], r.margin)
        found[todo] |= r.found
        if progress:
            progress(f"N={n} attempt {a + 1}: {int(found.sum())}/{L} found")
    return CapacityN(n, labs.numpy().astype(np.int64), found.numpy(), margin.numpy(), attempts_used.numpy(),
                     solution, time.monotonic() - t0, cfg.noise_rms)


def with_complements(r: CapacityN) -> CapacityN:
    """Results for the labellings 1..2^(n-1)-1 extended to all: the complement of row i is row 2^n-3-i."""
    n = r.n
    full = labellings(n).astype(np.int64)
    half = len(full) // 2
    if r.labels.shape[0] != half or not np.array_equal(r.labels, full[:half]):
        raise ValueError("expected the first half of labellings(n)")
    def mirror(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, a[::-1]])
    return CapacityN(n, full, mirror(r.found), mirror(r.margin), mirror(r.attempts),
                     None if r.solution is None else mirror(r.solution), r.wall_s, r.noise_rms)


def capacity_runs(make_model: Callable[[int, torch.Generator], nn.Module], cfg: CapacityConfig,
                  progress: Callable[[str], None] | None = None,
                  points: np.ndarray = CAPACITY_POINTS_V) -> list[CapacityN]:
    out = []
    for n in range(cfg.n_min, cfg.n_max + 1):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + n)
        torch.manual_seed(cfg.seed * 1000 + n)      # the noise injected while training
        r = search(make_model, n, torch.as_tensor(searched_labellings(cfg, n)), cfg, gen, progress, points)
        out.append(with_complements(r) if cfg.use_complements else r)
    return out


def capacity(make_model: Callable[[int, torch.Generator], nn.Module], cfg: CapacityConfig,
             progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """C_N for N = n_min..n_max of one system; a row per N."""
    return [r.row() for r in capacity_runs(make_model, cfg, progress)]


def vc_estimate(rows: list[dict[str, Any]], key: str = "capacity") -> int:
    """Largest N such that every N' <= N in the table has C_N' = 1 (0 if none)."""
    best = 0
    for r in sorted(rows, key=lambda r: r["n"]):
        if r[key] < 1.0:
            break
        best = r["n"]
    return best
