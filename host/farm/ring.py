"""The ring experiment's trial search fanned out over the cluster (`python -m host.farm ring`).

The trials are those of `host.experiments.ring` (its network, loss, noise, optimiser, successive
halving and scoring: `train_chunk_parts` and `score`), cut into chunks of `RingConfig.chunk`
trials; each chunk is one task (`host.farm.tasks.map_chunks`). Unlike the single-machine
experiment, whose random generator runs on from chunk to chunk, every chunk here draws its
initialisation and noise from seeds derived from (seed, architecture, first trial of the chunk)
alone (`chunk_seed`), so a chunk's result does not depend on which worker ran it or what ran
before: the search gives the same trials, and the same best trial, on one process, on two
workers or on a hundred (with the same chunk size and thread count per chunk).

The best trial is the one with the highest selection score (accuracy under noise on the
training set), then the highest Fisher criterion, then the lowest trial index. Each chunk's
per-trial scores and every trial's control voltages and output standardisation are kept, so
the best network can be rebuilt (`best_network`) for validation or export without training it again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from host.farm.cluster import Cluster
from host.farm.tasks import ChunkStore, TaskOptions, map_chunks

SCORES = ("fisher", "clean", "sel", "pred", "epochs")


@dataclass(frozen=True)
class RingJob:
    """Everything a worker needs for one chunk of ring trials (sent once per job)."""

    surrogate: str                   # absolute path of the surrogate file
    engine: str                      # core | torch
    threads: int                     # threads per chunk (1: one CPU per task)
    cfg: Any                         # host.experiments.ring.RingConfig
    data: dict[str, np.ndarray]      # host.experiments.ring.ring_splits
    noise: float                     # selection noise (board_noise_std)


def chunk_seed(seed: int, nodes: tuple[int, ...], first_trial: int) -> int:
    """The seed of the chunk whose first trial is `first_trial`: a function of these alone."""
    return int(np.random.SeedSequence([int(seed), len(nodes), *map(int, nodes), int(first_trial)]).generate_state(1)[0])


def ring_chunk(job: RingJob, chunk: tuple[str, int, int]) -> dict[str, np.ndarray]:
    """Train and score trials a..b-1 of architecture `arch`: per-trial scores, controls and standardisation."""
    import torch

    from host.experiments.options import set_threads
    from host.experiments.ring import ARCHS, score, train_chunk_parts
    from host.experiments.surrogates import load_surrogate

    arch, a, b = chunk
    nodes = ARCHS[arch]
    set_threads(job.threads, job.engine)
    sur = load_surrogate(job.surrogate, engine=job.engine, threads=job.threads)
    s = chunk_seed(job.cfg.seed, nodes, a)
    gen = torch.Generator().manual_seed(s)
    torch.manual_seed(s ^ 0x9E3779B9)
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(job.data[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    n = b - a
    out: dict[str, np.ndarray] = {k: np.zeros(n) for k in SCORES}
    for net, idx, eps in train_chunk_parts(sur, nodes, job.cfg, n, x_tr, y_tr, job.noise, gen):
        sc = score(net, x_tr, y_tr, x_te, y_te, job.cfg.noise_draws)
        for k in ("fisher", "clean", "sel", "pred"):
            out[k][idx] = sc[k]
        out["epochs"][idx] = eps
        with torch.no_grad():
            for li, (layer, norm) in enumerate(zip(net.layers, net.norms)):
                for name, t in (("control", layer.control), ("mean", norm.mean), ("var", norm.var)):
                    key = f"{name}_{li}"
                    if key not in out:
                        out[key] = np.zeros((n, *t.shape[1:]), dtype=np.float64)
                    out[key][idx] = t.detach().double().numpy()
    out["first_trial"] = np.array(a)
    return out


@dataclass
class ArchSearch:
    """One architecture's trials, merged from its chunks in trial order."""

    arch: str
    scores: dict[str, np.ndarray]            # SCORES -> [trials]
    state: dict[str, np.ndarray]             # control_i / mean_i / var_i -> [trials, ...]
    best_index: int

    def best(self) -> dict[str, Any]:
        i = self.best_index
        return {"trial": i, "fisher": float(self.scores["fisher"][i]),
                "clean_test_accuracy": float(self.scores["clean"][i]),
                "selection_accuracy": float(self.scores["sel"][i]),
                "predicted_board_accuracy": float(self.scores["pred"][i]),
                "epochs": int(self.scores["epochs"][i]),
                "control_voltages": [self.state[f"control_{li}"][i].tolist()
                                     for li in range(len([k for k in self.state if k.startswith("control_")]))]}


