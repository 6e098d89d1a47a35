"""The farm on a local Ray cluster (the pinned Ray): a small job end to end, resuming, and the
fault rules: a board that vanishes mid-job, a board actor and a task worker killed mid-job,
missing resources and busy boards.

One local cluster (2 CPUs) serves the whole module. Boards are simulated linear test devices
(deterministic, fast); boards a, b, e, f carry the same chip (chips=0) on boards of different
serials, c, d, g another chip (3). a-d stay open for the module; the fault tests start and kill
their own. Nothing here depends on wall-clock speed: faults are
injected from the driver's own callbacks, at a point of the job that the job cannot pass
before the fault lands."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from host.farm.boards import BoardSpec, start_boards, stop_boards  # noqa: E402
from host.farm.cluster import ClusterConfig, connect  # noqa: E402
from host.farm.errors import FarmError  # noqa: E402
from host.farm.sampling import FarmSamplingConfig, PlanRequest, read_journal, run_sampling  # noqa: E402
from host.farm.tasks import TaskOptions, map_chunks  # noqa: E402
from host.sample import store  # noqa: E402
from host.sample.measure import SamplingConfig  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import this test file

BOARDS = {                    # opened once for the module (the `boards` fixture)
    "a": "sim://?seed=1&device=linear&chips=0",
    "b": "sim://?seed=2&device=linear&chips=0",
    "c": "sim://?seed=3&device=linear",
    "d": "sim://?seed=4&device=linear&chips=3",
}
FRESH = {                     # started by the fault tests themselves (they kill them)
    "e": "sim://?seed=5&device=linear&chips=0",
    "f": "sim://?seed=6&device=linear&chips=0",
    "g": "sim://?seed=7&device=linear&chips=3",
    "h": "sim://?seed=8&device=linear&no_such_option=1",
}
SPEC = {k: BoardSpec(k, u) for k, u in {**BOARDS, **FRESH}.items()}
CFG = FarmSamplingConfig(sampling=SamplingConfig(chunk=500, n_refs=2, ref_repeats=2), progress=False)


@pytest.fixture(scope="module")
def cluster():
    c = connect(ClusterConfig("local", num_cpus=2, resources={s.resource: 1.0 for s in SPEC.values()}))
    try:
        yield c
    finally:
        c.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def boards(cluster):
    """The module's open boards a, b (chip 0), c, d (chip 3), shared by the jobs that kill nothing."""
    handles = start_boards(cluster, [SPEC[k] for k in BOARDS])
    yield {h.spec.name: h for h in handles}
    stop_boards(cluster, handles)


