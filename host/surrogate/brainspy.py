"""brains-py surrogate models (``torch.save`` dicts) to surrogate ONNX files and back.

    python -m host.surrogate import-brainspy lab/model.pt --out models/lab.onnx
    python -m host.surrogate export-brainspy models/lab.onnx --out lab/model-again.pt

A brains-py model file is a dict:

    model_state_dict  raw_model.0.weight [h1, 7], raw_model.0.bias [h1], raw_model.2.weight [h2, h1], ...:
                      an nn.Sequential of Linear layers at the even indices with a ReLU between them
                      and none after the last (odd indices hold the parameter-free activations)
    info              model_structure {hidden_sizes, D_in 7, D_out 1, activation "relu"},
                      electrode_info {activation_electrodes {voltage_ranges [7][2]},
                                      output_electrodes {amplification, clipping_value}},
                      training_configs, sampling_configs
    test_loss         the test RMSE in nA

How it maps onto the surrogate contract (core.surrogate_format):

- the weights are kept as they are: in brains-py the model's output times the amplification is
  the current in nA, which is our ``dnpu.amplification`` rule, so ``amplification`` is recorded;
- ``electrode_ranges_v`` is ``voltage_ranges`` (brains-py's input column i is electrode e<i>);
- ``output_range_na`` is ``clipping_value``: brains-py clips the amplified output (nA) to it, so it
  is the range of currents the setup could read and the model was trained on; one number c
  means [-c, c]. ``--output-range`` overrides it (a file whose clipping_value is None needs it);
- ``test_rmse_na`` is ``test_loss``; brains-py records no noise floor, so ``noise_floor_na`` is set
  to the test RMSE too (an upper bound: the test error holds the noise), and ``dnpu.source`` says so;
- ``source`` keeps the file's name and sha256, model_structure, electrode_info and the training and
  sampling configs as provenance.

Safety: the file is unpickled by ``torch.load(weights_only=True)`` with an allow-list of the numpy
globals a pickled numpy array, dtype or scalar needs (under both ``numpy.core`` and ``numpy._core``
spellings); any other global (a class, a function, ``os.system``) is refused by name and never
called. The export writes tensors, lists, numbers and strings only, so brains-py and torch
load it with ``weights_only=True`` and no allow-list.
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES
from host.sample.brainspy import (BrainsPyError, clipping_range, dig, numpy_globals, one_number, sha256_of,
                                  to_plain, voltage_ranges)
from host.surrogate import onnx_file

__all__ = ["BrainsPyError", "BrainsPyModel", "ImportOptions", "load_checkpoint", "parse", "import_file",
           "export_file", "add_parsers"]

_KEY = re.compile(r"raw_model\.(\d+)\.(weight|bias)")
_NOISE_NOTE = ("brains-py records no noise floor: dnpu.noise_floor_na is the test RMSE (test_loss), "
               "an upper bound on the noise")


@dataclass(frozen=True)
class ImportOptions:
    """Choices for an import beyond what the file says."""

    output_range_na: tuple[float, float] | None = None  # instead of the file's clipping_value


@dataclass
class BrainsPyModel:
    """A brains-py model file, checked and in our units."""

    weights: list[np.ndarray]           # [out, in] per Linear layer
    biases: list[np.ndarray]            # [out]
    ranges_v: np.ndarray                # [N_ELECTRODES, 2]
    amplification: float                # nA = output * amplification
    output_range_na: tuple[float, float]
    test_rmse_na: float
    info: dict[str, Any]                # the file's info as plain data

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights[:-1]]


# ---------------------------------------------------------------------------------------------
# reading

def _torch_allowed() -> list[tuple[Any, str]]:
    """numpy_globals plus the dtype classes whose instances a pickled dtype builds (numbers, bools,
    strings; not object)."""
    out = [(obj, name) for name, obj in numpy_globals().items()]
    for code in "?bBhHiIlLqQefdgFDGUS":
        t = type(np.dtype(code))
        out.append((t, f"{t.__module__}.{t.__qualname__}"))
    return out


def load_checkpoint(path: str | Path) -> Any:
    """torch.load with weights_only=True and the numpy allow-list; a refused global raises
    BrainsPyError naming it (nothing from the file is run)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BrainsPyError(f"{path}: no such file")
    allowed = _torch_allowed()
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise BrainsPyError(_refusal(path, str(e), allowed)) from None
    except Exception as e:  # torch raises many types for a file that is not its format
        raise BrainsPyError(f"{path}: not a readable torch.save file ({type(e).__name__}: {e})") from None


