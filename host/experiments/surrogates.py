"""The surrogate an experiment trains through: a frozen torch module with its ranges and error
figures; or one per device of a board of several chips (`ChipSurrogates`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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

    # one chip: every node shares the one module and its noise, on the board's device 0
    def node_devices(self, nodes: Sequence[int], multiplex: bool = False) -> None:
        return None

    def node_models(self, nodes: Sequence[int], multiplex: bool = False) -> Any:
        return self.model

    def node_noise_scale(self, nodes: Sequence[int], multiplex: bool = False) -> None:
        return None

    @property
    def paths(self) -> list[str]:
        return [self.path]


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


def node_devices(nodes: Sequence[int], n_devices: int, multiplex: bool = False) -> list[list[int]]:
    """The device of every node of a network with layer sizes `nodes` on a board of `n_devices`:
    the nodes in network order take the devices in turn, so the nodes of a layer sit on distinct
    devices (they run together). A layer wider than the board is an ExperimentError, unless
    `multiplex`: then its nodes go on taking the devices in turn, several nodes per device (run
    one after another, time-multiplexed)."""
    if n_devices < 1:
        raise ExperimentError("no device to bind the nodes to")
    if not multiplex and n_devices < max(nodes):
        raise ExperimentError(f"a layer of {max(nodes)} nodes needs {max(nodes)} devices (one surrogate each); "
                              f"got {n_devices}")
    out, c = [], 0
    for k in nodes:
        out.append([(c + j) % n_devices for j in range(k)])
        c += k
    return out


@dataclass
class ChipSurrogates:
    """One surrogate per device of a board of several chips: surrogates[j] models device j's chip.
    The nodes of a network are bound to devices by `node_devices` and each trains through its
    device's surrogate. Ranges must agree; error figures are the worst of the chips'."""

    surrogates: list[SurrogateInfo]

    def __post_init__(self) -> None:
        first = self.surrogates[0].ranges_v
        for s in self.surrogates[1:]:
            if not np.array_equal(s.ranges_v, first):
                raise ExperimentError(f"surrogate {s.path!r} has electrode ranges {s.ranges_v.tolist()}, "
                                      f"{self.surrogates[0].path!r} has {first.tolist()}: one network across "
                                      f"chips needs the same ranges on every chip")

    @property
    def path(self) -> str:
        return ",".join(s.path for s in self.surrogates)

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.surrogates]

    @property
    def model(self) -> Any:
        return self.surrogates[0].model

    @property
    def ranges_v(self) -> np.ndarray:
        return self.surrogates[0].ranges_v

    @property
    def test_rmse_na(self) -> float:
        return max(s.test_rmse_na for s in self.surrogates)

    @property
    def noise_floor_na(self) -> float:
        return max(s.noise_floor_na for s in self.surrogates)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.surrogates[0].metadata

    def node_devices(self, nodes: Sequence[int], multiplex: bool = False) -> list[list[int]]:
        return node_devices(nodes, len(self.surrogates), multiplex)

    def node_noise_scale(self, nodes: Sequence[int], multiplex: bool = False) -> list[list[float]]:
        """Per node, its chip's surrogate error relative to the worst chip's (`test_rmse_na`, the
        noise the experiments train and predict with): each node is as noisy as its own chip."""
        worst = self.test_rmse_na
        return [[self.surrogates[d].test_rmse_na / worst for d in layer]
                for layer in self.node_devices(nodes, multiplex)]

    def node_models(self, nodes: Sequence[int], multiplex: bool = False) -> list[list[Any]]:
        """The surrogate module of every node (per layer, per node); devices of one file share one module."""
        return [[self.surrogates[d].model for d in layer] for layer in self.node_devices(nodes, multiplex)]


def surrogate_paths(text: str) -> list[str]:
    """--surrogate's files: one, or a comma-separated list of them, one per device of the board in
    the board's device order."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ExperimentError("--surrogate: no file given")
    return parts


def load_surrogates(paths: str, engine: str = "core", threads: int | None = None) -> "SurrogateInfo | ChipSurrogates":
    """One surrogate file, or a comma-separated list of them: one per device of the board, in the
    board's device order (ChipSurrogates)."""
    parts = surrogate_paths(paths)
    if len(parts) == 1:
        return load_surrogate(parts[0], engine, threads)
    loaded: dict[str, SurrogateInfo] = {}      # a file named for several devices (copies of one chip) loads once
    for p in parts:
        if p not in loaded:
            loaded[p] = load_surrogate(p, engine, threads)
    return ChipSurrogates([loaded[p] for p in parts])
