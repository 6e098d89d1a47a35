"""python -m host.farm {sample,train,validate,ring,capacity,info} [--cluster local|ray://HOST:PORT|auto] ...

    sample  measure one sampling plan on many boards (one Ray actor per board) into datasets
    train   one surrogate per device from those datasets, the trainings fanned out over the cluster
    validate  one network file measured on many boards (slices of the test set), per group of chips
    ring    the ring experiment's trial search, chunks fanned out over the cluster's CPUs
    capacity  the capacity's labelling search of one chip or of every chip of a board, chunks fanned out
    info    what a cluster offers: nodes, CPUs, GPUs, boards (custom resources board:NAME)

--cluster local starts a Ray cluster on this machine for the command's duration (the boards
named with --board become its custom resources); --cluster ray://HOST:PORT joins a running
cluster, whose nodes declare their own boards (ray start --resources '{"board:NAME": 1}').
Without --cluster nothing is distributed and Ray is not imported: `sample` measures one board
here (as python -m host.sample does), `train`, `ring` and `capacity` run their tasks one after another
here, with the same results as on a cluster.

Exit status: 0 done, 2 a failure the message explains (bad address, missing resource, a board
lost with no other board of its device, bad options), 130 interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from host.farm.errors import FarmError, fail
from host.sample.measure import SamplingConfig

SAMPLE_EPILOG = """examples:
  python -m host.farm sample --cluster local --board sim://?seed=1 --board sim://?seed=2 --n 100000 --out data/farm
  python -m host.farm sample --cluster ray://10.0.0.5:10001 --board lab1=/dev/ttyACM0 --board lab2=/dev/ttyACM0 \\
         --n 1000000 --out data/lab --resume

Boards whose devices agree (identity 'device' and electrode limits) share one dataset in --out
and split its chunks; boards of different devices each measure the whole plan into
--out/MODEL-HASH8/. A board lost mid-job hands its chunks to the other boards of its device;
with none left that device stops, everything measured is kept, and --resume continues later."""

RING_EPILOG = """examples:
  python -m host.farm ring --cluster local --cpus 2 --out results/farm-ring
  python -m host.farm ring --out results/farm-ring-here          # the same trials, one process

Each chunk's trials are seeded from (seed, architecture, first trial) only, so the best trial is
the same on any number of workers; a worker killed mid-chunk has that chunk run again (Ray task
retries), finished chunks are on disk in --out/chunks and --resume skips them."""

CAPACITY_EPILOG = """examples:
  python -m host.farm capacity --cluster local --cpus 2 --n-max 10 --out results/farm-capacity
  python -m host.farm capacity --cluster local --data-electrodes 1,4/0,3/1,4 --out results/farm-capacity-chips \
         --surrogate models/surrogate.onnx,models/chips/virtual-dnpu-meanfield-seed5.onnx,models/chips/virtual-dnpu-meanfield-seed7.onnx

Every device's labellings of every N are cut into chunks of --chunk labellings, one task each,
seeded from (seed, N, first labelling) only: the same labellings are found with the same margins
on any number of workers. A worker killed mid-chunk has that chunk run again, finished chunks are
on disk in --out/chunks and --resume skips them. Writes --out/results.json (per device: the
surrogate's C_N and robust C_N, VC estimates), --out/device-K/solutions.npz (every labelling's
controls) and --out/capacity_devices.png. The board check of the solutions stays with
python -m host.experiments capacity."""


TRAIN_EPILOG = """examples:
  python -m host.farm train data/chips-train --test data/chips-test --cluster local --cpus 2 --out models/chips
  python -m host.farm train data/lab --test data/lab-test --cluster ray://10.0.0.5:10001 --device cuda --out models/lab

