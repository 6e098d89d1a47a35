"""A sampling plan fanned out over the farm's boards, into the dataset format of `host.sample.store`.

Boards are grouped by device (`boards.device_key`). Each device measures the whole plan into its
own dataset folder: ``--out`` itself when every board carries the same device, else
``--out/MODEL-HASH8/`` per device. The plan is cut into chunks (`SamplingConfig.chunk`), and each
chunk goes to some board of its device, a few chunks queued per board so that a board never
waits for the host. As in `host.sample.measure`, every chunk starts with the same reference
points, repeated, so noise floor and drift can be read from the data.

The driver writes every chunk itself, atomically (`store.write_chunk`), and only once: the
chunk files on disk are the job's state, and ``farm-journal.jsonl`` in the dataset folder says
which board measured which chunk, and which board was lost when and why. A re-run with
``--resume`` skips the chunks on disk and measures the rest (on the same device: other boards
of it are fine, another chip is refused).

A board that fails mid-job (cable pulled, board reset, its actor or machine gone) leaves the job:
the chunks it had in hand go back to the queue of its device and the other boards of that
device take them. A device with no board left stops there, with everything measured kept; the
other devices go on. The job then ends with exit status 2 and says how to continue.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from host.farm.boards import BoardHandle, BoardSpec, device_label, error_text, feed, job_boards, next_result, take_out
from host.farm.cluster import Cluster
from host.farm.errors import FarmError
from host.sample import store
from host.sample.measure import ResumeMismatch, SamplingConfig, check_same_settings, dataset_meta, reference_rows
from host.sample.plans import Plan, PlanConfig, Ranges, ranges_within_limits

JOURNAL = "farm-journal.jsonl"


@dataclass(frozen=True)
class PlanRequest:
    """The plan asked for, before a board says its electrode limits."""

    strategy: str = "uniform"
    n: int = 100_000
    seed: int = 0
    wave_period: float = 2000.0
    grid_points: int = 0
    ranges: Ranges | None = None           # None: the board's limits

    def plan_for(self, limits_v: Any) -> Plan:
        return Plan(PlanConfig(strategy=self.strategy, n=self.n, seed=self.seed,
                               ranges_v=ranges_within_limits(np.asarray(limits_v, dtype=np.float64), self.ranges),
                               wave_period=self.wave_period, grid_points=self.grid_points))


@dataclass(frozen=True)
class FarmSamplingConfig:
    sampling: SamplingConfig = SamplingConfig()
    per_board: int = 2                     # chunks queued on each board at a time
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        s = self.sampling
        if s.chunk <= 0 or s.n_refs < 0 or s.ref_repeats < 1 or self.per_board < 1:
            raise FarmError("--chunk must be positive, --refs >= 0, --ref-repeats >= 1, --per-board >= 1")


@dataclass
class DeviceJob:
    """One device's dataset: its boards, its plan and the chunks still to measure."""

    label: str
    folder: Path
    boards: list[BoardHandle]
    plan: Plan
    meta: dict[str, Any]
    todo: deque[int]
    done: set[int]
    n_chunks: int
    ref_rows: np.ndarray
    ref_ids: np.ndarray
    stopped: str | None = None             # why this device's job ended early
    measured: dict[str, int] = field(default_factory=dict)     # board name -> plan samples this run

    def samples_done(self) -> int:
        c = self.plan_chunk
        return sum(min(c, len(self.plan) - k * c) for k in self.done)

    @property
    def plan_chunk(self) -> int:
        return int(self.meta["sampling"]["chunk"])

    def alive(self) -> list[BoardHandle]:
        return [b for b in self.boards if b.lost is None]


@dataclass
class SamplingReport:
    """What a farm sampling job did, per device."""

    devices: list[dict[str, Any]]
    wall_s: float
    samples: int                            # plan samples measured in this run
    complete: bool

    def to_json(self) -> dict[str, Any]:
        return {"devices": self.devices, "wall_s": round(self.wall_s, 3), "samples": self.samples,
                "rate_sps": round(self.samples / self.wall_s, 1) if self.wall_s > 0 else None,
                "complete": self.complete}


def run_sampling(cluster: Cluster, boards: Sequence[BoardSpec | BoardHandle], request: PlanRequest, out: Path,
                 cfg: FarmSamplingConfig = FarmSamplingConfig(),
                 on_chunk: Callable[[str, int, BoardHandle], None] | None = None) -> SamplingReport:
    """Measure `request` on `boards` into `out` (see the module's docstring).

    A `BoardSpec` is started for this job and stopped after it; a `BoardHandle` (from
    `start_boards`, for several jobs in a row on open boards) is the caller's to stop.
    `on_chunk(device_label, k, board)` runs in the driver after chunk k is on disk."""
    out = Path(out)
    if not cfg.resume and out.exists() and any(out.iterdir()):     # before any board is opened
        raise FarmError(f"{out} already holds data; pass --resume to continue it or choose another --out")
    with job_boards(cluster, boards) as handles:
        jobs = _plan_jobs(handles, request, out, cfg)
        return _run(cluster, jobs, cfg, on_chunk)


