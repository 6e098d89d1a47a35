"""brains-py sampling data (postprocessed_data.npz, IO.dat) imported as dataset folders."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from host.sample import store
from host.sample.__main__ import build_parser, main
from host.sample.brainspy import BrainsPyError, ImportConfig, import_file, sha256_of

AMP = 28.5
RANGES = np.array([[-1.2, 0.6]] * (N_ELECTRODES - 2) + [[-0.7, 0.3]] * 2)
HEADER = ", ".join([f"Input {i}" for i in range(N_ELECTRODES)] + ["Output 0"])


def _data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = RANGES[:, 0] + rng.uniform(size=(n, N_ELECTRODES)) * (RANGES[:, 1] - RANGES[:, 0])
    y = 100.0 * np.tanh(x @ np.linspace(-1, 1, N_ELECTRODES)) * np.cos(3 * x[:, 0])
    return x, y[:, None]


def _configs(**electrode_info: Any) -> dict[str, Any]:
    """sampling_configs as brainspy-smg's post_process leaves them: numpy arrays inside."""
    info = {"electrode_no": N_ELECTRODES + 1,
            "activation_electrodes": {"electrode_no": N_ELECTRODES, "voltage_ranges": RANGES.copy()},
            "output_electrodes": {"electrode_no": 1, "amplification": [AMP], "clipping_value": [-4 * AMP, 4 * AMP]}}
    info.update(electrode_info)
    return {"input_data": {"activation_electrode_no": N_ELECTRODES, "readout_electrode_no": 1,
                           "offset": RANGES.mean(axis=1), "amplitude": np.ptp(RANGES, axis=1) / 2,
                           "batch_time": np.float64(0.5)},
            "driver": {"amplification": AMP, "sampling_frequency": 1000},
            "electrode_info": info}


def _npz(tmp: Path, inputs: np.ndarray, outputs: np.ndarray, configs: Any, name: str = "postprocessed_data.npz") -> Path:
    np.savez(tmp / name, inputs=inputs, outputs=outputs, sampling_configs=configs)  # configs: a pickled object array
    return tmp / name


def _iodat(tmp: Path, x: np.ndarray, y: np.ndarray, header: str = HEADER, name: str = "IO.dat") -> Path:
    with open(tmp / name, "w") as f:
        np.savetxt(f, np.column_stack([x, y]), header=header)
    return tmp / name


def test_npz_with_pickled_configs_becomes_a_dataset(tmp_path: Path) -> None:
    x, y = _data()
    src = _npz(tmp_path, x, y, _configs())
    assert main(["import-brainspy", str(src), "--out", str(tmp_path / "ds"), "--json"]) == 0
    ds = store.load(tmp_path / "ds")
    assert np.array_equal(ds.samples.volts, x.astype(np.float32))
    assert np.array_equal(ds.samples.current_na, y[:, 0].astype(np.float32))  # stored in nA already: x 1
    assert ds.ranges.tolist() == RANGES.tolist()
    m = ds.meta
    assert m["amplification"] == AMP and m["outputs_to_na"] == 1.0 and m["outputs_stored_as"] == "nA"
    assert m["clipping_na"] == [-4 * AMP, 4 * AMP] and m["units"] == {"voltage": "V", "current": "nA"}
    imp = m["imported"]
    assert imp["sha256"] == sha256_of(src) and imp["file"] == src.name and imp["kind"] == "postprocessed_data.npz"
    assert imp["sampling_configs"]["input_data"]["offset"] == pytest.approx(RANGES.mean(axis=1).tolist())
    assert imp["sampling_configs"]["input_data"]["batch_time"] == 0.5
    assert "electrode_info" in imp["amplification_from"]


def test_npz_outputs_may_be_flat_and_raw(tmp_path: Path) -> None:
    x, y = _data(500)
    src = _npz(tmp_path, x, y[:, 0] / AMP, _configs())
    meta = import_file(src, tmp_path / "ds", ImportConfig(outputs="raw"))
    assert meta["outputs_to_na"] == AMP
    assert np.allclose(store.load(tmp_path / "ds").samples.current_na, y[:, 0], rtol=1e-6)


