"""The surrogate as a torch module: its architecture, a surrogate file loaded into torch and back.

The network is a chain of Linear layers with a ReLU after every one but the last, mapping volts
[n, N_ELECTRODES] to nA [n, 1]; `load_torch` and `export_onnx` convert between it and the
surrogate file (`host.surrogate.onnx_file`), applying the file's amplification on loading.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.electrodes import N_ELECTRODES
from host.surrogate import onnx_file


def build_mlp(n_in: int, hidden: int, layers: int) -> nn.Sequential:
    """`layers` hidden Linear+ReLU layers of width `hidden`, then one Linear to a single output."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, 1))
    return nn.Sequential(*mods)


def pick_device(name: str) -> torch.device:
    """A torch device by name; "auto" is cuda when present, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    return dev


def predict(model: nn.Module, volts: np.ndarray, batch: int = 65536) -> np.ndarray:
    """The model's output for volts [n, N_ELECTRODES] on the CPU, float32 [n] (nA)."""
    outs = []
    with torch.inference_mode():
        for a in range(0, volts.shape[0], batch):
            outs.append(model(torch.as_tensor(volts[a:a + batch], dtype=torch.float32))[:, 0].numpy())
    return np.concatenate(outs) if outs else np.zeros(0, np.float32)


def export_onnx(model: nn.Sequential, path: Path, metadata: dict[str, Any]) -> None:
    """Write the model as a Gemm/Relu chain with the dnpu.* metadata (weights inline)."""
    lin = [m for m in model if isinstance(m, nn.Linear)]
    onnx_file.write(path, [m.weight.detach().cpu().numpy() for m in lin],
                    [m.bias.detach().cpu().numpy() for m in lin], metadata, producer="dnpu-toolkit host.surrogate")


def load_torch(path: str | Path) -> nn.Sequential:
    """A surrogate file as a frozen torch module (volts [n, N_ELECTRODES] -> nA [n, 1]) for training through it."""
    sf = onnx_file.read(path)
    if any(w.shape[0] != sf.weights[0].shape[0] for w in sf.weights[:-1]):
        raise onnx_file.SurrogateFileError(f"{path}: hidden layers of unequal width are not supported")
    model = build_mlp(N_ELECTRODES, sf.weights[0].shape[0], len(sf.weights) - 1)
    lin = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, (m, w, b) in enumerate(zip(lin, sf.weights, sf.biases)):
            scale = sf.amplification if i == len(lin) - 1 else 1.0
            m.weight.copy_(torch.as_tensor(w) * scale)
            m.bias.copy_(torch.as_tensor(b) * scale)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