def _plan_jobs(boards: list[BoardHandle], request: PlanRequest, out: Path, cfg: FarmSamplingConfig) -> list[DeviceJob]:
    groups: dict[str, list[BoardHandle]] = {}
    for b in boards:
        groups.setdefault(b.device, []).append(b)
    jobs = []
    for members in groups.values():
        first = members[0]
        label = device_label(first.identity)
        folder = out if len(groups) == 1 else out / label
        try:
            plan = request.plan_for(first.limits_v)
        except ValueError as e:
            raise FarmError(f"board {first.spec.name!r}: {e}") from None
        jobs.append(_open_dataset(label, folder, members, plan, cfg))
    if len(groups) > 1:
        out.mkdir(parents=True, exist_ok=True)
    return jobs


def _open_dataset(label: str, folder: Path, members: list[BoardHandle], plan: Plan,
                  cfg: FarmSamplingConfig) -> DeviceJob:
    s = cfg.sampling
    first = members[0]
    meta_new = dataset_meta(plan, s, first.identity)
    meta_new["farm"] = {"device": label, "journal": JOURNAL, "boards": [_board_record(b) for b in members]}
    done: set[int] = set()
    if folder.exists() and any(folder.iterdir()):
        if not cfg.resume:
            raise FarmError(f"{folder} already holds data; pass --resume to continue it or choose another --out")
        try:
            meta = store.read_meta(folder)
        except store.DatasetError as e:
            raise FarmError(str(e)) from None
        _check_resume(folder, meta, meta_new)
        known = {b["serial"] for b in meta.get("farm", {}).get("boards", [])}
        meta.setdefault("farm", {"device": label, "journal": JOURNAL, "boards": []})
        meta["farm"]["boards"] += [_board_record(b) for b in members if b.serial not in known]
        done = set(store.chunk_indices(folder))
    else:
        folder.mkdir(parents=True, exist_ok=True)
        meta = meta_new
    store.write_meta(folder, meta)
    n_chunks = (len(plan) + s.chunk - 1) // s.chunk
    ref_rows, ref_ids = reference_rows(plan, s)
    return DeviceJob(label=label, folder=folder, boards=members, plan=plan, meta=meta,
                     todo=deque(k for k in range(n_chunks) if k not in done), done=done, n_chunks=n_chunks,
                     ref_rows=ref_rows, ref_ids=ref_ids,
                     measured={b.spec.name: 0 for b in members})


def _board_record(b: BoardHandle) -> dict[str, Any]:
    return {"name": b.spec.name, "url": b.spec.url, "serial": b.serial, "host": b.host}


def _check_resume(folder: Path, meta: dict[str, Any], new: dict[str, Any]) -> None:
    try:
        check_same_settings(meta, new)
    except ResumeMismatch as e:
        raise FarmError(f"{folder}: {e}") from None
    old, now = meta.get("board", {}), new["board"]
    if old.get("device") != now.get("device") or old.get("limits_v") != now.get("limits_v"):
        raise FarmError(f"cannot resume {folder}: it holds another device than the boards given now "
                        f"(stored board {old.get('serial')!r}, now {now.get('serial')!r}); a dataset never mixes chips")


