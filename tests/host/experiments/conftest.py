"""Fixtures shared by the experiments' tests: the shipped surrogate on the core, torch's threads kept."""
from __future__ import annotations

import pytest

SURROGATE = "models/surrogate.onnx"


@pytest.fixture
def keep_threads():
    """Restore torch's thread count after a test whose CLI run sets it (--threads)."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sur():
    """The shipped surrogate on the C core, one thread."""
    from host.experiments.surrogates import load_surrogate

    return load_surrogate(SURROGATE, engine="core", threads=1)
