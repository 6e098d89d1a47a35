"""core.Network: time-multiplexed DNPU networks evaluated by one C call per batch.

The layer types and the evaluator only; reading and writing network files is core.io."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import _engine
from .electrodes import N_ELECTRODES, check_electrodes, control_electrodes
from .surrogate import Surrogate

__all__ = ["Linear", "Affine", "Standardize", "DnpuNode", "DnpuLayer", "Network"]

FloatLike = float | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Linear:
    """y = x @ weight.T + bias; weight is [n_out, n_in] (torch layout)."""

    weight: np.ndarray
    bias: np.ndarray | None = None


@dataclass(frozen=True)
class Affine:
    """y[:, j] = x[:, j] * scale[j] + shift[j] (scalars broadcast over features)."""

    scale: FloatLike = 1.0
    shift: FloatLike = 0.0


@dataclass(frozen=True)
class Standardize:
    """y = (x - mean) / std with stored statistics (per feature or scalar; std > 0)."""

    mean: FloatLike
    std: FloatLike


@dataclass(frozen=True)
class DnpuNode:
    """One DNPU (or one time slot of a time-multiplexed DNPU).

    data_electrodes: electrode index of each data input, e.g. (1, 2) or (0, 1, ..., 6).
    control_voltages: one voltage per remaining electrode, in ascending electrode order.
    inputs: which features of the layer input feed the data electrodes (default: the next
        len(data_electrodes) features after the previous node's).
    The input transform is v = clip(x * input_scale + input_offset, input_low, input_high)
    (each a scalar or one value per data electrode); the node emits
    surrogate(v) * output_scale + output_offset.  surrogate indexes Network's surrogates.
    """

    data_electrodes: Sequence[int]
    control_voltages: FloatLike = ()
    input_scale: FloatLike = 1.0
    input_offset: FloatLike = 0.0
    input_low: FloatLike = -np.inf
    input_high: FloatLike = np.inf
    output_scale: float = 1.0
    output_offset: float = 0.0
    surrogate: int = 0
    inputs: Sequence[int] | None = None


@dataclass(frozen=True)
class DnpuLayer:
    """k DNPU nodes side by side; the layer emits one feature per node."""

    nodes: Sequence[DnpuNode] = field(default_factory=tuple)


Layer = Linear | Affine | Standardize | DnpuLayer


def _per_feature(v: FloatLike, n: int, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    a = a.reshape(-1)
    if a.shape != (n,):
        raise ValueError(f"{what}: expected a scalar or {n} values, got shape {np.shape(v)}")
    if np.isnan(a).any():
        raise ValueError(f"{what}: holds NaN")
    return a


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: holds NaN or inf")
    return a


class Network:
    """A feed-forward network of Linear, Affine, Standardize and DnpuLayer layers.

    Network(n_inputs, layers, surrogates): surrogates is one Surrogate (all nodes share it, one
    device time-multiplexed) or a sequence that nodes index with DnpuNode.surrogate.  Each
    node's control-voltage contribution to its surrogate's first layer is folded into that
    layer's bias once, here.  evaluate(x, *, threads=1, isa=None): float32 [n, n_inputs] ->
    [n, n_outputs] in one C call, GIL released.
    """

    def __init__(self, n_inputs: int, layers: Sequence[Layer],
                 surrogates: Surrogate | Sequence[Surrogate]) -> None:
        if isinstance(surrogates, Surrogate):
            surrogates = (surrogates,)
        self.surrogates: tuple[Surrogate, ...] = tuple(surrogates)
        for i, s in enumerate(self.surrogates):
            if not isinstance(s, Surrogate):
                raise TypeError(f"surrogates[{i}]: expected a core.Surrogate, got {type(s).__name__}")
            if s.n_outputs != 1:
                raise ValueError(f"surrogates[{i}]: a DNPU surrogate has one output, got {s.n_outputs}")
            if s.n_inputs != N_ELECTRODES:
                raise ValueError(f"surrogates[{i}]: a DNPU surrogate maps the {N_ELECTRODES} electrode "
                                 f"voltages, this one has {s.n_inputs} inputs")
        if int(n_inputs) < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        if not layers:
            raise ValueError("layers: at least one layer is needed")
        self.n_inputs = int(n_inputs)
        self.layers: tuple[Layer, ...] = tuple(layers)
        ops: list[tuple] = []
        width = self.n_inputs
        for li, layer in enumerate(self.layers):
            where = f"layers[{li}]"
            if isinstance(layer, Linear):
                W = _finite(np.asarray(layer.weight, dtype=np.float64), f"{where}.weight")
                if W.ndim != 2 or W.shape[1] != width or W.shape[0] < 1:
                    raise ValueError(f"{where}.weight: expected shape (n_out, {width}), got {W.shape}")
                b = None
                if layer.bias is not None:
                    b = _finite(_per_feature(layer.bias, W.shape[0], f"{where}.bias"), f"{where}.bias")
                ops.append(("linear", W.astype(np.float32), None if b is None else b.astype(np.float32)))
                width = W.shape[0]
            elif isinstance(layer, Affine):
                sc = _finite(_per_feature(layer.scale, width, f"{where}.scale"), f"{where}.scale")
                sh = _finite(_per_feature(layer.shift, width, f"{where}.shift"), f"{where}.shift")
                ops.append(("affine", sc.astype(np.float32), sh.astype(np.float32)))
            elif isinstance(layer, Standardize):
                mu = _finite(_per_feature(layer.mean, width, f"{where}.mean"), f"{where}.mean")
                sd = _finite(_per_feature(layer.std, width, f"{where}.std"), f"{where}.std")
                if np.any(sd <= 0):
                    raise ValueError(f"{where}.std: must be > 0")
                ops.append(("affine", (1.0 / sd).astype(np.float32), (-mu / sd).astype(np.float32)))
            elif isinstance(layer, DnpuLayer):
                ops.append(("dnpu", self._build_nodes(layer, width, where)))
                width = len(layer.nodes)
            else:
                raise TypeError(f"{where}: unsupported layer type {type(layer).__name__}")
        self._net = _engine.Net()
        self._net._init(self.n_inputs, ops)
        self.n_outputs: int = width
        self.metadata: dict = {}

    def _build_nodes(self, layer: DnpuLayer, width: int, where: str) -> list[tuple]:
        if len(layer.nodes) == 0:
            raise ValueError(f"{where}: a DNPU layer needs at least one node")
        out: list[tuple] = []
        next_feature = 0
        for q, node in enumerate(layer.nodes):
            w = f"{where}.nodes[{q}]"
            if not isinstance(node, DnpuNode):
                raise TypeError(f"{w}: expected a DnpuNode, got {type(node).__name__}")
            if not 0 <= node.surrogate < len(self.surrogates):
                raise ValueError(f"{w}.surrogate: index {node.surrogate} out of range "
                                 f"(network has {len(self.surrogates)} surrogates)")
            sur = self.surrogates[node.surrogate]
            data = list(check_electrodes(node.data_electrodes, f"{w}.data_electrodes"))
            ctrl = list(control_electrodes(data))
            cv = np.asarray(node.control_voltages, dtype=np.float64).reshape(-1)
            if cv.shape != (len(ctrl),):
                raise ValueError(f"{w}.control_voltages: expected {len(ctrl)} values (electrodes "
                                 f"{ctrl}), got {cv.size}")
            _finite(cv, f"{w}.control_voltages")
            nd = len(data)
            if node.inputs is None:
                idx = np.arange(next_feature, next_feature + nd)
            else:
                idx = np.asarray(node.inputs, dtype=np.int64).reshape(-1)
                if idx.shape != (nd,):
                    raise ValueError(f"{w}.inputs: expected {nd} feature indices, got {idx.size}")
            if idx.min() < 0 or idx.max() >= width:
                raise ValueError(f"{w}.inputs: feature indices {idx.tolist()} out of range for a "
                                 f"layer input of {width} features")
            next_feature = int(idx.max()) + 1
            lo = _per_feature(node.input_low, nd, f"{w}.input_low")
            hi = _per_feature(node.input_high, nd, f"{w}.input_high")
            if np.any(lo > hi):
                raise ValueError(f"{w}: input_low exceeds input_high")
            sc = _finite(_per_feature(node.input_scale, nd, f"{w}.input_scale"), f"{w}.input_scale")
            off = _finite(_per_feature(node.input_offset, nd, f"{w}.input_offset"), f"{w}.input_offset")
            os_, oo = float(node.output_scale), float(node.output_offset)
            if not (np.isfinite(os_) and np.isfinite(oo)):
                raise ValueError(f"{w}: output_scale/output_offset must be finite")
            # fold the constant control-voltage part of the first layer into its bias, once
            W, b = sur._packed_layer(0)  # the amplification is in it if it is the last layer
            W1 = W.astype(np.float64)
            b1 = np.zeros(W1.shape[0]) if b is None else b.astype(np.float64)
            W0 = np.ascontiguousarray(W1[:, data], dtype=np.float32)
            b0 = (b1 + W1[:, ctrl] @ cv).astype(np.float32)
            mlp = _engine.Mlp()
            mlp._init_derived(sur, W0, b0)
            out.append((mlp, idx.astype(np.intc), sc.astype(np.float32), off.astype(np.float32),
                        lo.astype(np.float32), hi.astype(np.float32), os_, oo))
        return out

    def evaluate(self, x: np.ndarray, *, threads: int = 1, isa: str | None = None) -> np.ndarray:
        """float32 [n, n_inputs] -> float32 [n, n_outputs] (inputs handled as in Surrogate)."""
        return self._net.evaluate(x, threads=threads, isa=isa)

    def __repr__(self) -> str:
        kinds = ", ".join(type(l).__name__ for l in self.layers)
        return f"Network(n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, layers=[{kinds}])"

    def __reduce__(self):
        raise TypeError("Network objects are not picklable")