def _journal(job: DeviceJob, event: dict[str, Any]) -> None:
    line = json.dumps({"t_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **event}) + "\n"
    with open(job.folder / JOURNAL, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_journal(folder: Path) -> list[dict[str, Any]]:
    """The journal's events (a line cut short by a crash is skipped)."""
    path = Path(folder) / JOURNAL
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _run(cluster: Cluster, jobs: list[DeviceJob], cfg: FarmSamplingConfig,
         on_chunk: Callable[[str, int, BoardHandle], None] | None) -> SamplingReport:
    ray = cluster.ray
    total = sum(len(j.plan) for j in jobs)
    initial = sum(j.samples_done() for j in jobs)
    elapsed0 = max(float(j.meta.get("elapsed_s", 0.0)) for j in jobs)
    t0_epoch = time.time() - elapsed0
    t_run = time.monotonic()
    pending: dict[Any, tuple[DeviceJob, BoardHandle, int]] = {}
    in_hand: dict[str, list[int]] = {}           # board name -> chunks queued on it
    ref_refs = {j.label: ray.put(j.ref_rows) for j in jobs}
    for j in jobs:
        _journal(j, {"event": "start", "boards": [b.spec.name for b in j.boards], "todo": len(j.todo),
                     "done": len(j.done)})
    measured = 0
    bar = _progress(total, initial, cfg.progress)
    def submit(j: DeviceJob, b: BoardHandle, k: int) -> Any:
        i0, i1 = k * j.plan_chunk, min(len(j.plan), (k + 1) * j.plan_chunk)
        return b.actor.measure_chunk.remote(j.meta["plan"], i0, i1, ref_refs[j.label], t0_epoch, cfg.sampling.block)

    try:
        while True:
            feed(jobs, cfg.per_board, pending, in_hand, submit)
            if not pending:
                break
            j, b, k, res, err = next_result(cluster, pending)
            if err is not None:
                _lose_board(cluster, j, b, k, error_text(err), pending, in_hand)
                continue
            in_hand[b.spec.name].remove(k)
            if k in j.done:                # cannot happen (a chunk is in one board's hands at a time)
                continue
            n = _write_chunk(j, k, res)
            j.done.add(k)
            j.measured[b.spec.name] += n
            measured += n
            j.meta["elapsed_s"] = max(float(j.meta.get("elapsed_s", 0.0)), float(res["t_end"]))
            store.write_meta(j.folder, j.meta)
            _journal(j, {"event": "chunk", "chunk": k, "board": b.spec.name, "serial": res["serial"], "samples": n,
                         "t_start_s": round(res["t_start"], 4), "t_end_s": round(res["t_end"], 4)})
            bar.update(n)
            if on_chunk is not None:
                on_chunk(j.label, k, b)
    finally:
        bar.close()
    wall = time.monotonic() - t_run
    for j in jobs:
        complete = len(j.done) == j.n_chunks
        if complete:
            j.meta["complete"] = True
            j.meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            store.write_meta(j.folder, j.meta)
        _journal(j, {"event": "end", "complete": complete, "stopped": j.stopped, "chunks_done": len(j.done),
                     "chunks": j.n_chunks})
    devices = [{
        "device": j.label, "out": str(j.folder), "complete": len(j.done) == j.n_chunks,
        "samples_done": j.samples_done(), "samples_planned": len(j.plan), "chunks_done": len(j.done),
        "chunks": j.n_chunks, "stopped": j.stopped,
        "boards": [{**_board_record(b), "samples": j.measured[b.spec.name], "lost": b.lost} for b in j.boards],
    } for j in jobs]
    return SamplingReport(devices=devices, wall_s=wall, samples=measured,
                          complete=all(d["complete"] for d in devices))


def _lose_board(cluster: Cluster, j: DeviceJob, b: BoardHandle, k: int, why: str,
                pending: dict[Any, tuple[DeviceJob, BoardHandle, int]], in_hand: dict[str, list[int]]) -> None:
    """Board `b` failed on chunk k: it leaves the job, its chunks go back to its device's queue."""
    back = take_out(cluster, b, k, why, pending, in_hand)
    for kk in sorted(back, reverse=True):
        if kk not in j.done:
            j.todo.appendleft(kk)
    others = j.alive()
    _journal(j, {"event": "board_lost", "board": b.spec.name, "serial": b.serial, "chunk": k, "error": why,
                 "requeued": sorted(back), "moved_to": [o.spec.name for o in others]})
    if not others:
        j.stopped = (f"board {b.spec.name!r} ({b.spec.url}) was lost at chunk {k}: {why}; no other board "
                     f"of this device is in the job")
        j.todo.clear()


def _write_chunk(j: DeviceJob, k: int, res: dict[str, Any]) -> int:
    i0, i1 = k * j.plan_chunk, min(len(j.plan), (k + 1) * j.plan_chunk)
    n_ref = len(j.ref_rows)
    volts = np.asarray(res["volts"])
    current = np.asarray(res["current_na"])
    if volts.shape != (n_ref + i1 - i0, j.ref_rows.shape[1]) or current.shape != (len(volts),):
        raise FarmError(f"chunk {k} came back with {volts.shape} volts and {current.shape} currents")
    store.write_chunk(j.folder, k, {
        "volts": volts,
        "current_na": current,
        "index": np.concatenate([np.full(n_ref, -1, np.int64), np.arange(i0, i1)]),
        "ref_id": np.concatenate([j.ref_ids, np.full(i1 - i0, -1, np.int16)]),
        "time_s": np.linspace(res["t_start"], res["t_end"], len(volts)),
    })
    return i1 - i0


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="sample", unit_scale=True, disable=not enabled,
                dynamic_ncols=True, desc="farm sampling")


def count_samples(folder: Path) -> int:
    """Plan samples on disk in a dataset folder (0 if there is none)."""
    try:
        return sum(int((a["ref_id"] < 0).sum()) for _, a in store.iter_chunks(Path(folder)))
    except (OSError, store.DatasetError):
        return 0
