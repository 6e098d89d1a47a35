#!/usr/bin/env python3
"""The farm on Ray, side by side in one run: sampling on four boards against one, the ring
search on two one-CPU Ray workers against one process, a network validated on four boards
against one, and the capacity search of three chips on two workers against one process
(`--only capacity`, N = 4..`--cap-n-max`; the results must be identical).

    .venv/bin/python bench/farm_bench.py                 # both targets, table
    .venv/bin/python bench/farm_bench.py --json          # one JSON document on stdout
    .venv/bin/python bench/farm_bench.py --only sampling --per-board 16256

Sampling: realtime-paced simulated boards (sim://?seed=S&realtime&sample_period_us=P: the
simulator paces every sweep by its sample clock, so each board is limited by its own clock, as
real hardware is), all carrying the same chip (chips=0, so they split one plan). One board
measures --per-board samples through the farm (one actor), then four boards measure four times
as many, in the same local Ray cluster; rates count plan samples from the first chunk sent to
the last chunk on disk (board opening excluded). Every sample is accounted for: the dataset
holds each plan index exactly once, and the journal names each chunk once.
Target: four boards >= 3.5x one board.

Ring: the ring experiment's 1,000 trials of the 2-2-1 network (400 epochs, successive halving,
chunks of 250, bfloat16 as the experiment trains) through host.farm.ring.search, first in this process on one thread, then as Ray
tasks on a local cluster of two CPUs (two one-CPU workers, warmed up first: torch imported).
With --rounds, the two sides alternate and the best round of each counts.
Target: >= 1.7x, and the same best trial (index and scores).

Validation (`--only validation`): the shipped MNIST rf3 network (models/mnist_rf3.onnx, ten
nodes of chip 0) through host.farm.validation on realtime boards of chip 0, one board scoring
--val-images test images, then four boards scoring four times as many (slices of --val-chunk
images: each slice is ten ramps and ten sweeps on its board); every slice is measured once and
each run's accuracy is printed beside the simulated one. No target in the issue: it shows that
validation, like sampling, scales with the boards.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_SAMPLING = 3.5
TARGET_RING = 1.7


def _warm(i: int) -> int:
    """A task that imports what the ring's chunks import and holds its worker for a moment
    (so that both workers start and warm up)."""
    import os

    import torch  # noqa: F401

    import host.experiments.ring  # noqa: F401
    time.sleep(1.0)
    return os.getpid()


def _realtime_boards(a: argparse.Namespace, prefix: str) -> tuple[list[str], list[Any]]:
    """Four realtime-paced simulated boards of chip 0 (URLs, BoardSpecs named PREFIX1..4)."""
    from host.farm.boards import BoardSpec

    urls = [f"sim://?seed={s}&realtime&chips=0&sample_period_us={a.period_us:g}" for s in range(1, 5)]
    return urls, [BoardSpec(f"{prefix}{s}", u) for s, u in enumerate(urls, 1)]


def _board_cluster(specs: list[Any]) -> Any:
    """A local cluster of two CPUs offering the boards, its workers at the driver's niceness."""
    from host.farm.cluster import ClusterConfig, connect

    return connect(ClusterConfig("local", num_cpus=2, resources={s.resource: 1.0 for s in specs},
                                 worker_niceness=os.nice(0)))


