"""Training many independent trials as one tensor program: the trial-wise optimiser and chunking."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn


class TrialAdam:
    """Adam over parameters whose first dimension is the trial; trials can be dropped mid-run.

    The loss of a trial-batched model is a sum over trials, so every trial gets exactly the
    gradient (and the Adam state) it would get alone. ``keep(idx)`` drops solved or abandoned
    trials from the model (its ``keep_trials``) and from the moment estimates together.
    """

    def __init__(self, model: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.model, self.lr, self.betas, self.eps = model, float(lr), betas, eps
        self.t = 0
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for name, p in self.model.named_parameters():
            if p.grad is None:
                continue
            g = p.grad
            m = self.m.get(name)
            if m is None:
                m = self.m[name] = torch.zeros_like(p)
                self.v[name] = torch.zeros_like(p)
            v = self.v[name]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)

    @torch.no_grad()
    def keep(self, idx: torch.Tensor) -> None:
        self.model.keep_trials(idx)
        for d in (self.m, self.v):
            for k in list(d):
                d[k] = d[k][idx].clone()


def trial_chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive chunks of at most `size` trials out of n."""
    for a in range(0, n, size):
        yield a, min(n, a + size)