DATA is what python -m host.farm sample wrote (one folder per device, or one dataset) or any
host.sample dataset folders; test sets are paired with training sets by device. Each device's
surrogate is written as --out/NAME.onnx, NAME the chip (virtual-dnpu-meanfield-seed5,
MODEL-SERIAL; else the device's folder in the farm's datasets, MODEL-HASH8), with its report
(.json) and plots, trained as python -m host.surrogate train does. A worker lost mid-training
trains that device again; finished devices are kept in --out/chunks and --resume skips them."""


VALIDATE_EPILOG = """examples:
  python -m host.farm validate --cluster local --model models/chips/mnist.onnx \\
         --board a='sim://?chips=0,5,7,0,5,7,0,5,7,0' --board b='sim://?chips=0,5,7,0,5,7,0,5,7,0&seed=1' --out results/farm-mnist
  python -m host.farm validate --cluster ray://10.0.0.5:10001 --model results/ring/ring_2-2-1.onnx \\
         --data results/ring/ring_test.npz --board lab1=/dev/ttyACM0 --board lab2=/dev/ttyACM0 --out results/lab-ring

Each node runs on a device of its own chip (as python -m host.deploy --backend board). Boards
carrying the same chips split the test set in slices of --chunk samples; boards of other chips
score the whole set on their own (one accuracy per group of chips in --out/validation.json). A
board lost mid-job hands its slices to another board of the same chips; with none left that
group stops, its slices kept in --out/GROUP/chunks, and --resume continues later. On one board
without a cluster, python -m host.deploy --backend board does the same."""


def _cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="local (start a Ray cluster here), ray://HOST:PORT (join one) or auto (the one ray "
                        "start left running here); without it nothing is distributed and Ray is not imported")
    g.add_argument("--cpus", type=int, default=None, help="--cluster local: CPUs to offer (default: all)")
    g.add_argument("--gpus", type=int, default=None, help="--cluster local: GPUs to offer (default: detected)")
    g.add_argument("--object-store-mb", type=int, default=200, help="--cluster local: object store size")
    g.add_argument("--worker-niceness", type=int, default=None,
                   help="--cluster local: niceness of the workers (default Ray's 15: below any other load; "
                        "0: on a par with it)")


def _search_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """The options of an experiment's search fanned out as tasks (ring, capacity)."""
    p.add_argument("--engine", choices=("core", "torch"), default="core", help="surrogate engine of the workers")
    p.add_argument("--threads", type=int, default=1, help="threads per chunk (and CPUs each task asks for)")
    p.add_argument("--retries", type=int, default=3, help="times a chunk whose worker died is run again")
    p.add_argument("--out", type=Path, required=True, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue an interrupted search in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m host.farm", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("sample", help="one sampling plan on many boards", epilog=SAMPLE_EPILOG,
                       description="Measure a sampling plan on several boards at once (one Ray actor per board), "
                                   "into the dataset format of python -m host.sample.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _cluster_args(s)
    s.add_argument("--board", action="append", required=True, metavar="[NAME=]URL",
                   help="a board (repeat): /dev/tty*, socket://HOST:PORT, sim://?seed=N; NAME is its custom "
                        "resource board:NAME (default: made from the URL)")
    s.add_argument("--n", type=int, required=True, help="plan samples per device")
    s.add_argument("--out", type=Path, required=True, help="dataset folder (one sub-folder per device if they differ)")
    s.add_argument("--strategy", choices=("uniform", "sine", "sawtooth", "grid"), default="uniform")
    s.add_argument("--seed", type=int, default=0, help="plan seed")
    s.add_argument("--wave-period", type=float, default=2000.0, help="sine/sawtooth: slowest period in samples")
    s.add_argument("--grid-points", type=int, default=0, help="grid: points per electrode")
    s.add_argument("--ranges", default=None, help="electrode ranges as JSON [[lo,hi] x 7] in V (default: the board's limits)")
    d = SamplingConfig()
    s.add_argument("--chunk", type=int, default=d.chunk, help="samples per chunk (the unit of work and of resuming)")
    s.add_argument("--refs", type=int, default=d.n_refs, help="reference points measured before every chunk")
    s.add_argument("--ref-repeats", type=int, default=d.ref_repeats, help="repeats of each reference point per visit")
    s.add_argument("--per-board", type=int, default=2, help="chunks queued on each board at a time")
    s.add_argument("--resume", action="store_true", help="continue an interrupted job in --out")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the job's report as one JSON object")

    t = sub.add_parser("train", help="one surrogate per device, trainings fanned out", epilog=TRAIN_EPILOG,
                       description="Train one surrogate per device from farm (or host.sample) datasets, each "
                                   "device's training a Ray task, into --out/NAME.onnx + report + plots.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _cluster_args(t)
    t.add_argument("data", type=Path, nargs="+", help="training dataset folders (or folders of them, one per device)")
    t.add_argument("--test", type=Path, action="append", default=[],
                   help="test dataset folder (or folder of them); repeat; paired with the training sets by device")
    t.add_argument("--out", type=Path, required=True, help="folder for NAME.onnx, NAME.json, plots and chunks/")
    from host.surrogate.config import add_recipe_arguments
    add_recipe_arguments(t)
    t.add_argument("--limit", type=int, default=None, help="use only the first N training samples of each device")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="torch device of each training: auto (cuda where the cluster offers GPUs), cpu, cuda")
    t.add_argument("--threads", type=int, default=1, help="torch threads per training (and CPUs each task asks for)")
    t.add_argument("--retries", type=int, default=3, help="times a training whose worker died is run again")
    t.add_argument("--resume", action="store_true", help="continue an interrupted job in --out")
    t.add_argument("--no-plots", action="store_true", help="no fit and learning-curve plots")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print the reports as one JSON object")

    v = sub.add_parser("validate", help="one network measured on many boards", epilog=VALIDATE_EPILOG,
                       description="Measure a DNPU network file on several boards at once (one Ray actor per "
                                   "board), the test set in slices, one accuracy per group of boards of the same chips.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _cluster_args(v)
    v.add_argument("--model", type=Path, required=True, help="network file (dnpu-network/1 ONNX)")
    v.add_argument("--data", default="test", help="test (the split the model's metadata names) or an .npz with x, labels")
    v.add_argument("--limit", type=int, default=None, help="only the first N samples")
    v.add_argument("--board", action="append", required=True, metavar="[NAME=]URL", help="a board (repeat)")
    from host.farm.validation import ValidationConfig
    vc = ValidationConfig()
    v.add_argument("--chunk", type=int, default=vc.chunk, help="samples per slice (the unit of work and of resuming)")
    v.add_argument("--per-board", type=int, default=vc.per_board, help="slices queued on each board at a time")
    v.add_argument("--device-map", default="auto",
                   help="auto (each node on a device of its own chip) or one device index per node, e.g. 0,1,2")
    v.add_argument("--out", type=Path, required=True, help="folder for validation.json and GROUP/chunks")
    v.add_argument("--resume", action="store_true", help="continue an interrupted job in --out")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.add_argument("--json", action="store_true", help="print the report as one JSON object")

    r = sub.add_parser("ring", help="the ring experiment's trial search on the cluster", epilog=RING_EPILOG,
                       description="The ring experiment's off-chip trial search (host.experiments.ring), its chunks "
                                   "as Ray tasks; writes results.json with every trial's scores and the best trial.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _cluster_args(r)
    r.add_argument("--surrogate", default="models/surrogate.onnx", help="surrogate ONNX file to train through")
    r.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and noise")
    r.add_argument("--archs", default="2-2-1", help="comma-separated: single, 2-1, 2-2-1")
    r.add_argument("--trials", type=int, default=1000)
    r.add_argument("--epochs", type=int, default=400)
    r.add_argument("--chunk", type=int, default=250, help="trials per chunk (one task)")
    r.add_argument("--gap-mv", type=float, default=6.25)
    r.add_argument("--data-electrodes", default="2,4", help="the two data electrodes, e.g. 2,4")
    r.add_argument("--prune-at", default="0.25,0.5,0.75", help="successive halving fractions of --epochs ('' for none)")
    r.add_argument("--prune-keep", type=float, default=0.5)
    r.add_argument("--fp32", action="store_true", help="train in float32 (default: bfloat16 autocast)")
    _search_args(r, "output folder: results.json, chunks/")

    c = sub.add_parser("capacity", help="the capacity's labelling search on the cluster", epilog=CAPACITY_EPILOG,
                       description="The capacity experiment's surrogate search (host.experiments.capacity) for one "
                                   "surrogate or one per device of a board of several chips, its chunks of "
                                   "labellings as Ray tasks.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _cluster_args(c)
    c.add_argument("--surrogate", default="models/surrogate.onnx",
                   help="surrogate ONNX file, or one per device, comma-separated in the board's device order")
    c.add_argument("--data-electrodes", default="1,2",
                   help="the two electrodes the points go on: one pair for every device (1,2) or one per device "
                        "separated by / (1,4/0,3/1,4)")
    from host.experiments.capacity_config import add_search_arguments
    add_search_arguments(c)
    c.add_argument("--seed", type=int, default=0, help="seed of initialisation and noise")
    c.add_argument("--chunk", type=int, default=64, help="labellings per chunk (one task)")
    _search_args(c, "output folder: results.json, device-K/, chunks/")

    i = sub.add_parser("info", help="what a cluster offers", description="Nodes, CPUs, GPUs and boards of a cluster.")
    _cluster_args(i)
    i.add_argument("--board", action="append", default=[], metavar="[NAME=]URL",
                   help="--cluster local: declare this board's resource too")
    return p


def _cluster_config(args: argparse.Namespace, resources: dict[str, float] | None = None) -> Any:
    from host.farm.cluster import ClusterConfig

    return ClusterConfig(address=args.cluster, num_cpus=args.cpus, num_gpus=args.gpus,
                         resources=(resources or {}) if args.cluster == "local" else {},
                         object_store_mb=args.object_store_mb, worker_niceness=args.worker_niceness)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return {"sample": _sample, "train": _train, "validate": _validate, "ring": _ring,
                "capacity": _capacity, "info": _info}[args.command](args)
    except FarmError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print("\ninterrupted: everything finished so far is on disk; continue with --resume", file=sys.stderr)
        return 130


def _info(args: argparse.Namespace) -> int:
    from host.farm.boards import parse_boards
    from host.farm.cluster import connect

    if args.cluster is None:
        raise FarmError("info needs --cluster local, auto or ray://HOST:PORT")
    specs = parse_boards(args.board)
    with connect(_cluster_config(args, {s.resource: 1.0 for s in specs})) as cluster:
        print(json.dumps(cluster.describe()))
    return 0


# ---- sample ---------------------------------------------------------------------------------
def _sample(args: argparse.Namespace) -> int:
    from host.farm.boards import parse_boards
    from host.farm.sampling import FarmSamplingConfig, PlanRequest

    specs = parse_boards(args.board)
    ranges = _parse_ranges(args.ranges) if args.ranges else None
    if args.n <= 0:
        raise FarmError(f"--n must be positive, got {args.n}")
    request = PlanRequest(strategy=args.strategy, n=args.n, seed=args.seed, wave_period=args.wave_period,
                          grid_points=args.grid_points, ranges=ranges)
    cfg = FarmSamplingConfig(sampling=SamplingConfig(chunk=args.chunk, n_refs=args.refs, ref_repeats=args.ref_repeats),
                             per_board=args.per_board, resume=args.resume, progress=not args.no_progress)
    if args.cluster is None:
        if len(specs) > 1:
            raise FarmError(f"{len(specs)} boards need a cluster: add --cluster local (or ray://HOST:PORT)")
        return _sample_here(specs[0].url, request, args.out, cfg, args.json)
    from host.farm.cluster import connect
    from host.farm.sampling import run_sampling

    with connect(_cluster_config(args, {s.resource: 1.0 for s in specs})) as cluster:
        report = run_sampling(cluster, specs, request, args.out, cfg)
    summary = report.to_json()
    if args.json:
        print(json.dumps(summary))
    else:
        for d in summary["devices"]:
            boards = ", ".join(f"{b['name']} {b['samples']}" + (" (lost)" if b["lost"] else "") for b in d["boards"])
            print(f"{d['device']}: {d['samples_done']}/{d['samples_planned']} samples in {d['out']} ({boards})")
        print(f"measured {report.samples} samples in {report.wall_s:.1f} s ({summary['rate_sps'] or 0:.0f}/s)")
    if not report.complete:
        stops = "; ".join(d["stopped"] or f"{d['device']} incomplete" for d in summary["devices"] if not d["complete"])
        return fail(f"{stops}. Everything measured is kept; continue with --resume (the same device's boards)")
    return 0


def _sample_here(url: str, request: Any, out: Path, cfg: Any, as_json: bool) -> int:
    """One board, no cluster: host.sample's own measuring loop, the same dataset."""
    from host.board import Board, BoardError
    from host.sample import store
    from host.sample.measure import ResumeMismatch, run

    t = time.monotonic()
    try:
        with Board.open(url) as board:
            try:
                plan = request.plan_for(board.limits_v)
            except ValueError as e:
                raise FarmError(str(e)) from None
            run(board, plan, out, cfg.sampling, resume=cfg.resume, progress=cfg.progress)
    except (FileExistsError, ResumeMismatch, store.DatasetError) as e:
        raise FarmError(str(e)) from None
    except BoardError as e:
        from host.farm.sampling import count_samples
        raise FarmError(f"{type(e).__name__}: {e}; {count_samples(out)} samples are safe in {out}; "
                        "continue with --resume") from None
    wall = time.monotonic() - t
    summary = {"out": str(out), "samples": request.n, "wall_s": round(wall, 3), "rate_sps": round(request.n / wall, 1)}
    print(json.dumps(summary) if as_json else f"measured {request.n} samples in {wall:.1f} s into {out}")
    return 0


def _parse_ranges(text: str) -> Any:
    from host.sample.plans import PlanConfig

    try:
        ranges = tuple(tuple(float(x) for x in p) for p in json.loads(text))
        PlanConfig(n=1, ranges_v=ranges)
    except (ValueError, TypeError) as e:
        raise FarmError(f"--ranges: {e}") from None
    return ranges


# ---- train ----------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from host.farm.training import TrainJob, pair_datasets, run_training
    from host.surrogate.config import recipe_from_args

    if args.threads < 1 or args.retries < 0 or (args.limit is not None and args.limit < 20):
        raise FarmError("--threads must be >= 1, --retries >= 0 and --limit >= 20")
    devices = pair_datasets(args.data, args.test)
    cfg = recipe_from_args(args)
    job = TrainJob(cfg=cfg, threads=args.threads, limit=args.limit)
    bar = tqdm(total=len(devices), desc="surrogates", unit="device", disable=args.no_progress, dynamic_ncols=True)

    def done(label: str, rep: dict[str, Any]) -> None:
        bar.update(1)
        if not args.json:
            bar.write(_train_line(label, rep))

    t = time.monotonic()
    try:
        if args.cluster is None:
            if args.device == "cuda":
                import torch
                if not torch.cuda.is_available():
                    raise FarmError("--device cuda: torch sees no GPU here")
            reports = run_training(None, job, devices, args.out, resume=args.resume, plots=not args.no_plots,
                                   on_device=done)
            where: dict[str, Any] = {"address": None}
        else:
            from host.farm.cluster import connect

            with connect(_cluster_config(args)) as cluster:
                where = cluster.describe()
                gpus = 1.0 if args.device == "cuda" or (args.device == "auto" and where["gpus"] >= 1) else 0.0
                if gpus == 0.0 and args.device == "auto":
                    job = dataclasses.replace(job, cfg=dataclasses.replace(cfg, device="cpu"))
                reports = run_training(cluster, job, devices, args.out, resume=args.resume, plots=not args.no_plots,
                                       gpus_per_task=gpus, max_retries=args.retries, on_device=done)
    finally:
        bar.close()
    wall = time.monotonic() - t
    if args.json:
        print(json.dumps({"cluster": where, "wall_s": round(wall, 3), "surrogates": reports}))
    else:
        print(f"{len(reports)} surrogates in {wall:.1f} s in {args.out}")
    return 0


def _train_line(label: str, rep: dict[str, Any]) -> str:
    board = rep["data"]["board"]
    dev = board.get("device") if isinstance(board, dict) else None
    chip = f"{dev.get('model')} seed {dev['seed']}" if isinstance(dev, dict) and "seed" in dev else board.get("serial", "?")
    test = f"test RMSE {rep['test_rmse_na']:.3f} nA" if "test_rmse_na" in rep else "no test set"
    return (f"{label} ({chip}): {test}, {rep['data']['train_samples']} samples, {rep['epochs']} epochs ({rep['stopped']}), {rep['wall_s']} s on {rep['device']} -> {rep['model']}")


# ---- validate -------------------------------------------------------------------------------
def _validate(args: argparse.Namespace) -> int:
    from host.deploy.errors import DeployError
    from host.farm.boards import parse_boards

    specs = parse_boards(args.board)
    if args.cluster is None:
        raise FarmError("validate needs --cluster local (or ray://HOST:PORT); on one board here, "
                        "python -m host.deploy --backend board does the same")
    if args.limit is not None and args.limit < 1:
        raise FarmError(f"--limit must be >= 1, got {args.limit}")
    try:
        from core.io import read_network
        from host.deploy.data import load_data
        from host.deploy.placement import parse_device_map
        from host.metrics import n_classes

        nf = read_network(args.model)
        from core import Network
        outputs = Network(nf.n_inputs, nf.layers, nf.surrogates).n_outputs
        data = load_data(args.data, nf.metadata, nf.n_inputs, n_classes(outputs))
        dmap = parse_device_map(args.device_map)
    except FileNotFoundError:
        raise FarmError(f"--model {args.model}: no such file") from None
    except (DeployError, ValueError) as e:
        raise FarmError(str(e)) from None
    x, labels = data.x, data.labels
    if args.limit is not None:
        x, labels = x[:args.limit], labels[:args.limit]
    from host.farm.cluster import connect
    from host.farm.validation import ValidationConfig, run_validation

    cfg = ValidationConfig(chunk=args.chunk, per_board=args.per_board, resume=args.resume,
                           device_map=tuple(dmap) if dmap is not None else None, progress=not args.no_progress)
    with connect(_cluster_config(args, {s.resource: 1.0 for s in specs})) as cluster:
        rep = run_validation(cluster, specs, args.model, x, labels, args.out, cfg)
    if args.json:
        print(json.dumps(rep))
    else:
        print(f"{args.model}: {rep['samples']} samples ({data.name}), simulated accuracy "
              f"{100 * rep['simulated_accuracy']:.2f} %, {rep['wall_s']:.1f} s")
        for g in rep["groups"]:
            boards = ", ".join(f"{b['name']} {b['samples']}" + (" (lost)" if b["lost"] else "") for b in g["boards"])
            acc = (f"{100 * g['accuracy']:.2f} % on {g['n_samples']} samples "
                   f"({100 * g['accuracy_minus_simulated']:+.2f} against simulated)") if "accuracy" in g else "nothing measured"
            print(f"{g['group']}: {acc}; boards {boards}")
        print(f"report in {args.out / 'validation.json'}")
    if not rep["complete"]:
        stops = "; ".join(g["stopped"] or f"{g['group']} incomplete" for g in rep["groups"] if not g["complete"])
        return fail(f"{stops}. Everything measured is kept; continue with --resume")
    return 0


# ---- ring -----------------------------------------------------------------------------------
def prune_epochs(text: str, epochs: int) -> tuple[int, ...]:
    """--prune-at fractions of --epochs as the epochs at which chunks prune (as host.experiments ring)."""
    try:
        fr = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise FarmError(f"--prune-at: expected fractions like 0.25,0.5, got {text!r}") from None
    if any(not 0 < f < 1 for f in fr):
        raise FarmError(f"--prune-at: fractions must lie in (0, 1), got {text!r}")
    return tuple(sorted({e for e in (int(round(f * epochs)) for f in fr) if 0 < e < epochs}))


# ---- ring (the search) -----------------------------------------------------------------------------------
def _ring(args: argparse.Namespace) -> int:
    from host.experiments.errors import ExperimentError

    try:
        return _ring_run(args)
    except (ExperimentError, ValueError) as e:
        raise FarmError(str(e)) from None


def _ring_run(args: argparse.Namespace) -> int:
    import numpy as np

    from host.farm.ring import job_record, ring_job, search
    from host.farm.tasks import ChunkStore, TaskOptions

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    from host.experiments.ring import ARCHS
    if not archs or any(a not in ARCHS for a in archs):
        raise FarmError(f"--archs: choose from {', '.join(ARCHS)}, got {args.archs!r}")
    try:
        de = tuple(int(x) for x in args.data_electrodes.split(","))
    except ValueError:
        raise FarmError(f"--data-electrodes: expected two electrodes like 2,4, got {args.data_electrodes!r}") from None
    if args.threads < 1 or args.retries < 0:
        raise FarmError("--threads must be >= 1 and --retries >= 0")
    overrides = {"gap_mv": args.gap_mv, "data_electrodes": de, "trials": args.trials, "epochs": args.epochs,
                 "chunk": args.chunk, "bf16": not args.fp32, "seed": args.seed, "prune_keep": args.prune_keep,
                 "prune_at": prune_epochs(args.prune_at, args.epochs)}
    job = ring_job(args.surrogate, overrides, engine=args.engine, threads=args.threads)
    out = Path(args.out)
    store = ChunkStore(out / "chunks", job_record(job, archs), resume=args.resume)
    n_chunks = len(archs) * ((args.trials + args.chunk - 1) // args.chunk)
    from tqdm import tqdm

    bar = tqdm(total=n_chunks, desc="ring chunks", unit="chunk", disable=args.quiet, dynamic_ncols=True)
    t = time.monotonic()
    try:
        if args.cluster is None:
            found = search(job, archs, None, store=store, on_result=lambda i, r: bar.update(1))
            where: dict[str, Any] = {"address": None}
        else:
            from host.farm.cluster import connect

            with connect(_cluster_config(args)) as cluster:
                where = cluster.describe()
                found = search(job, archs, cluster, store=store,
                               options=TaskOptions(num_cpus=args.threads, max_retries=args.retries),
                               on_result=lambda i, r: bar.update(1))
    finally:
        bar.close()
    wall = time.monotonic() - t
    results = {"cluster": where, "wall_s": round(wall, 3), "archs": {}}
    for arch, f in found.items():
        results["archs"][arch] = {
            "trials": args.trials, "best": f.best(),
            "max_clean_test_accuracy": float(np.max(f.scores["clean"])),
            "median_clean_test_accuracy": float(np.median(f.scores["clean"])),
            "max_noisy_test_accuracy": float(np.max(f.scores["pred"])),
            **{k: f.scores[k].tolist() for k in ("fisher", "clean", "sel", "pred", "epochs")}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"job": job_record(job, archs), **results}, indent=1) + "\n")
    summary = {"out": str(out), "wall_s": results["wall_s"],
               "best": {a: {k: v for k, v in r["best"].items() if k != "control_voltages"}
                        for a, r in results["archs"].items()}}
    if args.json:
        print(json.dumps(summary))
    else:
        for a, b in summary["best"].items():
            print(f"{a:7s} best trial {b['trial']}: noise-free test {100 * b['clean_test_accuracy']:.2f} %, "
                  f"predicted (under noise) {100 * b['predicted_board_accuracy']:.2f} %")
        print(f"{n_chunks} chunks in {wall:.1f} s; results in {out / 'results.json'}")
    return 0


# ---- capacity (the search) -------------------------------------------------------------------
def _capacity(args: argparse.Namespace) -> int:
    from host.experiments.errors import ExperimentError

    try:
        return _capacity_run(args)
    except (ExperimentError, ValueError) as e:
        raise FarmError(str(e)) from None


def _electrode_pairs(text: str) -> list[tuple[int, int]]:
    from host.experiments.data_electrodes import parse_data_electrodes

    pairs = []
    for part in text.split("/"):
        pair = parse_data_electrodes(part.strip())
        if not isinstance(pair, tuple):
            raise FarmError(f"--data-electrodes: the farm takes given pairs ({text!r}); screen with "
                            "python -m host.experiments capacity --data-electrodes auto first")
        pairs.append(pair)
    return pairs


def _capacity_run(args: argparse.Namespace) -> int:
    from host.board.chips import describe_chip, surrogate_chip
    from host.experiments.capacity_cli import devices_table, plot_devices
    from host.experiments.surrogates import load_surrogate, surrogate_paths
    from host.farm.capacity import capacity_job, chunks_of, device_row, job_record, save_solutions, search_all
    from host.farm.tasks import ChunkStore, TaskOptions

    if args.retries < 0:
        raise FarmError("--retries must be >= 0")
    paths = surrogate_paths(args.surrogate)
    overrides = {"n_min": args.n_min, "n_max": args.n_max, "attempts": args.attempts, "epochs": args.epochs,
                 "seed": args.seed, "bf16": args.bf16}
    job = capacity_job(paths, _electrode_pairs(args.data_electrodes), overrides, engine=args.engine,
                       threads=args.threads, chunk=args.chunk)
    out = Path(args.out)
    store = ChunkStore(out / "chunks", job_record(job), resume=args.resume)
    n_chunks = len(chunks_of(job))
    from tqdm import tqdm

    bar = tqdm(total=n_chunks, desc="capacity chunks", unit="chunk", disable=args.quiet, dynamic_ncols=True)
    t = time.monotonic()
    try:
        if args.cluster is None:
            found = search_all(job, None, store=store, on_result=lambda i, r: bar.update(1))
            where: dict[str, Any] = {"address": None}
        else:
            from host.farm.cluster import connect

            with connect(_cluster_config(args)) as cluster:
                where = cluster.describe()
                found = search_all(job, cluster, store=store,
                                   options=TaskOptions(num_cpus=args.threads, max_retries=args.retries),
                                   on_result=lambda i, r: bar.update(1))
    finally:
        bar.close()
    wall = time.monotonic() - t
    chips = [describe_chip(surrogate_chip(load_surrogate(p, engine="torch").metadata)) for p in job.surrogates]
    rows = [device_row(f, chips[f.device]) for f in found]
    for f, row in zip(found, rows):
        row["solutions"] = str(save_solutions(out / f"device-{f.device}", f))
    results = {"job": job_record(job), "cluster": where, "wall_s": round(wall, 3), "chunks": n_chunks,
               "devices": rows}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_devices(out / "capacity_devices.png", rows)
    if args.json:
        print(json.dumps({"out": str(out), "wall_s": results["wall_s"], "chunks": n_chunks,
                          "devices": [{k: r[k] for k in ("device", "chip", "vc", "capacity")} for r in rows]}))
    else:
        print(devices_table(rows), end="")
        print(f"{n_chunks} chunks in {wall:.1f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
