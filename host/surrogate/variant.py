"""Another chip from a surrogate: wider electrode ranges and another amplification, same physics.

`python -m host.surrogate variant IN.onnx --widen 1.5 --amplification 28.5 --out OUT.onnx`
writes the surrogate of a chip that behaves like IN's over ranges `widen` times as wide (each
about its centre) and whose network output is in other units (nA = output x amplification, as
every reader of the format applies). The currents in nA are unchanged at corresponding points:

    f'(v) = f(c + (v - c) / w)           c: range centres, w: the widening per electrode

which is exact in the first layer (W1' = W1 / w, b1' = b1 + W1 (c - c / w)); the last layer is
scaled by a / a' so that output' x a' = output x a. Such a file is how the project tests that
nothing quietly assumes its own virtual device's ranges and amplification (a digital twin of it
behaves like a chip the experiments were never tuned on).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES
from host.surrogate import onnx_file


def widened(ranges_v: np.ndarray, widen: np.ndarray) -> np.ndarray:
    """Ranges [E, 2] scaled by `widen` [E] about their centres."""
    r = np.asarray(ranges_v, dtype=np.float64)
    c, h = r.mean(axis=1), (r[:, 1] - r[:, 0]) / 2
    return np.stack([c - widen * h, c + widen * h], axis=1)


def make_variant(src: str | Path, out: str | Path, widen: float | list[float] = 1.0,
                 amplification: float | None = None) -> dict[str, Any]:
    """Write the variant of surrogate `src` to `out`; returns its new metadata."""
    sf = onnx_file.read(src)
    w = np.broadcast_to(np.asarray(widen, dtype=np.float64), (N_ELECTRODES,)).copy()
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"--widen must be positive, got {widen}")
    amp = sf.amplification if amplification is None else float(amplification)
    if not np.isfinite(amp) or amp == 0:
        raise ValueError(f"--amplification must be a finite non-zero number, got {amplification}")
    ranges = sf.ranges_v
    c = ranges.mean(axis=1)
    weights = [x.astype(np.float64) for x in sf.weights]
    biases = [x.astype(np.float64) for x in sf.biases]
    biases[0] = biases[0] + weights[0] @ (c - c / w)
    weights[0] = weights[0] / w[None, :]
    k = sf.amplification / amp
    weights[-1], biases[-1] = weights[-1] * k, biases[-1] * k
    meta = {key: val for key, val in sf.metadata.items() if key != "format"}
    meta["electrode_ranges_v"] = widened(ranges, w).tolist()
    meta["amplification"] = amp
    meta["source"] = {"variant_of": {"file": Path(src).name,
                                     "sha256": hashlib.sha256(Path(src).read_bytes()).hexdigest(),
                                     "source": sf.metadata.get("source")},
                      "widen": w.tolist(), "amplification_from": sf.amplification}
    onnx_file.write(out, weights, biases, meta, producer="dnpu-toolkit variant")
    return meta
