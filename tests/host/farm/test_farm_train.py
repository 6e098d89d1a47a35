"""One surrogate per device (`python -m host.farm train`): datasets paired by device, each chip's
surrogate fitted to its own chip, the same weights on a local Ray cluster as in one process,
and a resumed job that trains nothing again."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from host.board import Board  # noqa: E402
from host.farm.__main__ import main  # noqa: E402
from host.farm.errors import FarmError  # noqa: E402
from host.farm.training import TrainJob, pair_datasets, run_training  # noqa: E402
from host.sample import store  # noqa: E402
from host.sample.measure import SamplingConfig, run  # noqa: E402
from host.sample.plans import Plan, PlanConfig  # noqa: E402
from host.surrogate import onnx_file  # noqa: E402
from host.surrogate.config import TrainConfig  # noqa: E402

CHIPS = (0, 3)                 # two linear test chips: currents differ chip to chip
TINY = ["--hidden", "16", "--layers", "2", "--epochs", "25", "--no-progress", "--no-plots"]


def _measure(url: str, n: int, seed: int, out: Path) -> None:
    with Board.open(url) as b:
        plan = Plan(PlanConfig(n=n, seed=seed, ranges_v=tuple(map(tuple, np.asarray(b.limits_v).tolist()))))
        run(b, plan, out, SamplingConfig(chunk=1000, n_refs=2, ref_repeats=2), progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train/chip-C and test/chip-C for each chip: what a farm sampling job of two chips leaves."""
    root = tmp_path_factory.mktemp("farm-train-data")
    for c in CHIPS:
        url = f"sim://?seed=1&device=linear&chips={c}"
        _measure(url, 3000, 0, root / "train" / f"chip-{c}")
        _measure(url, 600, 1, root / "test" / f"chip-{c}")
    return root


def _chip(folder: Path) -> int:
    return int(store.read_meta(folder)["board"]["device"]["seed"])


def test_each_device_gets_a_surrogate_of_its_own_chip(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "models"
    rc = main(["train", str(data / "train"), "--test", str(data / "test"), "--out", str(out), "--json", *TINY])
    assert rc == 0
    reports = json.loads(capsys.readouterr().out)["surrogates"]
    assert len(reports) == len(CHIPS)
    seen = set()
    for rep in reports:
        f = Path(rep["model"])
        assert f.is_file() and f.with_suffix(".json").is_file() and f.parent == out
        train, test = Path(rep["data"]["train"]), Path(rep["data"]["test"])
        assert _chip(train) == _chip(test)                       # paired by device
        sf = onnx_file.read(f)
        assert sf.metadata["source"]["board"]["device"]["seed"] == _chip(train)
        seen.add(_chip(train))
        assert f.name == f"linear-test-device-seed{_chip(train)}.onnx"         # named by its chip
        # fitted to its own chip: far better on its test set than the other chip's surrogate
        t = store.load(test)
        own = np.sqrt(np.mean((sf.evaluate_numpy(t.samples.volts) - t.samples.current_na) ** 2))
        assert own == pytest.approx(rep["test_rmse_na"], rel=1e-4)
        assert own < 0.3 * float(np.std(t.samples.current_na))
        other = next(Path(r["model"]) for r in reports if r is not rep)
        wrong = np.sqrt(np.mean((onnx_file.read(other).evaluate_numpy(t.samples.volts) - t.samples.current_na) ** 2))
        assert wrong > 2 * own
    assert seen == set(CHIPS)


def test_pairing_refuses_what_would_mix_chips(data: Path, tmp_path: Path) -> None:
    only0 = [data / "train" / "chip-0"]
    with pytest.raises(FarmError, match="which no training set measured"):
        pair_datasets(only0, [data / "test"])
    with pytest.raises(FarmError, match="both training sets"):
        pair_datasets([data / "train" / "chip-0", data / "test" / "chip-0"])
    with pytest.raises(FarmError, match="neither a dataset"):
        pair_datasets([tmp_path])
    assert [d.test for d in pair_datasets(only0)] == [None]


def test_resume_trains_nothing_again_and_refuses_other_settings(data: Path, tmp_path: Path, monkeypatch) -> None:
    devices = pair_datasets([data / "train"], [data / "test"])
    job = TrainJob(cfg=TrainConfig(hidden=8, layers=1, max_epochs=3), threads=1)
    first = run_training(None, job, devices, tmp_path, plots=False)
    with pytest.raises(FarmError, match="--resume"):
        run_training(None, job, devices, tmp_path, plots=False)
    import host.farm.training as tr

    def no_training(*a, **k):
        raise AssertionError("a finished device was trained again")
    monkeypatch.setattr(tr, "train_device", no_training)
    again = run_training(None, job, devices, tmp_path, resume=True, plots=False)
    assert [r["test_rmse_na"] for r in again] == [r["test_rmse_na"] for r in first]
    other = TrainJob(cfg=TrainConfig(hidden=8, layers=1, max_epochs=4), threads=1)
    with pytest.raises(FarmError, match="settings differ"):
        run_training(None, other, devices, tmp_path, resume=True, plots=False)


def test_on_a_local_cluster_the_same_weights_as_in_one_process(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from host.farm.cluster import ClusterConfig, connect

    devices = pair_datasets([data / "train"], [data / "test"])
    job = TrainJob(cfg=TrainConfig(hidden=8, layers=2, max_epochs=4, device="cpu"), threads=1)
    here = run_training(None, job, devices, tmp_path / "here", plots=False)
    with connect(ClusterConfig("local", num_cpus=2)) as cluster:
        there = run_training(cluster, job, devices, tmp_path / "there", plots=False)
    for a, b in zip(here, there):
        wa, wb = onnx_file.read(a["model"]).weights, onnx_file.read(b["model"]).weights
        assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
