"""The pieces of host.deploy: data sets, the core/onnxruntime backends, timing, the board backend."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.network import Affine, DnpuLayer, DnpuNode, Linear, Standardize
from core.network_onnx import NetworkFile

BACKENDS = ("core", "onnxruntime", "board")
DEFAULT_BOARD_URL = "sim://?seed=0"
#: voltages this close outside a board limit are float32 roundings of the limit: accepted, then clipped onto it


class DeployError(ValueError):
    """Bad model, data or arguments; the message says what is wrong (exit status 2)."""


@dataclass(frozen=True)
class DataSet:
    x: np.ndarray           # float32 [n, n_inputs]
    labels: np.ndarray      # int64 [n]
    name: str


# ---------------------------------------------------------------------------------------------
# data

def _check_data(x: Any, labels: Any, n_inputs: int, n_classes: int, name: str) -> DataSet:
    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.dtype.kind == "u" and x.dtype.itemsize == 1 and x.ndim == 3 and x.shape[1] * x.shape[2] == n_inputs:
        from host.mnist_data import to_inputs  # uint8 images: the MNIST scaling
        x = to_inputs(x)
    if x.dtype.kind != "f":
        raise DeployError(f"{name}: inputs must be floating point (or uint8 images), got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] != n_inputs:
        raise DeployError(f"{name}: inputs must have shape [n, {n_inputs}] for this model, got {x.shape}")
    if len(x) == 0:
        raise DeployError(f"{name}: holds no samples")
    if not np.all(np.isfinite(x)):
        raise DeployError(f"{name}: inputs hold NaN or inf")
    if labels.dtype.kind not in "iu":
        raise DeployError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (len(x),):
        raise DeployError(f"{name}: labels must have shape [{len(x)}], got {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DeployError(f"{name}: labels must lie in 0..{n_classes - 1} (the model's outputs)")
    return DataSet(np.ascontiguousarray(x, dtype=np.float32), labels.astype(np.int64), name)


def load_data(spec: str, metadata: dict[str, Any], n_inputs: int, n_classes: int) -> DataSet:
    """'test': the test split of the data set the model's metadata names ("mnist:test", ...);
    a path: an .npz with `x` float [n, n_inputs] (or `images` uint8 [n, 28, 28]) and `labels` int [n]."""
    if spec == "test":
        ds = str(metadata.get("dataset", ""))
        if not ds:
            raise DeployError("the model's metadata names no data set: pass --data PATH (.npz with x, labels)")
        if ds.startswith("mnist:"):
            from host.mnist_data import MnistError, load_mnist, to_inputs
            try:
                split = load_mnist().split(ds.split(":", 1)[1])
            except (MnistError, ValueError) as e:
                raise DeployError(str(e)) from None
            return _check_data(to_inputs(split.images), split.labels, n_inputs, n_classes, ds)
        spec = ds
    p = Path(spec)
    if not p.is_file():
        raise DeployError(f"--data {spec}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(z.files)
            key = "x" if "x" in files else "images" if "images" in files else None
            if key is None or "labels" not in files:
                raise DeployError(f"--data {spec}: expected arrays 'x' (or 'images') and 'labels', found {sorted(files)}")
            x, labels = z[key], z["labels"]
    except DeployError:
        raise
    except (OSError, ValueError) as e:
        raise DeployError(f"--data {spec}: not a readable .npz file ({e})") from None
    return _check_data(x, labels, n_inputs, n_classes, str(p))


# ---------------------------------------------------------------------------------------------
# core and onnxruntime

def make_backend(kind: str, model: str | Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A function float32 [n, n_inputs] -> [n, n_outputs] for 'core' or 'onnxruntime'."""
    if kind == "core":
        from core import Network
        net = Network.from_onnx(model)
        return lambda x: net.evaluate(x, threads=threads)
    if kind == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    raise DeployError(f"backend must be one of {BACKENDS[:2]} here, got {kind!r}")


def measure_latency(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, n: int = 1000,
                    warmup: int = 20) -> np.ndarray:
    """Per-sample latency (us) at batch 1 over the first n samples (after a warm-up)."""
    n = min(n, len(x))
    for i in range(min(warmup, len(x))):
        fn(x[i:i + 1])
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        xi = x[i:i + 1]
        t0 = clock()
        fn(xi)
        out[i] = (clock() - t0) / 1e3
    return out


def measure_throughput(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int,
                       repeats: int = 1) -> tuple[np.ndarray, float]:
    """Outputs on all of x at the given batch size, and the best wall time (s) over repeats."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        parts = [fn(x[a:a + batch]) for a in range(0, len(x), batch)]
        dt = time.perf_counter() - t0
        best = min(best, dt)
        out = np.concatenate(parts)
    return out, best


def n_classes(n_outputs: int) -> int:
    """A network with one output is a binary classifier (class 1 where the output, a logit, is > 0)."""
    return 2 if n_outputs == 1 else n_outputs


def predict(logits: np.ndarray) -> np.ndarray:
    """Class per sample: argmax of the outputs, or output > 0 for a single-output network."""
    logits = np.asarray(logits)
    return (logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else logits.argmax(1)


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """[k, k] counts, rows the true class, columns the predicted one."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def summarise(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    pred = predict(logits)
    cm = confusion_matrix(pred, labels, n_classes(logits.shape[1]))
    return {"accuracy": float((pred == labels).mean()), "confusion_matrix": cm.tolist(), "n_samples": int(len(labels))}


