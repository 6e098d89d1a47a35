"""Training a surrogate on a small data set, exporting it, and loading it back everywhere."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from host.sample import SamplingConfig, run
from host.sampling_plans import Plan, PlanConfig
from host.surrogate import onnx_file

torch = pytest.importorskip("torch")


def _make_data(tmp, board_cls, n, seed):
    run(board_cls(noise=1.4), Plan(PlanConfig(n=n, seed=seed)), tmp, SamplingConfig(chunk=4096), progress=False)
    return tmp


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fake_board):
    d = tmp_path_factory.mktemp("surr")
    _make_data(d / "train", fake_board, 16000, 0)
    _make_data(d / "test", fake_board, 4000, 1)
    from host.surrogate.__main__ import main
    rc = main(["train", str(d / "train"), "--test", str(d / "test"), "--out", str(d / "s.onnx"),
               "--epochs", "40", "--batch", "256", "--lr", "2e-3", "--hidden", "32", "--layers", "3",
               "--no-progress", "--json"])
    assert rc == 0
    return d


def test_training_reaches_a_stated_accuracy_and_writes_its_report(model_dir):
    rep = json.loads((model_dir / "s.json").read_text())
    # the fake device's output spans ~300 nA with 1.4 nA noise: a small net fits it to < 1.5 % of range
    assert rep["test_rmse_pct_range"] < 1.5
    assert 1.0 < rep["noise_floor_na"] < 2.0
    assert rep["data"]["train_samples"] == 16000 and rep["data"]["test_samples"] == 4000
    assert (model_dir / "s_fit.png").stat().st_size > 1000
    assert (model_dir / "s_learning.png").stat().st_size > 1000


def test_export_is_a_plain_gemm_relu_chain_with_metadata(model_dir):
    m = onnx.load(str(model_dir / "s.onnx"))
    assert {n.op_type for n in m.graph.node} == {"Gemm", "Relu"}
    sf = onnx_file.read(model_dir / "s.onnx")
    assert sf.metadata["format"] == onnx_file.FORMAT
    assert sf.metadata["source"]["board"]["serial"] == "FAKE-1"
    assert sf.ranges_v.shape == (7, 2)
    assert sf.metadata["test_rmse_na"] > 0


def test_torch_onnxruntime_and_numpy_agree(model_dir):
    import onnxruntime as ort
    from host.surrogate.train import load_torch, predict

    sf = onnx_file.read(model_dir / "s.onnx")
    r = sf.ranges_v
    v = (r[:, 0] + np.random.default_rng(5).uniform(size=(2000, 7)) * (r[:, 1] - r[:, 0])).astype(np.float32)
    ref = sf.evaluate_numpy(v)
    span = np.ptp(ref)
    t = predict(load_torch(model_dir / "s.onnx"), v)
    o = ort.InferenceSession(str(model_dir / "s.onnx"), providers=["CPUExecutionProvider"]).run(None, {"volts": v})[0][:, 0]
    assert np.max(np.abs(t - ref)) / span < 1e-5
    assert np.max(np.abs(o - ref)) / span < 1e-5
    frozen = load_torch(model_dir / "s.onnx")
    assert not any(p.requires_grad for p in frozen.parameters())


def test_not_a_surrogate_is_refused(tmp_path, model_dir):
    with pytest.raises(onnx_file.SurrogateFileError, match="no such file"):
        onnx_file.read(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf \x00\xff" * 10)
    with pytest.raises(onnx_file.SurrogateFileError, match="not a readable ONNX model|not a DNPU surrogate"):
        onnx_file.read(junk)
    m = onnx.load(str(model_dir / "s.onnx"))
    del m.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(m, str(plain))
    with pytest.raises(onnx_file.SurrogateFileError, match="not a DNPU surrogate"):
        onnx_file.read(plain)
    m = onnx.load(str(model_dir / "s.onnx"))
    m.graph.node[1].op_type = "Sigmoid"
    bad = tmp_path / "sigmoid.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(onnx_file.SurrogateFileError, match="Sigmoid"):
        onnx_file.read(bad)


def test_cli_reports_bad_data_clearly(tmp_path, capsys):
    from host.surrogate.__main__ import main
    assert main(["train", str(tmp_path / "none"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "no such directory" in capsys.readouterr().err
