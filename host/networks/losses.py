"""Losses per trial: each returns [T], so a trial-batched model's summed loss trains every trial alone."""
from __future__ import annotations

import torch
from torch import nn


def bce_per_trial(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy from logits [T, B] and targets [T|1, B] in {0, 1}: loss per trial [T]."""
    target = target.expand_as(logits).to(logits.dtype)
    return nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=1)


def neg_fisher_per_trial(out: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative Fisher criterion -(mu1 - mu0)^2 / (var1 + var0) of outputs [T, B], labels [T|1, B]: [T]."""
    y = target.expand_as(out).to(out.dtype)
    n1 = y.sum(dim=1)
    n0 = (1 - y).sum(dim=1)
    if torch.any(n1 < 1) or torch.any(n0 < 1):
        raise ValueError("each trial needs samples of both classes for the Fisher criterion")
    mu1 = (out * y).sum(dim=1) / n1
    mu0 = (out * (1 - y)).sum(dim=1) / n0
    var1 = (((out - mu1[:, None]) ** 2) * y).sum(dim=1) / n1
    var0 = (((out - mu0[:, None]) ** 2) * (1 - y)).sum(dim=1) / n0
    return -((mu1 - mu0) ** 2) / (var1 + var0 + eps)


def cross_entropy_per_trial(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy from logits [T, B, C] and class indices [T|1, B] (or [B]): mean loss per trial [T]."""
    if logits.dim() != 3:
        raise ValueError(f"expected logits [T, B, C], got {tuple(logits.shape)}")
    t, b, c = logits.shape
    target = target.reshape(-1, b).expand(t, b).long()
    if torch.any(target < 0) or torch.any(target >= c):
        raise ValueError(f"class indices must be in 0..{c - 1}")
    logp = torch.log_softmax(logits, dim=-1)
    return -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).mean(dim=1)
