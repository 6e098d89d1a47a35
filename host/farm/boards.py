"""Boards as Ray actors: one actor per board, on the machine the board is plugged into.

A board is named on the command line as ``[NAME=]URL`` (``lab3=/dev/ttyACM0``; without a name
one is made from the URL: ``ttyACM0``, ``sim-seed-3-realtime``). Its actor asks for the custom
resource ``board:NAME`` (1 unit), which only the node the board is plugged into offers
(``ray start --resources '{"board:NAME": 1}'``; a ``--cluster local`` farm declares it itself),
so the work goes where the hardware is. The actor is named ``board:NAME`` in the farm's Ray
namespace and runs one call at a time (``max_concurrency=1``): a second job asking for the
same board is refused at once, and there are never two callers on one instrument.

Boards are interchangeable when their devices are the same: the identity's ``device`` record
and electrode limits agree (`device_key`). The serial number names the board, not the chip.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from host.farm.cluster import BOARD_RESOURCE_PREFIX, NAMESPACE, Cluster
from host.farm.errors import FarmError

_NAME_RE = re.compile(r"^([A-Za-z0-9_.-]{1,64})=(.+)$")
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class BoardSpec:
    """A board of the farm: its name (the custom resource `board:NAME`) and its URL."""

    name: str
    url: str

    @property
    def resource(self) -> str:
        return BOARD_RESOURCE_PREFIX + self.name


def parse_board(text: str) -> BoardSpec:
    """'[NAME=]URL' -> BoardSpec; a name is made from the URL when none is given."""
    t = text.strip()
    if not t:
        raise FarmError("--board: empty board URL")
    m = _NAME_RE.match(t)
    if m:
        return BoardSpec(m.group(1), m.group(2))
    return BoardSpec(name_from_url(t), t)


def name_from_url(url: str) -> str:
    """A resource-safe board name for `url`: /dev/ttyACM0 -> ttyACM0, sim://?seed=3&realtime -> sim-seed-3-realtime."""
    if url.startswith("/"):
        base = url.rstrip("/").rsplit("/", 1)[-1]
    else:
        scheme, _, rest = url.partition("://")
        base = f"{scheme}-{rest}" if rest else url
    name = re.sub(r"-{2,}", "-", _BAD_CHARS.sub("-", base)).strip("-.")
    if not name:
        raise FarmError(f"--board {url!r}: cannot make a name from this URL; give one as NAME=URL")
    return name[:64]


def parse_boards(texts: list[str]) -> list[BoardSpec]:
    """Every --board, names unique (one actor per port)."""
    specs = [parse_board(t) for t in texts]
    seen: dict[str, str] = {}
    for s in specs:
        if s.name in seen:
            raise FarmError(f"--board: two boards named {s.name!r} ({seen[s.name]!r} and {s.url!r}); one actor per "
                            "port: name them apart as NAME=URL")
        seen[s.name] = s.url
    return specs


def device_key(identity: dict[str, Any]) -> str:
    """What must agree for two boards to stand in for each other: the device and its limits."""
    return json.dumps({"device": identity.get("device"), "limits_v": identity.get("limits_v")},
                      sort_keys=True, separators=(",", ":"))


def device_label(identity: dict[str, Any]) -> str:
    """A short, stable folder name for a device: MODEL-HASH8."""
    dev = identity.get("device")
    model = dev.get("model", "device") if isinstance(dev, dict) else "device"
    digest = hashlib.sha1(device_key(identity).encode()).hexdigest()[:8]
    return f"{_BAD_CHARS.sub('-', str(model)).strip('-') or 'device'}-{digest}"


