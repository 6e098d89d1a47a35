"""Fixtures for the core engine tests (helpers in core_testlib.py)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from core_testlib import make_chain_model, random_chain


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261128)


@pytest.fixture
def write_model(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10**6))

    def write(model: onnx.ModelProto, name: str | None = None, **save_kw) -> Path:
        p = tmp_path / (name or f"model{next(counter)}.onnx")
        onnx.save(model, p, **save_kw)
        return p
    return write


@pytest.fixture
def surrogate_path(rng: np.random.Generator, write_model) -> Path:
    Ws, bs = random_chain(rng, (7, 90, 90, 90, 90, 90, 1))
    return write_model(make_chain_model(Ws, bs, metadata={"format_version": "1",
                                                          "output_range_nA": "-300,100"}))
