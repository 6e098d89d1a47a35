"""brains-py model files to surrogate ONNX and back: same currents, restricted unpickling, clear refusals."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import core
from core import surrogate_format
from core.electrodes import N_ELECTRODES
from host.surrogate import brainspy, onnx_file
from host.surrogate.__main__ import main

AMP = 28.5
RANGES = np.array([[-1.2, 0.6]] * (N_ELECTRODES - 2) + [[-0.7, 0.3]] * 2)


def _sequential(seed: int = 0, hidden: tuple[int, ...] = (16, 16, 16)) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    width = N_ELECTRODES
    for h in hidden:
        mods += [nn.Linear(width, h), nn.ReLU()]
        width = h
    mods.append(nn.Linear(width, 1))
    return nn.Sequential(*mods)


def _brainspy_dict(seq: nn.Sequential) -> dict[str, Any]:
    """A dict as brains-py saves it, with numpy arrays and scalars inside info (as real files have)."""
    hidden = [m.out_features for m in seq if isinstance(m, nn.Linear)][:-1]
    return {
        "model_state_dict": {f"raw_model.{k}": v for k, v in seq.state_dict().items()},
        "info": {
            "model_structure": {"hidden_sizes": hidden, "D_in": N_ELECTRODES, "D_out": 1, "activation": "relu"},
            "electrode_info": {
                "electrode_no": N_ELECTRODES + 1,
                "activation_electrodes": {"electrode_no": N_ELECTRODES, "voltage_ranges": RANGES.copy()},
                "output_electrodes": {"electrode_no": 1, "amplification": np.array([AMP]),
                                      "clipping_value": np.array([-4 * AMP, 4 * AMP])},
            },
            "training_configs": {"hyperparameters": {"learning_rate": np.float64(5e-5), "epochs": 500},
                                 "seed": np.int64(7)},
            "sampling_configs": {"input_data": {"offset": RANGES.mean(axis=1), "amplitude": np.ptp(RANGES, axis=1) / 2},
                                 "driver": {"amplification": AMP, "sampling_frequency": 1000}},
        },
        "test_loss": torch.tensor(1.25),
    }


def _save(tmp: Path, obj: Any, name: str = "model.pt") -> Path:
    torch.save(obj, tmp / name)
    return tmp / name


def _volts(n: int = 4000, seed: int = 1) -> np.ndarray:
    u = np.random.default_rng(seed).uniform(size=(n, N_ELECTRODES))
    return (RANGES[:, 0] + u * (RANGES[:, 1] - RANGES[:, 0])).astype(np.float32)


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


def _torch_na(seq: nn.Module, volts: np.ndarray, amp: float) -> np.ndarray:
    with torch.no_grad():
        return seq(torch.as_tensor(volts)).double().numpy()[:, 0] * amp


def _onnx_currents(path: Path, volts: np.ndarray) -> dict[str, np.ndarray]:
    sf = onnx_file.read(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {"core": core.load_surrogate(path).evaluate(volts),
            "onnxruntime": sess.run(None, {onnx_file.INPUT_NAME: volts})[0][:, 0] * sf.amplification,
            "numpy": sf.evaluate_numpy(volts)}


def test_round_trip_gives_the_same_currents(tmp_path: Path) -> None:
    seq = _sequential()
    src = _save(tmp_path, _brainspy_dict(seq))
    assert main(["import-brainspy", str(src), "--out", str(tmp_path / "s.onnx"), "--json"]) == 0
    volts = _volts()
    ref = _torch_na(seq, volts, AMP)
    errs = {k: _rel(v, ref) for k, v in _onnx_currents(tmp_path / "s.onnx", volts).items()}

    assert main(["export-brainspy", str(tmp_path / "s.onnx"), "--out", str(tmp_path / "back.pt")]) == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True, map_location="cpu")  # plain data: no allow-list
    seq2 = _sequential(seed=99)
    seq2.load_state_dict({k.removeprefix("raw_model."): v for k, v in back["model_state_dict"].items()})
    amp2 = float(back["info"]["electrode_info"]["output_electrodes"]["amplification"][0])
    errs["re-exported torch"] = _rel(_torch_na(seq2, volts, amp2), ref)
    assert main(["import-brainspy", str(tmp_path / "back.pt"), "--out", str(tmp_path / "again.onnx")]) == 0
    errs.update({f"re-imported {k}": _rel(v, ref) for k, v in _onnx_currents(tmp_path / "again.onnx", volts).items()})
    assert max(errs.values()) < 1e-6, errs

    assert back["info"]["training_configs"] == {"hyperparameters": {"learning_rate": 5e-5, "epochs": 500}, "seed": 7}
    assert back["info"]["model_structure"]["hidden_sizes"] == [16, 16, 16]
    assert back["test_loss"] == pytest.approx(1.25)
    assert onnx_file.read(tmp_path / "again.onnx").metadata["electrode_ranges_v"] == RANGES.tolist()


def test_import_writes_the_contract_metadata_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _save(tmp_path, _brainspy_dict(_sequential()))
    assert main(["import-brainspy", str(src), "--out", str(tmp_path / "s.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "noise floor" in printed and "test RMSE" in printed and "records no noise floor" in printed
    import onnx
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "s.onnx")).metadata_props}
    assert set(surrogate_format.REQUIRED_KEYS) <= set(props)
    meta = surrogate_format.check(props, "s.onnx")
    assert meta["amplification"] == AMP
    assert meta["output_range_na"] == [-4 * AMP, 4 * AMP]
    assert meta["test_rmse_na"] == pytest.approx(1.25) and meta["noise_floor_na"] == pytest.approx(1.25)
    assert meta["electrode_ranges_v"] == RANGES.tolist()
    s = meta["source"]
    assert s["imported_from"] == "brains-py" and s["file"] == "model.pt"
    assert s["sha256"] == brainspy.sha256_of(src)
    assert "noise floor" in s["noise_floor_na"] and "test RMSE" in s["noise_floor_na"]
    assert s["info"]["hidden_sizes"] == [16, 16, 16]
    assert s["sampling_configs"]["input_data"]["offset"] == pytest.approx(RANGES.mean(axis=1).tolist())
    assert meta["architecture"]["layers"] == 3
    rep = json.loads((tmp_path / "s.json").read_text())
    assert rep["model"] == str(tmp_path / "s.onnx") and rep["noise_floor_note"] and rep["test_rmse_na"] == 1.25
    assert main(["info", str(tmp_path / "s.onnx")]) == 0
    assert '"imported_from": "brains-py"' in capsys.readouterr().out


def test_check_command_passes_on_an_import_with_unit_amplification(tmp_path: Path) -> None:
    d = _brainspy_dict(_sequential())
    d["info"]["electrode_info"]["output_electrodes"]["amplification"] = 1.0
    src = _save(tmp_path, d)
    assert main(["import-brainspy", str(src), "--out", str(tmp_path / "s.onnx")]) == 0
    assert main(["check", str(tmp_path / "s.onnx"), "--n", "500", "--json"]) == 0


def test_check_command_passes_on_an_amplified_import(tmp_path: Path) -> None:
    src = _save(tmp_path, _brainspy_dict(_sequential()))
    assert main(["import-brainspy", str(src), "--out", str(tmp_path / "s.onnx")]) == 0
    assert main(["check", str(tmp_path / "s.onnx"), "--n", "500", "--json"]) == 0


@pytest.mark.parametrize("amp, clip, loss, ranges, want_clip", [
    (AMP, [-114.0, 114.0], 1.25, RANGES.tolist(), [-114.0, 114.0]),          # plain lists and floats
    ([AMP], 114.0, np.array(1.25), torch.tensor(RANGES), [-114.0, 114.0]),   # one number c -> [-c, c]
    (torch.tensor([AMP]), torch.tensor([-100.0, 120.0]), np.float64(1.25), RANGES, [-100.0, 120.0]),
])
def test_numbers_may_come_as_lists_arrays_or_tensors(tmp_path: Path, amp: Any, clip: Any, loss: Any, ranges: Any,
                                                     want_clip: list[float]) -> None:
    d = _brainspy_dict(_sequential())
    oe = d["info"]["electrode_info"]["output_electrodes"]
    oe["amplification"], oe["clipping_value"] = amp, clip
    d["info"]["electrode_info"]["activation_electrodes"]["voltage_ranges"] = ranges
    d["test_loss"] = loss
    rep = brainspy.import_file(_save(tmp_path, d), tmp_path / "s.onnx")
    assert rep["amplification"] == AMP and rep["output_range_na"] == want_clip and rep["test_rmse_na"] == 1.25
    assert np.allclose(rep["electrode_ranges_v"], RANGES)


def test_a_file_from_numpy_1_spelling_numpy_core_loads(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save(_brainspy_dict(_sequential()), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    assert b"numpy._core.multiarray\n" in data
    old = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")  # as numpy < 2 pickles it
    (tmp_path / "old.pt").write_bytes(old)
    rep = brainspy.import_file(tmp_path / "old.pt", tmp_path / "s.onnx")
    assert rep["amplification"] == AMP and rep["electrode_ranges_v"] == RANGES.tolist()


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return os.system, (f"touch {self.marker}",)


class _WritesAFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _PlainObject:
    """A pickled class instance (no code of its own, but not data we accept)."""


@pytest.mark.parametrize("payload, name", [
    (_RunsACommand, f"{os.system.__module__}.system"),
    (_WritesAFile, "exec"),
    (lambda marker: _PlainObject(), "_PlainObject"),
])
def test_a_pickle_that_would_run_code_is_refused_and_not_run(tmp_path: Path, payload: Callable[[Path], Any],
                                                             name: str, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    d = _brainspy_dict(_sequential())
    d["info"]["training_configs"]["callback"] = payload(marker)
    src = _save(tmp_path, d)
    assert not marker.exists()
    with pytest.raises(brainspy.BrainsPyError, match="refused") as e:
        brainspy.import_file(src, tmp_path / "s.onnx")
    assert name in str(e.value) and "nothing from the file was run" in str(e.value)
    assert main(["import-brainspy", str(src), "--out", str(tmp_path / "s.onnx")]) == 2
    assert name in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "s.onnx").exists()


def test_an_object_array_inside_info_is_refused(tmp_path: Path) -> None:
    d = _brainspy_dict(_sequential())
    d["info"]["sampling_configs"]["odd"] = np.array([{"a": 1}], dtype=object)
    with pytest.raises(brainspy.BrainsPyError, match="ObjectDType|object"):
        brainspy.import_file(_save(tmp_path, d), tmp_path / "s.onnx")


def _sd(d: dict[str, Any]) -> dict[str, torch.Tensor]:
    return d["model_state_dict"]


def _rename(d: dict[str, Any], old: str, new: str) -> None:
    _sd(d)[new] = _sd(d).pop(old)


def _drop_amp(d: dict[str, Any]) -> None:
    del d["info"]["electrode_info"]["output_electrodes"]["amplification"]


def _gap(d: dict[str, Any]) -> None:
    for part in ("weight", "bias"):
        _rename(d, f"raw_model.6.{part}", f"raw_model.8.{part}")
        _rename(d, f"raw_model.4.{part}", f"raw_model.6.{part}")


REFUSALS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("no state dict", lambda d: d.pop("model_state_dict"), r"missing \['model_state_dict'\]"),
    ("no test_loss", lambda d: d.pop("test_loss"), r"missing \['test_loss'\]"),
    ("no amplification", _drop_amp,
     r"missing \['info'\]\['electrode_info'\]\['output_electrodes'\]\['amplification'\]"),
    ("tanh", lambda d: d["info"]["model_structure"].update(activation="tanh"),
     "activation 'tanh' is not supported: only relu"),
    ("foreign key", lambda d: _rename(d, "raw_model.0.weight", "model.0.weight"),
     "key 'model.0.weight' does not fit"),
    ("batch-norm key", lambda d: _sd(d).update({"raw_model.0.running_mean": torch.zeros(16)}),
     "key 'raw_model.0.running_mean' does not fit"),
    ("odd index", lambda d: _rename(d, "raw_model.2.weight", "raw_model.1.weight"), "odd index 1"),
    ("gap", _gap, r"indices \[0, 2, 6, 8\]: raw_model.4 is missing"),
    ("no bias", lambda d: _sd(d).pop("raw_model.6.bias"), "lacks raw_model.6.bias"),
    ("shapes do not chain", lambda d: _sd(d).update({"raw_model.2.weight": torch.zeros(16, 12)}),
     r"raw_model.2.weight has shape \[16, 12\]: it takes 12 inputs, but raw_model.0 gives 16"),
    ("D_in 5", lambda d: _sd(d).update({"raw_model.0.weight": torch.zeros(16, 5)}), "takes 5 inputs"),
    ("D_out 2", lambda d: _sd(d).update({"raw_model.6.weight": torch.zeros(2, 16), "raw_model.6.bias": torch.zeros(2)}),
     "2 outputs, a DNPU surrogate has one"),
    ("declared D_in 8", lambda d: d["info"]["model_structure"].update(D_in=8), r"\['D_in'\] is 8"),
    ("hidden_sizes", lambda d: d["info"]["model_structure"].update(hidden_sizes=[16, 16]),
     r"hidden_sizes'\] is \[16, 16\], but the weights have hidden layers \[16, 16, 16\]"),
    ("ranges [5][2]", lambda d: d["info"]["electrode_info"]["activation_electrodes"].update(
        voltage_ranges=RANGES[:5]), r"voltage_ranges'\] has shape \[5, 2\]"),
    ("clipping None", lambda d: d["info"]["electrode_info"]["output_electrodes"].update(clipping_value=None),
     "--output-range"),
    ("NaN test_loss", lambda d: d.update(test_loss=float("nan")), "test_loss is nan"),
    ("int weights", lambda d: _sd(d).update({"raw_model.0.bias": torch.zeros(16, dtype=torch.int64)}),
     "expected a float tensor"),
]


@pytest.mark.parametrize("what, change, message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_other_layouts_are_refused_by_name(tmp_path: Path, what: str, change: Callable[[dict[str, Any]], Any],
                                           message: str) -> None:
    d = _brainspy_dict(_sequential())
    change(d)
    with pytest.raises(brainspy.BrainsPyError, match=message):
        brainspy.import_file(_save(tmp_path, d), tmp_path / "s.onnx")
    assert not (tmp_path / "s.onnx").exists()


def test_output_range_flag_replaces_a_missing_clipping_value(tmp_path: Path) -> None:
    d = _brainspy_dict(_sequential())
    d["info"]["electrode_info"]["output_electrodes"]["clipping_value"] = None
    src = _save(tmp_path, d)
    assert main(["import-brainspy", str(src), "--out", str(tmp_path / "s.onnx"), "--output-range=-50,60"]) == 0
    assert onnx_file.read(tmp_path / "s.onnx").metadata["output_range_na"] == [-50.0, 60.0]


def test_not_a_torch_file_or_not_a_dict(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(brainspy.BrainsPyError, match="junk.pt"):
        brainspy.import_file(tmp_path / "junk.pt", tmp_path / "s.onnx")
    with pytest.raises(brainspy.BrainsPyError, match="holds a Tensor"):
        brainspy.import_file(_save(tmp_path, torch.zeros(3)), tmp_path / "s.onnx")
    assert main(["import-brainspy", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "s.onnx")]) == 2


def test_export_of_a_surrogate_not_from_brainspy(tmp_path: Path) -> None:
    seq = _sequential(seed=3, hidden=(8, 12))
    lin = [m for m in seq if isinstance(m, nn.Linear)]
    src = {"board": {"serial": "FAKE-1"}, "train_data": "data/train"}
    onnx_file.write(tmp_path / "ours.onnx", [m.weight.detach().numpy() for m in lin],
                    [m.bias.detach().numpy() for m in lin],
                    {"electrode_ranges_v": RANGES.tolist(), "output_range_na": [-90.0, 80.0], "amplification": 2.0,
                     "noise_floor_na": 0.5, "test_rmse_na": 0.75, "source": src})
    res = brainspy.export_file(tmp_path / "ours.onnx", tmp_path / "ours.pt")
    assert res["configs_restored"] is False and res["hidden_sizes"] == [8, 12]
    back = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert back["info"]["training_configs"] == {"dnpu_source": src}
    rep = brainspy.import_file(tmp_path / "ours.pt", tmp_path / "again.onnx")
    assert rep["output_range_na"] == [-90.0, 80.0] and rep["amplification"] == 2.0
    volts = _volts(500)
    ref = _torch_na(seq, volts, 2.0)
    assert max(_rel(v, ref) for v in _onnx_currents(tmp_path / "again.onnx", volts).values()) < 1e-6
