"""core.io: the engine's model files, read and written with onnx + numpy only (no torch).

    load_surrogate(path) -> Surrogate        a dense Gemm/Relu chain: a dnpu-surrogate/1 file, or
                                             any such chain (torch.onnx.export of nn.Sequential)
    load_network(path) -> Network            a dnpu-network/1 file, ready to evaluate
    read_network(path) -> NetworkFile        the same file as layers, surrogates and metadata
    write_network(path, n_inputs, layers, surrogates, metadata) -> Path
    read_dense_chain(model) -> DenseChain    a dense chain's layers as numpy arrays
    load_model(path) / save_model(model, props, path)   ONNX files: clear errors, atomic writes

The evaluators (core.surrogate, core.network) know nothing of files; this module imports their
types. The surrogate file's metadata contract (format, ranges, amplification) is
core.surrogate_format.

A network file (``dnpu-network/1``) is an ordinary ONNX model that onnxruntime runs unchanged:
input ``x`` float32 [n, n_inputs], output ``y`` float32 [n, n_outputs]. Its layers are, in
graph order:

    Linear       Gemm(h, <L>.weight, <L>.bias?, transB=1)
    Affine       Mul(h, <L>.scale) -> Add(., <L>.shift)
    Standardize  Sub(h, <L>.mean) -> Div(., <L>.std)
    DnpuLayer    one call per node of the model-local function dnpu.DnpuNode<s> (s: surrogate
                 index), then Concat(axis=1) of the nodes' [n, 1] outputs

where ``<L>`` is ``layers.<l>`` and every parameter is a named initializer. A DNPU node's call
takes the layer input and the initializers ``layers.<l>.nodes.<k>.<name>`` for name in
NODE_INPUTS: ``inputs`` (int64 feature indices), ``data_electrodes`` and ``control_electrodes``
(int64 electrode indices), ``control_voltages``, ``input_scale``, ``input_offset``,
``input_low``, ``input_high`` (float32, one per data electrode), ``output_scale`` and
``output_offset`` (float32 [1]). With E = core.electrodes.N_ELECTRODES, the function
dnpu.DnpuNode<s> computes

    v_data = min(max(x[:, inputs] * input_scale + input_offset, input_low), input_high)
    volts  = v_data @ OneHot(data_electrodes, E) + ScatterElements(zeros(E), control_electrodes, control_voltages)
    y      = dnpu.Surrogate<s>(volts) * output_scale + output_offset

and dnpu.Surrogate<s> is the surrogate's Gemm/Relu chain with its weights as Constant nodes
(amplification folded into the last layer, so its output is nA). So the electrodes, the
control voltages and the surrogate are read straight from the file (``read_network``) and
also drive onnxruntime's computation: what a reader sees is what the graph computes.

Metadata (``metadata_props``): ``dnpu.format`` = ``dnpu-network/1``, ``dnpu.n_inputs``,
``dnpu.surrogates`` (JSON list: each surrogate's own metadata_props), ``dnpu.metadata`` (JSON
object given by the writer, e.g. the task, the data set the model expects, its accuracy).
See docs/model-format.md.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .electrodes import N_ELECTRODES, check_electrodes, control_electrodes
from .network import Affine, DnpuLayer, DnpuNode, Layer, Linear, Network, Standardize
from .surrogate import Surrogate
from .surrogate_format import AMPLIFICATION_KEY, amplification

__all__ = ["load_surrogate", "load_network", "read_network", "write_network", "NetworkFile",
           "NetworkFormatError", "NETWORK_FORMAT", "DOMAIN", "NODE_INPUTS", "DenseChain",
           "read_dense_chain", "load_model", "save_model"]

NETWORK_FORMAT = "dnpu-network/1"
DOMAIN = "dnpu"
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "x", "y"
NODE_INPUTS = ("inputs", "data_electrodes", "control_electrodes", "control_voltages", "input_scale",
               "input_offset", "input_low", "input_high", "output_scale", "output_offset")
_INT_INPUTS = ("inputs", "data_electrodes", "control_electrodes")


class NetworkFormatError(ValueError):
    """A file that is ONNX but not a DNPU network of this format; the message says why."""


@dataclass(frozen=True)
class NetworkFile:
    """What read_network returns (it also unpacks as (n_inputs, layers, surrogates, metadata))."""

    n_inputs: int
    layers: tuple[Layer, ...]
    surrogates: tuple[Surrogate, ...]
    metadata: dict[str, Any]
    surrogate_metadata: tuple[dict[str, str], ...] = ()

    def __iter__(self):
        return iter((self.n_inputs, self.layers, self.surrogates, self.metadata))


# ---------------------------------------------------------------------------------------------
# dense Gemm/Relu chains


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


def load_surrogate(path: str | os.PathLike[str]) -> Surrogate:
    """Loads a Gemm/Relu chain (a surrogate file, or what torch.onnx.export writes for an
    nn.Sequential of Linear and ReLU), weights inline or in external data files, with its
    metadata_props as ``Surrogate.metadata`` (a ``dnpu.amplification`` there scales the output to
    nA, see core.surrogate_format). Other graphs raise ValueError naming the node; a missing
    file raises FileNotFoundError."""
    chain = read_dense_chain(load_model(path), source=str(path))
    amplification(chain.metadata, str(path))  # a bad value is refused naming the file
    return Surrogate(chain.weights, chain.biases, chain.relu, chain.metadata)


# ---------------------------------------------------------------------------------------------
# writing network files

def _as_surrogate(s: Surrogate | str | os.PathLike[str], i: int) -> Surrogate:
    if isinstance(s, Surrogate):
        return s
    if isinstance(s, (str, os.PathLike)):
        return load_surrogate(s)
    raise TypeError(f"surrogates[{i}]: expected a path or a core.Surrogate, got {type(s).__name__}")


def _surrogate_function(s: Surrogate, idx: int) -> onnx.FunctionProto:
    """The surrogate as the function dnpu.Surrogate<idx>, its layers as the kernels compute them
    (amplification folded into the last), so the function returns nA."""
    nodes, cur = [], "volts"
    n = len(s.weights)
    for l, r in enumerate(s.relu):
        W, b = s._packed_layer(l)
        bias = np.zeros(W.shape[0], np.float32) if b is None else b
        wn, bn = f"w{l}", f"b{l}"
        nodes.append(helper.make_node("Constant", [], [wn], value=numpy_helper.from_array(W, wn)))
        nodes.append(helper.make_node("Constant", [], [bn], value=numpy_helper.from_array(bias, bn)))
        out = "current" if (l == n - 1 and not r) else f"g{l}"
        nodes.append(helper.make_node("Gemm", [cur, wn, bn], [out], transB=1))
        cur = out
        if r:
            out = "current" if l == n - 1 else f"r{l}"
            nodes.append(helper.make_node("Relu", [cur], [out]))
            cur = out
    return helper.make_function(DOMAIN, f"Surrogate{idx}", ["volts"], ["current"], nodes,
                                [helper.make_opsetid("", OPSET)],
                                doc_string=f"DNPU surrogate {idx}: volts [n, {s.n_inputs}] -> nA [n, 1]")


def _node_function(idx: int) -> onnx.FunctionProto:
    mk = helper.make_node
    nodes = [
        mk("Gather", ["x", "inputs"], ["xd"], axis=1),
        mk("Mul", ["xd", "input_scale"], ["t0"]),
        mk("Add", ["t0", "input_offset"], ["t1"]),
        mk("Max", ["t1", "input_low"], ["t2"]),
        mk("Min", ["t2", "input_high"], ["vdata"]),
        mk("Constant", [], ["depth"], value=numpy_helper.from_array(np.array(N_ELECTRODES, np.int64), "depth")),
        mk("Constant", [], ["onoff"], value=numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff")),
        mk("OneHot", ["data_electrodes", "depth", "onoff"], ["place"], axis=-1),
        mk("MatMul", ["vdata", "place"], ["vplaced"]),
        mk("Constant", [], ["zeros"], value=numpy_helper.from_array(np.zeros(N_ELECTRODES, np.float32), "zeros")),
        mk("ScatterElements", ["zeros", "control_electrodes", "control_voltages"], ["vctrl"], axis=0),
        mk("Add", ["vplaced", "vctrl"], ["volts"]),
        mk(f"Surrogate{idx}", ["volts"], ["current"], domain=DOMAIN),
        mk("Mul", ["current", "output_scale"], ["y0"]),
        mk("Add", ["y0", "output_offset"], ["y"]),
    ]
    return helper.make_function(DOMAIN, f"DnpuNode{idx}", ["x"] + list(NODE_INPUTS), ["y"], nodes,
                                [helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
                                doc_string="one DNPU node: input transform, electrode placement, surrogate, output affine")


def write_network(path: str | os.PathLike[str], n_inputs: int, layers: Sequence[Layer],
                  surrogates: Surrogate | str | os.PathLike[str] | Sequence[Surrogate | str | os.PathLike[str]],
                  metadata: Mapping[str, Any] | None = None, *, producer: str = "dnpu-toolkit") -> Path:
    """Write a DNPU network as ONNX (format dnpu-network/1) and return its path.

    n_inputs: features of the network input. layers: core.network layers (Linear, Affine,
    Standardize, DnpuLayer of DnpuNode), applied in order. surrogates: one surrogate (path to a
    surrogate ONNX file or a core.Surrogate) shared by every node, or a list that
    DnpuNode.surrogate indexes. metadata: any JSON-serialisable mapping, stored as dnpu.metadata
    (deploy reads "dataset", e.g. "mnist:test", and "task" from it).

    The layers are validated by building a core.Network first, so a file that is written is one
    that core.io.load_network loads. For the board backend of host.deploy, give every node's
    input_low/input_high (its electrodes' ranges): it refuses nodes whose voltages could leave
    the board's limits. Example, a ring 2-2-1 network (data on e1, e2; one output, a logit)::

        from core.io import write_network
        from core.network import Affine, DnpuLayer, DnpuNode, Standardize
        R = dict(input_low=(-1.2, -1.2), input_high=(0.6, 0.6), inputs=(0, 1))   # both read x0, x1
        hidden = DnpuLayer([DnpuNode((1, 2), control_voltages=(0.1, -0.3, 0.2, 0.0, -0.1), **R),
                            DnpuNode((1, 2), control_voltages=(0.0, 0.2, -0.5, 0.1, 0.2), **R)])
        out = DnpuLayer([DnpuNode((1, 2), control_voltages=(-0.2, 0.3, 0.1, -0.4, 0.0), **R)])
        write_network("ring.onnx", 2, [hidden, Standardize(mean=(-40.0, -35.0), std=(12.0, 9.0)),
                                       Affine(scale=0.45, shift=-0.3), out, Affine(0.2, 8.0)],
                      "models/surrogate.onnx", {"task": "ring", "dataset": "data/ring-test.npz"})
    """
    sur_in = [surrogates] if isinstance(surrogates, (Surrogate, str, os.PathLike)) else list(surrogates)
    surs = [_as_surrogate(s, i) for i, s in enumerate(sur_in)]
    net = Network(n_inputs, layers, surs)  # validates everything (and normalises inputs=None)
    meta_json = json.dumps(dict(metadata or {}), allow_nan=False, default=_json_default)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(a, name))
        return name

    cur, width = INPUT_NAME, net.n_inputs
    n_layers = len(net.layers)
    for li, layer in enumerate(net.layers):
        p = f"layers.{li}"
        out = OUTPUT_NAME if li == n_layers - 1 else f"{p}.out"
        if isinstance(layer, Linear):
            W = np.asarray(layer.weight, np.float32)
            ins = [cur, init(f"{p}.weight", W)]
            if layer.bias is not None:
                ins.append(init(f"{p}.bias", np.broadcast_to(np.asarray(layer.bias, np.float32).reshape(-1),
                                                             (W.shape[0],)).copy()))
            nodes.append(helper.make_node("Gemm", ins, [out], name=f"{p}.linear", transB=1))
            width = W.shape[0]
        elif isinstance(layer, (Affine, Standardize)):
            a, b, ops, names = ((layer.scale, layer.shift, ("Mul", "Add"), ("scale", "shift"))
                                if isinstance(layer, Affine) else
                                (layer.mean, layer.std, ("Sub", "Div"), ("mean", "std")))
            va = np.broadcast_to(np.asarray(a, np.float32).reshape(-1), (width,)).copy()
            vb = np.broadcast_to(np.asarray(b, np.float32).reshape(-1), (width,)).copy()
            kind = type(layer).__name__.lower()
            nodes.append(helper.make_node(ops[0], [cur, init(f"{p}.{names[0]}", va)], [f"{p}.t"],
                                          name=f"{p}.{kind}.0"))
            nodes.append(helper.make_node(ops[1], [f"{p}.t", init(f"{p}.{names[1]}", vb)], [out],
                                          name=f"{p}.{kind}.1"))
        elif isinstance(layer, DnpuLayer):
            outs, nxt = [], 0
            for k, node in enumerate(layer.nodes):
                q = f"{p}.nodes.{k}"
                s = surs[node.surrogate]
                data = list(check_electrodes(node.data_electrodes, f"{q}.data_electrodes"))
                ctrl = list(control_electrodes(data))
                d = len(data)
                idx = (np.arange(nxt, nxt + d) if node.inputs is None
                       else np.asarray(node.inputs, np.int64).reshape(-1))
                nxt = int(idx.max()) + 1

                def vec(v: Any, n: int = d) -> np.ndarray:
                    return np.broadcast_to(np.asarray(v, np.float32).reshape(-1), (n,)).copy()

                vals = {"inputs": idx.astype(np.int64), "data_electrodes": np.array(data, np.int64),
                        "control_electrodes": np.array(ctrl, np.int64),
                        "control_voltages": np.asarray(node.control_voltages, np.float32).reshape(-1),
                        "input_scale": vec(node.input_scale), "input_offset": vec(node.input_offset),
                        "input_low": vec(node.input_low), "input_high": vec(node.input_high),
                        "output_scale": vec(node.output_scale, 1), "output_offset": vec(node.output_offset, 1)}
                ins = [cur] + [init(f"{q}.{name}", vals[name]) for name in NODE_INPUTS]
                nodes.append(helper.make_node(f"DnpuNode{node.surrogate}", ins, [f"{q}.out"], name=f"{q}",
                                              domain=DOMAIN))
                outs.append(f"{q}.out")
            nodes.append(helper.make_node("Concat", outs, [out], name=f"{p}.concat", axis=1))
            width = len(layer.nodes)
        cur = out
    functions = []
    for i, s in enumerate(surs):
        functions += [_surrogate_function(s, i), _node_function(i)]
    graph = helper.make_graph(
        nodes, "dnpu_network",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", net.n_inputs])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", width])], inits)
    model = helper.make_model(graph, functions=functions, producer_name=producer,
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    props = {"dnpu.format": NETWORK_FORMAT, "dnpu.n_inputs": str(net.n_inputs),
             "dnpu.surrogates": json.dumps([_folded_metadata(s) for s in surs]),
             "dnpu.metadata": meta_json}
    return save_model(model, props, path)


def _folded_metadata(s: Surrogate) -> dict[str, str]:
    """The surrogate's metadata as stored in a network file: its amplification is folded into the
    function's last layer, so the stored value is 1.0 (the original kept beside it)."""
    m = dict(s.metadata)
    if AMPLIFICATION_KEY in m:
        if s.amplification != 1.0 or "dnpu.amplification_folded" not in m:  # keep one folded earlier
            m["dnpu.amplification_folded"] = m[AMPLIFICATION_KEY]
        m[AMPLIFICATION_KEY] = "1.0"
    return m


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"metadata value of type {type(o).__name__} is not JSON-serialisable")


