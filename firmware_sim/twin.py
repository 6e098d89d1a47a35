"""A digital twin: any surrogate ONNX file behind the simulated board's DAC/ADC.

`sim://?device=surrogate&model=FILE` puts `SurrogateDevice` on the board's analog side. The
file is read and evaluated by the C core (`core.load_surrogate`, no torch, no onnxruntime), so
its output is nA with the file's `dnpu.amplification` applied, as every reader of the format
returns it. Each sub-sample adds white Gaussian noise (RMS: the file's `dnpu.noise_floor_na`
unless overridden) and, optionally, a slow seeded drift; the sum is clipped to the TIA range,
and the `oversample` sub-samples of a row are averaged, as the board's ADC does.

The board adopts the file (firmware_sim.board.BoardConfig.for_device): its hard limits are the
file's `dnpu.electrode_ranges_v` unless `limits=` is given, and its TIA range, from which the
ADC's full scale follows, is the file's `dnpu.output_range_na` widened by TIA_MARGIN.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES
from core.io import load_surrogate
from core.surrogate import Surrogate
from core.surrogate_format import check
from firmware_sim import _physics

MODEL_NAME = "surrogate-twin"
#: the TIA range is the file's trained output range widened by this fraction of its span at each
#: end, so that what the surrogate was trained on (and the noise around it) is not clipped
TIA_MARGIN = 0.05
#: correlation time of the drift's random walk, in board time (sample periods x oversample)
DRIFT_TAU_S = 1.0
#: rows per noise chunk x oversample: bounds the sub-sample buffer of a large oversample
_SUBSAMPLE_CHUNK = 1 << 18
#: the source's entries that name where the file came from (kept in `describe`)
_SOURCE_KEYS = ("serial", "firmware", "model", "model_version", "seed", "n_sites", "train_data",
                "test_data", "train_samples", "test_samples")


class TwinFileError(ValueError):
    """The model file cannot be a twin; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TwinFile:
    """A surrogate file checked for the board: the evaluator and what the board adopts."""

    path: Path
    surrogate: Surrogate
    sha256: str
    electrode_ranges_v: tuple[tuple[float, float], ...]
    output_range_na: tuple[float, float]
    noise_floor_na: float
    source: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> "TwinFile":
        """TwinFileError for a missing file, one that is not a surrogate (the core's format
        check says why) or one made for another number of electrodes."""
        p = Path(path)
        try:                                   # a missing file, not ONNX, not a chain, not a surrogate
            s = load_surrogate(p)
            meta = check(s.metadata, str(p))
        except (OSError, ValueError) as e:
            raise TwinFileError(f"model={p}: {e}") from None
        if s.n_inputs != N_ELECTRODES or s.n_outputs != 1:
            raise TwinFileError(f"model={p}: the surrogate maps {s.n_inputs} inputs to {s.n_outputs} "
                                f"outputs; the board has {N_ELECTRODES} electrodes and one readout")
        ranges = tuple((float(lo), float(hi)) for lo, hi in meta["electrode_ranges_v"])
        out = meta["output_range_na"]
        floor = meta["noise_floor_na"]
        if not (isinstance(out, list) and len(out) == 2 and all(_finite(x) for x in out) and out[0] < out[1]):
            raise TwinFileError(f"model={p}: dnpu.output_range_na must be [lo, hi] with lo < hi, got {out!r}")
        if not (_finite(floor) and floor >= 0):
            raise TwinFileError(f"model={p}: dnpu.noise_floor_na must be a number >= 0, got {floor!r}")
        source = meta["source"] if isinstance(meta["source"], dict) else {"text": str(meta["source"])}
        return cls(p, s, hashlib.sha256(p.read_bytes()).hexdigest(), ranges,
                   (float(out[0]), float(out[1])), float(floor), source)

    @property
    def tia_range_na(self) -> tuple[float, float]:
        """The trained output range widened by TIA_MARGIN of its span at each end."""
        lo, hi = self.output_range_na
        pad = TIA_MARGIN * (hi - lo)
        return (lo - pad, hi + pad)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def source_summary(source: dict[str, Any]) -> dict[str, Any]:
    """Where the file came from, in brief: the scalar entries of `source` named in _SOURCE_KEYS,
    at any depth (the board serial and firmware, the device model and seed, the data sets)."""
    out: dict[str, Any] = {}
    for k, v in source.items():
        if isinstance(v, dict):
            sub = source_summary(v)
            if sub:
                out[k] = sub
        elif k in _SOURCE_KEYS and (v is None or isinstance(v, (str, int, float, bool))):
            out[k] = v
    return out


