"""One network measured on several boards at once (`python -m host.farm validate`).

The network file (dnpu-network/1, e.g. an experiment's export or models/mnist.onnx) runs as
`python -m host.deploy --backend board` runs it: each node on a device of the chip it was
trained for, a layer's nodes together on a board of several devices. Boards are grouped by the
chips they carry, device by device (`host.board.chips.board_chips`): boards of one group are
interchangeable and split the test set between them, in slices of `chunk` samples, a few
slices queued on each board; each group scores the whole set, so boards with other chips give
their own accuracy beside it. The network's placement on every board is checked in the driver
before anything is sent.

Each finished slice (its outputs) is written to ``--out/GROUP/chunks`` (`tasks.ChunkStore`),
once; ``--resume`` skips the slices on disk. A board that fails mid-job leaves it: its slices go
back to its group's queue and the group's other boards take them; a group with no board left
stops there, its slices measured so far kept, and the others go on. A slice never moves to a
board of other chips.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from host.farm.boards import BoardHandle, BoardSpec, error_text, feed, job_boards, next_result, take_out
from host.farm.cluster import Cluster
from host.farm.errors import FarmError
from host.farm.tasks import ChunkStore


@dataclass(frozen=True)
class ValidationConfig:
    chunk: int = 500                       # samples per slice (the unit of work and of resuming)
    per_board: int = 2                     # slices queued on each board at a time
    device_map: tuple[int, ...] | None = None   # one device per node, set by the user (else: own chips)
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.chunk < 1 or self.per_board < 1:
            raise FarmError("--chunk and --per-board must be >= 1")


@dataclass
class Group:
    """Boards carrying the same chips: they share one pass over the test set."""

    label: str
    chips: list[Any]
    boards: list[BoardHandle]
    store: ChunkStore
    todo: deque[int]
    done: dict[int, np.ndarray] = field(default_factory=dict)
    placements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)    # board -> placement
    measured: dict[str, int] = field(default_factory=dict)                       # board -> samples
    node_errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)   # board -> last slice's
    stopped: str | None = None

    def alive(self) -> list[BoardHandle]:
        return [b for b in self.boards if b.lost is None]


def group_label(chips: list[Any]) -> str:
    """A folder name for boards of these chips: chips-HASH8 (the chips in words are in the report)."""
    return "chips-" + hashlib.sha1(json.dumps(chips, sort_keys=True).encode()).hexdigest()[:8]


def slices(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + chunk)) for a in range(0, n, chunk)]


def run_validation(cluster: Cluster, boards: Sequence[BoardSpec | BoardHandle], model: Path, x: np.ndarray,
                   labels: np.ndarray, out: Path, cfg: ValidationConfig = ValidationConfig(),
                   on_slice: Callable[[str, int, BoardHandle], None] | None = None) -> dict[str, Any]:
    """Measure network `model` on inputs `x` on every group of `boards` (see the module's
    docstring); returns the report (also written to `out`/validation.json). A `BoardSpec` is
    started for this job and stopped after it, a `BoardHandle` is the caller's.
    `on_slice(group_label, k, board)` runs in the driver after slice k is on disk."""
    from core.io import read_network

    from host.deploy.engines import surrogate_logits
    from host.metrics import summarise

    model = Path(model)
    try:
        nf = read_network(model)
    except (OSError, ValueError) as e:
        raise FarmError(f"--model {model}: {e}") from None
    raw = model.read_bytes()
    out = Path(out)
    with job_boards(cluster, boards) as handles:
        parts = slices(len(x), cfg.chunk)
        groups = _groups(nf, handles, model, raw, len(x), parts, out, cfg)
        t = time.monotonic()
        _run(cluster, groups, raw, x, parts, cfg, on_slice)
        wall = time.monotonic() - t
    simulated = summarise(surrogate_logits(nf, x), labels)
    report: dict[str, Any] = {"model": str(model), "samples": int(len(x)), "chunk": cfg.chunk, "wall_s": round(wall, 3),
                              "simulated_accuracy": simulated["accuracy"], "groups": []}
    for g in groups:
        entry: dict[str, Any] = {
            "group": g.label, "chips": g.chips, "complete": len(g.done) == len(parts), "stopped": g.stopped,
            "slices_done": len(g.done), "slices": len(parts),
            "boards": [{"name": b.spec.name, "url": b.spec.url, "serial": b.serial, "host": b.host,
                        "samples": g.measured.get(b.spec.name, 0), "lost": b.lost} for b in g.boards],
            "placements": g.placements, "node_errors": g.node_errors}
        if g.done:
            idx = np.concatenate([np.arange(*parts[k]) for k in sorted(g.done)])
            logits = np.concatenate([g.done[k] for k in sorted(g.done)])
            s = summarise(logits, labels[idx])
            entry.update({"accuracy": s["accuracy"], "confusion_matrix": s["confusion_matrix"], "n_samples": s["n_samples"],
                          "simulated_accuracy_same_samples": summarise(surrogate_logits(nf, x[idx]), labels[idx])["accuracy"]})
            entry["accuracy_minus_simulated"] = entry["accuracy"] - entry["simulated_accuracy_same_samples"]
            if entry["complete"]:
                np.save(out / g.label / "logits.npy", logits)
        report["groups"].append(entry)
    report["complete"] = all(e["complete"] for e in report["groups"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _groups(nf: Any, handles: list[BoardHandle], model: Path, raw: bytes, n: int, parts: list[tuple[int, int]],
            out: Path, cfg: ValidationConfig) -> list[Group]:
    from host.board.chips import board_chips
    from host.deploy.errors import DeployError
    from host.deploy.placement import place_nodes

    by_chips: dict[str, list[BoardHandle]] = {}
    for h in handles:
        chips = board_chips(h.identity)
        try:
            place_nodes(nf, chips, list(cfg.device_map) if cfg.device_map is not None else None)
        except DeployError as e:
            raise FarmError(f"board {h.spec.name!r} ({h.spec.url}) cannot run {model.name}: {e}") from None
        by_chips.setdefault(json.dumps(chips, sort_keys=True), []).append(h)
    groups = []
    for key, members in by_chips.items():
        chips = json.loads(key)
        label = group_label(chips)
        job = {"kind": "validation", "model_sha256": hashlib.sha256(raw).hexdigest(), "samples": n,
               "chunk": cfg.chunk, "chips": chips,
               "device_map": list(cfg.device_map) if cfg.device_map is not None else None}
        store = ChunkStore(out / label / "chunks", job, resume=cfg.resume)
        g = Group(label=label, chips=chips, boards=members, store=store, todo=deque())
        for k in sorted(store.done()):
            if k < len(parts):
                g.done[k] = store.load(k)["logits"]
        g.todo.extend(k for k in range(len(parts)) if k not in g.done)
        groups.append(g)
    return groups


def _run(cluster: Cluster, groups: list[Group], raw: bytes, x: np.ndarray, parts: list[tuple[int, int]],
         cfg: ValidationConfig, on_slice: Callable[[str, int, BoardHandle], None] | None) -> None:
    from tqdm import tqdm

    from host.deploy.errors import DeployError

    ray = cluster.ray
    model_ref = ray.put(raw)
    dmap = list(cfg.device_map) if cfg.device_map is not None else None
    pending: dict[Any, tuple[Group, BoardHandle, int]] = {}
    in_hand: dict[str, list[int]] = {}
    total = len(groups) * len(x)
    done0 = sum(parts[k][1] - parts[k][0] for g in groups for k in g.done)
    bar = tqdm(total=total, initial=done0, unit="sample", desc="farm validation", disable=not cfg.progress,
               dynamic_ncols=True)
    try:
        while True:
            feed(groups, cfg.per_board, pending, in_hand,
                 lambda g, b, k: b.actor.run_network.remote(model_ref, x[parts[k][0]:parts[k][1]], dmap))
            if not pending:
                break
            g, b, k, res, err = next_result(cluster, pending)
            if isinstance(getattr(err, "cause", None), DeployError):
                raise FarmError(f"board {b.spec.name!r} refused the network: {error_text(err)}")
            if err is not None:
                _lose_board(cluster, g, b, k, error_text(err), pending, in_hand)
                continue
            in_hand[b.spec.name].remove(k)
            a, e = parts[k]
            logits = np.asarray(res["logits"], dtype=np.float64)
            if logits.ndim != 2 or logits.shape[0] != e - a:
                raise FarmError(f"slice {k} came back from {b.spec.name!r} with outputs of shape {logits.shape}")
            if k in g.done:
                continue
            g.store.save(k, {"logits": logits})
            g.done[k] = logits
            g.measured[b.spec.name] = g.measured.get(b.spec.name, 0) + (e - a)
            g.placements[b.spec.name] = res["placements"]
            g.node_errors[b.spec.name] = res["node_errors"]
            bar.update(e - a)
            if on_slice is not None:
                on_slice(g.label, k, b)
    finally:
        bar.close()
        for ref in pending:
            try:
                ray.cancel(ref)
            except Exception:
                pass


def _lose_board(cluster: Cluster, g: Group, b: BoardHandle, k: int, why: str,
                pending: dict[Any, tuple[Group, BoardHandle, int]], in_hand: dict[str, list[int]]) -> None:
    """Board `b` failed on slice k: it leaves the job, its slices go back to its group's queue."""
    for kk in sorted(take_out(cluster, b, k, why, pending, in_hand), reverse=True):
        if kk not in g.done:
            g.todo.appendleft(kk)
    if not g.alive():
        g.stopped = (f"board {b.spec.name!r} ({b.spec.url}) was lost at slice {k}: {why}; no other board "
                     f"with these chips is in the job")
        g.todo.clear()
