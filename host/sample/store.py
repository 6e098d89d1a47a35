"""Measured-device datasets: a folder of chunk files plus one JSON metadata file.

Layout of a dataset folder::

    DATA/
      meta.json            what was measured, how, on which board (written first, updated per chunk)
      chunk-000000.npz     arrays of one chunk (written atomically: tmp file, then rename)
      chunk-000001.npz
      ...

Each chunk holds, for m samples in measurement order:

    volts       float32 [m, E]  electrode voltages in V, in electrode order (E = N_ELECTRODES)
    current_na  float32 [m]     readout current in nA
    index       int64   [m]     position of the sample in the sampling plan (reference points: -1)
    ref_id      int16   [m]     which reference point (-1 for plan samples)
    time_s      float64 [m]     seconds since the run started

Chunks are plain `.npz` files loaded with ``allow_pickle=False``: data only, never code.
A crash, a Ctrl-C or a lost cable loses at most the chunk in flight; ``--resume`` continues
from the first chunk that is not on disk.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.electrodes import ELECTRODE_NAMES, N_ELECTRODES

FORMAT = "dnpu-dataset/1"
CHUNK_RE = re.compile(r"^chunk-(\d{6})\.npz$")
CHUNK_FIELDS = {
    "volts": (np.float32, 2),
    "current_na": (np.float32, 1),
    "index": (np.int64, 1),
    "ref_id": (np.int16, 1),
    "time_s": (np.float64, 1),
}


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used as it is; the message says why."""


@dataclass
class Samples:
    """Plan samples (reference points excluded) of a dataset, in measurement order."""

    volts: np.ndarray        # float32 [n, N_ELECTRODES]
    current_na: np.ndarray   # float32 [n]
    index: np.ndarray        # int64 [n]

    def __len__(self) -> int:
        return int(self.current_na.shape[0])


@dataclass
class References:
    """Repeated reference points, measured interleaved with the plan."""

    ref_id: np.ndarray       # int16 [m]
    volts: np.ndarray        # float32 [m, N_ELECTRODES]
    current_na: np.ndarray   # float32 [m]
    time_s: np.ndarray       # float64 [m]

    def noise_floor_na(self) -> float:
        """RMS deviation of repeats from their local mean: the noise floor of the measurement.

        Each visit measures every reference point a few times in a row; the spread within a
        visit is the noise, the change of visit means over time is drift (see `drift_na`).
        """
        if self.ref_id.size == 0:
            return float("nan")
        resid = []
        for visit in self._visits():
            for rid in np.unique(self.ref_id[visit]):
                vals = self.current_na[visit][self.ref_id[visit] == rid].astype(np.float64)
                if vals.size >= 2:
                    resid.append((vals - vals.mean()) * np.sqrt(vals.size / (vals.size - 1)))
        if not resid:
            return float("nan")
        r = np.concatenate(resid)
        return float(np.sqrt(np.mean(r * r)))

    def drift_na(self) -> float:
        """Largest change of a reference point's visit mean over the run, in nA."""
        worst = 0.0
        for rid in np.unique(self.ref_id):
            means = [self.current_na[v][self.ref_id[v] == rid].mean() for v in self._visits()
                     if np.any(self.ref_id[v] == rid)]
            if len(means) >= 2:
                worst = max(worst, float(np.max(means) - np.min(means)))
        return worst

    def _visits(self) -> list[np.ndarray]:
        """Boolean masks of consecutive runs of reference rows (one per visit)."""
        if self.time_s.size == 0:
            return []
        # A visit is a block of reference rows measured back to back, its reference ids in
        # ascending order: split where time jumps or goes back (chunks measured at the same time
        # on several boards) and where the ids start again.
        gaps = np.diff(self.time_s)
        restart = np.diff(self.ref_id.astype(np.int64)) < 0
        cut = np.flatnonzero((gaps > 10 * max(np.median(gaps), 1e-9)) | (gaps < 0) | restart) + 1
        bounds = np.concatenate([[0], cut, [self.time_s.size]])
        masks = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            m = np.zeros(self.time_s.size, dtype=bool)
            m[a:b] = True
            masks.append(m)
        return masks


@dataclass
class Dataset:
    """A dataset folder opened for reading."""

    path: Path
    meta: dict[str, Any]
    samples: Samples
    references: References = field(repr=False)

    @property
    def ranges(self) -> np.ndarray:
        """Electrode ranges used for sampling, float64 [N_ELECTRODES, 2] (V)."""
        return np.asarray(self.meta["ranges_v"], dtype=np.float64)


