"""Fixtures for the deploy tests (helpers in deploy_testlib.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from deploy_testlib import SURROGATE, small_layers


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261130)


@pytest.fixture
def small_model(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """(model path, data .npz path): 12 inputs, 3 nodes of 3 data electrodes, 3 classes, 60 samples."""
    from core.io import write_network

    layers = small_layers(rng)
    model = write_network(tmp_path / "small.onnx", 12, layers, SURROGATE, {"task": "test", "dataset": "none"})
    x = rng.normal(size=(60, 12)).astype(np.float32)
    from core import Network, load_surrogate
    labels = Network(12, layers, load_surrogate(SURROGATE)).evaluate(x).argmax(1)
    labels[:6] = (labels[:6] + 1) % 3      # not all correct
    data = tmp_path / "small.npz"
    np.savez(data, x=x, labels=labels.astype(np.int64))
    return model, data
