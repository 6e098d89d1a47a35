"""The capacity experiment's surrogate search fanned out over the cluster (`python -m host.farm capacity`).

For one surrogate, or one per device of a board of several chips, and every N, the labellings of
the first N capacity points (the paper's, placed on each device's data electrodes) are searched
as `host.experiments.capacity.search` does (attempts with shrinking noise, the class margin,
each labelling's best control voltages; a labelling and its complement trained once), cut into
chunks of `chunk` labellings; every chunk is one task (`host.farm.tasks.map_chunks`), so the
N = 10 search of three chips spreads over every CPU of the cluster. A chunk draws its
initialisation and training noise from a seed derived from (seed, N, first labelling) alone
(`chunk_seed`): the search finds the same labellings with the same margins and controls on one
process or on many workers. (The single-machine experiment carries one generator through all of
an N's labellings, so its draws, not its kind of result, differ from these.)

The result per device is the surrogate rows of the capacity table (C_N, and C_N counting only
margins above the surrogate's noise floor) with their VC estimates; every labelling's solution
is kept in ``OUT/device-K/solutions.npz`` (labels, found, margin, controls per N) for a board
check later.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from host.farm.cluster import Cluster
from host.farm.tasks import ChunkStore, TaskOptions, map_chunks


@dataclass(frozen=True)
class CapacityJob:
    """Everything a worker needs for one chunk (sent once per job)."""

    surrogates: tuple[str, ...]                 # absolute paths, one per device
    electrodes: tuple[tuple[int, int], ...]     # each device's data electrodes
    points_v: tuple[np.ndarray, ...]            # each device's capacity points [10, 2], volts
    cfgs: tuple[Any, ...]                       # each device's host.experiments.capacity.CapacityConfig
    engine: str                                 # core | torch
    threads: int                                # threads per chunk
    chunk: int                                  # labellings per chunk


def chunk_seed(seed: int, n: int, first: int) -> int:
    """The seed of the chunk of N-point labellings starting at `first`: a function of these alone."""
    return int(np.random.SeedSequence([int(seed), 0xCA9, int(n), int(first)]).generate_state(1)[0])


def chunks_of(job: CapacityJob) -> list[tuple[int, int, int, int]]:
    """(device, N, first, end) for every chunk of the job, device by device, N by N."""
    from host.experiments.capacity import searched_labellings

    out = []
    for d, cfg in enumerate(job.cfgs):
        for n in range(cfg.n_min, cfg.n_max + 1):
            total = len(searched_labellings(cfg, n))
            out += [(d, n, a, min(total, a + job.chunk)) for a in range(0, total, job.chunk)]
    return out


def capacity_chunk(job: CapacityJob, chunk: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    """Search labellings first..end-1 of N points on device d's surrogate: found, margin, attempts, controls."""
    import torch

    from host.experiments.capacity import search, searched_labellings
    from host.experiments.options import set_threads
    from host.experiments.surrogates import load_surrogate
    from host.networks.classifiers import TrialDNPUClassifier

    d, n, a, b = chunk
    cfg = job.cfgs[d]
    set_threads(job.threads, job.engine)
    sur = load_surrogate(job.surrogates[d], engine=job.engine, threads=job.threads)
    s = chunk_seed(cfg.seed, n, a)
    gen = torch.Generator().manual_seed(s)
    torch.manual_seed(s ^ 0x9E3779B9)           # the noise injected while training
    electrodes = job.electrodes[d]

    def make(t: int, g: torch.Generator) -> TrialDNPUClassifier:
        return TrialDNPUClassifier(sur.model, sur.ranges_v, t, data_electrodes=electrodes, generator=g)

    labs = torch.as_tensor(searched_labellings(cfg, n)[a:b])
    r = search(make, n, labs, cfg, gen, points=job.points_v[d])
    return {"found": r.found, "margin": r.margin, "attempts": r.attempts, "solution": r.solution,
            "wall_s": np.array(r.wall_s)}


@dataclass
class DeviceCapacity:
    """One device's search: a CapacityN per N (complements mirrored in)."""

    device: int
    surrogate: str
    electrodes: tuple[int, int]
    runs: list[Any]                               # host.experiments.capacity.CapacityN, by N

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.runs]