def chunk_path(folder: Path, k: int) -> Path:
    return folder / f"chunk-{k:06d}.npz"


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "meta.json"
    if not Path(folder).is_dir():
        raise DatasetError(f"{folder}: not a dataset folder (no such directory)")
    if not path.is_file():
        raise DatasetError(f"{folder}: not a dataset folder (no meta.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    atomic_write_bytes(Path(folder) / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())


def write_chunk(folder: Path, k: int, arrays: dict[str, np.ndarray]) -> None:
    """Write chunk k atomically (a reader never sees half a chunk)."""
    _validate_chunk(arrays, f"chunk {k}")
    final = chunk_path(Path(folder), k)
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{name: np.asarray(arrays[name], dtype=dt) for name, (dt, _) in CHUNK_FIELDS.items()})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def chunk_indices(folder: Path) -> list[int]:
    """Indices of the complete chunks on disk, sorted."""
    ks = []
    for p in Path(folder).iterdir():
        m = CHUNK_RE.match(p.name)
        if m:
            ks.append(int(m.group(1)))
    return sorted(ks)


def iter_chunks(folder: Path) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    for k in chunk_indices(folder):
        yield k, read_chunk(chunk_path(Path(folder), k))


def read_chunk(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path}: unreadable chunk ({e})") from None
    _validate_chunk(arrays, str(path))
    return arrays


def load(folder: str | os.PathLike) -> Dataset:
    """Open a dataset folder, checking every chunk (columns, dtypes, NaNs, ranges)."""
    folder = Path(folder)
    meta = read_meta(folder)
    ranges = np.asarray(meta.get("ranges_v"), dtype=np.float64)
    if ranges.shape != (N_ELECTRODES, 2):
        raise DatasetError(f"{folder}/meta.json: ranges_v must be {N_ELECTRODES} [lo, hi] pairs, got shape {ranges.shape}")
    if meta.get("units", {}).get("current") != "nA" or meta.get("units", {}).get("voltage") != "V":
        raise DatasetError(f"{folder}/meta.json: units must be {{'voltage': 'V', 'current': 'nA'}}, "
                           f"got {meta.get('units')!r}")
    parts = [a for _, a in iter_chunks(folder)]
    if not parts:
        raise DatasetError(f"{folder}: no chunks measured yet")
    cat = {name: np.concatenate([p[name] for p in parts]) for name in CHUNK_FIELDS}
    plan = cat["ref_id"] < 0
    v = cat["volts"][plan]
    tol = 1e-3
    out = (v < ranges[:, 0] - tol) | (v > ranges[:, 1] + tol)
    if np.any(out):
        row, col = np.argwhere(out)[0]
        raise DatasetError(f"{folder}: sample {int(cat['index'][plan][row])} has {ELECTRODE_NAMES[col]} = {v[row, col]:.4g} V, "
                           f"outside the recorded range {ranges[col].tolist()} (mixed units or wrong metadata?)")
    samples = Samples(volts=v, current_na=cat["current_na"][plan], index=cat["index"][plan])
    refs = References(ref_id=cat["ref_id"][~plan], volts=cat["volts"][~plan],
                      current_na=cat["current_na"][~plan], time_s=cat["time_s"][~plan])
    return Dataset(path=folder, meta=meta, samples=samples, references=refs)


def _validate_chunk(arrays: dict[str, np.ndarray], where: str) -> None:
    missing = [n for n in CHUNK_FIELDS if n not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing columns {missing} (has {sorted(arrays)})")
    n = None
    for name, (dt, ndim) in CHUNK_FIELDS.items():
        a = np.asarray(arrays[name])
        if a.ndim != ndim or (name == "volts" and a.shape[1:] != (N_ELECTRODES,)):
            raise DatasetError(f"{where}: column {name!r} has shape {a.shape}, expected "
                               f"{f'[m, {N_ELECTRODES}]' if name == 'volts' else '[m]'}")
        if not (np.issubdtype(a.dtype, np.number)):
            raise DatasetError(f"{where}: column {name!r} has dtype {a.dtype}, expected {np.dtype(dt)}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise DatasetError(f"{where}: column {name!r} has {a.shape[0]} rows, others {n}")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad = int(np.argwhere(~np.isfinite(a.reshape(a.shape[0], -1)))[0, 0])
            raise DatasetError(f"{where}: column {name!r} has NaN/inf at row {bad}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