@dataclass
class SurrogateDevice:
    """An `AnalogDevice` that measures the surrogate in `file`: nA = clip(surrogate(volts) +
    drift + white noise) per sub-sample, averaged over `oversample` sub-samples.

    noise_na: white noise RMS per sub-sample; drift_na: stationary RMS of the drift, an
    Ornstein-Uhlenbeck walk with time constant DRIFT_TAU_S in board time (0: none). Both are
    drawn from `seed`: one seed, one sequence. `reset` returns the drift to 0; the noise goes on.
    """

    file: TwinFile
    seed: int
    noise_na: float
    drift_na: float = 0.0
    threads: int = 1                         # core threads per block (the board's worker runs one block at a time)
    _rng: np.random.Generator = field(init=False, repr=False)
    _drift: float = field(init=False, repr=False, default=0.0)

    def __post_init__(self) -> None:
        for name in ("noise_na", "drift_na"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        self._rng = np.random.default_rng([self.seed, 0x7417])

    @classmethod
    def from_file(cls, path: str | Path, seed: int = 0, noise_na: float | None = None,
                  drift_na: float = 0.0) -> "SurrogateDevice":
        """The twin of the file at `path`; noise_na None: the file's noise floor."""
        f = TwinFile.load(path)
        return cls(f, seed, f.noise_floor_na if noise_na is None else noise_na, drift_na)

    # ---- what the board adopts ---------------------------------------------------------
    @property
    def working_ranges_v(self) -> tuple[tuple[float, float], ...]:
        return self.file.electrode_ranges_v

    @property
    def tia_range_na(self) -> tuple[float, float]:
        return self.file.tia_range_na

    @property
    def describe(self) -> dict:
        f = self.file
        return {"model": MODEL_NAME, "file": f.path.name, "sha256": f.sha256, "seed": self.seed,
                "noise_na": self.noise_na, "drift_na": self.drift_na, "drift_tau_s": DRIFT_TAU_S,
                "output_range_na": list(f.output_range_na), "tia_range_na": list(f.tia_range_na),
                "amplification": f.surrogate.amplification, "source": source_summary(f.source)}

    # ---- the analog side ---------------------------------------------------------------
    def clean_na(self, volts: np.ndarray) -> np.ndarray:
        """The surrogate's nA for volts [n, 7] (no noise, no drift, no clipping), float64 [n]."""
        x = np.ascontiguousarray(volts, dtype=np.float32)
        return self.file.surrogate.evaluate(x, threads=self.threads).astype(np.float64)

    def convert(self, volts: np.ndarray, sample_period_s: float, oversample: int = 1) -> np.ndarray:
        v = np.asarray(volts)
        if v.ndim != 2 or v.shape[1] != N_ELECTRODES:
            raise ValueError(f"volts must be [n, {N_ELECTRODES}], got shape {v.shape}")
        if not (sample_period_s > 0 and oversample >= 1):
            raise ValueError(f"need sample_period_s > 0 and oversample >= 1, got {sample_period_s}, {oversample}")
        y = self.clean_na(v)
        lo, hi = self.tia_range_na
        if self.noise_na == 0.0 and self.drift_na == 0.0:
            return np.clip(y, lo, hi, out=y)
        rows = max(1, _SUBSAMPLE_CHUNK // oversample)
        for i in range(0, len(y), rows):
            part = y[i:i + rows]
            sub = np.repeat(part, oversample).reshape(len(part), oversample)
            if self.drift_na > 0.0:
                sub += self._drift_path(sub.size, sample_period_s).reshape(sub.shape)
            if self.noise_na > 0.0:
                sub += self.noise_na * self._rng.standard_normal(sub.shape)
            np.clip(sub, lo, hi, out=sub)
            part[:] = sub.mean(axis=1)
        return y

    def _drift_path(self, count: int, step_s: float) -> np.ndarray:
        """The next `count` values of the drift walk, one per sub-sample of `step_s`."""
        rho = math.exp(-step_s / DRIFT_TAU_S)
        kick = self.drift_na * math.sqrt(max(0.0, 1.0 - rho * rho))
        path = _physics.ar1(kick * self._rng.standard_normal(count), rho, self._drift)
        self._drift = float(path[-1])
        return path

    def reset(self) -> None:
        self._drift = 0.0
