"""The torch DNPU layer: K nodes on a frozen surrogate, each with learnable control voltages.

Every module here carries a leading *trial* dimension T: T independent copies (trials, attempts,
labellings) are trained at once as one batched tensor program. Shapes, throughout:

    data into a DNPU layer     [T, B, K, D]   (or [B, K, D], broadcast over trials)
    control voltages           [T, K, C]      C = N_ELECTRODES - D learnable electrodes per node
    DNPU layer output          [T, B, K]      nA

with B samples, K nodes, D data electrodes per node. A plain single network is T = 1. The
export of a trained layer to the core's layer description is in ``host.networks.export``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from core.electrodes import N_ELECTRODES, check_electrodes, control_electrodes


@dataclass(frozen=True)
class InputTransform:
    """Affine map of data from [in_lo, in_hi] onto each data electrode's range, optional clipping."""

    in_lo: float = -1.0
    in_hi: float = 1.0
    clip: bool = True


def check_ranges(ranges_v: np.ndarray) -> np.ndarray:
    """Electrode ranges as float64 [N_ELECTRODES, 2] with lo < hi, or ValueError."""
    ranges = np.asarray(ranges_v, dtype=np.float64)
    if ranges.shape != (N_ELECTRODES, 2) or np.any(ranges[:, 0] >= ranges[:, 1]):
        raise ValueError(f"ranges_v must be {N_ELECTRODES} (lo, hi) pairs with lo < hi, "
                         f"got {ranges.tolist()}")
    return ranges


