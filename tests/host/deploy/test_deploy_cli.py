"""python -m host.deploy on each backend with a small model, and its handling of bad input."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from deploy_testlib import SURROGATE, small_layers

from core.io import read_network, write_network
from host.deploy.__main__ import main
from host.deploy import DeployError, evaluate_board

BOARD = "sim://?seed=0"
KEYS = ("accuracy", "latency_p50_us", "latency_p99_us", "throughput_sps", "backend")


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(list(argv) + ["--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


@pytest.mark.parametrize("backend", ["core", "onnxruntime"])
def test_simulated_backends(capsys, small_model, backend) -> None:
    model, data = small_model
    code, rep = run_json(capsys, "--model", str(model), "--backend", backend, "--data", str(data),
                         "--batch", "16", "--latency-samples", "20")
    assert code == 0
    assert all(k in rep for k in KEYS) and rep["backend"] == backend
    assert rep["accuracy"] == pytest.approx(0.9)          # 6 of 60 labels were flipped
    assert np.asarray(rep["confusion_matrix"]).sum() == 60
    assert rep["latency_p99_us"] >= rep["latency_p50_us"] > 0 and rep["throughput_sps"] > 0


def test_text_output(capsys, small_model) -> None:
    model, data = small_model
    assert main(["--model", str(model), "--data", str(data), "--latency-samples", "5"]) == 0
    out = capsys.readouterr().out
    assert "accuracy        90.00 %" in out and "confusion matrix" in out and "p99" in out


@pytest.mark.slow
def test_board_backend_matches_core(capsys, small_model) -> None:
    model, data = small_model
    code, rep = run_json(capsys, "--model", str(model), "--backend", "board", "--board", BOARD,
                         "--data", str(data), "--limit", "40", "--ramp", "10", "--latency-samples", "1")
    assert code == 0, rep
    assert all(k in rep for k in KEYS) and rep["backend"] == "board"
    assert rep["nodes_done"] == rep["nodes_total"] == 3
    assert abs(rep["accuracy"] - rep["simulated"]["accuracy"]) <= 0.1
    for e in rep["node_errors"]:       # the surrogate's test RMSE is ~1.7 nA
        assert 0 < e["rmse_na"] < 10 and e["max_abs_error_na"] >= e["rmse_na"]


@pytest.mark.slow
def test_board_disconnect_keeps_partial_results(small_model) -> None:
    model, data = small_model
    nf = read_network(model)
    x = np.load(data)["x"][:30]

    def pull_plug(board, layer: int, node: int) -> None:
        if node == 2:
            os.kill(board.link.port.simulator.proc.pid, signal.SIGKILL)

    run = evaluate_board(nf, x, BOARD, on_node=pull_plug, board_options={"ramp_v_per_s": 10.0, "timeout_s": 0.1,
                                                                          "retries": 2})
    assert run.error is not None and "after 2 of 3 nodes" in run.error and "0 V" in run.error
    assert run.nodes_done == 2 and len(run.node_errors) == 2 and run.logits is None


def test_voltages_outside_board_limits_refused_before_sending(tmp_path, rng, capsys) -> None:
    # control electrodes of a (0, 3, 4) node are e1, e2, e5, e6: 0.9 V on e2 is above its 0.6 V limit
    layers = small_layers(rng, ctrl_override={1: [0.0, 0.9, 0.0, 0.0]})
    model = write_network(tmp_path / "hot.onnx", 12, layers, SURROGATE, {"dataset": "none"})
    x = rng.normal(size=(10, 12)).astype(np.float32)
    sent = []
    with pytest.raises(DeployError, match=r"control voltages: e2 sample 0: 0\.899999\d* V is 0\.3 V above its limits.*nothing was sent"):
        evaluate_board(read_network(model), x, BOARD, on_node=lambda *a: sent.append(a))
    assert sent == []


def _npz(tmp_path: Path, name: str, **arrays) -> str:
    p = tmp_path / name
    np.savez(p, **arrays)
    return str(p)


def test_bad_inputs(tmp_path, capsys, small_model) -> None:
    model, data = small_model
    x = np.load(data)["x"]
    labels = np.load(data)["labels"]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not onnx")
    cases = {
        "no such file": ["--model", str(tmp_path / "missing.onnx"), "--data", str(data)],
        "not a readable ONNX": ["--model", str(junk), "--data", str(data)],
        "not a DNPU network": ["--model", str(SURROGATE), "--data", str(data)],
        "shape \\[n, 12\\]": ["--model", str(model), "--data", _npz(tmp_path, "w.npz", x=x[:, :5], labels=labels)],
        "floating point": ["--model", str(model), "--data", _npz(tmp_path, "i.npz", x=(x * 10).astype(np.int32), labels=labels)],
        "labels must lie": ["--model", str(model), "--data", _npz(tmp_path, "l.npz", x=x, labels=labels + 5)],
        "labels must have shape": ["--model", str(model), "--data", _npz(tmp_path, "n.npz", x=x, labels=labels[:3])],
        "expected arrays": ["--model", str(model), "--data", _npz(tmp_path, "k.npz", images2=x)],
        "NaN": ["--model", str(model), "--data", _npz(tmp_path, "nan.npz", x=np.where(x > 2, np.nan, x), labels=labels)],
        "--batch must be": ["--model", str(model), "--data", str(data), "--batch", "0"],
        "names no data set": ["--model", str(write_network(tmp_path / "nometa.onnx", 12, small_layers(np.random.default_rng(1)), SURROGATE))],
    }
    for msg, argv in cases.items():
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (msg, err)
        assert len(__import__("re").findall(msg, err)) >= 1, (msg, err)
    # a pickled object array is refused, never unpickled
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([object()], dtype=object), labels=labels)
    assert main(["--model", str(model), "--data", str(obj)]) == 2
    assert "not a readable .npz" in capsys.readouterr().err


@pytest.mark.slow
def test_two_layer_binary_network_on_every_backend(tmp_path, rng, capsys) -> None:
    """A ring-like 2-2-1 network with one output (a logit): class 1 where it is > 0."""
    from deploy_testlib import two_layer

    from core import Network, load_surrogate

    layers = two_layer(rng)
    x = rng.normal(size=(30, 12)).astype(np.float32)
    y = Network(12, layers, load_surrogate(SURROGATE)).evaluate(x)[:, 0]
    labels = (y > np.median(y)).astype(np.int64)       # the network's own decisions, shifted threshold
    data = _npz(tmp_path, "ring.npz", x=x, labels=labels)
    model = write_network(tmp_path / "ring.onnx", 12, layers, SURROGATE, {"task": "ring", "dataset": data})
    accs = {}
    for backend in ("core", "onnxruntime", "board"):
        code, rep = run_json(capsys, "--model", str(model), "--backend", backend, "--ramp", "10",
                             "--latency-samples", "1")
        assert code == 0, rep
        assert np.asarray(rep["confusion_matrix"]).shape == (2, 2)
        accs[backend] = rep["accuracy"]
    assert accs["core"] == accs["onnxruntime"] == pytest.approx(float(((y > 0) == labels).mean()))
    assert abs(accs["board"] - accs["core"]) <= 0.2


def test_inference_path_never_imports_torch(small_model) -> None:
    """make deploy installs no torch: every backend of the deploy CLI must run without it."""
    import subprocess
    import sys

    model, data = small_model
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from host.deploy.__main__ import main\n"
        f"for b in ('core', 'onnxruntime', 'board'):\n"
        f"    rc = main(['--model', {str(model)!r}, '--data', {str(data)!r}, '--backend', b, '--json', '--no-progress',"
        " '--latency-samples', '2', '--ramp', '50'])\n"
        "    assert rc == 0, (b, rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    for b in ("core", "onnxruntime", "board"):
        assert f'"backend": "{b}"' in r.stdout, b