def best_trial(scores: dict[str, np.ndarray]) -> int:
    """Highest selection score, then highest Fisher criterion, then the lowest trial index."""
    sel, fisher = np.asarray(scores["sel"]), np.asarray(scores["fisher"])
    order = np.lexsort((np.arange(len(sel)), -fisher, -sel))
    return int(order[0])


def chunks_of(archs: list[str], trials: int, size: int) -> list[tuple[str, int, int]]:
    from host.networks.trials import trial_chunks

    return [(arch, a, b) for arch in archs for a, b in trial_chunks(trials, size)]


def search(job: RingJob, archs: list[str], cluster: Cluster | None, *, store: ChunkStore | None = None,
           options: TaskOptions = TaskOptions(), on_result: Callable[[int, dict[str, np.ndarray]], None] | None = None
           ) -> dict[str, ArchSearch]:
    """Every trial of every architecture in `archs`, chunk by chunk on `cluster` (None: here)."""
    chunks = chunks_of(archs, job.cfg.trials, job.cfg.chunk)
    results = map_chunks(ring_chunk, chunks, cluster, shared=(job,), options=options, store=store,
                         on_result=on_result)
    out: dict[str, ArchSearch] = {}
    for arch in archs:
        parts = [(c, r) for c, r in zip(chunks, results) if c[0] == arch]
        scores = {k: np.concatenate([np.asarray(r[k]) for _, r in parts]) for k in SCORES}
        keys = [k for k in parts[0][1] if k.split("_")[0] in ("control", "mean", "var")]
        state = {k: np.concatenate([np.asarray(r[k]) for _, r in parts]) for k in keys}
        out[arch] = ArchSearch(arch, scores, state, best_trial(scores))
    return out


def best_network(found: ArchSearch, job: RingJob, sur: Any) -> Any:
    """The best trial as a one-trial DNPUNet on the surrogate `sur` (load_surrogate), rebuilt
    from its stored controls and standardisation (noise set as after training)."""
    import torch
    from torch import nn

    from host.experiments.ring import ARCHS
    from host.networks.classifiers import DNPUNet

    cfg, i = job.cfg, found.best_index
    net = DNPUNet(sur.model, sur.ranges_v, 1, nodes=ARCHS[found.arch], data_electrodes=cfg.data_electrodes,
                  span_sigmas=cfg.span_sigmas, noise_std_na=job.noise)
    with torch.no_grad():
        for li, (layer, norm) in enumerate(zip(net.layers, net.norms)):
            layer.control = nn.Parameter(torch.as_tensor(found.state[f"control_{li}"][i:i + 1],
                                                         dtype=layer.control.dtype).clone())
            norm.mean = torch.as_tensor(found.state[f"mean_{li}"][i:i + 1], dtype=norm.mean.dtype).clone()
            norm.var = torch.as_tensor(found.state[f"var_{li}"][i:i + 1], dtype=norm.var.dtype).clone()
    net.eval()
    return net


def ring_job(surrogate: str | Path, cfg_overrides: dict[str, Any], engine: str = "core", threads: int = 1) -> RingJob:
    """The job `python -m host.experiments ring` would run with these settings: the surrogate's
    noise figures, the data of the seed; ExperimentError / ValueError for bad settings."""
    from host.experiments.ring import RingConfig, board_noise_std, normalised_gap, ring_splits
    from host.experiments.surrogates import load_surrogate

    path = str(Path(surrogate).resolve())
    sur = load_surrogate(path, engine="torch")
    cfg = RingConfig(**{**cfg_overrides, "noise_std_na": sur.test_rmse_na})
    gap = normalised_gap(cfg.gap_mv, sur.ranges_v, cfg.data_electrodes)
    data = ring_splits(cfg, gap)
    return RingJob(surrogate=path, engine=engine, threads=threads, cfg=cfg, data=data,
                   noise=board_noise_std(sur, cfg.oversample))


def job_record(job: RingJob, archs: list[str]) -> dict[str, Any]:
    """What identifies a search (ChunkStore's job.json): the settings, not the data arrays."""
    return {"experiment": "ring", "archs": archs, "surrogate": job.surrogate, "engine": job.engine,
            "threads": job.threads, "noise": job.noise, "ring": dataclasses.asdict(job.cfg)}
