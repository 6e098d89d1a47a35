"""DNPU inference core: C kernels for surrogate MLPs and time-multiplexed DNPU networks.

    >>> import core
    >>> s = core.load_surrogate("surrogate.onnx")
    >>> s.evaluate(volts)            # float32 [n, 7] -> [n] nA

    >>> net = core.load_network("models/mnist.onnx")
    >>> net.evaluate(x)              # float32 [n, 784] -> [n, 10]

Modules, in pipeline order: core.electrodes (the electrode layout), core.surrogate_format (the
surrogate file's metadata contract), core.surrogate and core.network (the evaluators, which know
nothing of files), core.io (reading and writing the ONNX files). No torch, no serial ports, no
physics. See docs/core.md.
"""
from __future__ import annotations

import os

from . import _engine
from ._engine import default_isa, fma_peak_gflops, supported_isas
from .io import load_network, load_surrogate, read_network, write_network
from .network import Affine, DnpuLayer, DnpuNode, Linear, Network, Standardize
from .surrogate import Surrogate

__all__ = ["Surrogate", "Network", "Linear", "Affine", "Standardize", "DnpuNode", "DnpuLayer",
           "load_surrogate", "load_network", "read_network", "write_network",
           "supported_isas", "default_isa", "fma_peak_gflops", "ISA_ENV"]

ISA_ENV = "DNPU_CORE_ISA"

_status = _engine.isa_env_status()
if _status:
    _why = "is not one of 'generic', 'avx2', 'avx512'" if _status == 1 else \
        f"is not supported by this CPU (supported: {supported_isas()})"
    raise ImportError(f"{ISA_ENV}={os.environ.get(ISA_ENV)!r} {_why}")
del _status