class DNPUNodes(nn.Module):
    """K DNPU nodes (one layer), each a (time-multiplexed) device with its own control voltages.

    surrogates: one frozen surrogate (volts [n, 7] -> nA [n, 1]) shared by all nodes (one device,
    time-multiplexed), or one per node.
    transform: how data reach the data electrodes: the affine map of [in_lo, in_hi] onto each
    electrode's range. With ``learn_mapping`` that map becomes a learnable scale and offset per
    node and data electrode [K, D] (initialised to the transform), ``v = x * scale + offset``.
    control_init: controls start uniformly in lo + (a + b u) (hi - lo), u in [0, 1): inside
    the ranges, away from the edges.
    noise_scale: per node, the factor on ``noise_std_na`` of its output noise (nodes on chips
    whose surrogates differ in precision); default 1 for every node.
    """

    def __init__(self, surrogates: nn.Module | Sequence[nn.Module], ranges_v: np.ndarray, n_nodes: int,
                 data_electrodes: Sequence[int], trials: int = 1, transform: InputTransform = InputTransform(),
                 noise_std_na: float = 0.0, generator: torch.Generator | None = None,
                 control_init: tuple[float, float] = (0.1, 0.8), learn_mapping: bool = False,
                 noise_scale: Sequence[float] | None = None) -> None:
        super().__init__()
        ranges = check_ranges(ranges_v)
        data = list(check_electrodes(data_electrodes))
        ctrl = list(control_electrodes(data))
        if n_nodes < 1 or trials < 1:
            raise ValueError("n_nodes and trials must be >= 1")
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
        # per node: its share of noise_std_na (nodes on chips of different precision; default 1)
        scale = torch.ones(n_nodes) if noise_scale is None else torch.as_tensor(list(noise_scale), dtype=torch.float32)
        if scale.shape != (n_nodes,) or not bool(torch.all(scale >= 0)):
            raise ValueError(f"noise_scale must be {n_nodes} factors >= 0, got {noise_scale!r}")
        self.register_buffer("noise_scale", scale, persistent=False)
        #: inject the output noise in eval mode too (accuracy under noise, robustness selection)
        self.noise_in_eval = False
        r = torch.as_tensor(ranges, dtype=torch.float32)
        self.register_buffer("ranges", r)
        self.register_buffer("data_lo", r[data, 0].clone())
        self.register_buffer("data_hi", r[data, 1].clone())
        self.register_buffer("ctrl_lo", r[ctrl, 0].clone())
        self.register_buffer("ctrl_hi", r[ctrl, 1].clone())
        u = torch.rand(trials, n_nodes, len(ctrl), generator=generator)
        a, b = control_init
        self.control = nn.Parameter(self.ctrl_lo + (a + b * u) * (self.ctrl_hi - self.ctrl_lo))
        self.learn_mapping = bool(learn_mapping)
        if self.learn_mapping:
            half, mid = (self.data_hi - self.data_lo) / 2, (self.data_hi + self.data_lo) / 2
            scale = half / ((transform.in_hi - transform.in_lo) / 2)
            offset = mid - (transform.in_hi + transform.in_lo) / 2 * scale
            self.map_scale = nn.Parameter(scale.expand(n_nodes, len(data)).clone())
            self.map_offset = nn.Parameter(offset.expand(n_nodes, len(data)).clone())
        # 0/1 placement matrices: volts = data @ place_data + controls @ place_ctrl puts each value
        # on its electrode exactly (products with 1 and sums with 0), and costs a third of a
        # concatenation and a column gather, forward and backward, on the trial-batched tensors
        place = torch.eye(N_ELECTRODES)
        self.register_buffer("_place_data", place[data].clone())
        self.register_buffer("_place_ctrl", place[ctrl].clone())

    def unclipped_data_volts(self, x: torch.Tensor) -> torch.Tensor:
        """Data [..., K, D] mapped onto the data electrodes' ranges, before any clipping."""
        if self.learn_mapping:
            return x * self.map_scale + self.map_offset
        t = self.transform
        return self.data_lo + (x - t.in_lo) * ((self.data_hi - self.data_lo) / (t.in_hi - t.in_lo))

    def data_volts(self, x: torch.Tensor) -> torch.Tensor:
        """Data [..., K, D] as data-electrode voltages (clipped to the ranges if the transform says so)."""
        v = self.unclipped_data_volts(x)
        return torch.clamp(v, self.data_lo, self.data_hi) if self.transform.clip else v

    def electrode_volts(self, x: torch.Tensor) -> torch.Tensor:
        """All electrode voltages [T, B, K, N_ELECTRODES] for data x [T|1, B, K, D]."""
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
        groups = self.node_groups()
        if len(groups) == 1:
            out = groups[0][0](v.reshape(-1, N_ELECTRODES)).reshape(t, b, k)
        else:
            # one call per distinct surrogate (the nodes of one chip together), back in node order
            parts, order = [], []
            for s, nodes in groups:
                idx = torch.as_tensor(nodes, device=v.device)
                parts.append(s(v.index_select(2, idx).reshape(-1, N_ELECTRODES)).reshape(t, b, len(nodes)))
                order.extend(nodes)
            inverse = torch.empty(k, dtype=torch.long, device=v.device)
            inverse[torch.as_tensor(order, device=v.device)] = torch.arange(k, device=v.device)
            out = torch.cat(parts, dim=-1).index_select(2, inverse)
        if (self.training or self.noise_in_eval) and self.noise_std_na > 0:
            out = out + (self.noise_std_na * self.noise_scale) * torch.randn_like(out)
        return out

    def node_groups(self) -> list[tuple[nn.Module, list[int]]]:
        """(surrogate, its nodes) per distinct surrogate module, in order of first use: nodes on
        one chip share one module and are evaluated in one call."""
        mods = list(self.surrogates)
        if len(mods) == 1:
            return [(mods[0], list(range(self.n_nodes)))]
        groups: dict[int, tuple[nn.Module, list[int]]] = {}
        for i, s in enumerate(mods):
            groups.setdefault(id(s), (s, []))[1].append(i)
        return list(groups.values())

    @torch.no_grad()
    def keep_trials(self, idx: torch.Tensor) -> None:
        """Keep only the trials `idx` (a solved or abandoned trial stops costing compute)."""
        if self.learn_mapping:
            raise ValueError("a learnt input mapping is shared by all trials: trials cannot be dropped")
        self.control = nn.Parameter(self.control.detach()[idx].clone())
        self.trials = int(self.control.shape[0])

    def out_of_range_penalty(self) -> torch.Tensor:
        """L1 distance of the control voltages outside their ranges, per trial [T]."""
        below = torch.relu(self.ctrl_lo - self.control)
        above = torch.relu(self.control - self.ctrl_hi)
        return (below + above).sum(dim=(1, 2))

    def data_range_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Mean L1 distance (V) of the data voltages outside their ranges (before clipping)."""
        v = self.unclipped_data_volts(x)
        return (torch.relu(self.data_lo - v) + torch.relu(v - self.data_hi)).sum(-1).mean()

    @torch.no_grad()
    def clip_controls(self) -> None:
        """Project the control voltages back into their electrodes' ranges."""
        self.control.copy_(torch.maximum(torch.minimum(self.control, self.ctrl_hi), self.ctrl_lo))

    def input_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, offset) with data volts = clip(x * scale + offset): [K, D] or [D] (fixed transform)."""
        if self.learn_mapping:
            return self.map_scale, self.map_offset
        t = self.transform
        scale = (self.data_hi.double() - self.data_lo.double()) / (t.in_hi - t.in_lo)
        return scale, self.data_lo.double() - t.in_lo * scale