# ---------------------------------------------------------------------------------------------
# reading

def _surrogate_from_function(f: onnx.FunctionProto, source: str) -> Surrogate:
    if list(f.input) != ["volts"] or len(f.output) != 1:
        raise NetworkFormatError(f"{source}: function {f.name}: expected input 'volts' and one output")
    g = helper.make_graph(list(f.node), f.name,
                          [helper.make_tensor_value_info("volts", TensorProto.FLOAT, ["n", None])],
                          [helper.make_tensor_value_info(f.output[0], TensorProto.FLOAT, ["n", None])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    try:
        chain = read_dense_chain(m, source=f"{source}: function {f.name}")
    except ValueError as e:
        raise NetworkFormatError(str(e)) from None
    return Surrogate(chain.weights, chain.biases, chain.relu)


def read_network(path: str | os.PathLike[str]) -> NetworkFile:
    """Read a dnpu-network/1 file: (n_inputs, layers, surrogates, metadata), without torch.

    FileNotFoundError for a missing file; ValueError for bytes that are not ONNX;
    NetworkFormatError (a ValueError) for an ONNX model that is not a DNPU network of this
    format, naming what is wrong."""
    model = load_model(path)
    src = str(path)
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("dnpu.format") != NETWORK_FORMAT:
        raise NetworkFormatError(f"{src}: not a DNPU network (metadata dnpu.format is "
                                 f"{props.get('dnpu.format')!r}, expected {NETWORK_FORMAT!r})")
    try:
        n_inputs = int(props["dnpu.n_inputs"])
        metadata = json.loads(props.get("dnpu.metadata", "{}"))
        sur_meta = json.loads(props.get("dnpu.surrogates", "[]"))
    except (KeyError, ValueError) as e:
        raise NetworkFormatError(f"{src}: bad dnpu.* metadata: {e}") from None
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    funcs = {(f.domain, f.name): f for f in model.functions}
    surs: dict[int, Surrogate] = {}

    def surrogate(i: int) -> Surrogate:
        if i not in surs:
            f = funcs.get((DOMAIN, f"Surrogate{i}"))
            if f is None:
                raise NetworkFormatError(f"{src}: function {DOMAIN}.Surrogate{i} is missing")
            surs[i] = _surrogate_from_function(f, src)
            if i < len(sur_meta) and isinstance(sur_meta[i], dict):
                surs[i] = Surrogate(surs[i].weights, surs[i].biases, surs[i].relu,
                                    {str(k): str(v) for k, v in sur_meta[i].items()})
        return surs[i]

    def const(name: str, where: str) -> np.ndarray:
        if name not in inits:
            raise NetworkFormatError(f"{src}: {where}: operand {name!r} is not an initializer")
        return inits[name]

    real_inputs = [i for i in g.input if i.name not in inits]
    if len(real_inputs) != 1 or len(g.output) != 1:
        raise NetworkFormatError(f"{src}: a DNPU network has one input and one output")
    cur = real_inputs[0].name
    nodes = list(g.node)
    layers: list[Layer] = []
    i = 0
    while i < len(nodes):
        nd = nodes[i]
        where = f"node {nd.name or i!r} ({nd.op_type})"
        if nd.domain not in ("", "ai.onnx", DOMAIN):
            raise NetworkFormatError(f"{src}: {where}: unknown domain {nd.domain!r}")
        if nd.domain == "" and nd.op_type == "Gemm" and nd.input[0] == cur:
            attrs = {a.name: helper.get_attribute_value(a) for a in nd.attribute}
            if attrs.get("transA", 0) or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0 \
                    or attrs.get("beta", 1.0) != 1.0:
                raise NetworkFormatError(f"{src}: {where}: a Linear layer is Gemm with transB=1 only")
            W = const(nd.input[1], where).astype(np.float32)
            b = const(nd.input[2], where).astype(np.float32) if len(nd.input) > 2 and nd.input[2] else None
            layers.append(Linear(W, b))
            cur, i = nd.output[0], i + 1
        elif nd.domain == "" and nd.op_type in ("Mul", "Sub") and nd.input[0] == cur and i + 1 < len(nodes):
            nx = nodes[i + 1]
            want = {"Mul": "Add", "Sub": "Div"}[nd.op_type]
            if nx.op_type != want or nx.input[0] != nd.output[0]:
                raise NetworkFormatError(f"{src}: {where}: expected {want} to follow")
            a = const(nd.input[1], where).astype(np.float64)
            b = const(nx.input[1], where).astype(np.float64)
            layers.append(Affine(a, b) if nd.op_type == "Mul" else Standardize(a, b))
            cur, i = nx.output[0], i + 2
        elif nd.domain == DOMAIN and nd.op_type.startswith("DnpuNode"):
            dnodes: list[DnpuNode] = []
            outs: list[str] = []
            while i < len(nodes) and nodes[i].domain == DOMAIN and nodes[i].op_type.startswith("DnpuNode"):
                c = nodes[i]
                w = f"node {c.name or i!r} ({c.op_type})"
                try:
                    s_idx = int(c.op_type[len("DnpuNode"):])
                except ValueError:
                    raise NetworkFormatError(f"{src}: {w}: unknown DNPU function") from None
                if c.input[0] != cur or len(c.input) != 1 + len(NODE_INPUTS):
                    raise NetworkFormatError(f"{src}: {w}: a DNPU node takes the layer input and "
                                             f"{len(NODE_INPUTS)} parameters")
                if (DOMAIN, c.op_type) not in funcs:
                    raise NetworkFormatError(f"{src}: {w}: function {DOMAIN}.{c.op_type} is missing")
                v = {name: const(arg, w) for name, arg in zip(NODE_INPUTS, c.input[1:])}
                for name in _INT_INPUTS:
                    if v[name].dtype.kind not in "iu":
                        raise NetworkFormatError(f"{src}: {w}: {name} must be integers")
                surrogate(s_idx)
                data = [int(e) for e in v["data_electrodes"].reshape(-1)]
                ctrl = [int(e) for e in v["control_electrodes"].reshape(-1)]
                if sorted(data + ctrl) != list(range(N_ELECTRODES)):
                    raise NetworkFormatError(f"{src}: {w}: data {data} and control {ctrl} electrodes do "
                                             f"not cover 0..{N_ELECTRODES - 1} once each")
                if ctrl != sorted(ctrl):
                    raise NetworkFormatError(f"{src}: {w}: control electrodes must be ascending")
                dnodes.append(DnpuNode(
                    data_electrodes=tuple(data), control_voltages=tuple(v["control_voltages"].astype(np.float64).reshape(-1)),
                    input_scale=v["input_scale"].astype(np.float64), input_offset=v["input_offset"].astype(np.float64),
                    input_low=v["input_low"].astype(np.float64), input_high=v["input_high"].astype(np.float64),
                    output_scale=float(v["output_scale"].reshape(-1)[0]),
                    output_offset=float(v["output_offset"].reshape(-1)[0]),
                    surrogate=s_idx, inputs=tuple(int(j) for j in v["inputs"].reshape(-1))))
                outs.append(c.output[0])
                i += 1
            if i >= len(nodes) or nodes[i].op_type != "Concat" or list(nodes[i].input) != outs:
                raise NetworkFormatError(f"{src}: DNPU layer {len(layers)}: the node outputs must be "
                                         f"concatenated (Concat, axis=1) right after the calls")
            layers.append(DnpuLayer(tuple(dnodes)))
            cur, i = nodes[i].output[0], i + 1
        else:
            raise NetworkFormatError(f"{src}: {where}: not part of a DNPU network (expected Gemm, Mul+Add, "
                                     f"Sub+Div or {DOMAIN}.DnpuNode calls continuing from {cur!r})")
    if not layers:
        raise NetworkFormatError(f"{src}: the graph holds no layers")
    if cur != g.output[0].name:
        raise NetworkFormatError(f"{src}: graph output {g.output[0].name!r} is not the last layer's output")
    n_sur = max(surs) + 1 if surs else 0
    for j in range(n_sur):
        surrogate(j)
    return NetworkFile(n_inputs, tuple(layers), tuple(surs[j] for j in range(n_sur)), metadata,
                       tuple(dict(m) if isinstance(m, dict) else {} for m in sur_meta))


def load_network(path: str | os.PathLike[str]) -> Network:
    """A dnpu-network/1 file (see docs/model-format.md) as a core.Network; the file's
    dnpu.metadata lands in ``network.metadata``. A missing file raises FileNotFoundError, a file
    that is not ONNX or not a DNPU network ValueError naming the problem."""
    nf = read_network(path)
    net = Network(nf.n_inputs, nf.layers, nf.surrogates)
    net.metadata = dict(nf.metadata)
    return net
