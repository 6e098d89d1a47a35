"""Importing brains-py sampling data as a dataset folder (`host.sample.store`).

    python -m host.sample import-brainspy DATA/postprocessed_data.npz --out data/lab-train
    python -m host.sample import-brainspy DATA/IO.dat --out data/lab-train [--amplification 28.5]

brains-py (the field's reference code, with brainspy-smg) writes two kinds of sampling data:

- ``IO.dat``: the sampler's text table, whitespace-separated, with ``#`` comment lines (its header
  names the columns ``Input 0, ..., Input 6, Output 0``); the first 7 columns are the activation
  electrode voltages (V) and the last one the readout. Its settings are in ``sampler_configs.json``
  beside it (JSON, read when present, or named with ``--configs``).
- ``postprocessed_data.npz``: arrays ``inputs`` [n, 7] (V) and ``outputs`` [n, 1] or [n], plus
  ``sampling_configs``, a dict stored as a pickled object array (with ``electrode_info``:
  voltage ranges, amplification, clipping value).

Units. brains-py's driver multiplies each DAQ reading by the setup's amplification before it
returns it (``process_output_data``), so the outputs stored in both files are nA already, and a
brains-py surrogate is trained on ``outputs / amplification``. That is the default here
(``--outputs nA``: current_na = output x 1); ``--outputs raw`` is for files that hold the DAQ
readings themselves (current_na = output x amplification). Either way the amplification is made
explicit in the dataset metadata: it comes from ``--amplification``, else from the file (its
header, its sampling_configs or sampler_configs.json), and if neither says it the import is
refused rather than guessed. The factor actually applied is ``meta["outputs_to_na"]``.

Safety. The npz is opened with ``allow_pickle=False``; only if ``sampling_configs`` needs pickle
is that one member read, by an unpickler that builds nothing but plain containers, numbers,
strings and numpy arrays (`load_plain_pickle`); any other global is refused by name and never
called.

The helpers that read brains-py's ``electrode_info`` (voltage ranges, amplification, clipping) and
turn loaded values into plain JSON data are shared with ``host.surrogate.brainspy``.
"""
from __future__ import annotations

import argparse
import codecs
import collections
import hashlib
import importlib
import json
import math
import pickle
import re
import sys
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.electrodes import ELECTRODE_NAMES, N_ELECTRODES
from host.sample import store

#: Tolerance (V) for inputs at the edge of the recorded voltage ranges, as store.load uses.
RANGE_TOL_V = 1e-3
#: Inputs beyond this (V) with no recorded ranges are taken for another unit (mV), not volts.
MAX_PLAUSIBLE_V = 10.0


class BrainsPyError(ValueError):
    """A brains-py file that is not imported as it is; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# plain data, shared with host.surrogate.brainspy

def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_plain(value: Any) -> Any:
    """`value` as JSON-able data: numpy arrays and scalars and torch tensors become lists and
    Python numbers, tuples and sets lists, dict keys strings; anything else its str()."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return to_plain(value.item())
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays, torch tensors
        return to_plain(value.tolist())
    return str(value)


def dig(tree: Any, path: tuple[str, ...], where: str, required: bool = True) -> Any:
    """tree[path[0]][path[1]]...; a missing key raises BrainsPyError naming the whole path
    (or gives None when not `required`)."""
    node, name = tree, ""
    for key in path:
        if not isinstance(node, Mapping):
            raise BrainsPyError(f"{where}: {name or 'the file'} is a {type(node).__name__}, expected a dict")
        name += f"[{key!r}]"
        if key not in node:
            if not required:
                return None
            raise BrainsPyError(f"{where}: missing {name}")
        node = node[key]
    return node


def one_number(value: Any, what: str, where: str) -> float:
    """A finite number given as a number, a 1-element list/array/tensor or a 0-d array."""
    plain = to_plain(value)
    try:
        a = np.asarray(plain, dtype=np.float64)
    except (TypeError, ValueError):
        raise BrainsPyError(f"{where}: {what} must be a number, got {plain!r}") from None
    if isinstance(plain, bool) or a.size != 1:
        raise BrainsPyError(f"{where}: {what} must be one number, got {plain!r}")
    x = float(a.reshape(()))
    if not math.isfinite(x):
        raise BrainsPyError(f"{where}: {what} is {x}, not a finite number")
    return x


