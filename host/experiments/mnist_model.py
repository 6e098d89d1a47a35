"""Torch models of the MNIST experiment and their export to core.network layers.

Three kinds share one interface (``forward(x [B, 784]) -> logits [B, 10]``):

* ``DnpuClassifier``: Linear 784 -> K*D (optionally without bias) feeding K DNPU nodes with D
  data electrodes each. Each node maps its D features into its data electrodes' ranges,
  ``v = clip(z * half_range + mid_range, lo, hi)`` (so z in [-1, 1] spans the range), holds
  learnable control voltages on the other electrodes (projected back into their ranges after
  every step), evaluates the frozen surrogate and emits ``I * a_k + b_k`` with a learnable
  output scale and offset per node: the class logit.
* ``ReceptiveFieldNN``: the same linear layer feeding K small MLPs (D -> H -> H -> 1, ReLU), one
  per class, each seeing only its own D features: the neural-network baseline with the same
  receptive fields.
* ``LinearSoftmax``: 784 -> 10.

``to_layers(model)`` turns a trained DnpuClassifier into ``core.network`` layers (Linear,
DnpuLayer) for ``core.network_onnx.write_network``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from host.dnpu_modules import N_ELECTRODES, register_electrode_ranges

N_PIXELS = 784


@dataclass(frozen=True)
class ModelConfig:
    """What to build. kind: 'dnpu' | 'nn' | 'linear'."""

    kind: str = "dnpu"
    n_classes: int = 10
    data_electrodes: tuple[int, ...] = (0, 3, 4)
    bias: bool = False            # bias of the 784 -> K*D linear layer
    nn_hidden: int = 16           # ReceptiveFieldNN: width of its two hidden layers
    out_scale_init: float = 0.05  # DNPU: initial output scale (logit per nA)
    batchnorm: bool = True        # DNPU: batch-normalise the linear layer's outputs (folded into the nodes' input transform on export)
    span_sigmas: float = 2.0      # DNPU with batchnorm: +-span standard deviations initially span each electrode's range
    learn_mapping: bool = True    # DNPU: learnable per-node, per-electrode input scale and offset

    def __post_init__(self) -> None:
        if self.kind not in ("dnpu", "nn", "linear"):
            raise ValueError(f"kind must be 'dnpu', 'nn' or 'linear', got {self.kind!r}")
        d = self.data_electrodes
        if not d or len(set(d)) != len(d) or any(not 0 <= e < N_ELECTRODES for e in d):
            raise ValueError(f"data_electrodes must be distinct indices in 0..6, got {d}")


class DnpuClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig, surrogate: nn.Module, ranges_v: np.ndarray) -> None:
        super().__init__()
        ranges = np.asarray(ranges_v, dtype=np.float64)
        if ranges.shape != (N_ELECTRODES, 2) or np.any(ranges[:, 0] >= ranges[:, 1]):
            raise ValueError(f"ranges_v must be 7 (lo, hi) pairs with lo < hi, got {ranges.tolist()}")
        self.cfg = cfg
        k, data = cfg.n_classes, list(cfg.data_electrodes)
        ctrl = [e for e in range(N_ELECTRODES) if e not in data]
        self.data_electrodes, self.control_electrodes = tuple(data), tuple(ctrl)
        self.linear = nn.Linear(N_PIXELS, k * len(data), bias=cfg.bias)
        self.surrogate = surrogate
        for p in self.surrogate.parameters():
            p.requires_grad_(False)
        register_electrode_ranges(self, ranges, data, ctrl)
        self.register_buffer("_order", torch.argsort(torch.tensor(data + ctrl)))
        g = torch.Generator().manual_seed(1234)
        u = torch.rand(k, len(ctrl), generator=g)
        self.control = nn.Parameter(self.ctrl_lo + (0.25 + 0.5 * u) * (self.ctrl_hi - self.ctrl_lo))
        self.out_scale = nn.Parameter(torch.full((k,), float(cfg.out_scale_init)))
        self.out_bias = nn.Parameter(torch.zeros(k))
        self.norm = nn.BatchNorm1d(k * len(data), affine=False) if cfg.batchnorm else None
        half, mid = (self.data_hi - self.data_lo) / 2, (self.data_hi + self.data_lo) / 2
        s0 = half / cfg.span_sigmas if cfg.batchnorm else half
        s0, mid = s0.expand(k, len(data)).clone(), mid.expand(k, len(data)).clone()
        if cfg.learn_mapping:
            self.map_scale, self.map_offset = nn.Parameter(s0), nn.Parameter(mid)
        else:
            self.register_buffer("map_scale", s0)
            self.register_buffer("map_offset", mid)
        self.noise_std_na = 0.0

    def input_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, offset) [K, D] with v = z * scale + offset for the linear layer's output z,
        batch normalisation (eval statistics) folded in."""
        sc, off = self.map_scale, self.map_offset
        if self.norm is not None:
            k, d = sc.shape
            inv = torch.rsqrt(self.norm.running_var + self.norm.eps).view(k, d)
            mu = self.norm.running_mean.view(k, d)
            sc, off = sc * inv, off - sc * inv * mu
        return sc, off

    def pre_volts(self, x: torch.Tensor) -> torch.Tensor:
        """Data-electrode voltages before clipping [B, K, D]."""
        z = self.linear(x)
        if self.norm is not None:
            z = self.norm(z)
        z = z.view(x.shape[0], self.cfg.n_classes, len(self.data_electrodes))
        return z * self.map_scale + self.map_offset

    def currents(self, x: torch.Tensor) -> torch.Tensor:
        """Node currents in nA [B, K]."""
        vd = torch.clamp(self.pre_volts(x), self.data_lo, self.data_hi)
        b, k, _ = vd.shape
        vc = self.control.unsqueeze(0).expand(b, k, self.control.shape[-1])
        v = torch.cat([vd, vc], dim=-1).index_select(-1, self._order)
        out = self.surrogate(v.reshape(-1, N_ELECTRODES)).reshape(b, k)
        if self.training and self.noise_std_na > 0:
            out = out + self.noise_std_na * torch.randn_like(out)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.currents(x) * self.out_scale + self.out_bias

    def range_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Mean L1 distance (V) of the data voltages outside their ranges (before clipping)."""
        v = self.pre_volts(x)
        return (torch.relu(self.data_lo - v) + torch.relu(v - self.data_hi)).sum(-1).mean()

    @torch.no_grad()
    def project(self) -> None:
        """Control voltages back into their electrodes' ranges (after every optimiser step)."""
        if self.control.numel():
            self.control.copy_(torch.maximum(torch.minimum(self.control, self.ctrl_hi), self.ctrl_lo))


