"""The surrogate an experiment trains through: a frozen torch module with its ranges and error figures."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES
from host.experiments.errors import ExperimentError
from host.experiments.options import ENGINES


@dataclass
class SurrogateInfo:
    path: str
    model: Any                     # frozen module volts [n, 7] -> nA [n, 1] (core or torch engine)
    ranges_v: np.ndarray           # [7, 2]
    test_rmse_na: float
    noise_floor_na: float
    metadata: dict[str, Any]


def load_surrogate(path: str | Path, engine: str = "core", threads: int | None = None) -> SurrogateInfo:
    """The surrogate as a frozen torch module, with its ranges and error figures; clear errors.

    engine "core": forward and input gradient by the C core (host.networks.core_surrogate, the
    fast path on a CPU) on `threads` threads (None: torch's thread count at each call); "torch":
    the plain torch module."""
    from host.surrogate import onnx_file
    from host.surrogate.torch_model import load_torch

    if engine not in ENGINES:
        raise ExperimentError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    p = Path(path)
    if not p.is_file():
        raise ExperimentError(f"surrogate file {str(p)!r} does not exist")
    try:
        sf = onnx_file.read(p)
        model = load_torch(p)
        if engine == "core":
            from host.networks.core_surrogate import CoreSurrogate

            model = CoreSurrogate.from_torch(model, threads=threads)
    except Exception as e:  # every loader error becomes one readable line
        raise ExperimentError(f"surrogate file {str(p)!r} is not a usable DNPU surrogate: {e}") from None
    meta = dict(sf.metadata)
    try:
        ranges = np.asarray(meta["electrode_ranges_v"], dtype=np.float64).reshape(N_ELECTRODES, 2)
        rmse = float(meta.get("test_rmse_na", float("nan")))
        floor = float(meta.get("noise_floor_na", float("nan")))
    except (KeyError, ValueError, TypeError) as e:
        raise ExperimentError(f"surrogate file {str(p)!r}: metadata lacks electrode ranges or error figures ({e})") from None
    if not np.all(ranges[:, 0] < ranges[:, 1]):
        raise ExperimentError(f"surrogate file {str(p)!r}: electrode ranges {ranges.tolist()} are not lo < hi")
    if not math.isfinite(rmse) or rmse <= 0:
        raise ExperimentError(f"surrogate file {str(p)!r}: test_rmse_na {rmse} is not a positive number")
    if not math.isfinite(floor) or floor <= 0:
        floor = rmse
    return SurrogateInfo(str(p), model, ranges, rmse, floor, meta)
