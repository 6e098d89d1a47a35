"""Independent chunks of work (trials, validations, surrogates per device) fanned out as Ray tasks.

`map_chunks(fn, chunks, cluster)` runs ``fn(*shared, chunk)`` for every chunk and returns the
results in chunk order. Without a cluster it is a plain loop in this process (Ray is not
imported); with one, every chunk is a Ray task with ``max_retries``, so a chunk whose worker
process dies (killed, out of memory, machine lost) runs again from the start on another worker,
and results are keyed by chunk index, so no chunk is ever counted twice. An exception raised by
`fn` itself is not retried: it is a bug or bad input, and FarmError names the chunk.

A result is only as reproducible as `fn`: for a fan-out to give exactly what the single-machine
run gives, a chunk's result must be a function of its own inputs (seeds derived from the chunk's
index, never from a random state carried over from earlier chunks).

With a `ChunkStore`, every finished chunk is written to disk atomically (``.npz``, data only) and
a re-run skips the chunks already there: a job cut short (a lost worker, Ctrl-C, a lost driver)
continues where it stopped.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from host.farm.cluster import Cluster
from host.farm.errors import FarmError
from host.sample.store import atomic_write_bytes

C = TypeVar("C")
R = TypeVar("R")
_CHUNK_RE = re.compile(r"^chunk-(\d{6})\.npz$")


@dataclass(frozen=True)
class TaskOptions:
    """What one chunk asks of the cluster, and how often a lost worker's chunk is run again."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 3


class ChunkStore:
    """Finished chunks of one job on disk: ``job.json`` (what the job is) and ``chunk-NNNNNN.npz``
    per chunk, each a dict of numpy arrays, written atomically; loaded with allow_pickle=False."""

    def __init__(self, folder: Path, job: dict[str, Any], resume: bool) -> None:
        self.folder = Path(folder)
        path = self.folder / "job.json"
        text = json.dumps(job, sort_keys=True, indent=1, default=_json_default) + "\n"
        if path.is_file():
            if not resume:
                raise FarmError(f"{self.folder} already holds chunks of a job; pass --resume to continue it "
                                "or choose another folder")
            if json.loads(path.read_text()) != json.loads(text):
                raise FarmError(f"cannot resume {self.folder}: the job's settings differ from the stored ones "
                                f"({path})")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, text.encode())

    def path(self, i: int) -> Path:
        return self.folder / f"chunk-{i:06d}.npz"

    def done(self) -> set[int]:
        return {int(m.group(1)) for p in self.folder.iterdir() if (m := _CHUNK_RE.match(p.name))}

    def save(self, i: int, result: dict[str, np.ndarray]) -> None:
        final = self.path(i)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in result.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def load(self, i: int) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path(i), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise FarmError(f"{self.path(i)}: unreadable chunk ({e}); delete it to measure it again") from None


def map_chunks(fn: Callable[..., R], chunks: Sequence[C], cluster: Cluster | None, *, shared: tuple[Any, ...] = (),
               options: TaskOptions = TaskOptions(), store: ChunkStore | None = None,
               on_result: Callable[[int, R], None] | None = None) -> list[R]:
    """[fn(*shared, chunk) for chunk in chunks], on the cluster's workers when there is one.

    `fn` must be a module-level function (workers import it by name); `shared` is put in the
    object store once for all chunks. `on_result(i, result)` runs in the caller as each chunk
    finishes (in completion order, once per chunk; also for chunks loaded from `store`)."""
    results: dict[int, R] = {}
    if store is not None:
        for i in sorted(store.done()):
            if i < len(chunks):
                results[i] = store.load(i)          # type: ignore[assignment]
                if on_result is not None:
                    on_result(i, results[i])
    todo = [i for i in range(len(chunks)) if i not in results]

    def finish(i: int, r: R) -> None:
        if i in results:                # a chunk counts once, whatever ran it
            return
        if store is not None:
            store.save(i, r)            # type: ignore[arg-type]
        results[i] = r
        if on_result is not None:
            on_result(i, r)

    if cluster is None:
        for i in todo:
            finish(i, fn(*shared, chunks[i]))
        return [results[i] for i in range(len(chunks))]

    ray = cluster.ray
    if options.max_retries < 0:
        raise FarmError(f"max_retries must be >= 0, got {options.max_retries}")
    need = {"CPU": options.num_cpus} if options.num_cpus else {}
    if options.num_gpus:
        need["GPU"] = options.num_gpus
    cluster.require(need)
    task = ray.remote(fn).options(num_cpus=options.num_cpus, num_gpus=options.num_gpus,
                                  max_retries=options.max_retries, retry_exceptions=False)
    shared_refs = [ray.put(s) for s in shared]
    pending = {task.remote(*shared_refs, chunks[i]): i for i in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                r = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None) or e
                raise FarmError(f"chunk {i} failed: {type(cause).__name__}: {' '.join(str(cause).split())[:300]}") from None
            except ray.exceptions.RayError as e:       # its worker died more than max_retries times
                raise FarmError(f"chunk {i} was lost {options.max_retries + 1} times (its worker died each time: "
                                f"{type(e).__name__}); chunks finished so far are kept") from None
            finish(i, r)
    finally:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
    return [results[i] for i in range(len(chunks))]




def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON: {type(o).__name__}")
