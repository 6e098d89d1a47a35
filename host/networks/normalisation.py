"""Standardising node outputs between layers, and the logistic decision node, per trial."""
from __future__ import annotations

import torch
from torch import nn


class RunningStandardisation(nn.Module):
    """Per-trial, per-node standardisation with stored statistics (batch statistics while training).

    x [T, B, K] -> (x - mean) / std; running statistics are kept per trial and node and used in
    eval mode, so a trained network evaluates sample by sample with fixed numbers.
    """

    def __init__(self, trials: int, n_nodes: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(trials, 1, n_nodes))
        self.register_buffer("var", torch.ones(trials, 1, n_nodes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:   # autocast: statistics in float32
            x = x.float()
        if self.training:
            m = x.mean(dim=1, keepdim=True)
            v = x.var(dim=1, keepdim=True, unbiased=False)
            with torch.no_grad():
                self.mean.lerp_(m.detach().expand_as(self.mean), self.momentum)
                self.var.lerp_(v.detach().expand_as(self.var), self.momentum)
        else:
            m, v = self.mean, self.var
        return (x - m) / torch.sqrt(v + self.eps)

    @torch.no_grad()
    def keep_trials(self, idx: torch.Tensor) -> None:
        self.mean = self.mean[idx].clone()
        self.var = self.var[idx].clone()

    @torch.no_grad()
    def set_stats(self, x: torch.Tensor) -> None:
        """Store the exact statistics of x [T, B, K] (e.g. over the whole training set, noise-free)."""
        self.mean = x.mean(dim=1, keepdim=True).clone()
        self.var = x.var(dim=1, keepdim=True, unbiased=False).clone()

    def std(self) -> torch.Tensor:
        """The standard deviation used in eval mode, [T, 1, K]."""
        return torch.sqrt(self.var + self.eps)


class DecisionNode(nn.Module):
    """Batch norm with affine + logistic, per trial: x [T, B] (one output per trial) -> p [T, B]."""

    def __init__(self, trials: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.norm = RunningStandardisation(trials, 1, momentum)
        self.gain = nn.Parameter(torch.ones(trials, 1))
        self.bias = nn.Parameter(torch.zeros(trials, 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.unsqueeze(-1)).squeeze(-1) * self.gain + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    @torch.no_grad()
    def keep_trials(self, idx: torch.Tensor) -> None:
        self.norm.keep_trials(idx)
        self.gain = nn.Parameter(self.gain.detach()[idx].clone())
        self.bias = nn.Parameter(self.bias.detach()[idx].clone())