def _refusal(path: Path, message: str, allowed: list[tuple[Any, str]]) -> str:
    import torch

    names = re.findall(r"GLOBAL ([\w.]+)", message)
    try:
        with torch.serialization.safe_globals(allowed):
            names += torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a legacy (non-zip) file, or one the static scan cannot parse: keep what torch said
        pass
    names = sorted({n.removeprefix("builtins.") for n in names})  # torch writes builtins.exec as exec
    built = re.findall(r"but got <class '([\w.\[\]]+)'>", message)
    if names or built:
        what = ", ".join(repr(n) for n in names + built)
        return (f"{path}: refused to load: its pickle asks for {what}: not a tensor, number, container or "
                "numpy array of numbers (all a brains-py file holds); nothing from the file was run")
    detail = message.split("WeightsUnpickler error:")[-1].strip().split("\n")[0][:300]
    return f"{path}: refused to load: not plain tensors and data ({detail}); nothing from the file was run"


def parse(obj: Any, where: str, options: ImportOptions = ImportOptions()) -> BrainsPyModel:
    """Check a loaded brains-py dict and bring it into our units (see the module doc)."""
    if not isinstance(obj, Mapping):
        raise BrainsPyError(f"{where}: holds a {type(obj).__name__}, expected a brains-py dict with "
                            "model_state_dict, info and test_loss")
    weights, biases = _layers(dig(obj, ("model_state_dict",), where), where)
    ms = dig(obj, ("info", "model_structure"), where)
    if not isinstance(ms, Mapping):
        raise BrainsPyError(f"{where}: info['model_structure'] is a {type(ms).__name__}, expected a dict")
    act = ms.get("activation", "relu")  # brains-py's own default when the key is absent
    if not isinstance(act, str) or act.lower() != "relu":
        raise BrainsPyError(f"{where}: activation {act!r} is not supported: only relu (a surrogate file is a "
                            "Gemm/Relu chain)")
    actual = [int(w.shape[0]) for w in weights[:-1]]
    hidden = to_plain(dig(ms, ("hidden_sizes",), where))
    if not isinstance(hidden, list) or [h for h in hidden if isinstance(h, bool) or not isinstance(h, int)]:
        raise BrainsPyError(f"{where}: info['model_structure']['hidden_sizes'] must be a list of ints, got {hidden!r}")
    if hidden != actual:
        raise BrainsPyError(f"{where}: info['model_structure']['hidden_sizes'] is {hidden}, but the weights "
                            f"have hidden layers {actual}")
    for key, want, have in (("D_in", N_ELECTRODES, weights[0].shape[1]), ("D_out", 1, weights[-1].shape[0])):
        if key in ms:
            d = one_number(ms[key], f"info['model_structure'][{key!r}]", where)
            if d != want:
                raise BrainsPyError(f"{where}: info['model_structure'][{key!r}] is {d:g}: a DNPU surrogate maps "
                                    f"{N_ELECTRODES} electrode voltages to 1 current ({key} {want})")
            if d != have:
                raise BrainsPyError(f"{where}: info['model_structure'][{key!r}] is {d:g}, the weights say {have}")
    el = ("info", "electrode_info")
    ranges = voltage_ranges(dig(obj, el + ("activation_electrodes", "voltage_ranges"), where),
                            "info['electrode_info']['activation_electrodes']['voltage_ranges']", where)
    amp = one_number(dig(obj, el + ("output_electrodes", "amplification"), where),
                     "info['electrode_info']['output_electrodes']['amplification']", where)
    if amp == 0.0:
        raise BrainsPyError(f"{where}: info['electrode_info']['output_electrodes']['amplification'] is 0")
    clip = clipping_range(dig(obj, el + ("output_electrodes", "clipping_value"), where),
                          "info['electrode_info']['output_electrodes']['clipping_value']", where)
    out_range = options.output_range_na or clip
    if out_range is None:
        raise BrainsPyError(f"{where}: info['electrode_info']['output_electrodes']['clipping_value'] is None: the "
                            "file does not say the output range; give it with --output-range LO,HI (nA)")
    rmse = one_number(dig(obj, ("test_loss",), where), "test_loss", where)
    if rmse < 0:
        raise BrainsPyError(f"{where}: test_loss is {rmse}, not an RMSE")
    info = to_plain(obj["info"]) if isinstance(obj["info"], Mapping) else {}
    return BrainsPyModel(weights, biases, ranges, amp, (float(out_range[0]), float(out_range[1])), rmse, info)


