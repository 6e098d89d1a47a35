"""Helpers for the deploy tests: small random DNPU networks on the shipped surrogate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from core.network import DnpuLayer, DnpuNode, Linear, Standardize, Affine

ROOT = Path(__file__).resolve().parents[3]
SURROGATE = ROOT / "models" / "surrogate.onnx"
LO = np.array([-1.2] * 5 + [-0.7] * 2)
HI = np.array([0.6] * 5 + [0.3] * 2)


def random_nodes(rng: np.random.Generator, k: int, data: tuple[int, ...], ctrl_override: dict | None = None) -> list[DnpuNode]:
    ctrl = [e for e in range(7) if e not in data]
    nodes = []
    for q in range(k):
        cv = rng.uniform(LO[ctrl] + 0.1, HI[ctrl] - 0.1)
        if ctrl_override and q in ctrl_override:
            cv = np.asarray(ctrl_override[q], dtype=np.float64)
        d = list(data)
        nodes.append(DnpuNode(data, control_voltages=tuple(cv), input_scale=tuple((HI[d] - LO[d]) / 4),
                              input_offset=tuple((HI[d] + LO[d]) / 2), input_low=tuple(LO[d]), input_high=tuple(HI[d]),
                              output_scale=float(rng.uniform(0.02, 0.05)), output_offset=float(rng.normal())))
    return nodes


def small_layers(rng: np.random.Generator, n_inputs: int = 12, k: int = 3, data=(0, 3, 4), bias=False, **kw) -> list:
    d = len(data)
    W = (rng.normal(size=(k * d, n_inputs)) / np.sqrt(n_inputs)).astype(np.float32)
    b = rng.normal(size=k * d).astype(np.float32) * 0.1 if bias else None
    return [Linear(W, b), DnpuLayer(random_nodes(rng, k, data, **kw))]


def two_layer(rng: np.random.Generator, n_inputs: int = 12) -> list:
    """A ring-like 2-layer network: 2 nodes -> Standardize/Affine -> 1 node -> Affine."""
    hidden = random_nodes(rng, 2, (1, 2))
    out = random_nodes(rng, 1, (1, 2))
    return [Linear((rng.normal(size=(4, n_inputs)) * 0.3).astype(np.float32)), DnpuLayer(hidden),
            Standardize(mean=[-50.0, -40.0], std=[30.0, 20.0]), Affine(scale=0.5, shift=-0.2),
            DnpuLayer(out), Affine(scale=[0.1], shift=[3.0])]
