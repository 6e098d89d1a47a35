"""The board backend: the host runs the non-DNPU layers in numpy, each DNPU node runs on a board.

Each node runs on a device carrying the chip it was trained for (`host.deploy.placement`). The
nodes of a layer that sit on distinct devices run together: one ramp to all their first points,
one sweep streaming every node's electrode voltages for all samples, one current per device
and sample. On a one-device board this is time-multiplexing, one node after another. The
surrogate's error per node is reported on the voltages the network actually visited.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES, control_electrodes
from core.io import NetworkFile
from core.network import Affine, DnpuLayer, DnpuNode, Linear, Standardize
from host.deploy.errors import DeployError
from host.deploy.placement import Placement, place_nodes, rounds

DEFAULT_BOARD_URL = "sim://?seed=0"


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


def node_volts(node: DnpuNode, h: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """All electrode voltages [n, N_ELECTRODES] the node sees for layer input h (data transformed and clipped)."""
    data = [int(e) for e in node.data_electrodes]
    ctrl = list(control_electrodes(data))
    v = np.empty((len(h), N_ELECTRODES), dtype=np.float64)
    t = h[:, idx] * np.asarray(node.input_scale, np.float64) + np.asarray(node.input_offset, np.float64)
    v[:, data] = np.minimum(np.maximum(t, np.asarray(node.input_low, np.float64)),
                            np.asarray(node.input_high, np.float64))
    v[:, ctrl] = np.asarray(node.control_voltages, np.float64).reshape(1, -1)
    # what the core/onnxruntime compute in float32
    return v.astype(np.float32).astype(np.float64)


def check_limits(nf: NetworkFile, limits_v: np.ndarray, placements: list[Placement] | None = None) -> None:
    """Refuse, before anything is sent, a network whose voltages can leave the board's limits:
    every control voltage, and both ends of every data electrode's clip interval, are checked by
    the board driver's own check (host.board.check_volts, which accepts float32 roundings of a limit).
    limits_v: [7, 2], or [K, 7, 2] with `placements` saying which device's limits hold for a node."""
    from host.board import LimitError, check_volts

    per_device = np.asarray(limits_v, np.float64).reshape(-1, N_ELECTRODES, 2)
    where_runs = {(p.layer, p.node): p.device for p in placements or []}
    for li, layer in enumerate(nf.layers):
        if not isinstance(layer, DnpuLayer):
            continue
        for k, node in enumerate(layer.nodes):
            lim = per_device[where_runs.get((li, k), 0)]
            mid = lim.mean(axis=1)
            where = f"layers[{li}].nodes[{k}]"
            data = [int(e) for e in node.data_electrodes]
            controls = mid.copy()
            controls[list(control_electrodes(data))] = np.asarray(node.control_voltages, np.float64).reshape(-1)
            clip = np.stack([mid, mid])            # row 0: the data's lowest volts, row 1: the highest
            clip[:, data] = np.stack([np.broadcast_to(np.asarray(node.input_low, np.float64).reshape(-1), (len(data),)),
                                      np.broadcast_to(np.asarray(node.input_high, np.float64).reshape(-1), (len(data),))])
            for what, rows in ((f"{where} control voltages", controls),
                               (f"{where} data clip interval (sample 0: low end, 1: high end)", clip)):
                try:
                    check_volts(rows, lim, what)
                except LimitError as e:
                    raise DeployError(f"{e}: refused, nothing was sent") from None


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
    placements: list[Placement] = field(default_factory=list)   # which device ran which node
    rounds: int = 0                                             # ramps + sweeps per forward pass


def evaluate_board(nf: NetworkFile, x: np.ndarray, url: str = DEFAULT_BOARD_URL, *,
                   on_node: Callable[[Any, int, int], None] | None = None, latency_samples: int = 0,
                   progress: bool = False, board_options: dict[str, Any] | None = None,
                   device_map: list[int] | None = None) -> BoardRun:
    """Run the network on a board, each node on a device of its own chip, the nodes of a layer
    on distinct devices together (`host.deploy.placement`; `device_map`: one device per node, set
    by the user). Errors while talking to the board end the run: BoardRun.error says what
    happened, the nodes measured so far are kept, and the board is ramped to 0 V (or, if the link
    is gone, left to its watchdog, which ramps it to 0 V).

    on_node(board, layer_index, node_index) is called before each node (tests use it to pull the
    plug). Voltages outside the board's limits and nodes no device can run raise DeployError
    before any voltage is sent. latency_samples > 0: afterwards, that many single images are run
    through every node on the same board and timed (BoardRun.latency_us)."""
    from host.board import Board, BoardError

    t_start = time.perf_counter()
    try:
        board = Board.open(url, **(board_options or {}))
    except BoardError as e:
        raise DeployError(f"--board {url}: cannot open the board: {e}") from None
    opened_s = time.perf_counter() - t_start
    try:
        run = evaluate_open_board(nf, board, x, on_node=on_node, latency_samples=latency_samples,
                                  progress=progress, device_map=device_map)
    finally:
        board.close()      # ramps to 0 V unless the link is broken
    run.board = {"url": url, **run.board}
    run.wall_s += opened_s
    return run