# ---------------------------------------------------------------------------------------------
# board

def _apply_host_layer(layer: Any, h: np.ndarray) -> np.ndarray:
    if isinstance(layer, Linear):
        W = np.asarray(layer.weight, np.float64)
        h = h @ W.T
        return h if layer.bias is None else h + np.asarray(layer.bias, np.float64)
    if isinstance(layer, Affine):
        return h * np.asarray(layer.scale, np.float64) + np.asarray(layer.shift, np.float64)
    if isinstance(layer, Standardize):
        return (h - np.asarray(layer.mean, np.float64)) / np.asarray(layer.std, np.float64)
    raise DeployError(f"unsupported layer {type(layer).__name__}")


def node_inputs(layer: DnpuLayer) -> list[np.ndarray]:
    """The feature indices each node of the layer reads (the default: consecutive)."""
    out, nxt = [], 0
    for node in layer.nodes:
        d = len(node.data_electrodes)
        idx = np.arange(nxt, nxt + d) if node.inputs is None else np.asarray(node.inputs, np.int64)
        nxt = int(idx.max()) + 1
        out.append(idx)
    return out


def node_volts(node: DnpuNode, h: np.ndarray, idx: np.ndarray, n_electrodes: int = 7) -> np.ndarray:
    """All electrode voltages [n, 7] the node sees for layer input h (data transformed and clipped)."""
    data = [int(e) for e in node.data_electrodes]
    ctrl = [e for e in range(n_electrodes) if e not in data]
    v = np.empty((len(h), n_electrodes), dtype=np.float64)
    t = h[:, idx] * np.asarray(node.input_scale, np.float64) + np.asarray(node.input_offset, np.float64)
    v[:, data] = np.minimum(np.maximum(t, np.asarray(node.input_low, np.float64)),
                            np.asarray(node.input_high, np.float64))
    v[:, ctrl] = np.asarray(node.control_voltages, np.float64).reshape(1, -1)
    # what the core/onnxruntime compute in float32
    return v.astype(np.float32).astype(np.float64)


def check_limits(nf: NetworkFile, limits_v: np.ndarray) -> None:
    """Refuse, before anything is sent, a network whose voltages can leave the board's limits:
    every control voltage, and every data electrode's clip interval, must lie inside them (up to
    FLOAT32_SLACK_V, the float32 rounding of the limits themselves, e.g. -1.2 stored as -1.2000000477)."""
    from host.board import FLOAT32_SLACK_V

    lo, hi = limits_v[:, 0] - FLOAT32_SLACK_V, limits_v[:, 1] + FLOAT32_SLACK_V
    names = [f"e{i}" for i in range(len(lo))]
    for li, layer in enumerate(nf.layers):
        if not isinstance(layer, DnpuLayer):
            continue
        for k, node in enumerate(layer.nodes):
            where = f"layers[{li}].nodes[{k}]"
            data = [int(e) for e in node.data_electrodes]
            ctrl = [e for e in range(len(lo)) if e not in data]
            cv = np.asarray(node.control_voltages, np.float64).reshape(-1)
            for e, v in zip(ctrl, cv):
                if not lo[e] <= v <= hi[e]:
                    raise DeployError(f"{where}: control voltage {names[e]} = {v:.6g} V is outside the board's "
                                      f"limits [{limits_v[e, 0]}, {limits_v[e, 1]}] V: refused, nothing was sent")
            d = len(data)
            dlo = np.broadcast_to(np.asarray(node.input_low, np.float64).reshape(-1), (d,))
            dhi = np.broadcast_to(np.asarray(node.input_high, np.float64).reshape(-1), (d,))
            for j, e in enumerate(data):
                if dlo[j] < lo[e] or dhi[j] > hi[e]:
                    raise DeployError(f"{where}: data electrode {names[e]} may reach [{dlo[j]:.6g}, {dhi[j]:.6g}] V, "
                                      f"outside the board's limits [{limits_v[e, 0]}, {limits_v[e, 1]}] V: "
                                      f"refused, nothing was sent")


@dataclass
class BoardRun:
    """What the board backend measured (possibly partial, after an error)."""

    logits: np.ndarray | None = None              # [n, n_outputs] when complete
    node_errors: list[dict[str, Any]] = field(default_factory=list)
    nodes_done: int = 0
    nodes_total: int = 0
    wall_s: float = 0.0
    measure_s: float = 0.0
    error: str | None = None
    board: dict[str, Any] = field(default_factory=dict)
    latency_us: list[float] = field(default_factory=list)