class ReceptiveFieldNN(nn.Module):
    """Linear 784 -> K*D, then per class an MLP D -> H -> H -> 1 on its own D features."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k, d, h = cfg.n_classes, len(cfg.data_electrodes), cfg.nn_hidden
        self.linear = nn.Linear(N_PIXELS, k * d, bias=cfg.bias)
        g = torch.Generator().manual_seed(4321)

        def init(*shape: int, fan_in: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g) * (2.0 / fan_in) ** 0.5)

        self.w1, self.b1 = init(k, d, h, fan_in=d), nn.Parameter(torch.zeros(k, h))
        self.w2, self.b2 = init(k, h, h, fan_in=h), nn.Parameter(torch.zeros(k, h))
        self.w3, self.b3 = init(k, h, fan_in=h), nn.Parameter(torch.zeros(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x).view(x.shape[0], self.cfg.n_classes, -1)
        h = torch.relu(torch.einsum("bkd,kdh->bkh", z, self.w1) + self.b1)
        h = torch.relu(torch.einsum("bkh,khg->bkg", h, self.w2) + self.b2)
        return torch.einsum("bkh,kh->bk", h, self.w3) + self.b3

    def project(self) -> None:
        pass


class LinearSoftmax(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.linear = nn.Linear(N_PIXELS, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def project(self) -> None:
        pass


def build(cfg: ModelConfig, surrogate: nn.Module | None = None, ranges_v: np.ndarray | None = None) -> nn.Module:
    if cfg.kind == "dnpu":
        if surrogate is None or ranges_v is None:
            raise ValueError("a DNPU classifier needs the surrogate and its electrode ranges")
        return DnpuClassifier(cfg, surrogate, ranges_v)
    if cfg.kind == "nn":
        return ReceptiveFieldNN(cfg)
    return LinearSoftmax(cfg)


def to_layers(model: DnpuClassifier) -> list:
    """The trained classifier as core.network layers: [Linear, DnpuLayer] (logits = node outputs)."""
    from core.network import DnpuLayer, DnpuNode, Linear

    with torch.no_grad():
        W = model.linear.weight.detach().cpu().double().numpy()
        b = None if model.linear.bias is None else model.linear.bias.detach().cpu().double().numpy()
        sc_t, off_t = model.input_affine()
        sc, off = sc_t.detach().cpu().double().numpy(), off_t.detach().cpu().double().numpy()
        lo, hi = model.data_lo.cpu().double().numpy(), model.data_hi.cpu().double().numpy()
        ctrl = model.control.detach().cpu().double().numpy()
        a = model.out_scale.detach().cpu().double().numpy()
        c = model.out_bias.detach().cpu().double().numpy()
    nodes = [DnpuNode(data_electrodes=model.data_electrodes, control_voltages=tuple(ctrl[k]),
                      input_scale=tuple(sc[k]), input_offset=tuple(off[k]), input_low=tuple(lo),
                      input_high=tuple(hi), output_scale=float(a[k]), output_offset=float(c[k]))
             for k in range(model.cfg.n_classes)]
    return [Linear(W, b), DnpuLayer(nodes)]


def params_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, state: dict[str, np.ndarray] | Sequence) -> None:
    sd = {k: torch.as_tensor(np.asarray(v)) for k, v in dict(state).items()}
    model.load_state_dict(sd)
