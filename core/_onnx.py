"""Reading dense Gemm/Relu chains out of ONNX files (no torch, no onnxruntime)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["DenseChain", "load_model", "read_dense_chain", "save_model"]


@dataclass(frozen=True)
class DenseChain:
    """Layers of y = relu?(W x + b) in torch layout (W is [n_out, n_in]), plus metadata."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray | None, ...]
    relu: tuple[bool, ...]
    metadata: dict[str, str]


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Loads an ONNX file (external data resolved next to it) or raises a clear error.

    FileNotFoundError: the file does not exist.  ValueError: it is not a readable ONNX model
    (bad bytes, no graph, an external data file missing)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"ONNX file not found: {p}")
    if not p.is_file():
        raise ValueError(f"{p} is not a file")
    try:
        model = onnx.load(str(p), load_external_data=True)
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise ValueError(f"{p} is not a readable ONNX model: {type(e).__name__}: {e}") from None
    if not model.graph.node or not model.graph.output or not model.graph.input:
        raise ValueError(f"{p} is not an ONNX model with a graph (no nodes, inputs or outputs)")
    return model


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return f"node {node.name or '#' + str(index)!r} (op_type {node.op_type})"


def _static_dim(vi: onnx.ValueInfoProto, axis: int) -> int | None:
    t = vi.type.tensor_type
    if not t.HasField("shape") or len(t.shape.dim) <= axis:
        return None
    d = t.shape.dim[axis]
    return int(d.dim_value) if d.HasField("dim_value") else None


def _bias_vector(c: np.ndarray, n: int, label: str) -> np.ndarray:
    if c.size == 1:
        return np.full(n, float(c.reshape(-1)[0]))
    if c.shape in ((n,), (1, n)):
        return c.reshape(n).astype(np.float64)
    raise ValueError(f"{label}: bias of shape {c.shape} does not broadcast to ({n},)")


def read_dense_chain(model: onnx.ModelProto, source: str = "model") -> DenseChain:
    """Interprets the graph as input -> (Gemm | MatMul [+ Add]) [Relu] -> ... -> output.

    Supported: Gemm (alpha, beta, transB; transA = 0), MatMul with a constant right operand,
    Add of a constant bias right after it, Relu, Identity, Constant.  Anything else, or a node
    that does not continue the chain, raises ValueError naming the node."""
    g = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise ValueError(f"{source}: expected exactly one graph input, found "
                         f"{[i.name for i in inputs]}")
    if len(g.output) != 1:
        raise ValueError(f"{source}: expected exactly one graph output, found "
                         f"{[o.name for o in g.output]}")
    x = inputs[0]
    if x.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ValueError(f"{source}: graph input {x.name!r} must be float32, got elem_type "
                         f"{onnx.TensorProto.DataType.Name(x.type.tensor_type.elem_type)}")
    cur = x.name
    width = _static_dim(x, 1)
    Ws: list[np.ndarray] = []
    bs: list[np.ndarray | None] = []
    relu: list[bool] = []

    def const(name: str, label: str) -> np.ndarray:
        if name not in consts:
            raise ValueError(f"{label}: operand {name!r} is not a constant initializer")
        a = consts[name]
        if a.dtype.kind != "f":
            raise ValueError(f"{label}: operand {name!r} has dtype {a.dtype}, expected float")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{label}: operand {name!r} holds NaN or inf")
        return a.astype(np.float64)

    def add_layer(W: np.ndarray, b: np.ndarray | None, label: str) -> None:
        nonlocal width
        if width is not None and W.shape[1] != width:
            raise ValueError(f"{label}: inconsistent shapes: weight expects {W.shape[1]} inputs "
                             f"but the chain carries {width}")
        Ws.append(W)
        bs.append(b)
        relu.append(False)
        width = W.shape[0]

    for i, node in enumerate(g.node):
        label = f"{source}: {_node_label(node, i)}"
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"{label}: unsupported node (domain {node.domain!r})")
        if op == "Constant":
            attrs = {a.name: a for a in node.attribute}
            if "value" not in attrs:
                raise ValueError(f"{label}: unsupported Constant form (only 'value')")
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"].t)
            continue
        if op == "Add" and len(node.input) == 2 and node.input[1] == cur:
            node_inputs = [node.input[1], node.input[0]]  # bias + x
        else:
            node_inputs = list(node.input)
        if not node_inputs or node_inputs[0] != cur or len(node.output) != 1:
            raise ValueError(f"{label}: unsupported graph: node does not continue the "
                             f"Gemm/Relu chain from {cur!r}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op == "Gemm":
            if attrs.get("transA", 0):
                raise ValueError(f"{label}: unsupported attribute transA=1")
            B = const(node.input[1], label)
            if B.ndim != 2:
                raise ValueError(f"{label}: weight must be 2-D, got shape {B.shape}")
            W = B if attrs.get("transB", 0) else B.T  # -> [n_out, n_in]
            W = W * float(attrs.get("alpha", 1.0))
            b = None
            if len(node.input) > 2 and node.input[2]:
                b = _bias_vector(const(node.input[2], label), W.shape[0], label)
                b = b * float(attrs.get("beta", 1.0))
            add_layer(W, b, label)
        elif op == "MatMul":
            B = const(node.input[1], label)
            if B.ndim != 2:
                raise ValueError(f"{label}: weight must be 2-D, got shape {B.shape}")
            add_layer(B.T, None, label)
        elif op == "Add":
            if not Ws or relu[-1]:
                raise ValueError(f"{label}: unsupported: Add must follow a MatMul or Gemm")
            c = _bias_vector(const(node_inputs[1], label), Ws[-1].shape[0], label)
            bs[-1] = c if bs[-1] is None else bs[-1] + c
        elif op == "Relu":
            if not Ws or relu[-1]:
                raise ValueError(f"{label}: unsupported: Relu must follow a MatMul or Gemm")
            relu[-1] = True
        elif op == "Identity":
            pass
        else:
            raise ValueError(f"{label}: unsupported node: a surrogate must be a chain of "
                             f"Gemm/MatMul/Add/Relu")
        cur = node.output[0]
    if not Ws:
        raise ValueError(f"{source}: the graph holds no Gemm or MatMul layer")
    if cur != g.output[0].name:
        raise ValueError(f"{source}: graph output {g.output[0].name!r} is not the end of the "
                         f"chain ({cur!r})")
    out_dim = _static_dim(g.output[0], 1)
    if out_dim is not None and out_dim != Ws[-1].shape[0]:
        raise ValueError(f"{source}: inconsistent shapes: output declared with {out_dim} columns, "
                         f"the chain produces {Ws[-1].shape[0]}")
    meta = {p.key: p.value for p in model.metadata_props}
    return DenseChain(tuple(Ws), tuple(bs), tuple(relu), meta)


def save_model(model: onnx.ModelProto, props: dict[str, str], path: str | os.PathLike[str]) -> Path:
    """Adds the metadata `props`, checks the model and writes it atomically (a temporary file
    renamed over `path`, so a reader never sees half a file); returns the path."""
    for k, v in props.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(model)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(p)
    return p