class BoardHost:
    """What runs inside a board's actor: the open `host.board.Board`, one request at a time.

    Plain Python (no Ray here): `start_boards` wraps it with `ray.remote`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.board: Any = None
        self._networks: dict[str, Any] = {}        # network files run here, by sha256

    def open(self) -> dict[str, Any]:
        """Open the board (handshake, identity, arm); returns where it runs and its identity."""
        from host.board import Board

        self.board = Board.open(self.url)
        return {"pid": os.getpid(), "host": socket.gethostname(), "identity": dict(self.board.identity),
                "limits_v": np.asarray(self.board.limits_v).tolist()}

    def identity(self) -> dict[str, Any]:
        return dict(self._open().identity)

    def measure(self, volts: np.ndarray) -> np.ndarray:
        """The board's `measure`: volts [n, 7] -> nA [n]."""
        return np.asarray(self._open().measure(volts), dtype=np.float64)

    def measure_chunk(self, plan: dict[str, Any], i0: int, i1: int, ref_rows: np.ndarray, t0_epoch: float,
                      block: int = 0) -> dict[str, Any]:
        """Reference rows, then plan samples i0..i1-1 (regenerated here from the plan's settings),
        measured in one go; the arrays of one dataset chunk, times in s since `t0_epoch`."""
        from host.sample.plans import Plan, PlanConfig

        board = self._open()
        rows = Plan(PlanConfig.from_json(plan)).rows(i0, i1)
        volts = np.concatenate([np.asarray(ref_rows, dtype=np.float64).reshape(-1, rows.shape[1]), rows])
        t_start = time.time() - t0_epoch
        if block <= 0 or block >= len(volts):
            current = np.asarray(board.measure(volts), dtype=np.float32)
        else:
            current = np.concatenate([np.asarray(board.measure(volts[a:a + block]), dtype=np.float32)
                                      for a in range(0, len(volts), block)])
        t_end = time.time() - t0_epoch
        return {"volts": volts.astype(np.float32), "current_na": current, "t_start": t_start, "t_end": t_end,
                "serial": board.identity.get("serial")}

    def run_network(self, model: bytes, x: np.ndarray, device_map: list[int] | None = None) -> dict[str, Any]:
        """A network file's forward pass on this board (host.deploy's board backend: each node on
        a device of its own chip, a layer's nodes together): the outputs for inputs `x`, which
        device ran which node, the surrogate's error per node. A DeployError (a network this
        board cannot run) is raised before anything is sent; a board error is raised as one
        (the driver takes the board out of the job), after the board was told to go to 0 V."""
        from host.board import BoardError
        from host.deploy.board_backend import evaluate_open_board

        board = self._open()
        nf = self._network(model)
        run = evaluate_open_board(nf, board, np.asarray(x, dtype=np.float32), device_map=device_map)
        if run.error is not None:
            try:
                board.zero()
            except Exception:
                pass              # the link is gone: the board's watchdog ramps it to 0 V
            raise BoardError(run.error)
        return {"logits": np.asarray(run.logits), "placements": [p.as_dict() for p in run.placements],
                "node_errors": run.node_errors, "measure_s": run.measure_s, "wall_s": run.wall_s,
                "serial": board.identity.get("serial"), "rounds": run.rounds}

    def _network(self, model: bytes) -> Any:
        """The network file of these bytes, read once per actor."""
        import tempfile

        from core.io import read_network

        key = hashlib.sha256(model).hexdigest()
        if key not in self._networks:
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "network.onnx"
                path.write_bytes(model)
                self._networks[key] = read_network(path)
        return self._networks[key]

    def zero(self) -> None:
        self._open().zero()

    def close(self) -> None:
        """Ramp to 0 V and release the port."""
        if self.board is not None:
            self.board.close()
            self.board = None

    def _open(self) -> Any:
        if self.board is None:
            raise FarmError(f"board {self.url!r} is not open")
        return self.board


@dataclass
class BoardHandle:
    """A board's actor in the driver, with what its open() said."""

    spec: BoardSpec
    actor: Any
    identity: dict[str, Any] = field(default_factory=dict)
    limits_v: list[list[float]] = field(default_factory=list)
    pid: int = 0
    host: str = ""
    lost: str | None = None           # why the board left the job (None while it serves)

    @property
    def device(self) -> str:
        return device_key(self.identity)

    @property
    def serial(self) -> str:
        return str(self.identity.get("serial", "?"))


