"""Helpers for the core engine tests: random dense chains written as ONNX files."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def make_chain_model(Ws: Sequence[np.ndarray], bs: Sequence[np.ndarray | None],
                     relu: Sequence[bool] | None = None, style: str = "gemm",
                     metadata: dict[str, str] | None = None, in_dim: int | str | None = None,
                     out_dim: int | str | None = None) -> onnx.ModelProto:
    """A dense chain as ONNX. style: 'gemm' (transB=1), 'gemm_t0' (transB=0, alpha/beta != 1),
    'matmul' (MatMul + Add)."""
    relu = [True] * (len(Ws) - 1) + [False] if relu is None else list(relu)
    nodes: list = []
    inits: list = []
    cur = "x"
    for l, (W, b) in enumerate(zip(Ws, bs)):
        W = np.asarray(W, np.float32)
        if style == "gemm":
            inits.append(numpy_helper.from_array(W, f"W{l}"))
            ins = [cur, f"W{l}"]
            if b is not None:
                inits.append(numpy_helper.from_array(np.asarray(b, np.float32), f"b{l}"))
                ins.append(f"b{l}")
            nodes.append(helper.make_node("Gemm", ins, [f"g{l}"], name=f"gemm{l}", transB=1))
        elif style == "gemm_t0":
            alpha, beta = 0.5, 2.0
            inits.append(numpy_helper.from_array(np.ascontiguousarray(W.T / alpha), f"W{l}"))
            ins = [cur, f"W{l}"]
            if b is not None:
                inits.append(numpy_helper.from_array(
                    (np.asarray(b, np.float32) / beta).reshape(1, -1), f"b{l}"))
                ins.append(f"b{l}")
            nodes.append(helper.make_node("Gemm", ins, [f"g{l}"], name=f"gemm{l}", alpha=alpha,
                                          beta=beta, transB=0))
        elif style == "matmul":
            inits.append(numpy_helper.from_array(np.ascontiguousarray(W.T), f"W{l}"))
            nodes.append(helper.make_node("MatMul", [cur, f"W{l}"], [f"m{l}"], name=f"matmul{l}"))
            if b is not None:
                inits.append(numpy_helper.from_array(np.asarray(b, np.float32), f"b{l}"))
                nodes.append(helper.make_node("Add", [f"m{l}", f"b{l}"], [f"g{l}"], name=f"add{l}"))
            else:
                nodes.append(helper.make_node("Identity", [f"m{l}"], [f"g{l}"], name=f"id{l}"))
        else:
            raise ValueError(style)
        cur = f"g{l}"
        if relu[l]:
            nodes.append(helper.make_node("Relu", [cur], [f"r{l}"], name=f"relu{l}"))
            cur = f"r{l}"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    k = Ws[0].shape[1] if in_dim is None else in_dim
    n = Ws[-1].shape[0] if out_dim is None else out_dim
    g = helper.make_graph(nodes, "chain",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    if metadata:
        helper.set_model_props(m, metadata)
    return m


def random_chain(rng: np.random.Generator, dims: Sequence[int], bias: bool = True
                 ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    Ws = [(rng.standard_normal((n, k)) * np.sqrt(2.0 / k)).astype(np.float32)
          for k, n in zip(dims[:-1], dims[1:])]
    bs = [(rng.standard_normal(n) * 0.1).astype(np.float32) if bias else None for n in dims[1:]]
    return Ws, bs


def surrogate_metadata(amplification: float = 1.0) -> dict[str, str]:
    """Complete dnpu-surrogate/1 metadata_props for a test surrogate file (the format as is, the
    other values as JSON, as host.surrogate.onnx_file.write stores them)."""
    ranges = [[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2
    values = {"electrode_ranges_v": ranges, "output_range_na": [-300.0, 100.0],
              "amplification": amplification, "noise_floor_na": 1.4, "test_rmse_na": 1.7,
              "source": {"board": "test", "device": "random weights"}}
    return {"dnpu.format": "dnpu-surrogate/1", **{f"dnpu.{k}": json.dumps(v) for k, v in values.items()}}