def evaluate_board(nf: NetworkFile, x: np.ndarray, url: str = DEFAULT_BOARD_URL, *,
                   on_node: Callable[[Any, int, int], None] | None = None, latency_samples: int = 0,
                   progress: bool = False, board_options: dict[str, Any] | None = None) -> BoardRun:
    """Run the network on a board, node by node. Errors while talking to the board end the run:
    BoardRun.error says what happened, the nodes measured so far are kept, and the board is
    ramped to 0 V (or, if the link is gone, left to its watchdog, which ramps it to 0 V).

    on_node(board, layer_index, node_index) is called before each node (tests use it to pull the
    plug). Voltages outside the board's limits raise DeployError before any voltage is sent.
    latency_samples > 0: afterwards, that many single images are run through every node on the
    same board and timed (BoardRun.latency_us)."""
    from host.board import Board
    from host.board.errors import BoardError

    run = BoardRun(nodes_total=sum(len(l.nodes) for l in nf.layers if isinstance(l, DnpuLayer)))
    t_start = time.perf_counter()
    try:
        board = Board.open(url, **(board_options or {}))
    except BoardError as e:
        raise DeployError(f"--board {url}: cannot open the board: {e}") from None
    bar = None
    try:
        run.board = {"url": url, "serial": board.identity.get("serial"), "firmware": board.identity.get("firmware")}
        check_limits(nf, board.limits_v)
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=run.nodes_total, desc="board nodes", unit="node", leave=False)
        run.logits = _board_forward(nf, board, x, run, on_node, bar)
        run.wall_s = time.perf_counter() - t_start
        for i in range(min(latency_samples, len(x))):
            t0 = time.perf_counter()
            _board_forward(nf, board, x[i:i + 1], None, None, None)
            run.latency_us.append((time.perf_counter() - t0) * 1e6)
    except BoardError as e:
        run.error = (f"board error after {run.nodes_done} of {run.nodes_total} nodes: {type(e).__name__}: {e}; "
                     f"partial results kept; the board was told to go to 0 V (if the link is gone, its "
                     f"watchdog ramps it to 0 V)")
    finally:
        if bar is not None:
            bar.close()
        board.close()      # ramps to 0 V unless the link is broken
        if not run.wall_s:
            run.wall_s = time.perf_counter() - t_start
    return run


def _board_forward(nf: NetworkFile, board: Any, x: np.ndarray, run: BoardRun | None,
                   on_node: Callable[[Any, int, int], None] | None, bar: Any) -> np.ndarray:
    h = np.asarray(x, np.float64)
    for li, layer in enumerate(nf.layers):
        if not isinstance(layer, DnpuLayer):
            h = _apply_host_layer(layer, h)
            continue
        out = np.empty((len(h), len(layer.nodes)))
        for k, (node, idx) in enumerate(zip(layer.nodes, node_inputs(layer))):
            if on_node is not None:
                on_node(board, li, k)
            v = np.clip(node_volts(node, h, idx), board.limits_v[:, 0], board.limits_v[:, 1])
            t0 = time.perf_counter()
            board.set(v[0], ramp=True)                # ramp to this node's control voltages
            current = board.measure(v)                # stream the node's inputs, read the currents
            out[:, k] = current * node.output_scale + node.output_offset
            if run is None:
                continue
            run.measure_s += time.perf_counter() - t0
            predicted = nf.surrogates[node.surrogate].evaluate(v.astype(np.float32)).astype(np.float64)
            err = current - predicted
            edge = _near_edge(v, node, board.limits_v)
            run.node_errors.append({
                "layer": li, "node": k, "rmse_na": float(np.sqrt(np.mean(err ** 2))),
                "mean_error_na": float(err.mean()), "max_abs_error_na": float(np.abs(err).max()),
                "rmse_near_edge_na": float(np.sqrt(np.mean(err[edge] ** 2))) if edge.any() else None,
                "fraction_near_edge": float(edge.mean()),
                "measured_range_na": [float(current.min()), float(current.max())]})
            run.nodes_done += 1
            if bar is not None:
                bar.update(1)
        h = out
    return h


def _near_edge(v: np.ndarray, node: DnpuNode, limits_v: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Samples whose data voltages sit within frac of an electrode range's edge."""
    data = [int(e) for e in node.data_electrodes]
    lo, hi = limits_v[data, 0], limits_v[data, 1]
    m = frac * (hi - lo)
    vd = v[:, data]
    return np.any((vd <= lo + m) | (vd >= hi - m), axis=1)


def surrogate_logits(nf: NetworkFile, x: np.ndarray) -> np.ndarray:
    from core import Network
    return Network(nf.n_inputs, nf.layers, nf.surrogates).evaluate(x)


def format_confusion(cm: Sequence[Sequence[int]]) -> str:
    cm = np.asarray(cm)
    w = max(5, len(str(cm.max())) + 1)
    head = "true\\pred" + "".join(f"{j:>{w}}" for j in range(cm.shape[1]))
    rows = [f"{i:>9}" + "".join(f"{v:>{w}}" for v in row) for i, row in enumerate(cm)]
    return "\n".join([head] + rows)