def _check_dataset(folder: Path, n: int, chunk: int = 500) -> None:
    """Every plan sample exactly once; every chunk journalled exactly once."""
    ds = store.load(folder)
    assert np.array_equal(np.sort(ds.samples.index), np.arange(n))
    chunks = [e["chunk"] for e in read_journal(folder) if e.get("event") == "chunk"]
    assert sorted(chunks) == list(range((n + chunk - 1) // chunk))


def _sim_children(pid: int) -> list[int]:
    """Processes whose parent is `pid` and which run the board simulator."""
    kids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (p / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"firmware_sim" in cmd:
            kids.append(int(p.name))
    return kids


def _pull_the_cable(pid: int) -> None:
    """The board behind actor process `pid` vanishes: its simulator is killed."""
    kids = _sim_children(pid)
    assert kids, "no simulator process found under the board's actor"
    for k in kids:
        os.kill(k, signal.SIGKILL)


def test_small_job_end_to_end_and_resume(cluster, boards, tmp_path: Path) -> None:
    out = tmp_path / "farm"
    rep = run_sampling(cluster, [boards["a"], boards["b"], boards["c"]], PlanRequest(n=3000, seed=5), out, CFG)
    assert rep.complete and rep.samples == 6000
    by_dev = {len(d["boards"]): d for d in rep.devices}
    assert set(by_dev) == {1, 2}                      # a+b share a device, c has its own
    for d in rep.devices:
        assert d["complete"] and Path(d["out"]).parent == out
        assert sum(b["samples"] for b in d["boards"]) == 3000
        _check_dataset(Path(d["out"]), 3000)
        meta = store.read_meta(Path(d["out"]))
        assert meta["complete"] and {b["name"] for b in meta["farm"]["boards"]} == {b["name"] for b in d["boards"]}
    with pytest.raises(FarmError, match="--resume"):
        run_sampling(cluster, [boards["a"], boards["b"], boards["c"]], PlanRequest(n=3000, seed=5), out, CFG)
    again = run_sampling(cluster, [boards["b"], boards["a"], boards["c"]], PlanRequest(n=3000, seed=5), out,
                         FarmSamplingConfig(sampling=CFG.sampling, resume=True, progress=False))
    assert again.complete and again.samples == 0


def test_board_vanishing_mid_job(cluster, boards, tmp_path: Path) -> None:
    """e and g lose their simulators after their first chunk: e's chunks move to f (same chip),
    g's device stops with what it measured kept; a later resume on d (g's chip) completes it."""
    out = tmp_path / "farm"
    pulled: set[str] = set()

    def on_chunk(device: str, k: int, board) -> None:
        if board.spec.name in ("e", "g") and board.spec.name not in pulled:
            pulled.add(board.spec.name)
            _pull_the_cable(board.pid)

    n = 6000
    rep = run_sampling(cluster, [SPEC["e"], SPEC["f"], SPEC["g"]], PlanRequest(n=n, seed=1), out, CFG,
                       on_chunk=on_chunk)
    assert pulled == {"e", "g"}
    assert not rep.complete
    ab = next(d for d in rep.devices if len(d["boards"]) == 2)
    c = next(d for d in rep.devices if len(d["boards"]) == 1)
    # e's device: finished by f, every sample once
    assert ab["complete"] and ab["stopped"] is None
    lost = {b["name"]: b["lost"] for b in ab["boards"]}
    assert lost["e"] and lost["f"] is None
    _check_dataset(Path(ab["out"]), n)
    moves = [e for e in read_journal(Path(ab["out"])) if e["event"] == "board_lost"]
    assert len(moves) == 1 and moves[0]["board"] == "e" and moves[0]["moved_to"] == ["f"]
    # g's device: stopped cleanly, never moved to another chip, what it measured is on disk
    assert not c["complete"] and "no other board of this device" in c["stopped"]
    kept = store.chunk_indices(Path(c["out"]))
    assert len(kept) == c["chunks_done"] >= 1 and c["samples_done"] == 500 * len(kept)
    assert c["boards"][0]["lost"]
    # resumed on b and d (the same chips, other boards): completes; nothing counted twice
    again = run_sampling(cluster, [boards["b"], boards["d"]], PlanRequest(n=n, seed=1), out,
                         FarmSamplingConfig(sampling=CFG.sampling, resume=True, progress=False))
    assert again.complete
    assert again.samples == n - 500 * len(kept)
    _check_dataset(Path(c["out"]), n)


def test_resume_refuses_another_chip_and_other_settings(cluster, boards, tmp_path: Path) -> None:
    out = tmp_path / "farm"
    run_sampling(cluster, [boards["c"]], PlanRequest(n=1000), out, CFG)
    resume = FarmSamplingConfig(sampling=CFG.sampling, resume=True, progress=False)
    with pytest.raises(FarmError, match="another device"):
        run_sampling(cluster, [boards["a"]], PlanRequest(n=1000), out, resume)
    with pytest.raises(FarmError, match="settings differ"):
        run_sampling(cluster, [boards["d"]], PlanRequest(n=1000, seed=6), out, resume)


def test_board_actor_killed_mid_job(cluster, tmp_path: Path) -> None:
    out = tmp_path / "farm"
    killed: list[str] = []

    def on_chunk(device: str, k: int, board) -> None:
        if board.spec.name == "f" and not killed:
            killed.append("f")
            ray.kill(board.actor, no_restart=True)

    n = 5000
    rep = run_sampling(cluster, [SPEC["e"], SPEC["f"]], PlanRequest(n=n, seed=2), out, CFG, on_chunk=on_chunk)
    assert killed == ["f"]
    assert rep.complete
    d = rep.devices[0]
    assert {b["name"]: bool(b["lost"]) for b in d["boards"]} == {"e": False, "f": True}
    assert sum(b["samples"] for b in d["boards"]) == n
    _check_dataset(out, n)


def test_missing_resource_and_busy_board(cluster, boards) -> None:
    t = time.monotonic()
    with pytest.raises(FarmError) as e:
        start_boards(cluster, [BoardSpec("nowhere", "sim://?seed=9")])
    assert "board:nowhere" in str(e.value) and "\n" not in str(e.value) and "ray start --resources" in str(e.value)
    with pytest.raises(FarmError, match="in use"):          # a is open (the module's boards)
        start_boards(cluster, [SPEC["a"]])
    with pytest.raises(FarmError, match="named twice"):
        run_sampling(cluster, [boards["a"], SPEC["a"]], PlanRequest(n=10), Path("/nonexistent-farm-out"), CFG)
    with pytest.raises(FarmError, match="GPU"):
        map_chunks(_square, [1], cluster, options=TaskOptions(num_cpus=1, num_gpus=1))
    assert time.monotonic() - t < 60          # a bound against a hang, not a speed test


def test_bad_board_url_is_one_line(cluster) -> None:
    with pytest.raises(FarmError) as e:
        start_boards(cluster, [SPEC["h"]])
    assert "did not open" in str(e.value) and "\n" not in str(e.value)


# ---- tasks ----------------------------------------------------------------------------------
def _square(x: int) -> dict:
    return {"y": np.array(x * x)}


def _chunk_killed_once(marker: str, x: int) -> dict:
    """Chunk 1's first attempt says where it runs and waits to be killed; its retry just works."""
    if x == 1 and not os.path.exists(marker):
        tmp = marker + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, marker)
        time.sleep(120)
        raise AssertionError("not killed")
    return {"y": np.array(x * x), "pid": np.array(os.getpid())}


def test_worker_killed_mid_chunk_runs_again_and_counts_once(cluster, tmp_path: Path) -> None:
    marker = str(tmp_path / "pid")
    calls: list[int] = []
    killed: list[int] = []

    def on_result(i: int, r: dict) -> None:
        calls.append(i)
        if not killed:                     # the first result: chunk 1 is running (or about to)
            deadline = time.monotonic() + 60
            while not os.path.exists(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            pid = int(Path(marker).read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    chunks = [0, 1, 2, 3]
    res = map_chunks(_chunk_killed_once, chunks, cluster, shared=(marker,),
                     options=TaskOptions(num_cpus=1, max_retries=2), on_result=on_result)
    assert killed
    assert [int(r["y"]) for r in res] == [0, 1, 4, 9]
    assert sorted(calls) == chunks                          # each chunk counted once
    assert int(res[1]["pid"]) != killed[0]                  # chunk 1 ran again on another worker


def test_task_error_is_not_retried_and_names_the_chunk(cluster) -> None:
    with pytest.raises(FarmError, match="chunk 2 failed: ValueError"):
        map_chunks(_bad_at_two, [0, 1, 2], cluster, options=TaskOptions(num_cpus=1, max_retries=3))


def _bad_at_two(x: int) -> dict:
    if x == 2:
        raise ValueError("bad input")
    return {"y": np.array(x)}


# ---- the ring search ------------------------------------------------------------------------
def test_ring_search_on_the_cluster_equals_one_process(cluster, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    surrogate = Path(__file__).resolve().parents[3] / "models" / "surrogate.onnx"
    if not surrogate.is_file():
        pytest.skip("models/surrogate.onnx is not there")
    from host.farm.ring import best_network, job_record, ring_job, search
    from host.farm.tasks import ChunkStore

    job = ring_job(surrogate, {"trials": 8, "chunk": 4, "epochs": 8, "noise_draws": 2, "prune_at": (4,)},
                   engine="torch", threads=1)
    here = search(job, ["single"], None)["single"]
    st = ChunkStore(tmp_path / "chunks", job_record(job, ["single"]), resume=False)
    there = search(job, ["single"], cluster, store=st, options=TaskOptions(num_cpus=1))["single"]
    assert here.best_index == there.best_index and here.best() == there.best()
    for k in here.scores:
        assert np.array_equal(here.scores[k], there.scores[k]), k
    # resumed from the chunks on disk: nothing runs again, the same answer
    st2 = ChunkStore(tmp_path / "chunks", job_record(job, ["single"]), resume=True)
    again = search(job, ["single"], None, store=st2)["single"]
    assert again.best() == here.best()
    # the best network rebuilt from what was stored scores as it did in its chunk
    from host.experiments.ring import score
    from host.experiments.surrogates import load_surrogate
    import torch
    net = best_network(here, job, load_surrogate(job.surrogate, engine="torch"))
    d = {k: torch.as_tensor(job.data[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    s = score(net, d["x_train"], d["y_train"], d["x_test"], d["y_test"], 2)
    assert float(s["clean"][0]) == pytest.approx(here.best()["clean_test_accuracy"])


# ---- the capacity search ----------------------------------------------------------------------
def test_capacity_search_of_two_chips_on_the_cluster_equals_one_process(cluster, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    from host.farm.capacity import capacity_job, job_record, search_all
    from host.farm.tasks import ChunkStore

    paths = [str(root / "models" / "surrogate.onnx"), str(root / "models/chips/virtual-dnpu-meanfield-seed5.onnx")]
    job = capacity_job(paths, [(1, 2)], {"n_min": 4, "n_max": 4, "attempts": 2, "epochs": 100},
                       engine="torch", threads=1, chunk=2)
    here = search_all(job, None)
    st = ChunkStore(tmp_path / "chunks", job_record(job), resume=False)
    there = search_all(job, cluster, store=st, options=TaskOptions(num_cpus=1))
    for h, t in zip(here, there):
        assert h.rows()[0] == {**t.rows()[0], "wall_s": h.rows()[0]["wall_s"]}
        for a, b in zip(h.runs, t.runs):
            assert np.array_equal(a.found, b.found) and np.array_equal(a.margin, b.margin)
            assert np.array_equal(a.solution, b.solution)


# ---- one network on several boards ------------------------------------------------------------
VALIDATION_BOARDS = {         # noise-free linear chips, no DAC errors: every board of a chip agrees
    "v1": "sim://?seed=21&device=linear&chips=0&dac_gain_error=0&dac_offset_error_mv=0",
    "v2": "sim://?seed=22&device=linear&chips=0&dac_gain_error=0&dac_offset_error_mv=0",
    "v3": "sim://?seed=23&device=linear&chips=3&dac_gain_error=0&dac_offset_error_mv=0",
}
SPEC.update({k: BoardSpec(k, u) for k, u in VALIDATION_BOARDS.items()})


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """(model path, x, labels): 6 inputs -> a linear layer -> 2 DNPU nodes (the shipped surrogate) -> 2 classes."""
    from core import Network
    from core.io import read_network, write_network
    from core.network import DnpuLayer, DnpuNode, Linear

    surrogate = Path(__file__).resolve().parents[3] / "models" / "surrogate.onnx"
    rng = np.random.default_rng(7)
    nodes = [DnpuNode((1, 2), control_voltages=tuple(c), input_scale=0.25, input_offset=-0.3, input_low=-1.2,
                      input_high=0.6, output_scale=0.05) for c in ([-0.3, 0.1, -0.5, -0.2, 0.0], [0.2, -0.6, 0.3, 0.1, -0.4])]
    layers = [Linear((rng.normal(size=(4, 6)) / 2).astype(np.float32)), DnpuLayer(nodes)]
    path = write_network(tmp_path_factory.mktemp("net") / "net.onnx", 6, layers, surrogate, {"task": "test"})
    x = rng.normal(size=(100, 6)).astype(np.float32)
    nf = read_network(path)
    labels = Network(6, nf.layers, nf.surrogates).evaluate(x).argmax(1).astype(np.int64)
    return Path(path), x, labels


def _expected_logits(model: Path, x: np.ndarray, url: str) -> np.ndarray:
    from core.io import read_network
    from host.deploy import evaluate_board
    run = evaluate_board(read_network(model), x, url, device_map=[0, 0])
    assert run.error is None
    return run.logits


def test_validation_splits_slices_over_boards_of_a_chip_and_survives_a_lost_board(cluster, network, tmp_path: Path) -> None:
    """v1 and v2 (chip 0) share the test set, v3 (chip 3) scores it alone; v1 loses its simulator
    after its first slice and v2 finishes: every slice once, the outputs those of one board."""
    from host.farm.validation import ValidationConfig, run_validation

    model, x, labels = network
    pulled: list[str] = []

    def on_slice(group: str, k: int, board) -> None:
        if board.spec.name == "v1" and not pulled:
            pulled.append("v1")
            _pull_the_cable(board.pid)

    cfg = ValidationConfig(chunk=20, per_board=1, device_map=(0, 0), progress=False)
    rep = run_validation(cluster, [SPEC["v1"], SPEC["v2"], SPEC["v3"]], model, x, labels, tmp_path, cfg,
                         on_slice=on_slice)
    assert pulled == ["v1"] and rep["complete"]
    g0, g3 = sorted(rep["groups"], key=lambda g: g["chips"][0]["seed"])
    assert [b["name"] for b in g0["boards"]] == ["v1", "v2"] and [b["name"] for b in g3["boards"]] == ["v3"]
    assert g0["boards"][0]["lost"] and g0["boards"][1]["lost"] is None
    assert sum(b["samples"] for b in g0["boards"]) == 100 and g3["boards"][0]["samples"] == 100
    from host.deploy.placement import MAPPED
    assert [p["how"] for p in g0["placements"]["v2"]] == [MAPPED, MAPPED]      # the user's map, reported
    for g, url in ((g0, VALIDATION_BOARDS["v1"]), (g3, VALIDATION_BOARDS["v3"])):
        got = np.load(tmp_path / g["group"] / "logits.npy")
        np.testing.assert_array_equal(got, _expected_logits(model, x, url))
    assert not np.allclose(np.load(tmp_path / g0["group"] / "logits.npy"), np.load(tmp_path / g3["group"] / "logits.npy"))
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["groups"][0]["accuracy"] == rep["groups"][0]["accuracy"]


def test_validation_group_alone_stops_and_resumes(cluster, network, tmp_path: Path) -> None:
    from host.farm.validation import ValidationConfig, run_validation

    model, x, labels = network
    pulled: list[str] = []

    def on_slice(group: str, k: int, board) -> None:
        if not pulled:
            pulled.append(board.spec.name)
            _pull_the_cable(board.pid)

    cfg = ValidationConfig(chunk=25, per_board=1, device_map=(0, 0), progress=False)
    rep = run_validation(cluster, [SPEC["v3"]], model, x, labels, tmp_path, cfg, on_slice=on_slice)
    g = rep["groups"][0]
    assert not rep["complete"] and "no other board with these chips" in g["stopped"] and g["slices_done"] == 1
    with pytest.raises(FarmError, match="--resume"):
        run_validation(cluster, [SPEC["v3"]], model, x, labels, tmp_path, cfg)
    again = run_validation(cluster, [SPEC["v3"]], model, x, labels, tmp_path,
                           ValidationConfig(chunk=25, per_board=1, device_map=(0, 0), resume=True, progress=False))
    g = again["groups"][0]
    assert again["complete"] and g["boards"][0]["samples"] == 75          # the stored slice is not measured again
    np.testing.assert_array_equal(np.load(tmp_path / g["group"] / "logits.npy"),
                                  _expected_logits(model, x, VALIDATION_BOARDS["v3"]))
    with pytest.raises(FarmError, match="cannot run"):                    # the surrogate's own chip, no map
        run_validation(cluster, [SPEC["v3"]], model, x, labels, tmp_path / "b", ValidationConfig(progress=False))
