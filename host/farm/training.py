"""One surrogate per device, the trainings fanned out over the cluster (`python -m host.farm train`).

The datasets are those `python -m host.farm sample` writes (one folder per device under its
--out, or --out itself when all boards carried one device) or any `host.sample` dataset folders.
Training sets and test sets are paired by device (`boards.device_label` of the identity each
dataset recorded), so a test set of another chip is never scored against a surrogate. Every
device's training is one task (`tasks.map_chunks`): the driver loads the data and hands it to
the task through the object store (a worker on another machine need not see the driver's
disk), the task fits the network (`host.surrogate.train.fit`, the same recipe as `python -m
host.surrogate train`) and returns its weights and history as plain arrays, and the driver
writes `--out/NAME.onnx` (the chip's name, `chip_name`: virtual-dnpu-meanfield-seed5; else
the device's MODEL-HASH8) with its report and plots (`host.surrogate.artefacts.write_trained`).

A task asks for `threads` CPUs, and for a GPU when the training runs on cuda. A worker killed
mid-training has its device trained again from the start (the result is a function of the data
and the seed alone, so it is the same); finished trainings are kept in --out/chunks and
--resume skips them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from host.farm.boards import device_label
from host.farm.cluster import Cluster
from host.farm.errors import FarmError
from host.farm.tasks import ChunkStore, TaskOptions, map_chunks
from host.sample import store as ds


@dataclass(frozen=True)
class DeviceData:
    """One device's training set and (optional) test set; `name` is its surrogate's file stem."""

    label: str
    train: Path
    test: Path | None
    name: str = ""

    @property
    def stem(self) -> str:
        return self.name or self.label


@dataclass(frozen=True)
class TrainJob:
    """What every device's training shares."""

    cfg: Any                   # host.surrogate.train.TrainConfig
    threads: int = 1           # torch threads per task (and CPUs it asks for)
    limit: int | None = None   # use only the first N training samples of each device


def dataset_folders(root: Path) -> list[Path]:
    """`root` if it is a dataset folder (it has meta.json), else its sub-folders that are."""
    root = Path(root)
    if (root / "meta.json").is_file():
        return [root]
    if not root.is_dir():
        raise FarmError(f"{root}: no such dataset folder")
    found = sorted(p for p in root.iterdir() if (p / "meta.json").is_file())
    if not found:
        raise FarmError(f"{root}: neither a dataset (meta.json) nor a folder of datasets")
    return found


def _identity(folder: Path) -> dict[str, Any]:
    try:
        return ds.read_meta(folder).get("board", {})
    except ds.DatasetError as e:
        raise FarmError(str(e)) from None


def _label(folder: Path) -> str:
    return device_label(_identity(folder))


def chip_name(identity: dict[str, Any]) -> str | None:
    """A file stem naming the chip a board's identity describes (virtual-dnpu-meanfield-seed5,
    MODEL-SERIAL), or None when it names none."""
    from host.board.chips import chip_of

    chip = chip_of(identity.get("device"))
    if chip is None:
        return None
    for key, prefix in (("seed", "seed"), ("serial", ""), ("chip", "chip"), ("sha256", "")):
        if key in chip:
            return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{chip['model']}-{prefix}{str(chip[key])[:16]}")
    return None


def pair_datasets(train_roots: Sequence[Path], test_roots: Sequence[Path] = ()) -> list[DeviceData]:
    """The devices of the training folders, each with the test folder of the same device (if any).
    Two training sets of one device, or a test set whose device has no training set, are refused."""
    trains: dict[str, Path] = {}
    for root in train_roots:
        for f in dataset_folders(root):
            lab = _label(f)
            if lab in trains:
                raise FarmError(f"{trains[lab]} and {f} are both training sets of device {lab}: name one")
            trains[lab] = f
    tests: dict[str, Path] = {}
    for root in test_roots:
        for f in dataset_folders(root):
            lab = _label(f)
            if lab not in trains:
                raise FarmError(f"test set {f} is of device {lab}, which no training set measured "
                                f"(training sets: {', '.join(sorted(trains))})")
            if lab in tests:
                raise FarmError(f"{tests[lab]} and {f} are both test sets of device {lab}: name one")
            tests[lab] = f
    names = {lab: chip_name(_identity(f)) for lab, f in trains.items()}
    taken = [n for n in names.values() if n]
    return [DeviceData(lab, trains[lab], tests.get(lab),
                       names[lab] if names[lab] and taken.count(names[lab]) == 1 else "")
            for lab in sorted(trains)]


def train_device(job: TrainJob, chunk: tuple[str, np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Fit one device's surrogate (runs on a worker): its weights, biases and history as arrays."""
    import torch

    from host.surrogate.train import fit

    torch.set_num_threads(job.threads)
    _, volts, current, ranges = chunk
    res = fit(volts.astype(np.float64), current.astype(np.float64), ranges, job.cfg, progress=False)
    return res.to_arrays()


def job_record(job: TrainJob, devices: Sequence[DeviceData], sizes: dict[str, int]) -> dict[str, Any]:
    """What the job is, for --resume to check (config, datasets, samples per device)."""
    from host.surrogate.config import config_json

    return {"kind": "surrogates", "train_config": config_json(job.cfg), "threads": job.threads, "limit": job.limit,
            "devices": [{"label": d.label, "train": str(d.train.resolve()),
                         "test": str(d.test.resolve()) if d.test else None, "train_samples": sizes[d.label]}
                        for d in devices]}


def run_training(cluster: Cluster | None, job: TrainJob, devices: Sequence[DeviceData], out: Path, *,
                 resume: bool = False, plots: bool = True, gpus_per_task: float = 0.0, max_retries: int = 3,
                 on_device: Callable[[str, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train one surrogate per device into `out`/NAME.onnx (+ .json report, plots); returns the
    reports in device order. `on_device(label, report)` runs as each device's file is written."""
    from host.surrogate.artefacts import check_same_device, write_trained
    from host.surrogate.train import TrainResult

    if not devices:
        raise FarmError("no datasets to train on")
    loaded: dict[str, tuple[ds.Dataset, ds.Dataset | None]] = {}
    try:
        for d in devices:
            train = ds.load(d.train)
            test = ds.load(d.test) if d.test else None
            if test is not None:
                check_same_device(train, test)
            loaded[d.label] = (train, test)
    except ds.DatasetError as e:
        raise FarmError(str(e)) from None
    sizes = {lab: len(t.samples) if job.limit is None else min(job.limit, len(t.samples))
             for lab, (t, _) in loaded.items()}
    out = Path(out)
    store = ChunkStore(out / "chunks", job_record(job, devices, sizes), resume=resume)
    chunks = [(d.label, loaded[d.label][0].samples.volts[:sizes[d.label]],
               loaded[d.label][0].samples.current_na[:sizes[d.label]], loaded[d.label][0].ranges) for d in devices]
    reports: dict[str, dict[str, Any]] = {}

    def written(i: int, arrays: dict[str, np.ndarray]) -> None:
        d = devices[i]
        train, test = loaded[d.label]
        rep = write_trained(TrainResult.from_arrays(arrays), job.cfg, train, test, out / f"{d.stem}.onnx",
                            n=sizes[d.label], plots=plots)
        rep["device_label"] = d.label
        reports[d.label] = rep
        if on_device is not None:
            on_device(d.label, rep)

    map_chunks(train_device, chunks, cluster, shared=(job,), store=store, on_result=written,
               options=TaskOptions(num_cpus=job.threads, num_gpus=gpus_per_task, max_retries=max_retries))
    return [reports[d.label] for d in devices]