def voltage_ranges(value: Any, what: str, where: str) -> np.ndarray:
    """[N_ELECTRODES, 2] float64 (V) from a list, array or tensor of [lo, hi] pairs."""
    plain = to_plain(value)
    try:
        a = np.asarray(plain, dtype=np.float64)
    except (TypeError, ValueError):
        raise BrainsPyError(f"{where}: {what} must be {N_ELECTRODES} [lo, hi] pairs, got {plain!r}") from None
    if a.shape != (N_ELECTRODES, 2):
        raise BrainsPyError(f"{where}: {what} has shape {list(a.shape)}: expected {N_ELECTRODES} [lo, hi] "
                            f"pairs, one per activation electrode ({', '.join(ELECTRODE_NAMES)})")
    if not np.all(np.isfinite(a)) or np.any(a[:, 0] >= a[:, 1]):
        raise BrainsPyError(f"{where}: {what} must be finite pairs with lo < hi, got {a.tolist()}")
    return a


def clipping_range(value: Any, what: str, where: str) -> tuple[float, float] | None:
    """brains-py's clipping_value: [lo, hi], or one number c meaning [-|c|, |c|]; None stays None."""
    if value is None:
        return None
    plain = to_plain(value)
    try:
        a = np.asarray(plain, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BrainsPyError(f"{where}: {what} must be [lo, hi] or a number, got {plain!r}") from None
    if a.size == 1:
        a = np.array([-abs(a[0]), abs(a[0])])
    if a.size != 2 or not np.all(np.isfinite(a)) or a[0] >= a[1]:
        raise BrainsPyError(f"{where}: {what} must be [lo, hi] with lo < hi (or one number c for "
                            f"[-c, c]), got {plain!r}")
    return float(a[0]), float(a[1])


def numpy_globals() -> dict[str, Any]:
    """The globals a pickled numpy array, dtype or scalar names, under both spellings of numpy's
    core module (``numpy.core`` up to numpy 1.x, ``numpy._core`` from numpy 2)."""
    try:
        ma = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        ma = importlib.import_module("numpy.core.multiarray")
    out: dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[f"{mod}._reconstruct"] = ma._reconstruct
        out[f"{mod}.scalar"] = ma.scalar
    return out


def _plain_globals() -> dict[str, Any]:
    out: dict[str, Any] = {f"builtins.{t.__name__}": t for t in
                           (dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bytearray, bool)}
    out.update({f"__builtin__.{t.__name__}": t for t in (dict, list, tuple, set, frozenset, int, float, complex,
                                                          str, bytearray, bool)})  # Python 2 pickles
    out["collections.OrderedDict"] = collections.OrderedDict
    out["_codecs.encode"] = codecs.encode  # how protocol 2/3 pickles spell bytes
    out.update(numpy_globals())
    return out


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain containers, numbers, strings and numpy arrays; refuses every other global."""

    def __init__(self, file: IO[bytes], where: str) -> None:
        super().__init__(file, encoding="latin1")
        self._where = where
        self._allowed = _plain_globals()

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in self._allowed:
            return self._allowed[full]
        raise BrainsPyError(f"{self._where}: refused to unpickle {full!r}: only containers, numbers, strings "
                            "and numpy arrays are allowed in brains-py data; nothing from the file was run")

    def persistent_load(self, pid: Any) -> Any:
        raise BrainsPyError(f"{self._where}: refused a pickle persistent id {pid!r}")


def load_plain_pickle(file: IO[bytes], where: str) -> Any:
    """Unpickle `file` allowing only plain data (see _PlainUnpickler)."""
    try:
        return _PlainUnpickler(file, where).load()
    except BrainsPyError:
        raise
    except Exception as e:  # a malformed stream: any of pickle's many error types
        raise BrainsPyError(f"{where}: unreadable pickle ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# reading brains-py files

@dataclass(frozen=True)
class ImportConfig:
    """How a brains-py data file becomes a dataset (the CLI flags)."""

    inputs: int | None = None           # input columns, overriding the header / sampling_configs
    amplification: float | None = None  # overriding the file's amplification
    outputs: str = "nA"                 # what the output column holds: "nA" or "raw" (DAQ readings)
    configs: Path | None = None         # IO.dat: sampler configs JSON (default: sampler_configs.json beside it)
    device: str | None = None           # a label for the device, kept as board.device
    chunk: int = 65536                  # samples per chunk file


@dataclass
class _Raw:
    """What a file holds, before units and ranges are settled."""

    inputs: np.ndarray                  # [n, k] float64
    outputs: np.ndarray                 # [n, m] float64
    configs: dict[str, Any]             # sampling configs (plain data), {} if none
    kind: str                           # "postprocessed_data.npz" or "IO.dat"
    n_inputs_from: str                  # where the number of input columns came from
    header_amplification: float | None = None
    header_units: tuple[tuple[str | None, ...], tuple[str | None, ...]] = ((), ())  # (inputs, outputs)
    configs_file: str | None = None


def _read_npz(path: Path, cfg: ImportConfig) -> _Raw:
    where = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise BrainsPyError(f"{where}: not a readable .npz file ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise BrainsPyError(f"{where}: holds one array, not a brains-py postprocessed_data.npz "
                            "(arrays inputs, outputs, sampling_configs)")
    with z:
        missing = [k for k in ("inputs", "outputs") if k not in z.files]
        if missing:
            raise BrainsPyError(f"{where}: lacks {missing} (has {sorted(z.files)}); a brains-py "
                                "postprocessed_data.npz holds inputs, outputs and sampling_configs")
        inputs, outputs = (_numeric(z, k, where) for k in ("inputs", "outputs"))
        configs = _npz_configs(z, path) if "sampling_configs" in z.files else {}
    if inputs.ndim != 2:
        raise BrainsPyError(f"{where}: inputs has shape {list(inputs.shape)}, expected [n, {N_ELECTRODES}]")
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if cfg.inputs is not None and cfg.inputs != inputs.shape[1]:
        raise BrainsPyError(f"{where}: --inputs {cfg.inputs}, but inputs has {inputs.shape[1]} columns")
    said = dig(configs, ("input_data", "activation_electrode_no"), where, required=False)
    if cfg.inputs is None and said is not None and int(one_number(said, "activation_electrode_no", where)) != inputs.shape[1]:
        raise BrainsPyError(f"{where}: sampling_configs['input_data']['activation_electrode_no'] is {said}, "
                            f"but inputs has {inputs.shape[1]} columns")
    return _Raw(inputs, outputs, configs, "postprocessed_data.npz", "the inputs array")


def _numeric(z: Any, key: str, where: str) -> np.ndarray:
    try:
        a = z[key]
    except ValueError:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        raise BrainsPyError(f"{where}: {key} is an object array (it needs pickle): expected numbers") from None
    if a.dtype.kind not in "fiu":
        raise BrainsPyError(f"{where}: {key} has dtype {a.dtype}, expected numbers")
    return a.astype(np.float64)


def _npz_configs(z: Any, path: Path) -> dict[str, Any]:
    """sampling_configs: without pickle if it can be, else by the plain-data unpickler."""
    where = f"{path}: sampling_configs"
    try:
        value: Any = z["sampling_configs"]
    except ValueError:  # a pickled object array, as brains-py writes it
        value = _pickled_member(path, "sampling_configs")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (str, np.str_)):
        try:
            value = json.loads(str(value))
        except json.JSONDecodeError:
            raise BrainsPyError(f"{where}: a string that is not JSON") from None
    if not isinstance(value, Mapping):
        raise BrainsPyError(f"{where}: a {type(value).__name__}, expected a dict")
    return to_plain(value)


def _pickled_member(path: Path, name: str) -> Any:
    where = f"{path}: {name}"
    fmt = np.lib.format
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                _, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                _, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise BrainsPyError(f"{where}: .npy format version {version} is not supported")
            if dtype != np.dtype(object):
                raise BrainsPyError(f"{where}: unreadable array of dtype {dtype}")
            return load_plain_pickle(f, where)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, BrainsPyError):
            raise
        raise BrainsPyError(f"{where}: unreadable ({e})") from None


_UNIT = re.compile(r"[(\[]\s*([A-Za-zµμ]+)\s*[)\]]")
_AMP = re.compile(r"amplification\s*[:=]\s*\[?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)", re.I)


def _read_iodat(path: Path, cfg: ImportConfig) -> _Raw:
    where = str(path)
    header: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            s = line.strip()
            if s and not s.startswith("#"):
                break
            if s:
                header.append(s.lstrip("#").strip())
    try:
        data = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise BrainsPyError(f"{where}: not a whitespace-separated table of numbers ({e})") from None
    if data.shape[0] == 0:
        raise BrainsPyError(f"{where}: no data rows")
    in_names: list[str] = []
    out_names: list[str] = []
    for line in header:  # brainspy-smg: "Input 0, Input 1, ..., Output 0"
        names = [n.strip() for n in line.split(",")]
        if any(n.lower().startswith(("input", "output")) for n in names):
            in_names = [n for n in names if n.lower().startswith("input")]
            out_names = [n for n in names if n.lower().startswith("output")]
    amps = [m.group(1) for line in header for m in [_AMP.search(line)] if m]
    configs_path = cfg.configs or (path.parent / "sampler_configs.json")
    configs: dict[str, Any] = {}
    if cfg.configs is not None or configs_path.is_file():
        try:
            configs = json.loads(configs_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BrainsPyError(f"{configs_path}: unreadable sampler configs ({e})") from None
        if not isinstance(configs, dict):
            raise BrainsPyError(f"{configs_path}: a {type(configs).__name__}, expected a JSON object")
    said = dig(configs, ("input_data", "activation_electrode_no"), str(configs_path), required=False)
    if cfg.inputs is not None:
        n_in, n_from = cfg.inputs, "--inputs"
    elif in_names:
        n_in, n_from = len(in_names), "the file header"
    elif said is not None:
        n_in, n_from = int(one_number(said, "activation_electrode_no", str(configs_path))), f"{configs_path.name}"
    else:
        n_in, n_from = N_ELECTRODES, f"brains-py's layout (first {N_ELECTRODES} columns)"
    if n_in != N_ELECTRODES:
        raise BrainsPyError(f"{where}: {n_in} input columns (from {n_from}), but a DNPU here has {N_ELECTRODES} "
                            f"activation electrodes ({', '.join(ELECTRODE_NAMES)}); this dataset is for another device")
    n_out = data.shape[1] - n_in
    if out_names and cfg.inputs is None and n_out != len(out_names):
        raise BrainsPyError(f"{where}: the header names {len(in_names)} inputs and {len(out_names)} outputs, "
                            f"but the rows have {data.shape[1]} columns")
    if n_out < 1:
        raise BrainsPyError(f"{where}: {data.shape[1]} columns: no output column after the {n_in} inputs")
    return _Raw(data[:, :n_in], data[:, n_in:], to_plain(configs), "IO.dat", n_from,
                header_amplification=float(amps[-1]) if amps else None,
                header_units=(tuple(_unit_of(n) for n in in_names), tuple(_unit_of(n) for n in out_names)),
                configs_file=str(configs_path) if configs else None)


def _unit_of(name: str) -> str | None:
    m = _UNIT.search(name)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# settling units, ranges and amplification

def _amplification(raw: _Raw, cfg: ImportConfig, where: str) -> tuple[float, str]:
    found: list[tuple[float, str]] = []
    for path in (("electrode_info", "output_electrodes", "amplification"), ("driver", "amplification")):
        v = dig(raw.configs, path, where, required=False)
        if v is not None:
            found.append((one_number(v, "sampling_configs" + "".join(f"[{k!r}]" for k in path), where),
                          "sampling_configs" + "".join(f"[{k!r}]" for k in path)))
    if raw.header_amplification is not None:
        found.append((raw.header_amplification, "the file header"))
    if cfg.amplification is not None:
        said = f" (the file says {found[0][0]:g})" if found and found[0][0] != cfg.amplification else ""
        return float(cfg.amplification), f"--amplification{said}"
    if not found:
        raise BrainsPyError(
            f"{where}: the file does not record the setup's amplification (looked in its header and its "
            "sampling configs: electrode_info/output_electrodes/amplification, driver/amplification); "
            "give it with --amplification X: it is kept in the dataset metadata and, with --outputs raw, "
            "converts the output column to nA")
    if any(not math.isclose(a, found[0][0], rel_tol=1e-9) for a, _ in found):
        raise BrainsPyError(f"{where}: the file records different amplifications: "
                            + ", ".join(f"{a:g} in {s}" for a, s in found) + "; choose one with --amplification")
    return found[0]


def _ranges(raw: _Raw, where: str) -> tuple[np.ndarray, str]:
    c = raw.configs
    v = dig(c, ("electrode_info", "activation_electrodes", "voltage_ranges"), where, required=False)
    if v is not None:
        return voltage_ranges(v, "sampling_configs['electrode_info']['activation_electrodes']['voltage_ranges']",
                              where), "sampling_configs electrode_info"
    off, amp = (dig(c, ("input_data", k), where, required=False) for k in ("offset", "amplitude"))
    if off is not None and amp is not None:
        try:
            o, a = np.asarray(off, np.float64).reshape(-1), np.abs(np.asarray(amp, np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise BrainsPyError(f"{where}: sampling_configs input_data offset/amplitude must be numbers") from None
        if o.shape != a.shape:
            raise BrainsPyError(f"{where}: sampling_configs input_data has {o.size} offsets and {a.size} amplitudes")
        return (voltage_ranges(np.stack([o - a, o + a], axis=-1), "the input_data offset +- amplitude", where),
                "sampling_configs input_data offset +- amplitude")
    v = dig(c, ("driver", "instruments_setup", "activation_voltage_ranges"), where, required=False)
    if v is not None:
        return voltage_ranges(v, "sampling_configs['driver']['instruments_setup']['activation_voltage_ranges']",
                              where), "sampling_configs driver activation_voltage_ranges"
    lo, hi = raw.inputs.min(axis=0), raw.inputs.max(axis=0)
    worst = float(np.max(np.abs(raw.inputs)))
    if worst > MAX_PLAUSIBLE_V:
        raise BrainsPyError(f"{where}: inputs reach {worst:.4g}, far beyond any DNPU electrode range in volts: "
                            "the inputs are not in V (mV?)")
    return np.stack([lo, np.maximum(hi, lo + 1e-9)], axis=1), "the data's min/max (the file records no ranges)"


def _check_units(raw: _Raw, cfg: ImportConfig, ranges: np.ndarray, where: str) -> None:
    in_units, out_units = raw.header_units
    bad_in = sorted({u for u in in_units if u is not None and u != "V"})
    if bad_in:
        raise BrainsPyError(f"{where}: input columns are in {bad_in}, expected V")
    want_out = "nA" if cfg.outputs == "nA" else None
    bad_out = sorted({u for u in out_units if u is not None and want_out is not None and u != want_out})
    if bad_out:
        raise BrainsPyError(f"{where}: the output column is in {bad_out}, expected nA "
                            "(use --outputs raw with --amplification for DAQ readings)")
    for name, a in (("inputs", raw.inputs), ("outputs", raw.outputs)):
        if not np.all(np.isfinite(a)):
            row = int(np.argwhere(~np.isfinite(a))[0, 0])
            raise BrainsPyError(f"{where}: {name} has NaN/inf at row {row}")
    out = (raw.inputs < ranges[:, 0] - RANGE_TOL_V) | (raw.inputs > ranges[:, 1] + RANGE_TOL_V)
    if np.any(out):
        row, col = (int(x) for x in np.argwhere(out)[0])
        raise BrainsPyError(f"{where}: row {row} has {ELECTRODE_NAMES[col]} = {raw.inputs[row, col]:.4g}, outside "
                            f"the recorded range {ranges[col].tolist()} V (inputs in another unit, or wrong ranges?)")


def import_file(path: str | Path, out: str | Path, cfg: ImportConfig = ImportConfig()) -> dict[str, Any]:
    """Import a brains-py IO.dat or postprocessed_data.npz into the dataset folder `out`; returns
    the dataset metadata. BrainsPyError names what does not fit."""
    path, out = Path(path), Path(out)
    where = str(path)
    if cfg.outputs not in ("nA", "raw"):
        raise BrainsPyError(f"--outputs must be nA or raw, got {cfg.outputs!r}")
    if cfg.chunk <= 0:
        raise BrainsPyError(f"--chunk must be positive, got {cfg.chunk}")
    if not path.is_file():
        raise BrainsPyError(f"{where}: no such file")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out")
    raw = _read_npz(path, cfg) if path.suffix.lower() == ".npz" else _read_iodat(path, cfg)
    if raw.inputs.shape[1] != N_ELECTRODES:
        raise BrainsPyError(f"{where}: {raw.inputs.shape[1]} input columns, but a DNPU here has {N_ELECTRODES} "
                            f"activation electrodes ({', '.join(ELECTRODE_NAMES)}); this dataset is for another device")
    if raw.outputs.shape[1] != 1:
        raise BrainsPyError(f"{where}: {raw.outputs.shape[1]} output columns; one readout is supported")
    amp, amp_from = _amplification(raw, cfg, where)
    if amp == 0.0:
        raise BrainsPyError(f"{where}: the amplification is 0")
    ranges, ranges_from = _ranges(raw, where)
    _check_units(raw, cfg, ranges, where)
    clip = clipping_range(dig(raw.configs, ("electrode_info", "output_electrodes", "clipping_value"), where,
                              required=False), "sampling_configs electrode_info clipping_value", where)
    factor = 1.0 if cfg.outputs == "nA" else amp
    current = raw.outputs[:, 0] * factor
    n = len(current)
    meta: dict[str, Any] = {
        "format": store.FORMAT,
        "units": {"voltage": "V", "current": "nA"},
        "ranges_v": ranges.tolist(),
        "board": {"imported_from": "brains-py", **({"device": cfg.device} if cfg.device else {})},
        "amplification": amp,
        "outputs_stored_as": cfg.outputs,
        "outputs_to_na": factor,
        "clipping_na": list(clip) if clip else None,
        "imported": {
            "from": "brains-py", "kind": raw.kind, "file": path.name, "path": str(path.resolve()),
            "sha256": sha256_of(path), "samples": n,
            "current_na": (f"output column x {factor:g} (" + ("stored in nA: brains-py's driver already multiplied "
                           f"the DAQ readings by the amplification {amp:g}" if cfg.outputs == "nA" else
                           f"raw DAQ readings times the amplification {amp:g}") + ")"),
            "amplification_from": amp_from, "ranges_from": ranges_from, "n_inputs_from": raw.n_inputs_from,
            "outside_clipping": int(np.sum((current < clip[0]) | (current > clip[1]))) if clip else None,
            "configs_file": raw.configs_file, "sampling_configs": raw.configs,
        },
        "time_s": "not recorded by brains-py: the chunks hold zeros",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    store.write_meta(out, meta)
    for k, a in enumerate(range(0, n, cfg.chunk)):
        b = min(n, a + cfg.chunk)
        store.write_chunk(out, k, {"volts": raw.inputs[a:b], "current_na": current[a:b],
                                   "index": np.arange(a, b), "ref_id": np.full(b - a, -1),
                                   "time_s": np.zeros(b - a)})
    meta["complete"] = True
    store.write_meta(out, meta)
    return meta


# ---------------------------------------------------------------------------------------------
# the CLI: python -m host.sample import-brainspy

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m host.sample import-brainspy",
                                description="Import brains-py sampling data (IO.dat or postprocessed_data.npz) "
                                            "as a dataset folder.",
                                epilog="The dataset metadata records the amplification, the factor applied to "
                                       "the outputs (outputs_to_na), the clipping and the source file. See "
                                       "docs/brainspy.md.")
    p.add_argument("file", type=Path, help="brains-py IO.dat (text) or postprocessed_data.npz")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--inputs", type=int, default=None,
                   help=f"input (electrode voltage) columns, overriding the file (must be {N_ELECTRODES})")
    p.add_argument("--amplification", type=float, default=None,
                   help="the setup's amplification, overriding what the file says (required if it says nothing)")
    p.add_argument("--outputs", choices=("nA", "raw"), default="nA",
                   help="what the output column holds: nA (brains-py's driver has applied the amplification; "
                        "default) or raw DAQ readings (multiplied by the amplification)")
    p.add_argument("--configs", type=Path, default=None,
                   help="IO.dat: the sampler configs JSON (default: sampler_configs.json beside it, if present)")
    p.add_argument("--device", default=None, help="a label for the device (kept as board.device)")
    p.add_argument("--chunk", type=int, default=65536, help="samples per chunk file (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the dataset metadata as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = ImportConfig(inputs=args.inputs, amplification=args.amplification, outputs=args.outputs,
                       configs=args.configs, device=args.device, chunk=args.chunk)
    try:
        meta = import_file(args.file, args.out, cfg)
    except (BrainsPyError, store.DatasetError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    imp = meta["imported"]
    print(json.dumps(meta) if args.json else
          f"imported {imp['samples']} samples from {args.file} into {args.out}\n"
          f"  current_na = {imp['current_na']}\n"
          f"  amplification {meta['amplification']:g} (from {imp['amplification_from']}), clipping "
          + (f"{meta['clipping_na']} nA\n" if meta["clipping_na"] else "not recorded\n") +
          f"  electrode ranges from {imp['ranges_from']}")
    return 0