def evaluate_open_board(nf: NetworkFile, board: Any, x: np.ndarray, *,
                        on_node: Callable[[Any, int, int], None] | None = None, latency_samples: int = 0,
                        progress: bool = False, device_map: list[int] | None = None) -> BoardRun:
    """`evaluate_board` on a board the caller holds open (a farm's board actor), which the caller
    closes; an error while talking to the board ends the run with BoardRun.error set (the
    caller's close ramps it to 0 V)."""
    from host.board import BoardError
    from host.board.chips import board_chips

    run = BoardRun(nodes_total=sum(len(l.nodes) for l in nf.layers if isinstance(l, DnpuLayer)))
    t_start = time.perf_counter()
    bar = None
    try:
        run.board = {"serial": board.identity.get("serial"), "firmware": board.identity.get("firmware"),
                     "n_devices": board.n_devices}
        run.placements = place_nodes(nf, board_chips(board.identity), device_map)
        run.rounds = sum(len(rounds(run.placements, li)) for li, l in enumerate(nf.layers) if isinstance(l, DnpuLayer))
        check_limits(nf, board.device_limits_v, run.placements)
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=run.nodes_total, desc="board nodes", unit="node", leave=False)
        run.logits = _board_forward(nf, board, x, run.placements, run, on_node, bar)
        run.wall_s = time.perf_counter() - t_start
        for i in range(min(latency_samples, len(x))):
            t0 = time.perf_counter()
            _board_forward(nf, board, x[i:i + 1], run.placements, None, None, None)
            run.latency_us.append((time.perf_counter() - t0) * 1e6)
    except BoardError as e:
        run.error = (f"board error after {run.nodes_done} of {run.nodes_total} nodes: {type(e).__name__}: {e}; "
                     f"partial results kept; the board was told to go to 0 V (if the link is gone, its "
                     f"watchdog ramps it to 0 V)")
    finally:
        if bar is not None:
            bar.close()
        if not run.wall_s:
            run.wall_s = time.perf_counter() - t_start
    return run


def _board_forward(nf: NetworkFile, board: Any, x: np.ndarray, placements: list[Placement],
                   run: BoardRun | None, on_node: Callable[[Any, int, int], None] | None, bar: Any) -> np.ndarray:
    h = np.asarray(x, np.float64)
    for li, layer in enumerate(nf.layers):
        if not isinstance(layer, DnpuLayer):
            h = _apply_host_layer(layer, h)
            continue
        out = np.empty((len(h), len(layer.nodes)))
        inputs = node_inputs(layer)
        for group in rounds(placements, li):
            devices = [p.device for p in group]
            volts = []
            for p in group:
                if on_node is not None:
                    on_node(board, li, p.node)
                lim = board.device_limits_v[p.device]
                volts.append(np.clip(node_volts(layer.nodes[p.node], h, inputs[p.node]), lim[:, 0], lim[:, 1]))
            v_all = np.stack(volts, axis=1)                      # [n, nodes of the round, 7]
            t0 = time.perf_counter()
            board.set_devices(v_all[0], devices, ramp=True)      # one ramp to every node's first point
            currents = board.measure_devices(v_all, devices)     # one sweep: the devices in parallel
            if run is not None:
                run.measure_s += time.perf_counter() - t0
            for j, p in enumerate(group):
                node = layer.nodes[p.node]
                out[:, p.node] = currents[:, j] * node.output_scale + node.output_offset
                if run is not None:
                    _record_node(nf, run, li, p, node, v_all[:, j], currents[:, j], board.device_limits_v[p.device])
                    if bar is not None:
                        bar.update(1)
        h = out
    return h


def _record_node(nf: NetworkFile, run: BoardRun, li: int, p: Placement, node: DnpuNode, v: np.ndarray,
                 current: np.ndarray, limits_v: np.ndarray) -> None:
    """The surrogate's error on the voltages the node visited, in run.node_errors."""
    k = p.node
    predicted = nf.surrogates[node.surrogate].evaluate(v.astype(np.float32)).astype(np.float64)
    err = current - predicted
    edge = _near_edge(v, node, limits_v)
    run.node_errors.append({
        "layer": li, "node": k, "device": p.device, "rmse_na": float(np.sqrt(np.mean(err ** 2))),
        "mean_error_na": float(err.mean()), "max_abs_error_na": float(np.abs(err).max()),
        "rmse_near_edge_na": float(np.sqrt(np.mean(err[edge] ** 2))) if edge.any() else None,
        "fraction_near_edge": float(edge.mean()),
        "measured_range_na": [float(current.min()), float(current.max())]})
    run.nodes_done += 1


def _near_edge(v: np.ndarray, node: DnpuNode, limits_v: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Samples whose data voltages sit within frac of an electrode range's edge."""
    data = [int(e) for e in node.data_electrodes]
    lo, hi = limits_v[data, 0], limits_v[data, 1]
    m = frac * (hi - lo)
    vd = v[:, data]
    return np.any((vd <= lo + m) | (vd >= hi - m), axis=1)


