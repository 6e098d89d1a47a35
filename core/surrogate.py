"""core.Surrogate: a DNPU surrogate MLP (volts -> nA) evaluated by the C kernels.

The evaluator only; loading one from a file is core.io.load_surrogate."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import _engine
from .surrogate_format import amplification

__all__ = ["Surrogate"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _amplified(W: np.ndarray, b: np.ndarray | None, amp: float) -> tuple[np.ndarray, np.ndarray | None]:
    """A layer times the amplification, rounded once to float32 (as a network file folds it)."""
    if amp == 1.0:
        return W, b
    with np.errstate(over="ignore"):  # an overflow to inf is refused by the caller
        Wa = (W.astype(np.float64) * amp).astype(np.float32)
        ba = None if b is None else (b.astype(np.float64) * amp).astype(np.float32)
    return Wa, ba


class Surrogate(_engine.Mlp):
    """A dense ReLU network, packed once for the C kernels.

    ``Surrogate(weights, biases, relu=None, metadata=None)``: ``weights[l]`` is ``[n_out, n_in]``
    (the torch ``nn.Linear`` / ONNX ``Gemm transB=1`` layout), ``biases[l]`` is ``[n_out]`` or
    None, ``relu[l]`` says whether a ReLU follows layer l (default: after every layer but the
    last).  Weights are stored as float32 and must be finite.  ``metadata`` is the file's
    metadata_props; a ``dnpu.amplification`` there (core.surrogate_format.amplification) scales
    the output to nA: the last layer is packed times it, so ``evaluate``, ``value_and_grad`` and
    networks return nA, while ``weights``/``biases`` keep the chain as stored.

    ``evaluate(x, *, threads=1, isa=None)`` maps float32 ``[n, n_inputs]`` to ``[n]`` (one
    output) or ``[n, n_outputs]``; see docs/core.md for the handling of other inputs.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray | None, ...]
    relu: tuple[bool, ...]
    metadata: dict[str, str]
    amplification: float

    def __init__(self, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray | None] | None = None,
                 relu: Sequence[bool] | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        n = len(weights)
        if n == 0:
            raise ValueError("weights: at least one layer is needed")
        if biases is None:
            biases = [None] * n
        if relu is None:
            relu = [True] * (n - 1) + [False]
        if len(biases) != n or len(relu) != n:
            raise ValueError(f"weights, biases and relu must have the same length, got "
                             f"{n}, {len(biases)}, {len(relu)}")
        Ws: list[np.ndarray] = []
        bs: list[np.ndarray | None] = []
        width: int | None = None
        for l, (W, b) in enumerate(zip(weights, biases)):
            W = np.asarray(W)
            if W.ndim != 2 or W.dtype.kind not in "fiu" or W.size == 0:
                raise ValueError(f"weights[{l}]: expected a non-empty 2-D numeric array, got "
                                 f"shape {W.shape} dtype {W.dtype}")
            if width is not None and W.shape[1] != width:
                raise ValueError(f"weights[{l}]: inconsistent shapes: expects {W.shape[1]} "
                                 f"inputs, layer {l - 1} produces {width}")
            W32 = np.array(W, dtype=np.float32, order="C")
            if not np.all(np.isfinite(W32)):
                raise ValueError(f"weights[{l}]: holds NaN or inf (or overflows float32)")
            b32 = None
            if b is not None:
                b32 = np.array(b, dtype=np.float32).reshape(-1)
                if b32.shape != (W.shape[0],):
                    raise ValueError(f"biases[{l}]: expected shape ({W.shape[0]},), got "
                                     f"{np.shape(b)}")
                if not np.all(np.isfinite(b32)):
                    raise ValueError(f"biases[{l}]: holds NaN or inf")
                b32 = _readonly(b32)
            Ws.append(_readonly(W32))
            bs.append(b32)
            width = W.shape[0]
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        amp = amplification(meta)
        packed_W, packed_b = list(Ws), list(bs)
        packed_W[-1], packed_b[-1] = _amplified(Ws[-1], bs[-1], amp)
        if not (np.all(np.isfinite(packed_W[-1])) and (packed_b[-1] is None or np.all(np.isfinite(packed_b[-1])))):
            raise ValueError(f"weights[{n - 1}] times dnpu.amplification {amp} overflows float32")
        self._init_layers(packed_W, packed_b, [bool(r) for r in relu])
        self.weights = tuple(Ws)
        self.biases = tuple(bs)
        self.relu = tuple(bool(r) for r in relu)
        self.metadata = meta
        self.amplification: float = amp
        if self._has_grad:  # transposed layers for value_and_grad (small: packed up front)
            self._init_back([np.ascontiguousarray(W.T) for W in Ws[:-1]])

    def value_and_grad(self, x: np.ndarray, *, threads: int = 1, isa: str | None = None,
                       precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
        """The output and its gradient with respect to the inputs: float32 [n, n_inputs] ->
        (y [n], dy/dx [n, n_inputs]), one fused forward and backward pass per block of samples.

        For training through a frozen surrogate (the input gradient is all it needs). Only for
        one-output chains with a ReLU after every layer but the last (ValueError otherwise); the
        derivative of ReLU at exactly 0 is taken as 0.

        precision "bf16": products of the hidden layers in bfloat16 AMX tiles (float32 sums; the
        first layer, which sees the volts, and the last stay float32), several times faster at
        about 3 significant digits; needs ``bf16_ready`` (ValueError otherwise). `isa` applies
        to "fp32"."""
        if not self._has_grad:
            raise ValueError("value_and_grad needs one output and a ReLU after every layer but the last; "
                             f"this model has layer sizes {self.layer_sizes} and relu {self.relu}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        return self._value_and_grad(x, threads, isa, precision == "bf16")

    def _packed_layer(self, l: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Layer l as the kernels compute it (the last one times the amplification)."""
        if l == len(self.weights) - 1:
            return _amplified(self.weights[l], self.biases[l], self.amplification)
        return self.weights[l], self.biases[l]

    @property
    def _has_grad(self) -> bool:
        """value_and_grad's shape: one output, a ReLU after every layer but the last."""
        return self.n_outputs == 1 and all(self.relu[:-1]) and not self.relu[-1]

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(n_inputs, hidden..., n_outputs), e.g. (7, 90, 90, 90, 90, 90, 1)."""
        return (self.n_inputs,) + tuple(int(W.shape[0]) for W in self.weights)

    def __repr__(self) -> str:
        return f"Surrogate(layer_sizes={self.layer_sizes}, macs_per_sample={self.macs})"

    def __reduce__(self):  # no pickles in this product
        raise TypeError("Surrogate objects are not picklable; save models as ONNX")
