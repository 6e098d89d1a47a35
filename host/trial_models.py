"""Trial-batched classifiers on two inputs: one DNPU, or a small neural network, T copies at once.

Both expose the same interface so the capacity and gate experiments train them identically:

    model(x [B, 2]) -> raw output [T, B]        (nA for a DNPU, a unitless activation for a NN)
    model.penalty() -> [T]                        (L1 outside the electrode ranges; 0 for a NN)
    model.decision                                batch norm with affine + logistic, per trial
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from host.dnpu_modules import DecisionNode, DNPULayer, InputTransform


class DNPUClassifier(nn.Module):
    """One DNPU with its inputs on two data electrodes (volts passed through unchanged)."""

    def __init__(self, surrogate: nn.Module, ranges_v: np.ndarray, trials: int,
                 data_electrodes: Sequence[int] = (1, 2), noise_std_na: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        r = np.asarray(ranges_v, dtype=np.float64)
        de = list(data_electrodes)
        # identity transform: data are volts already inside the data electrodes' range
        lo, hi = float(r[de, 0].max()), float(r[de, 1].min())
        self.dnpu = DNPULayer(surrogate, r, 1, de, trials=trials, transform=InputTransform(lo, hi, clip=True),
                              noise_std_na=noise_std_na, generator=generator)
        # an identity map needs equal ranges on both data electrodes
        if not np.allclose(r[de, 0], lo) or not np.allclose(r[de, 1], hi):
            raise ValueError("the data electrodes must share one range to take volts unchanged")
        self.decision = DecisionNode(trials)

    @property
    def trials(self) -> int:
        return self.dnpu.trials

    def set_noise(self, std_na: float) -> None:
        self.dnpu.noise_std_na = float(std_na)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dnpu(x.unsqueeze(1))[..., 0]  # [T, B]

    def penalty(self) -> torch.Tensor:
        return self.dnpu.out_of_range_penalty()

    def solution(self) -> np.ndarray:
        """Control voltages [T, 5]."""
        return self.dnpu.control.detach().cpu().numpy()[:, 0, :]


class NNClassifier(nn.Module):
    """2 -> h logistic hidden units -> 1, T independent copies; inputs standardised by `scale`."""

    def __init__(self, hidden: int, trials: int, scale: float = 1.0, noise_std: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        g = generator
        self.w1 = nn.Parameter(torch.randn(trials, 2, hidden, generator=g) * (1.0 / np.sqrt(2)))
        self.b1 = nn.Parameter(torch.randn(trials, 1, hidden, generator=g) * 0.5)
        self.w2 = nn.Parameter(torch.randn(trials, hidden, 1, generator=g) * (1.0 / np.sqrt(hidden)))
        self.scale = float(scale)
        self.noise_std = float(noise_std)
        self.decision = DecisionNode(trials)

    @property
    def trials(self) -> int:
        return int(self.w1.shape[0])

    def set_noise(self, std: float) -> None:
        self.noise_std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(torch.matmul(x.unsqueeze(0) * self.scale, self.w1) + self.b1)  # [T, B, h]
        out = torch.matmul(h, self.w2)[..., 0]
        if self.training and self.noise_std > 0:
            out = out + self.noise_std * torch.randn_like(out)
        return out

    def penalty(self) -> torch.Tensor:
        return torch.zeros(self.trials, device=self.w1.device)
