"""Torch modules for learning DNPU control voltages through a frozen surrogate.

Every module carries a leading *trial* dimension T: T independent copies (trials, attempts,
labellings) are trained at once as one batched tensor program. Shapes, throughout:

    data into a DNPU layer     [T, B, K, D]   (or [B, K, D], broadcast over trials)
    control voltages           [T, K, C]      C = 7 - D learnable electrodes per node
    DNPU layer output          [T, B, K]      nA

with B samples, K nodes, D data electrodes per node. A plain single network is T = 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

N_ELECTRODES = 7


@dataclass(frozen=True)
class InputTransform:
    """Affine map of data from [in_lo, in_hi] into each data electrode's range, optional clipping."""

    in_lo: float = -1.0
    in_hi: float = 1.0
    clip: bool = True


def register_electrode_ranges(module: nn.Module, ranges_v: np.ndarray, data: Sequence[int],
                              ctrl: Sequence[int]) -> None:
    """Buffers of a DNPU module: `ranges` [7, 2] and the (lo, hi) of its data and control
    electrodes (`data_lo`, `data_hi`, `ctrl_lo`, `ctrl_hi`), float32, moved with the module."""
    r = torch.as_tensor(np.asarray(ranges_v), dtype=torch.float32)
    module.register_buffer("ranges", r)
    module.register_buffer("data_lo", r[list(data), 0].clone())
    module.register_buffer("data_hi", r[list(data), 1].clone())
    module.register_buffer("ctrl_lo", r[list(ctrl), 0].clone())
    module.register_buffer("ctrl_hi", r[list(ctrl), 1].clone())