def search_all(job: CapacityJob, cluster: Cluster | None, *, store: ChunkStore | None = None,
               options: TaskOptions = TaskOptions(),
               on_result: Callable[[int, dict[str, np.ndarray]], None] | None = None) -> list[DeviceCapacity]:
    """Every chunk of the job on `cluster` (None: here), merged per device and N in labelling order."""
    from host.experiments.capacity import CapacityN, searched_labellings, with_complements

    chunks = chunks_of(job)
    results = map_chunks(capacity_chunk, chunks, cluster, shared=(job,), options=options, store=store,
                         on_result=on_result)
    out = []
    for d, cfg in enumerate(job.cfgs):
        runs = []
        for n in range(cfg.n_min, cfg.n_max + 1):
            parts = [r for c, r in zip(chunks, results) if c[0] == d and c[1] == n]
            cat = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in ("found", "margin", "attempts",
                                                                               "solution")}
            run = CapacityN(n, searched_labellings(cfg, n).astype(np.int64), cat["found"].astype(bool),
                            cat["margin"], cat["attempts"], cat["solution"],
                            float(sum(float(p["wall_s"]) for p in parts)), cfg.noise_rms)
            runs.append(with_complements(run) if cfg.use_complements else run)
        out.append(DeviceCapacity(d, job.surrogates[d], job.electrodes[d], runs))
    return out


def capacity_job(surrogates: list[str], electrodes: list[tuple[int, int]], overrides: dict[str, Any],
                 engine: str = "core", threads: int = 1, chunk: int = 64) -> CapacityJob:
    """The job for these surrogates (one per device) and data electrodes (one pair for all, or one
    per device): each device's points placed in its chip's ranges and its noise figures from its
    file (host.experiments.capacity.config_for); ExperimentError / ValueError for bad settings."""
    from host.experiments.capacity_config import CAPACITY_POINTS_V, config_for
    from host.experiments.data_electrodes import place_paper_points
    from host.experiments.surrogates import load_surrogate

    if chunk < 1 or threads < 1:
        raise ValueError("--chunk and --threads must be >= 1")
    if len(electrodes) == 1:
        electrodes = electrodes * len(surrogates)
    if len(electrodes) != len(surrogates):
        raise ValueError(f"{len(electrodes)} data-electrode pairs for {len(surrogates)} surrogates: give one pair "
                         "for all, or one per device")
    paths, cfgs, points = [], [], []
    for path, pair in zip(surrogates, electrodes):
        p = str(Path(path).resolve())
        sur = load_surrogate(p, engine="torch")
        paths.append(p)
        cfgs.append(config_for(sur, **overrides))
        points.append(np.asarray(place_paper_points(CAPACITY_POINTS_V, sur.ranges_v, pair).volts))
    return CapacityJob(tuple(paths), tuple(tuple(e) for e in electrodes), tuple(points), tuple(cfgs),
                       engine, threads, chunk)


def job_record(job: CapacityJob) -> dict[str, Any]:
    """What identifies a search (ChunkStore's job.json)."""
    return {"experiment": "capacity", "surrogates": list(job.surrogates), "electrodes": [list(e) for e in job.electrodes],
            "points_v": [p.tolist() for p in job.points_v], "capacity": [dataclasses.asdict(c) for c in job.cfgs],
            "engine": job.engine, "threads": job.threads, "chunk": job.chunk}


def device_row(found: DeviceCapacity, chip: str) -> dict[str, Any]:
    """A device's row as host.experiments.capacity_cli.summarise_device makes it from a one-device
    run's results (its table and plot read it), with the surrogate's table."""
    from host.experiments.capacity import vc_estimate
    from host.experiments.capacity_cli import summarise_device

    rows = found.rows()
    results = {"data_electrodes": list(found.electrodes), "table": {"surrogate": rows, "surrogate_robust": rows},
               "vc": {"surrogate": vc_estimate(rows), "surrogate_robust": vc_estimate(rows, "robust_capacity")}}
    return {"device": found.device, "surrogate": found.surrogate, "chip": chip, **summarise_device(results),
            "table": rows}


def save_solutions(folder: Path, found: DeviceCapacity) -> Path:
    """Every labelling's result per N as plain arrays (no pickles): labels_N, found_N, margin_N, controls_N."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for r in found.runs:
        arrays.update({f"labels_{r.n}": r.labels, f"found_{r.n}": r.found, f"margin_{r.n}": r.margin,
                       f"controls_{r.n}": r.solution})
    path = folder / "solutions.npz"
    np.savez(path, **arrays)
    return path