def _npz_numpy1(path: Path, x: np.ndarray, y: np.ndarray, configs: dict[str, Any]) -> None:
    """An npz whose sampling_configs is pickled as numpy 1.x did: protocol 2, numpy.core.multiarray."""
    import io
    import pickle
    arrays = {}
    for name, a in (("inputs", x), ("outputs", y)):
        buf = io.BytesIO()
        np.save(buf, a)
        arrays[name] = buf.getvalue()
    obj = np.empty((), dtype=object)
    obj[()] = configs
    pickled = pickle.dumps(obj, protocol=2)
    assert b"numpy._core.multiarray\n" in pickled
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    arrays["sampling_configs"] = (buf.getvalue()  # magic and header
                                  + pickled.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    with zipfile.ZipFile(path, "w") as z:
        for name, data in arrays.items():
            z.writestr(f"{name}.npy", data)


def test_npz_pickled_by_numpy_1_loads(tmp_path: Path) -> None:
    x, y = _data(300)
    _npz_numpy1(tmp_path / "old.npz", x, y, _configs())
    with zipfile.ZipFile(tmp_path / "old.npz") as z:
        assert b"numpy.core.multiarray\n_reconstruct" in z.read("sampling_configs.npy")
    meta = import_file(tmp_path / "old.npz", tmp_path / "ds")
    assert meta["ranges_v"] == RANGES.tolist() and meta["amplification"] == AMP
    assert meta["imported"]["sampling_configs"]["input_data"]["batch_time"] == 0.5


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_in_sampling_configs_that_would_run_code_is_refused(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    x, y = _data(100)
    cfg = _configs()
    cfg["driver"]["hook"] = _RunsACommand(marker)
    src = _npz(tmp_path, x, y, cfg)
    with pytest.raises(BrainsPyError, match=f"refused to unpickle '{os.system.__module__}.system'"):
        import_file(src, tmp_path / "ds")
    assert main(["import-brainspy", str(src), "--out", str(tmp_path / "ds2")]) == 2
    assert "nothing from the file was run" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "ds").exists() and not (tmp_path / "ds2").exists()


def test_iodat_needs_an_amplification_from_the_file_or_the_flag(tmp_path: Path) -> None:
    x, y = _data(400)
    src = _iodat(tmp_path, x, y)
    with pytest.raises(BrainsPyError, match="--amplification"):
        import_file(src, tmp_path / "ds")
    meta = import_file(src, tmp_path / "ds", ImportConfig(amplification=AMP))
    assert meta["amplification"] == AMP and meta["imported"]["amplification_from"] == "--amplification"
    assert meta["imported"]["n_inputs_from"] == "the file header" and meta["clipping_na"] is None
    ds = store.load(tmp_path / "ds")
    assert np.allclose(ds.samples.volts, x, atol=1e-6) and np.allclose(ds.samples.current_na, y[:, 0], rtol=1e-6)
    assert "min/max" in meta["imported"]["ranges_from"]


def test_iodat_reads_sampler_configs_beside_it_and_the_header(tmp_path: Path) -> None:
    x, y = _data(400)
    src = _iodat(tmp_path, x, y / AMP, header=HEADER + "\namplification: 28.5")
    meta = import_file(src, tmp_path / "a", ImportConfig(outputs="raw"))
    assert meta["amplification"] == AMP and meta["imported"]["amplification_from"] == "the file header"
    assert np.allclose(store.load(tmp_path / "a").samples.current_na, y[:, 0], rtol=1e-6)

    plain = {"input_data": {"activation_electrode_no": N_ELECTRODES, "offset": RANGES.mean(axis=1).tolist(),
                            "amplitude": (np.ptp(RANGES, axis=1) / 2).tolist()}, "driver": {"amplification": 10.0}}
    (tmp_path / "sampler_configs.json").write_text(json.dumps(plain))
    src = _iodat(tmp_path, x, y)
    meta = import_file(src, tmp_path / "b", ImportConfig(amplification=AMP))  # the flag overrides the file
    assert meta["amplification"] == AMP and "the file says 10" in meta["imported"]["amplification_from"]
    assert np.allclose(meta["ranges_v"], RANGES) and "offset" in meta["imported"]["ranges_from"]
    meta = import_file(src, tmp_path / "c")
    assert meta["amplification"] == 10.0 and meta["imported"]["configs_file"].endswith("sampler_configs.json")


def test_inputs_flag_overrides_the_header(tmp_path: Path) -> None:
    x, y = _data(200)
    src = _iodat(tmp_path, x, y, header="sampled on a lab setup")  # no column names
    meta = import_file(src, tmp_path / "ds", ImportConfig(inputs=N_ELECTRODES, amplification=AMP))
    assert meta["imported"]["n_inputs_from"] == "--inputs"
    with pytest.raises(BrainsPyError, match=f"6 input columns .*has {N_ELECTRODES} activation electrodes"):
        import_file(src, tmp_path / "ds2", ImportConfig(inputs=6, amplification=AMP))


def test_another_electrode_count_is_refused(tmp_path: Path) -> None:
    x, y = _data(200)
    with pytest.raises(BrainsPyError, match="5 input columns"):
        import_file(_npz(tmp_path, x[:, :5], y, {"driver": {"amplification": AMP}}), tmp_path / "a")
    header5 = ", ".join([f"Input {i}" for i in range(5)] + ["Output 0"])
    with pytest.raises(BrainsPyError, match="5 input columns"):
        import_file(_iodat(tmp_path, x[:, :5], y, header=header5), tmp_path / "b", ImportConfig(amplification=AMP))
    with pytest.raises(BrainsPyError, match="2 output columns"):
        import_file(_iodat(tmp_path, x, np.column_stack([y, y]), header="x"), tmp_path / "c",
                    ImportConfig(amplification=AMP))
    with pytest.raises(BrainsPyError, match=r"activation_electrode_no'\] is 8"):
        cfg = _configs()
        cfg["input_data"]["activation_electrode_no"] = 8
        import_file(_npz(tmp_path, x, y, cfg), tmp_path / "d")
    with pytest.raises(BrainsPyError, match=r"voltage_ranges'\] has shape \[5, 2\]"):
        import_file(_npz(tmp_path, x, y, _configs(activation_electrodes={"voltage_ranges": RANGES[:5]})), tmp_path / "e")


def test_other_units_are_refused(tmp_path: Path) -> None:
    x, y = _data(200)
    with pytest.raises(BrainsPyError, match="outside the recorded range .* another unit"):
        import_file(_npz(tmp_path, 1000 * x, y, _configs()), tmp_path / "a")  # mV
    with pytest.raises(BrainsPyError, match="not in V"):
        import_file(_npz(tmp_path, 1000 * x, y, {"driver": {"amplification": AMP}}), tmp_path / "b")
    uA = HEADER.replace("Output 0", "Output 0 (uA)")
    with pytest.raises(BrainsPyError, match=r"output column is in \['uA'\], expected nA"):
        import_file(_iodat(tmp_path, x, y, header=uA), tmp_path / "c", ImportConfig(amplification=AMP))
    mV = ", ".join([f"Input {i} (mV)" for i in range(N_ELECTRODES)] + ["Output 0 (nA)"])
    with pytest.raises(BrainsPyError, match=r"input columns are in \['mV'\], expected V"):
        import_file(_iodat(tmp_path, x, y, header=mV), tmp_path / "d", ImportConfig(amplification=AMP))
    bad = _configs()
    bad["electrode_info"]["output_electrodes"]["amplification"] = [20.0]
    with pytest.raises(BrainsPyError, match="different amplifications"):
        import_file(_npz(tmp_path, x, y, bad), tmp_path / "e")


def test_bad_files_are_refused_by_name(tmp_path: Path) -> None:
    x, y = _data(50)
    np.savez(tmp_path / "no_outputs.npz", inputs=x)
    with pytest.raises(BrainsPyError, match=r"lacks \['outputs'\]"):
        import_file(tmp_path / "no_outputs.npz", tmp_path / "a")
    np.savez(tmp_path / "obj.npz", inputs=np.array([object()] * 3), outputs=y[:3])
    with pytest.raises(BrainsPyError, match="inputs is an object array"):
        import_file(tmp_path / "obj.npz", tmp_path / "b")
    (tmp_path / "text.dat").write_text("# Input 0\n1 2 x\n")
    with pytest.raises(BrainsPyError, match="not a whitespace-separated table"):
        import_file(tmp_path / "text.dat", tmp_path / "c", ImportConfig(amplification=AMP))
    y2 = y.copy()
    y2[7] = np.nan
    with pytest.raises(BrainsPyError, match="outputs has NaN/inf at row 7"):
        import_file(_npz(tmp_path, x, y2, _configs()), tmp_path / "d")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        import_file(_npz(tmp_path, x, y, _configs()), tmp_path / "full")


def test_the_flat_cli_still_works_and_import_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["--n", "10", "--out", "somewhere"])
    assert args.n == 10 and args.board.startswith("sim://")
    with pytest.raises(SystemExit) as e:
        main(["import-brainspy", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "python -m host.sample import-brainspy" in out and "--amplification" in out and "--outputs" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "import-brainspy" in capsys.readouterr().out


def test_train_accepts_an_imported_dataset(tmp_path: Path) -> None:
    from host.surrogate import onnx_file
    from host.surrogate.__main__ import main as surrogate_main

    x, y = _data(2500)
    import_file(_npz(tmp_path, x, y, _configs()), tmp_path / "ds", ImportConfig(chunk=1000))
    assert len(store.chunk_indices(tmp_path / "ds")) == 3
    rc = surrogate_main(["train", str(tmp_path / "ds"), "--out", str(tmp_path / "s.onnx"), "--epochs", "1",
                         "--limit", "2000", "--hidden", "16", "--layers", "2", "--no-plots", "--no-progress", "--json"])
    assert rc == 0
    sf = onnx_file.read(tmp_path / "s.onnx")
    assert sf.ranges_v.tolist() == RANGES.tolist()
    assert sf.metadata["source"]["board"]["imported_from"] == "brains-py"
