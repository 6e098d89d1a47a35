"""The DNPU network ONNX format (``dnpu-network/1``): writing and reading it with onnx + numpy only.

A network file is an ordinary ONNX model that onnxruntime runs unchanged: input ``x`` float32
[n, n_inputs], output ``y`` float32 [n, n_outputs]. Its layers are, in graph order:

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
``output_offset`` (float32 [1]). The function dnpu.DnpuNode<s> computes

    v_data = min(max(x[:, inputs] * input_scale + input_offset, input_low), input_high)
    volts  = v_data @ OneHot(data_electrodes, 7) + ScatterElements(zeros(7), control_electrodes, control_voltages)
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

from ._onnx import load_model, read_dense_chain, save_model
from .network import Affine, DnpuLayer, DnpuNode, Layer, Linear, Standardize
from .surrogate import Surrogate

__all__ = ["FORMAT", "DOMAIN", "NODE_INPUTS", "NetworkFile", "NetworkFormatError", "write_network",
           "read_network"]

FORMAT = "dnpu-network/1"
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
# writing

def _as_surrogate(s: Surrogate | str | os.PathLike[str], i: int) -> Surrogate:
    if isinstance(s, Surrogate):
        return s
    if isinstance(s, (str, os.PathLike)):
        return Surrogate.from_onnx(s)
    raise TypeError(f"surrogates[{i}]: expected a path or a core.Surrogate, got {type(s).__name__}")


def _surrogate_function(s: Surrogate, idx: int) -> onnx.FunctionProto:
    amp = 1.0
    raw = s.metadata.get("dnpu.amplification")
    if raw is not None:
        try:
            amp = float(json.loads(raw))
        except (ValueError, TypeError):
            raise NetworkFormatError(f"surrogates[{idx}]: dnpu.amplification {raw!r} is not a number") from None
    nodes, cur = [], "volts"
    n = len(s.weights)
    for l, (W, b, r) in enumerate(zip(s.weights, s.biases, s.relu)):
        W = np.asarray(W, np.float64) * (amp if l == n - 1 else 1.0)
        bias = np.zeros(W.shape[0]) if b is None else np.asarray(b, np.float64) * (amp if l == n - 1 else 1.0)
        wn, bn = f"w{l}", f"b{l}"
        nodes.append(helper.make_node("Constant", [], [wn], value=numpy_helper.from_array(W.astype(np.float32), wn)))
        nodes.append(helper.make_node("Constant", [], [bn], value=numpy_helper.from_array(bias.astype(np.float32), bn)))
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


def _node_function(idx: int, n_electrodes: int) -> onnx.FunctionProto:
    mk = helper.make_node
    nodes = [
        mk("Gather", ["x", "inputs"], ["xd"], axis=1),
        mk("Mul", ["xd", "input_scale"], ["t0"]),
        mk("Add", ["t0", "input_offset"], ["t1"]),
        mk("Max", ["t1", "input_low"], ["t2"]),
        mk("Min", ["t2", "input_high"], ["vdata"]),
        mk("Constant", [], ["depth"], value=numpy_helper.from_array(np.array(n_electrodes, np.int64), "depth")),
        mk("Constant", [], ["onoff"], value=numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff")),
        mk("OneHot", ["data_electrodes", "depth", "onoff"], ["place"], axis=-1),
        mk("MatMul", ["vdata", "place"], ["vplaced"]),
        mk("Constant", [], ["zeros"], value=numpy_helper.from_array(np.zeros(n_electrodes, np.float32), "zeros")),
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
    that core.Network.from_onnx loads. For the board backend of host.deploy, give every node's
    input_low/input_high (its electrodes' ranges): it refuses nodes whose voltages could leave
    the board's limits. Example, a ring 2-2-1 network (data on e1, e2; one output, a logit)::

        from core.network import Affine, DnpuLayer, DnpuNode, Standardize
        from core.network_onnx import write_network
        R = dict(input_low=(-1.2, -1.2), input_high=(0.6, 0.6), inputs=(0, 1))   # both read x0, x1
        hidden = DnpuLayer([DnpuNode((1, 2), control_voltages=(0.1, -0.3, 0.2, 0.0, -0.1), **R),
                            DnpuNode((1, 2), control_voltages=(0.0, 0.2, -0.5, 0.1, 0.2), **R)])
        out = DnpuLayer([DnpuNode((1, 2), control_voltages=(-0.2, 0.3, 0.1, -0.4, 0.0), **R)])
        write_network("ring.onnx", 2, [hidden, Standardize(mean=(-40.0, -35.0), std=(12.0, 9.0)),
                                       Affine(scale=0.45, shift=-0.3), out, Affine(0.2, 8.0)],
                      "models/surrogate.onnx", {"task": "ring", "dataset": "data/ring-test.npz"})
    """
    from .network import Network

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
                data = [int(e) for e in node.data_electrodes]
                ctrl = [e for e in range(s.n_inputs) if e not in data]
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
        functions += [_surrogate_function(s, i), _node_function(i, s.n_inputs)]
    graph = helper.make_graph(
        nodes, "dnpu_network",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", net.n_inputs])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", width])], inits)
    model = helper.make_model(graph, functions=functions, producer_name=producer,
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    props = {"dnpu.format": FORMAT, "dnpu.n_inputs": str(net.n_inputs),
             "dnpu.surrogates": json.dumps([_folded_metadata(s) for s in surs]),
             "dnpu.metadata": meta_json}
    return save_model(model, props, path)


def _folded_metadata(s: Surrogate) -> dict[str, str]:
    """The surrogate's metadata as stored in a network file: its amplification is folded into the
    function's last layer, so the stored value is 1.0 (the original kept beside it)."""
    m = dict(s.metadata)
    if "dnpu.amplification" in m:
        m["dnpu.amplification_folded"] = m["dnpu.amplification"]
        m["dnpu.amplification"] = "1.0"
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
    if props.get("dnpu.format") != FORMAT:
        raise NetworkFormatError(f"{src}: not a DNPU network (metadata dnpu.format is "
                                 f"{props.get('dnpu.format')!r}, expected {FORMAT!r})")
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
                n_el = surrogate(s_idx).n_inputs
                data = [int(e) for e in v["data_electrodes"].reshape(-1)]
                ctrl = [int(e) for e in v["control_electrodes"].reshape(-1)]
                if sorted(data + ctrl) != list(range(n_el)):
                    raise NetworkFormatError(f"{src}: {w}: data {data} and control {ctrl} electrodes do "
                                             f"not cover 0..{n_el - 1} once each")
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
