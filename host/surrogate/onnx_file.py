"""Surrogate ONNX files: reading, validating and writing them without torch.

A surrogate file is a plain Gemm/Relu chain: input ``volts`` float32 [N, E] in electrode order
(E = core.electrodes.N_ELECTRODES), output ``current_na`` float32 [N, 1], weights inline, with
``dnpu.*`` metadata_props. The metadata contract (keys, format, electrode ranges, and the
amplification rule: the current in nA is the chain's output times ``dnpu.amplification``) is
declared once, in core.surrogate_format; ``read`` checks a file against it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import surrogate_format
from core.electrodes import N_ELECTRODES
from core.surrogate_format import FORMAT, INPUT_NAME, OUTPUT_NAME, REQUIRED_KEYS  # noqa: F401 (the contract, declared in core)


class SurrogateFileError(ValueError):
    """A file that is not a usable surrogate; the message says what is wrong."""


@dataclass
class SurrogateFile:
    """A surrogate read from ONNX: its layers as numpy arrays and its metadata."""

    weights: list[np.ndarray]   # each [out, in], float32
    biases: list[np.ndarray]    # each [out], float32
    metadata: dict[str, Any]    # decoded JSON values, keys without the "dnpu." prefix

    @property
    def ranges_v(self) -> np.ndarray:
        """The electrode ranges it was trained on, float64 [N_ELECTRODES, 2] (V)."""
        return np.asarray(self.metadata["electrode_ranges_v"], dtype=np.float64)

    @property
    def amplification(self) -> float:
        """Factor from the network's output to nA (core.surrogate_format.amplification, checked by read)."""
        return float(self.metadata["amplification"])

    def evaluate_numpy(self, volts: np.ndarray) -> np.ndarray:
        """Straightforward float64 evaluation (a reference for tests), nA [n]."""
        h = np.asarray(volts, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T.astype(np.float64) + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] * self.amplification


def read(path: str | Path) -> SurrogateFile:
    """Load and validate a surrogate ONNX file (Gemm/Relu chain with dnpu.* metadata).

    The graph is parsed by the core's reader (core.io), the one parser of dense chains in the
    product; its errors come back as SurrogateFileError naming the file and the node."""
    from core.io import load_model, read_dense_chain

    path = Path(path)
    if not path.is_file():
        raise SurrogateFileError(f"{path}: no such file")
    try:
        chain = read_dense_chain(load_model(path), source=str(path))
    except (ValueError, FileNotFoundError) as e:
        raise SurrogateFileError(str(e)) from None
    try:  # format, required keys, electrode ranges, amplification: the contract in core
        meta: dict[str, Any] = surrogate_format.check(chain.metadata, str(path))
    except surrogate_format.SurrogateFormatError as e:
        raise SurrogateFileError(str(e)) from None
    if any(r for r in chain.relu[-1:]) or not all(chain.relu[:-1]):
        raise SurrogateFileError(f"{path}: a surrogate has a ReLU after every layer but the last")
    weights = [np.ascontiguousarray(w, dtype=np.float32) for w in chain.weights]
    biases = [np.zeros(w.shape[0], np.float32) if b is None else np.asarray(b, np.float32)
              for w, b in zip(weights, chain.biases)]
    if weights[0].shape[1] != N_ELECTRODES or weights[-1].shape[0] != 1:
        raise SurrogateFileError(f"{path}: maps {weights[0].shape[1]} inputs to {weights[-1].shape[0]} "
                                 f"outputs; a surrogate maps {N_ELECTRODES} volts to 1 current")
    return SurrogateFile(weights=weights, biases=biases, metadata=meta)


def write(path: str | Path, weights: list[np.ndarray], biases: list[np.ndarray], metadata: dict[str, Any],
          producer: str = "dnpu-toolkit") -> None:
    """Write a Gemm/Relu chain (weights [out, in], inline) with the dnpu.* metadata."""
    from onnx import TensorProto, helper, numpy_helper

    from core.io import save_model

    if len(weights) != len(biases) or not weights:
        raise ValueError("need one bias per weight matrix")
    if "format" in metadata:
        raise ValueError(f"metadata may not set 'format': the file's format is {FORMAT!r}")
    nodes, inits = [], []
    cur = INPUT_NAME
    for i, (w, b) in enumerate(zip(weights, biases)):
        w = np.ascontiguousarray(w, dtype=np.float32)
        b = np.ascontiguousarray(b, dtype=np.float32).reshape(w.shape[0])
        inits += [numpy_helper.from_array(w, f"layer{i}.weight"), numpy_helper.from_array(b, f"layer{i}.bias")]
        last = i == len(weights) - 1
        out = OUTPUT_NAME if last else f"gemm{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"layer{i}.weight", f"layer{i}.bias"], [out],
                                      name=f"gemm{i}", transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            cur = f"relu{i}"
    graph = helper.make_graph(
        nodes, "dnpu_surrogate",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", int(np.shape(weights[0])[1])])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer)
    model.ir_version = 8
    props = {"dnpu.format": FORMAT, **{f"dnpu.{k}": json.dumps(v) for k, v in metadata.items()}}
    save_model(model, props, path)
