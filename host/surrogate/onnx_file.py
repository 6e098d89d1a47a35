"""Surrogate ONNX files: the metadata contract, reading and validating them without torch.

A surrogate file is a plain Gemm/Relu chain: input ``volts`` float32 [N, 7] in electrode order,
output ``current_na`` float32 [N, 1], weights inline. Its ``metadata_props`` hold (JSON strings):

    dnpu.format             "dnpu-surrogate/1"
    dnpu.electrode_ranges_v [[lo, hi] x 7]: the ranges it was trained on
    dnpu.output_range_na    [lo, hi]: range of the measured currents it was trained on
    dnpu.amplification      factor from the model's output to nA (1.0: the output is nA)
    dnpu.noise_floor_na     noise floor estimated from repeated reference points
    dnpu.test_rmse_na       RMSE on the independent test set
    dnpu.source             {board identity, firmware version, device seed/serial, datasets}
    dnpu.architecture       {"hidden": 90, "layers": 5, "activation": "relu"}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "dnpu-surrogate/1"
INPUT_NAME = "volts"
OUTPUT_NAME = "current_na"
REQUIRED_KEYS = ("dnpu.format", "dnpu.electrode_ranges_v", "dnpu.output_range_na", "dnpu.amplification",
                 "dnpu.noise_floor_na", "dnpu.test_rmse_na", "dnpu.source")


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
        return np.asarray(self.metadata["electrode_ranges_v"], dtype=np.float64)

    def evaluate_numpy(self, volts: np.ndarray) -> np.ndarray:
        """Straightforward float64 evaluation (a reference for tests), nA [n]."""
        h = np.asarray(volts, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T.astype(np.float64) + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] * float(self.metadata["amplification"])


def read(path: str | Path) -> SurrogateFile:
    """Load and validate a surrogate ONNX file (Gemm/Relu chain with dnpu.* metadata).

    The graph is parsed by the core's reader (core._onnx), the one parser of dense chains in the
    product; its errors come back as SurrogateFileError naming the file and the node."""
    from core._onnx import load_model, read_dense_chain

    path = Path(path)
    if not path.is_file():
        raise SurrogateFileError(f"{path}: no such file")
    try:
        chain = read_dense_chain(load_model(path), source=str(path))
    except (ValueError, FileNotFoundError) as e:
        raise SurrogateFileError(str(e)) from None
    props = chain.metadata
    if props.get("dnpu.format") != FORMAT:
        raise SurrogateFileError(f"{path}: not a DNPU surrogate (metadata dnpu.format is "
                                 f"{props.get('dnpu.format')!r}, expected {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in props]
    if missing:
        raise SurrogateFileError(f"{path}: surrogate metadata lacks {missing}")
    meta: dict[str, Any] = {}
    for k, v in props.items():
        if k.startswith("dnpu."):
            try:
                meta[k[5:]] = json.loads(v)
            except json.JSONDecodeError:
                meta[k[5:]] = v
    if any(r for r in chain.relu[-1:]) or not all(chain.relu[:-1]):
        raise SurrogateFileError(f"{path}: a surrogate has a ReLU after every layer but the last")
    weights = [np.ascontiguousarray(w, dtype=np.float32) for w in chain.weights]
    biases = [np.zeros(w.shape[0], np.float32) if b is None else np.asarray(b, np.float32)
              for w, b in zip(weights, chain.biases)]
    if weights[0].shape[1] != 7 or weights[-1].shape[0] != 1:
        raise SurrogateFileError(f"{path}: maps {weights[0].shape[1]} inputs to {weights[-1].shape[0]} "
                                 "outputs; a surrogate maps 7 volts to 1 current")
    ranges = np.asarray(meta["electrode_ranges_v"], dtype=np.float64)
    if ranges.shape != (7, 2):
        raise SurrogateFileError(f"{path}: dnpu.electrode_ranges_v must be 7 [lo, hi] pairs")
    return SurrogateFile(weights=weights, biases=biases, metadata=meta)


def write(path: str | Path, weights: list[np.ndarray], biases: list[np.ndarray], metadata: dict[str, Any],
          producer: str = "dnpu-toolkit") -> None:
    """Write a Gemm/Relu chain (weights [out, in], inline) with the dnpu.* metadata."""
    from onnx import TensorProto, helper, numpy_helper

    from core._onnx import save_model

    if len(weights) != len(biases) or not weights:
        raise ValueError("need one bias per weight matrix")
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
