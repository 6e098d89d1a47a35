"""Trained torch DNPU layers as the core's layer descriptions (torch-free, for core.io.write_network).

One exporter for every network: a ``DNPUNodes`` layer becomes a ``core.network.DnpuLayer``
whose nodes carry their data electrodes, control voltages and input map; the statistics of a
``RunningStandardisation`` become a ``Standardize``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from host.networks.dnpu_nodes import DNPUNodes
from host.networks.normalisation import RunningStandardisation


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


@torch.no_grad()
def dnpu_layer(layer: DNPUNodes, trial: int = 0, *, input_affine: tuple[torch.Tensor, torch.Tensor] | None = None,
               output_scale: Sequence[float] | None = None, output_offset: Sequence[float] | None = None,
               inputs: Sequence[Sequence[int]] | None = None) -> Any:
    """One trial of the layer as a core DnpuLayer.

    input_affine: (a, b) [K, D] applied to the layer's input before the layer's own map (a
    batch normalisation folded in: data volts = clip((x * a + b) * scale + offset)).
    output_scale/offset: per node [K] (the node's output is current * scale + offset).
    inputs: the feature indices each node reads (default: consecutive D per node)."""
    from core.network import DnpuLayer, DnpuNode

    scale_t, offset_t = layer.input_map()
    if input_affine is not None:
        a, b = input_affine
        # (x * a + b) * s + o = x * (s a) + (o + s b)
        scale_t, offset_t = scale_t * a, offset_t + scale_t * b
    k, d = layer.n_nodes, len(layer.data_electrodes)
    scale = np.broadcast_to(_numpy(scale_t), (k, d))
    offset = np.broadcast_to(_numpy(offset_t), (k, d))
    lo, hi = _numpy(layer.data_lo), _numpy(layer.data_hi)
    clip = layer.transform.clip
    ctrl = _numpy(layer.control[trial])
    nodes = []
    for i in range(k):
        extra: dict[str, Any] = {}
        if output_scale is not None:
            extra["output_scale"] = float(output_scale[i])
        if output_offset is not None:
            extra["output_offset"] = float(output_offset[i])
        if inputs is not None:
            extra["inputs"] = tuple(int(j) for j in inputs[i])
        nodes.append(DnpuNode(data_electrodes=tuple(layer.data_electrodes), control_voltages=ctrl[i].copy(),
                              input_scale=scale[i].copy(), input_offset=offset[i].copy(),
                              input_low=lo.copy() if clip else -np.inf, input_high=hi.copy() if clip else np.inf,
                              **extra))
    return DnpuLayer(nodes=tuple(nodes))


@torch.no_grad()
def standardisation(norm: RunningStandardisation, trial: int = 0) -> Any:
    """The eval-mode statistics of one trial as a core Standardize layer."""
    from core.network import Standardize

    return Standardize(mean=_numpy(norm.mean[trial, 0]), std=_numpy(norm.std()[trial, 0]))


def logistic(w: float, b: float) -> Any:
    """The logistic output neuron's logit w * z + b on a standardised output, as a core Affine."""
    from core.network import Affine

    return Affine(scale=float(w), shift=float(b))
