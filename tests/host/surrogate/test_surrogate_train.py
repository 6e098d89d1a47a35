"""Training a surrogate on a small data set, exporting it, and loading it back everywhere."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import core
from core.electrodes import N_ELECTRODES
from host.sample.measure import SamplingConfig, run
from host.sample.plans import Plan, PlanConfig
from host.surrogate import onnx_file
from host.surrogate.__main__ import main
from host.surrogate.torch_model import load_torch, predict


def _make_data(tmp, board_cls, n, seed, ranges):
    run(board_cls(noise=1.4), Plan(PlanConfig(n=n, seed=seed, ranges_v=ranges)), tmp, SamplingConfig(chunk=4096),
        progress=False)
    return tmp


def _volts_in(ranges: np.ndarray, n: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).uniform(size=(n, N_ELECTRODES))
    return (ranges[:, 0] + u * (ranges[:, 1] - ranges[:, 0])).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fake_board, test_ranges):
    d = tmp_path_factory.mktemp("surr")
    _make_data(d / "train", fake_board, 16000, 0, test_ranges)
    _make_data(d / "test", fake_board, 4000, 1, test_ranges)
    rc = main(["train", str(d / "train"), "--test", str(d / "test"), "--out", str(d / "s.onnx"),
               "--epochs", "40", "--batch", "256", "--lr", "2e-3", "--hidden", "32", "--layers", "3",
               "--no-progress", "--json"])
    assert rc == 0
    return d


def test_training_reaches_a_stated_accuracy_and_writes_its_report(model_dir):
    rep = json.loads((model_dir / "s.json").read_text())
    # the fake device's output spans ~200 nA with 1.4 nA noise (0.7 % of it): a small net fits it to < 1.5 %
    assert rep["test_rmse_pct_range"] < 1.5
    assert 1.0 < rep["noise_floor_na"] < 2.0
    assert rep["data"]["train_samples"] == 16000 and rep["data"]["test_samples"] == 4000
    assert rep["architecture"] == {"hidden": 32, "layers": 3, "activation": "relu"}
    assert (model_dir / "s_fit.png").stat().st_size > 1000
    assert (model_dir / "s_learning.png").stat().st_size > 1000


def test_export_is_a_plain_gemm_relu_chain_with_metadata(model_dir, test_ranges):
    m = onnx.load(str(model_dir / "s.onnx"))
    assert [n.op_type for n in m.graph.node] == ["Gemm", "Relu"] * 3 + ["Gemm"]
    sf = onnx_file.read(model_dir / "s.onnx")
    rep = json.loads((model_dir / "s.json").read_text())
    assert sf.metadata["format"] == onnx_file.FORMAT
    assert sf.metadata["source"]["board"]["serial"] == "FAKE-1"
    np.testing.assert_array_equal(sf.ranges_v, np.asarray(test_ranges))  # the ranges it was sampled in
    assert sf.amplification == 1.0
    assert sf.metadata["test_rmse_na"] == pytest.approx(rep["test_rmse_na"])
    assert sf.metadata["output_range_na"] == rep["output_range_na"]


def test_torch_onnxruntime_and_numpy_agree(model_dir):
    sf = onnx_file.read(model_dir / "s.onnx")
    v = _volts_in(sf.ranges_v, 2000, seed=5)
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
    assert main(["train", str(tmp_path / "none"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "no such directory" in capsys.readouterr().err


def _metadata_to_write(sf: onnx_file.SurrogateFile, **changes) -> dict:
    """A read file's metadata as `onnx_file.write` takes it (write adds the format itself)."""
    return {k: v for k, v in {**sf.metadata, **changes}.items() if k != "format"}


def test_amplification_scales_every_reader_alike(tmp_path, model_dir):
    """A file whose output is in other units than nA: numpy, torch and the core all apply the factor."""
    sf = onnx_file.read(model_dir / "s.onnx")
    amplified = tmp_path / "amplified.onnx"
    onnx_file.write(amplified, sf.weights, sf.biases, _metadata_to_write(sf, amplification=2.5))
    sa = onnx_file.read(amplified)
    assert sa.amplification == 2.5
    v = _volts_in(sf.ranges_v, 500, seed=6)
    ref = sa.evaluate_numpy(v)
    np.testing.assert_allclose(ref, 2.5 * sf.evaluate_numpy(v), rtol=1e-12)
    span = np.ptp(ref)
    assert np.max(np.abs(predict(load_torch(amplified), v) - ref)) / span < 1e-5
    assert np.max(np.abs(core.load_surrogate(amplified).evaluate(v) - ref)) / span < 1e-5


def test_bad_amplification_is_refused(tmp_path, model_dir):
    sf = onnx_file.read(model_dir / "s.onnx")
    bad = tmp_path / "nan_amp.onnx"
    onnx_file.write(bad, sf.weights, sf.biases, _metadata_to_write(sf, amplification="lots"))
    with pytest.raises(onnx_file.SurrogateFileError, match="amplification must be a finite number"):
        onnx_file.read(bad)


def test_metadata_cannot_overwrite_the_format(tmp_path, model_dir):
    sf = onnx_file.read(model_dir / "s.onnx")
    with pytest.raises(ValueError, match="may not set 'format'"):
        onnx_file.write(tmp_path / "x.onnx", sf.weights, sf.biases, {**_metadata_to_write(sf), "format": "other"})
    assert not (tmp_path / "x.onnx").exists()


def test_check_cli_finds_torch_onnxruntime_and_core_in_agreement(model_dir, capsys):
    assert main(["check", str(model_dir / "s.onnx"), "--n", "2000", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["max_rel_err"]) == {"onnxruntime", "core", "torch"}
    assert all(e < 1e-5 for e in res["max_rel_err"].values())
