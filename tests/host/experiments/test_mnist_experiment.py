"""`python -m host.experiments mnist`: the plumbing on a tiny run, and learning on a small one."""
from __future__ import annotations

import json

import numpy as np

from core.io import load_network
from host.experiments.__main__ import main


def test_tiny_run_writes_everything_and_resumes(tmp_path, capsys) -> None:
    """Plumbing only (10 optimiser steps learn nothing reliable): files, export, agreement, resume."""
    out, exp = tmp_path / "run", tmp_path / "models"
    code = main(["mnist", "--models", "rf3,nn3,linear", "--epochs", "2", "--train-subset", "600",
                 "--out", str(out), "--export", str(exp), "--threads", "1", "--no-progress"])
    assert code == 0
    rep = json.loads((out / "rf3.json").read_text())
    assert len(rep["history"]) == 2 and rep["train_images"] == 600
    # the exported file computes what the torch model computes, in the core and in onnxruntime
    assert rep["core_vs_torch_argmax_agreement"] > 0.999
    assert rep["core_vs_torch_max_abs_logit_diff"] < 1e-2 and rep["ort_vs_torch_max_abs_logit_diff"] < 1e-2
    assert abs(rep["test_acc"] - rep["test_acc_onnxruntime"]) <= 0.002
    for f in ("rf3.onnx", "rf3_confusion.png", "rf3.ckpt.npz", "nn3.json", "linear.json", "summary.json"):
        assert (out / f).is_file(), f
    assert (exp / "mnist_rf3.onnx").is_file() and (exp / "mnist_rf3.json").is_file()
    assert not (exp / "mnist.onnx").exists()          # rf7 was not trained
    with np.load(out / "rf3.ckpt.npz", allow_pickle=False) as z:
        assert "model.linear.weight" in z.files and "opt.param_groups" in z.files

    net = load_network(exp / "mnist_rf3.onnx")
    assert net.metadata["dataset"] == "mnist:test" and net.n_outputs == 10
    node = net.layers[1].nodes[0]
    assert tuple(node.data_electrodes) == (0, 3, 4) and len(node.control_voltages) == 4
    assert net.layers[0].bias is None                  # 784 -> 30 without bias

    # resume continues from the checkpoint
    code = main(["mnist", "--models", "rf3", "--epochs", "3", "--train-subset", "600", "--out", str(out),
                 "--threads", "1", "--no-progress", "--resume"])
    assert code == 0
    assert len(json.loads((out / "rf3.json").read_text())["history"]) == 3

    # a checkpoint of the older layout (controls at the top level of the model) is refused by name
    with np.load(out / "rf3.ckpt.npz", allow_pickle=False) as z:
        old = {k.replace("model.dnpu.", "model."): z[k] for k in z.files}
    np.savez(out / "rf3.ckpt.npz", **old)
    capsys.readouterr()
    code = main(["mnist", "--models", "rf3", "--epochs", "4", "--train-subset", "600", "--out", str(out),
                 "--threads", "1", "--no-progress", "--resume"])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "dnpu." in err
    assert "without --resume" in err


def test_ten_dnpus_learn_mnist_far_from_chance(tmp_path) -> None:
    """6 epochs of 6000 images: about 80 % on the test set on every seed and CPU tried (chance: 10 %)."""
    out = tmp_path / "run"
    code = main(["mnist", "--models", "rf3", "--epochs", "6", "--train-subset", "6000", "--out", str(out),
                 "--threads", "2", "--no-progress"])
    assert code == 0
    rep = json.loads((out / "rf3.json").read_text())
    assert rep["test_acc"] > 0.6, rep["test_acc"]
    assert rep["history"][-1]["train_loss"] < 0.8 * rep["history"][0]["train_loss"]


def test_bad_arguments(tmp_path, capsys) -> None:
    assert main(["mnist", "--models", "rf9", "--out", str(tmp_path)]) == 2
    assert "unknown ['rf9']" in capsys.readouterr().err
    assert main(["mnist", "--models", "rf3", "--surrogate", str(tmp_path / "none.onnx"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