def _layers(sd: Any, where: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    import torch

    if not isinstance(sd, Mapping) or not sd:
        raise BrainsPyError(f"{where}: model_state_dict must be a non-empty dict of tensors")
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        m = _KEY.fullmatch(str(key))
        if m is None:
            raise BrainsPyError(f"{where}: model_state_dict key {key!r} does not fit brains-py's layout "
                                "raw_model.<i>.weight / raw_model.<i>.bias (a Sequential of Linear layers)")
        i = int(m.group(1))
        if i % 2:
            raise BrainsPyError(f"{where}: model_state_dict key {key!r}: odd index {i}, where brains-py's Sequential "
                                "holds a parameter-free activation; Linear layers sit at even indices")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise BrainsPyError(f"{where}: model_state_dict[{key!r}] is a "
                                f"{getattr(value, 'dtype', type(value).__name__)}, expected a float tensor")
        found.setdefault(i, {})[m.group(2)] = value.detach().cpu().to(torch.float64).numpy()
    idx = sorted(found)
    expected = list(range(0, 2 * len(idx), 2))
    if idx != expected:
        gap = next(e for e in expected if e not in found)
        raise BrainsPyError(f"{where}: Linear layers at raw_model indices {idx}: raw_model.{gap} is missing "
                            "(expected 0, 2, 4, ... without gaps)")
    weights, biases = [], []
    for n, i in enumerate(idx):
        for part in ("weight", "bias"):
            if part not in found[i]:
                raise BrainsPyError(f"{where}: model_state_dict lacks raw_model.{i}.{part}")
        w, b = found[i]["weight"], found[i]["bias"]
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise BrainsPyError(f"{where}: raw_model.{i}.weight has shape {list(w.shape)} and raw_model.{i}.bias "
                                f"{list(b.shape)}: expected [out, in] and [out]")
        if n == 0 and w.shape[1] != N_ELECTRODES:
            raise BrainsPyError(f"{where}: raw_model.0.weight has shape {list(w.shape)}: the model takes {w.shape[1]} "
                                f"inputs, a DNPU surrogate takes {N_ELECTRODES} electrode voltages (D_in {N_ELECTRODES})")
        if n > 0 and w.shape[1] != weights[-1].shape[0]:
            raise BrainsPyError(f"{where}: raw_model.{i}.weight has shape {list(w.shape)}: it takes {w.shape[1]} inputs, "
                                f"but raw_model.{idx[n - 1]} gives {weights[-1].shape[0]} (the shapes do not chain)")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise BrainsPyError(f"{where}: raw_model.{i} holds NaN or inf")
        weights.append(w)
        biases.append(b)
    if weights[-1].shape[0] != 1:
        raise BrainsPyError(f"{where}: raw_model.{idx[-1]}.weight has shape {list(weights[-1].shape)}: "
                            f"{weights[-1].shape[0]} outputs, a DNPU surrogate has one (D_out 1)")
    return weights, biases


# ---------------------------------------------------------------------------------------------
# import and export

def _architecture(hidden: list[int]) -> dict[str, Any]:
    uniform = len(set(hidden)) <= 1
    return {"hidden": (hidden[0] if hidden else 0) if uniform else hidden, "layers": len(hidden),
            "activation": "relu", "hidden_sizes": hidden}


def import_file(path: str | Path, out: str | Path, options: ImportOptions = ImportOptions()) -> dict[str, Any]:
    """brains-py model file -> surrogate ONNX `out` plus its JSON report (same name, .json), as
    ``train`` writes them; returns the report."""
    path, out = Path(path), Path(out)
    m = parse(load_checkpoint(path), str(path), options)
    digest = sha256_of(path)
    info = m.info
    electrode_info = info.get("electrode_info", {})
    out_from = ("--output-range" if options.output_range_na else
                "clipping_value of info['electrode_info']['output_electrodes']: brains-py clips the "
                "amplified output (nA) to it")
    source = {
        "imported_from": "brains-py", "file": path.name, "sha256": digest,
        "noise_floor_na": _NOISE_NOTE, "test_rmse_na": "test_loss of the file",
        "output_range_na": out_from, "amplification": "nA = output x amplification, as in brains-py",
        "info": info.get("model_structure", {}), "electrode_info": electrode_info,
        "training_configs": info.get("training_configs", {}), "sampling_configs": info.get("sampling_configs", {}),
    }
    arch = _architecture(m.hidden_sizes)
    meta = {
        "electrode_ranges_v": m.ranges_v.tolist(),
        "output_range_na": list(m.output_range_na),
        "amplification": m.amplification,
        "noise_floor_na": m.test_rmse_na,
        "test_rmse_na": m.test_rmse_na,
        "source": source,
        "architecture": arch,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    onnx_file.write(out, m.weights, m.biases, meta, producer="dnpu-toolkit host.surrogate import-brainspy")
    span = m.output_range_na[1] - m.output_range_na[0]
    rep: dict[str, Any] = {
        "model": str(out), "imported_from": "brains-py", "file": str(path), "sha256": digest,
        "architecture": arch, "layers": [list(w.shape) for w in m.weights],
        "electrode_ranges_v": m.ranges_v.tolist(), "amplification": m.amplification,
        "output_range_na": list(m.output_range_na), "output_range_from": out_from,
        "test_rmse_na": m.test_rmse_na, "test_rmse_pct_range": 100.0 * m.test_rmse_na / span,
        "noise_floor_na": m.test_rmse_na, "noise_floor_note": _NOISE_NOTE,
        "training_configs": source["training_configs"], "sampling_configs": source["sampling_configs"],
    }
    out.with_suffix(".json").write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def export_file(model: str | Path, out: str | Path) -> dict[str, Any]:
    """Surrogate ONNX -> a brains-py model file (torch.save of tensors, lists, numbers, strings).
    A file imported from brains-py gets its training and sampling configs back; returns a summary."""
    import torch

    model, out = Path(model), Path(out)
    sf = onnx_file.read(model)
    meta = sf.metadata
    src = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    from_brainspy = src.get("imported_from") == "brains-py"
    hidden = [int(w.shape[0]) for w in sf.weights[:-1]]
    structure = dict(src.get("info", {})) if from_brainspy and isinstance(src.get("info"), dict) else {}
    structure.update({"hidden_sizes": hidden, "D_in": N_ELECTRODES, "D_out": 1, "activation": "relu"})
    out_range = [float(x) for x in meta["output_range_na"]]
    info = {
        "model_structure": structure,
        "electrode_info": {
            "electrode_no": N_ELECTRODES + 1,
            "activation_electrodes": {"electrode_no": N_ELECTRODES, "voltage_ranges": sf.ranges_v.tolist()},
            "output_electrodes": {"electrode_no": 1, "amplification": [sf.amplification],
                                  "clipping_value": out_range},
        },
        "training_configs": src.get("training_configs", {}) if from_brainspy else {"dnpu_source": src},
        "sampling_configs": src.get("sampling_configs", {}) if from_brainspy else {},
    }
    state = {}
    for n, (w, b) in enumerate(zip(sf.weights, sf.biases)):
        state[f"raw_model.{2 * n}.weight"] = torch.tensor(np.array(w, dtype=np.float32))
        state[f"raw_model.{2 * n}.bias"] = torch.tensor(np.array(b, dtype=np.float32))
    rmse = meta.get("test_rmse_na")
    test_loss = float(rmse) if isinstance(rmse, (int, float)) and not isinstance(rmse, bool) else math.nan
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": state, "info": info, "test_loss": test_loss}, out)
    return {"model": str(model), "out": str(out), "hidden_sizes": hidden, "amplification": sf.amplification,
            "clipping_value": out_range, "test_loss": test_loss, "configs_restored": from_brainspy}


# ---------------------------------------------------------------------------------------------
# the CLI: python -m host.surrogate import-brainspy | export-brainspy

def _parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.replace("[", "").replace("]", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (nA), got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"expected finite LO < HI, got {text!r}")
    return lo, hi


def _import_cmd(args: argparse.Namespace) -> int:
    rep = import_file(args.file, args.out, ImportOptions(output_range_na=args.output_range))
    if args.json:
        print(json.dumps(rep))
    else:
        print(f"surrogate written to {rep['model']} (imported from brains-py {args.file}, layers {rep['layers']})\n"
              f"  amplification {rep['amplification']:g} (nA = output x amplification)\n"
              f"  output range {rep['output_range_na']} nA ({rep['output_range_from']})\n"
              f"  test RMSE {rep['test_rmse_na']:.4g} nA (test_loss) = {rep['test_rmse_pct_range']:.3f} % of range\n"
              f"  noise floor {rep['noise_floor_na']:.4g} nA: {_NOISE_NOTE}")
    return 0


def _export_cmd(args: argparse.Namespace) -> int:
    res = export_file(args.model, args.out)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"brains-py model written to {res['out']} (hidden sizes {res['hidden_sizes']}, amplification "
              f"{res['amplification']:g}, clipping_value {res['clipping_value']}, test_loss {res['test_loss']:.4g})"
              + ("" if res["configs_restored"] else "\n  not imported from brains-py: training_configs holds "
                 "this surrogate's dnpu.source, sampling_configs is empty"))
    return 0


def add_parsers(sub: Any) -> None:
    """Register import-brainspy and export-brainspy on the host.surrogate subparsers."""
    i = sub.add_parser("import-brainspy", help="convert a brains-py model file (torch.save dict) to a surrogate "
                                               "ONNX file + JSON report",
                       description=__doc__.split("\n\n")[0])
    i.add_argument("file", type=Path, help="brains-py model file (.pt)")
    i.add_argument("--out", type=Path, required=True, help="ONNX file to write (report: same name .json)")
    i.add_argument("--output-range", type=_parse_range, default=None, metavar="LO,HI",
                   help="output range in nA instead of the file's clipping_value (write --output-range=-50,60)")
    i.add_argument("--json", action="store_true", help="print the report as one JSON object")
    i.set_defaults(func=_import_cmd)
    e = sub.add_parser("export-brainspy", help="write a surrogate ONNX file as a brains-py model file")
    e.add_argument("model", type=Path, help="surrogate ONNX file")
    e.add_argument("--out", type=Path, required=True, help="brains-py model file to write (.pt)")
    e.add_argument("--json", action="store_true", help="print a JSON summary")
    e.set_defaults(func=_export_cmd)