def start_boards(cluster: Cluster, specs: list[BoardSpec], open_timeout_s: float = 120.0) -> list[BoardHandle]:
    """One actor per board, each where its `board:NAME` resource is, opened; FarmError (one line)
    for a resource no node offers, a board already in use, or a board that does not open."""
    ray = cluster.ray
    cluster.require({s.resource: 1.0 for s in specs})
    remote_cls = ray.remote(BoardHost)
    handles: list[BoardHandle] = []
    try:
        for s in specs:
            try:
                actor = remote_cls.options(name=s.resource, namespace=NAMESPACE, resources={s.resource: 1.0},
                                           num_cpus=0, max_concurrency=1, max_restarts=0,
                                           max_task_retries=0).remote(s.url)
            except ValueError as e:       # the name is taken: another job holds this board
                raise FarmError(f"board {s.name!r} ({s.url}) is in use by another farm job ({e})") from None
            handles.append(BoardHandle(s, actor))
        opened = {i: h.actor.open.remote() for i, h in enumerate(handles)}
        for i, ref in opened.items():
            h = handles[i]
            try:
                info = ray.get(ref, timeout=open_timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise FarmError(f"board {h.spec.name!r} ({h.spec.url}) did not open within {open_timeout_s:g} s") from None
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
                raise FarmError(f"board {h.spec.name!r} ({h.spec.url}) did not open: {error_text(e)}") from None
            h.identity, h.limits_v, h.pid, h.host = info["identity"], info["limits_v"], info["pid"], info["host"]
    except BaseException:
        stop_boards(cluster, handles)
        raise
    return handles


def stop_boards(cluster: Cluster, handles: list[BoardHandle], timeout_s: float = 15.0) -> None:
    """Ramp every serving board to 0 V and close it, then end the actors (lost ones too)."""
    ray = cluster.ray
    closing = [h.actor.close.remote() for h in handles if h.lost is None]
    if closing:
        try:
            ray.wait(closing, num_returns=len(closing), timeout=timeout_s)
        except Exception:
            pass
    for h in handles:
        try:
            ray.kill(h.actor, no_restart=True)
        except Exception:
            pass
    # the names are free again only once the actors are gone: wait for that, so that the next
    # job on these boards (in this process or another) finds them available
    deadline = time.monotonic() + timeout_s
    for h in handles:
        while time.monotonic() < deadline:
            try:
                ray.get_actor(h.spec.resource, namespace=NAMESPACE)
            except ValueError:
                break
            time.sleep(0.05)


@contextlib.contextmanager
def job_boards(cluster: Cluster, boards: Sequence[BoardSpec | BoardHandle]) -> Iterator[list[BoardHandle]]:
    """The boards of one job as handles, in the order given: a `BoardSpec` is started for the job
    and stopped after it (ramped to 0 V, its actor ended), a `BoardHandle` (from `start_boards`,
    for several jobs in a row on open boards) is the caller's. A board lost in an earlier job, or
    named twice, is refused before anything starts."""
    given = [b for b in boards if isinstance(b, BoardHandle)]
    gone = [b.spec.name for b in given if b.lost is not None]
    if gone:
        raise FarmError(f"board(s) {', '.join(gone)} were lost in an earlier job; start them again")
    names = [b.spec.name if isinstance(b, BoardHandle) else b.name for b in boards]
    if len(set(names)) != len(names):
        raise FarmError(f"a board is named twice in {names}: one actor per port")
    started = start_boards(cluster, [b for b in boards if isinstance(b, BoardSpec)])
    try:
        mine = iter(started)
        yield [b if isinstance(b, BoardHandle) else next(mine) for b in boards]
    finally:
        stop_boards(cluster, started)


def feed(jobs: Sequence[Any], per_board: int, pending: dict[Any, tuple[Any, BoardHandle, int]],
         in_hand: dict[str, list[int]], submit: Callable[[Any, BoardHandle, int], Any]) -> None:
    """Queue the next chunks of every job (anything with `todo`, a deque of chunk indices, and
    `alive()`, its serving boards) on its boards, up to `per_board` in hand each, so that a board
    never waits for the driver; `submit(job, board, k)` sends chunk k and returns its reference."""
    for j in jobs:
        for b in j.alive():
            queue = in_hand.setdefault(b.spec.name, [])
            while j.todo and len(queue) < per_board:
                k = j.todo.popleft()
                pending[submit(j, b, k)] = (j, b, k)
                queue.append(k)


def next_result(cluster: Cluster, pending: dict[Any, tuple[Any, BoardHandle, int]]
                ) -> tuple[Any, BoardHandle, int, Any, BaseException | None]:
    """Wait for the first of the `pending` calls to finish and take it out: (job, board, chunk,
    its result, None) or (job, board, chunk, None, the error that came back)."""
    ray = cluster.ray
    ready, _ = ray.wait(list(pending), num_returns=1)
    j, b, k = pending.pop(ready[0])
    try:
        return j, b, k, ray.get(ready[0]), None
    except (ray.exceptions.RayError, FarmError) as e:
        return j, b, k, None, e


def take_out(cluster: Cluster, b: BoardHandle, k: int, why: str, pending: dict[Any, tuple[Any, BoardHandle, int]],
             in_hand: dict[str, list[int]]) -> list[int]:
    """Board `b` failed on chunk `k` of a job: it leaves the job (marked lost, its queued calls
    dropped from `pending`, its actor ended). Returns the chunks it had in hand, `k` first, for
    the caller to queue again for other boards of the same chips."""
    b.lost = why
    back = [k] + [kk for kk in in_hand.get(b.spec.name, []) if kk != k]
    for ref in [r for r, (_, bb, _) in pending.items() if bb is b]:
        del pending[ref]
    in_hand[b.spec.name] = []
    try:
        cluster.ray.kill(b.actor, no_restart=True)
    except Exception:
        pass
    return back


def error_text(e: BaseException) -> str:
    """One line for an error that came back through Ray: the original exception where there is one."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:400]
    text = " ".join(str(e).split())
    if "ActorDiedError" in type(e).__name__ or "RayActorError" in type(e).__name__:
        return "its actor died (the worker process or its machine is gone)"
    return f"{type(e).__name__}: {text}"[:400]