class DNPULayer(nn.Module):
    """K DNPU nodes, each a (time-multiplexed) device with its own learnable control voltages.

    surrogates: one frozen surrogate (volts [n,7] -> nA [n,1]) shared by all nodes (one device,
    time-multiplexed), or one per node.
    """

    def __init__(self, surrogates: nn.Module | Sequence[nn.Module], ranges_v: np.ndarray, n_nodes: int,
                 data_electrodes: Sequence[int], trials: int = 1, transform: InputTransform = InputTransform(),
                 noise_std_na: float = 0.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        ranges = np.asarray(ranges_v, dtype=np.float64)
        if ranges.shape != (N_ELECTRODES, 2) or np.any(ranges[:, 0] >= ranges[:, 1]):
            raise ValueError(f"ranges_v must be 7 (lo, hi) pairs with lo < hi, got {ranges.tolist()}")
        data = [int(e) for e in data_electrodes]
        if len(set(data)) != len(data) or not data or any(not 0 <= e < N_ELECTRODES for e in data):
            raise ValueError(f"data_electrodes must be distinct indices in 0..6, got {list(data_electrodes)}")
        if n_nodes < 1 or trials < 1:
            raise ValueError("n_nodes and trials must be >= 1")
        ctrl = [e for e in range(N_ELECTRODES) if e not in data]
        if isinstance(surrogates, nn.Module):
            self.surrogates = nn.ModuleList([surrogates])
        else:
            self.surrogates = nn.ModuleList(list(surrogates))
            if len(self.surrogates) != n_nodes:
                raise ValueError(f"{len(self.surrogates)} surrogates for {n_nodes} nodes")
        for p in self.surrogates.parameters():
            p.requires_grad_(False)
        self.n_nodes, self.trials = n_nodes, trials
        self.data_electrodes, self.control_electrodes = tuple(data), tuple(ctrl)
        self.transform = transform
        self.noise_std_na = float(noise_std_na)
        #: inject the output noise in eval mode too (accuracy under noise, robustness selection)
        self.noise_in_eval = False
        register_electrode_ranges(self, ranges, data, ctrl)
        u = torch.rand(trials, n_nodes, len(ctrl), generator=generator)
        # initialised inside the ranges, away from the edges
        self.control = nn.Parameter(self.ctrl_lo + (0.1 + 0.8 * u) * (self.ctrl_hi - self.ctrl_lo))
        # 0/1 placement matrices: volts = data @ place_data + controls @ place_ctrl puts each value
        # on its electrode exactly (products with 1 and sums with 0), and costs a third of a
        # concatenation and a column gather, forward and backward, on the trial-batched tensors
        place = torch.eye(N_ELECTRODES)
        self.register_buffer("_place_data", place[list(data)].clone())
        self.register_buffer("_place_ctrl", place[ctrl].clone())

    def data_volts(self, x: torch.Tensor) -> torch.Tensor:
        """Map data [..., D] into the data electrodes' ranges (affine, then clip if configured)."""
        t = self.transform
        v = self.data_lo + (x - t.in_lo) * ((self.data_hi - self.data_lo) / (t.in_hi - t.in_lo))
        return torch.clamp(v, self.data_lo, self.data_hi) if t.clip else v

    def electrode_volts(self, x: torch.Tensor) -> torch.Tensor:
        """All 7 electrode voltages [T, B, K, 7] for data x [T|1, B, K, D]."""
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.shape[-1] != len(self.data_electrodes) or x.shape[-2] != self.n_nodes:
            raise ValueError(f"expected data [T, B, {self.n_nodes}, {len(self.data_electrodes)}], got {tuple(x.shape)}")
        vd = self.data_volts(x)
        t, b = max(vd.shape[0], self.trials), vd.shape[1]
        with torch.autocast(vd.device.type, enabled=False):   # volts stay float32 under bf16 autocast
            v = vd.float() @ self._place_data + (self.control.float() @ self._place_ctrl).unsqueeze(1)
        return v.expand(t, b, self.n_nodes, N_ELECTRODES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.electrode_volts(x)
        t, b, k, _ = v.shape
        if len(self.surrogates) == 1:
            out = self.surrogates[0](v.reshape(-1, N_ELECTRODES)).reshape(t, b, k)
        else:
            out = torch.stack([s(v[:, :, i].reshape(-1, N_ELECTRODES)).reshape(t, b)
                               for i, s in enumerate(self.surrogates)], dim=-1)
        if (self.training or self.noise_in_eval) and self.noise_std_na > 0:
            out = out + self.noise_std_na * torch.randn_like(out)
        return out

    @torch.no_grad()
    def keep_trials(self, idx: torch.Tensor) -> None:
        """Keep only the trials `idx` (a solved or abandoned trial stops costing compute)."""
        self.control = nn.Parameter(self.control.detach()[idx].clone())
        self.trials = int(self.control.shape[0])

    def out_of_range_penalty(self) -> torch.Tensor:
        """L1 distance of the control voltages outside their ranges, per trial [T]."""
        below = torch.relu(self.ctrl_lo - self.control)
        above = torch.relu(self.control - self.ctrl_hi)
        return (below + above).sum(dim=(1, 2))

    @torch.no_grad()
    def clip_controls(self) -> None:
        self.control.copy_(torch.maximum(torch.minimum(self.control, self.ctrl_hi), self.ctrl_lo))


class Standardise(nn.Module):
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
        self.norm = Standardise(trials, 1, momentum)
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


def map_to_range(z: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float, span_sigmas: float = 2.0,
                 clip: bool = True) -> torch.Tensor:
    """Map standardised values (-span..+span sigmas) linearly into [lo, hi], optionally clipped."""
    v = lo + (z + span_sigmas) * ((hi - lo) / (2 * span_sigmas))
    return torch.clamp(v, lo, hi) if clip else v


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


@torch.no_grad()
def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """A logistic neuron on one feature per trial: p = sigmoid(w * (x - mean)/std + b), fitted by Newton.

    x [T, B] (e.g. currents measured on a board), y [T|1, B] in {0, 1}. Returns (w, b) [T] on the
    per-trial standardised feature together with the standardisation: call ``logistic_logits``.
    A small L2 penalty on w keeps separable data from running to infinite weights.
    """
    xs = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, unbiased=False, keepdim=True) + 1e-9)
    y = y.expand_as(x).to(x.dtype)
    w = torch.zeros(x.shape[0], dtype=x.dtype)
    b = torch.zeros(x.shape[0], dtype=x.dtype)
    for _ in range(iters):
        p = torch.sigmoid(w[:, None] * xs + b[:, None])
        r = p - y
        gw = (r * xs).mean(dim=1) + l2 * w
        gb = r.mean(dim=1)
        s = p * (1 - p)
        hww = (s * xs * xs).mean(dim=1) + l2
        hwb = (s * xs).mean(dim=1)
        hbb = s.mean(dim=1) + 1e-9
        det = hww * hbb - hwb * hwb
        dw = (hbb * gw - hwb * gb) / det
        db = (hww * gb - hwb * gw) / det
        dw, db = dw.clamp(-5.0, 5.0), db.clamp(-5.0, 5.0)   # damped Newton: no overshoot from w = 0
        w, b = w - dw, b - db
        if float(torch.max(torch.abs(dw)).item()) < 1e-7 * (1 + float(torch.max(torch.abs(w)).item())):
            break
    return w, b


def logistic_logits(x: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits of new data x [T, B'] under a neuron fitted by ``fit_logistic`` on ref [T, B]."""
    m = ref.mean(dim=1, keepdim=True)
    s = ref.std(dim=1, unbiased=False, keepdim=True) + 1e-9
    return w[:, None] * (x - m) / s + b[:, None]