def bench_sampling(a: argparse.Namespace) -> dict[str, Any]:
    from host.farm.sampling import FarmSamplingConfig, PlanRequest, read_journal, run_sampling
    from host.sample import store
    from host.sample.measure import SamplingConfig

    urls, specs = _realtime_boards(a, "bench")
    cfg = FarmSamplingConfig(sampling=SamplingConfig(chunk=a.chunk), progress=False)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, _board_cluster(specs) as cluster:
        for label, boards in (("one", specs[:1]), ("four", specs)):
            n = a.per_board * len(boards)
            out = Path(tmp) / label
            rep = run_sampling(cluster, boards, PlanRequest(n=n, seed=0), out, cfg)
            ds = store.load(out)
            idx = np.sort(ds.samples.index)
            chunks = [e["chunk"] for e in read_journal(out) if e.get("event") == "chunk"]
            accounted = bool(len(idx) == n and np.array_equal(idx, np.arange(n))
                             and sorted(chunks) == list(range((n + a.chunk - 1) // a.chunk)))
            runs[label] = {"boards": len(boards), "samples": rep.samples, "wall_s": round(rep.wall_s, 3),
                           "rate_sps": round(rep.samples / rep.wall_s, 1), "complete": rep.complete,
                           "every_sample_accounted_for": accounted,
                           "per_board": {b["name"]: b["samples"] for b in rep.devices[0]["boards"]}}
    clock = 1e6 / a.period_us
    ratio = runs["four"]["rate_sps"] / runs["one"]["rate_sps"]
    return {"urls": urls, "sample_clock_sps": clock, "chunk": a.chunk, "runs": runs, "ratio": round(ratio, 3),
            "target": TARGET_SAMPLING, "met": bool(ratio >= TARGET_SAMPLING and runs["one"]["every_sample_accounted_for"]
                                                   and runs["four"]["every_sample_accounted_for"])}


def bench_validation(a: argparse.Namespace) -> dict[str, Any]:
    from core.io import read_network
    from host.deploy.data import load_data
    from host.farm.validation import ValidationConfig, run_validation

    model = ROOT / "models" / "mnist_rf3.onnx"
    nf = read_network(model)
    data = load_data("test", nf.metadata, nf.n_inputs, 10)
    urls, specs = _realtime_boards(a, "val")
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, _board_cluster(specs) as cluster:
        for label, boards in (("one", specs[:1]), ("four", specs)):
            n = a.val_images * len(boards)
            rep = run_validation(cluster, boards, model, data.x[:n], data.labels[:n], Path(tmp) / label,
                                 ValidationConfig(chunk=a.val_chunk, progress=False))
            g = rep["groups"][0]
            runs[label] = {"boards": len(boards), "images": n, "wall_s": rep["wall_s"],
                           "rate_ips": round(n / rep["wall_s"], 2), "complete": rep["complete"],
                           "every_image_once": bool(rep["complete"] and sum(b["samples"] for b in g["boards"]) == n),
                           "accuracy": g.get("accuracy"), "simulated_accuracy": g.get("simulated_accuracy_same_samples"),
                           "per_board": {b["name"]: b["samples"] for b in g["boards"]}}
    ratio = runs["four"]["rate_ips"] / runs["one"]["rate_ips"]
    return {"model": str(model.relative_to(ROOT)), "urls": urls, "chunk": a.val_chunk, "runs": runs,
            "ratio": round(ratio, 3)}


def bench_ring(a: argparse.Namespace) -> dict[str, Any]:
    from host.experiments.options import set_threads
    from host.farm.cluster import ClusterConfig, connect
    from host.farm.ring import ring_job, search
    from host.farm.tasks import TaskOptions, map_chunks

    job = ring_job(a.surrogate, {"trials": a.trials, "epochs": a.epochs, "chunk": a.ring_chunk, "seed": a.seed,
                                 "prune_at": tuple(int(round(f * a.epochs)) for f in (0.25, 0.5, 0.75)),
                                 "bf16": not a.fp32},
                   engine="core", threads=1)
    set_threads(1, "core")
    t_here_all: list[float] = []
    t_farm_all: list[float] = []
    # workers at the niceness of this process: on a shared machine, other load hits both sides alike
    t = time.monotonic()
    with connect(ClusterConfig("local", num_cpus=2, worker_niceness=os.nice(0))) as cluster:
        t_start = time.monotonic() - t
        t = time.monotonic()
        pids = map_chunks(_warm, [0, 1], cluster)
        t_warm = time.monotonic() - t
        for _ in range(a.rounds):          # interleaved: one process, then the two workers
            t = time.monotonic()
            here = search(job, ["2-2-1"], None)["2-2-1"]
            t_here_all.append(time.monotonic() - t)
            t = time.monotonic()
            farm = search(job, ["2-2-1"], cluster, options=TaskOptions(num_cpus=1))["2-2-1"]
            t_farm_all.append(time.monotonic() - t)
    t_here, t_farm = min(t_here_all), min(t_farm_all)
    same = (here.best_index == farm.best_index and here.best() == farm.best())
    identical = all(np.array_equal(here.scores[k], farm.scores[k]) for k in here.scores)
    ratio = t_here / t_farm
    return {"trials": a.trials, "epochs": a.epochs, "chunk": a.ring_chunk, "seed": a.seed,
            "one_process_s": round(t_here, 2), "two_workers_s": round(t_farm, 2),
            "rounds": {"one_process_s": [round(x, 2) for x in t_here_all],
                       "two_workers_s": [round(x, 2) for x in t_farm_all]},
            "cluster_start_s": round(t_start, 2), "worker_warmup_s": round(t_warm, 2),
            "workers": len(set(pids)), "ratio": round(ratio, 3),
            "ratio_with_warmup": round(t_here / (t_farm + t_warm), 3),
            "best_trial": {"one_process": here.best_index, "two_workers": farm.best_index},
            "best_predicted_accuracy": here.best()["predicted_board_accuracy"],
            "same_best_trial": bool(same), "all_trials_identical": bool(identical),
            "target": TARGET_RING, "met": bool(ratio >= TARGET_RING and same)}


def bench_capacity(a: argparse.Namespace) -> dict[str, Any]:
    """The capacity search of three chips (0, 5, 7; N = 4..cap-n-max) in one process against two
    one-CPU Ray workers; the results must be identical."""
    from host.experiments.options import set_threads
    from host.farm.capacity import capacity_job, search_all
    from host.farm.cluster import ClusterConfig, connect
    from host.farm.tasks import TaskOptions, map_chunks

    surrogates = [a.surrogate] + [str(ROOT / f"models/chips/virtual-dnpu-meanfield-seed{s}.onnx") for s in (5, 7)]
    job = capacity_job(surrogates, [(1, 2)], {"n_min": 4, "n_max": a.cap_n_max, "seed": a.seed},
                       engine="core", threads=1, chunk=a.cap_chunk)
    set_threads(1, "core")
    with connect(ClusterConfig("local", num_cpus=2, worker_niceness=os.nice(0))) as cluster:
        map_chunks(_warm, [0, 1], cluster)
        t = time.monotonic()
        here = search_all(job, None)
        t_here = time.monotonic() - t
        t = time.monotonic()
        farm = search_all(job, cluster, options=TaskOptions(num_cpus=1))
        t_farm = time.monotonic() - t
    identical = all(np.array_equal(x.found, y.found) and np.array_equal(x.margin, y.margin)
                    for h, f in zip(here, farm) for x, y in zip(h.runs, f.runs))
    return {"surrogates": [str(Path(p).relative_to(ROOT)) for p in surrogates], "n_max": a.cap_n_max,
            "chunk": a.cap_chunk, "one_process_s": round(t_here, 2), "two_workers_s": round(t_farm, 2),
            "ratio": round(t_here / t_farm, 3), "identical": bool(identical),
            "capacity": [{str(r["n"]): r["capacity"] for r in h.rows()} for h in here]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("sampling", "ring", "validation", "capacity"), default=None)
    p.add_argument("--per-board", type=int, default=4 * 2032, help="plan samples per board")
    p.add_argument("--chunk", type=int, default=2032,
                   help="plan samples per chunk (16 reference rows are added to each)")
    p.add_argument("--period-us", type=float, default=1000.0, help="sample period of the simulated boards")
    p.add_argument("--surrogate", default=str(ROOT / "models/surrogate.onnx"))
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--ring-chunk", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1, help="ring: interleaved rounds; the best of each side counts")
    p.add_argument("--fp32", action="store_true", help="ring: train in float32 (default: bfloat16, as the experiment)")
    p.add_argument("--val-images", type=int, default=400, help="validation: test images per board")
    p.add_argument("--val-chunk", type=int, default=100, help="validation: images per slice")
    p.add_argument("--cap-n-max", type=int, default=8, help="capacity: the largest N searched")
    p.add_argument("--cap-chunk", type=int, default=32, help="capacity: labellings per chunk")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    out: dict[str, Any] = {"load_average_before": list(os.getloadavg())}
    if a.only in (None, "sampling"):
        out["sampling"] = bench_sampling(a)
    if a.only in (None, "ring"):
        out["ring"] = bench_ring(a)
    if a.only in (None, "validation"):
        out["validation"] = bench_validation(a)
    if a.only in (None, "capacity"):
        out["capacity"] = bench_capacity(a)
    out["load_average_after"] = list(os.getloadavg())
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"load average (1, 5, 15 min) before {out['load_average_before']}, after {out['load_average_after']} "
          f"on {os.cpu_count()} CPUs: other work on the machine slows both sides")
    if "sampling" in out:
        s = out["sampling"]
        print(f"sampling: {len(s['urls'])} realtime simulated boards, clock {s['sample_clock_sps']:.0f} samples/s each, "
              f"chunks of {s['chunk']}")
        for label, r in s["runs"].items():
            print(f"  {label:5s} {r['boards']} board(s): {r['samples']:7d} samples in {r['wall_s']:6.2f} s = "
                  f"{r['rate_sps']:8.0f}/s  accounted for: {r['every_sample_accounted_for']}  {r['per_board']}")
        print(f"  four / one = {s['ratio']:.2f}x (target >= {s['target']}x): {'met' if s['met'] else 'MISSED'}")
    if "ring" in out:
        r = out["ring"]
        print(f"ring: {r['trials']} trials of 2-2-1, {r['epochs']} epochs, chunks of {r['chunk']}")
        print(f"  one process, 1 thread : {r['one_process_s']:7.2f} s  (rounds {r['rounds']['one_process_s']})")
        print(f"  2 one-CPU Ray workers : {r['two_workers_s']:7.2f} s  (rounds {r['rounds']['two_workers_s']}; cluster start {r['cluster_start_s']:.1f} s, "
              f"worker warm-up {r['worker_warmup_s']:.1f} s, not counted)")
        print(f"  speed-up {r['ratio']:.2f}x ({r['ratio_with_warmup']:.2f}x counting the warm-up; target >= "
              f"{r['target']}x); best trial {r['best_trial']} same: {r['same_best_trial']}, every trial identical: "
              f"{r['all_trials_identical']}: {'met' if r['met'] else 'MISSED'}")
    if "validation" in out:
        v = out["validation"]
        print(f"validation: {v['model']} on realtime simulated boards of chip 0, slices of {v['chunk']} images")
        for label, r in v["runs"].items():
            print(f"  {label:5s} {r['boards']} board(s): {r['images']:5d} images in {r['wall_s']:6.2f} s = "
                  f"{r['rate_ips']:7.2f}/s  every image once: {r['every_image_once']}  accuracy "
                  f"{100 * r['accuracy']:.2f} % (simulated {100 * r['simulated_accuracy']:.2f} %)  {r['per_board']}")
        print(f"  four / one = {v['ratio']:.2f}x")
    if "capacity" in out:
        c = out["capacity"]
        print(f"capacity: the surrogate search of {len(c['surrogates'])} chips, N = 4..{c['n_max']}, chunks of "
              f"{c['chunk']} labellings")
        print(f"  one process, 1 thread : {c['one_process_s']:7.2f} s")
        print(f"  2 one-CPU Ray workers : {c['two_workers_s']:7.2f} s  -> {c['ratio']:.2f}x, identical results: "
              f"{c['identical']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
