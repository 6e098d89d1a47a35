"""The data a deployed network is scored on: the test split its metadata names, or an .npz file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from host.deploy.errors import DeployError


@dataclass(frozen=True)
class LabelledData:
    x: np.ndarray           # float32 [n, n_inputs]
    labels: np.ndarray      # int64 [n]
    name: str


def _check_data(x: Any, labels: Any, n_inputs: int, n_classes: int, name: str) -> LabelledData:
    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.dtype.kind == "u" and x.dtype.itemsize == 1 and x.ndim == 3 and x.shape[1] * x.shape[2] == n_inputs:
        from host.mnist_data import to_inputs  # uint8 images: the MNIST scaling
        x = to_inputs(x)
    if x.dtype.kind != "f":
        raise DeployError(f"{name}: inputs must be floating point (or uint8 images), got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] != n_inputs:
        raise DeployError(f"{name}: inputs must have shape [n, {n_inputs}] for this model, got {x.shape}")
    if len(x) == 0:
        raise DeployError(f"{name}: holds no samples")
    if not np.all(np.isfinite(x)):
        raise DeployError(f"{name}: inputs hold NaN or inf")
    if labels.dtype.kind not in "iu":
        raise DeployError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (len(x),):
        raise DeployError(f"{name}: labels must have shape [{len(x)}], got {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DeployError(f"{name}: labels must lie in 0..{n_classes - 1} (the model's outputs)")
    return LabelledData(np.ascontiguousarray(x, dtype=np.float32), labels.astype(np.int64), name)


def load_data(spec: str, metadata: dict[str, Any], n_inputs: int, n_classes: int) -> LabelledData:
    """'test': the test split of the data set the model's metadata names ("mnist:test", ...);
    a path: an .npz with `x` float [n, n_inputs] (or `images` uint8 [n, 28, 28]) and `labels` int [n]."""
    if spec == "test":
        ds = str(metadata.get("dataset", ""))
        if not ds:
            raise DeployError("the model's metadata names no data set: pass --data PATH (.npz with x, labels)")
        if ds.startswith("mnist:"):
            from host.mnist_data import MnistError, load_mnist, to_inputs
            try:
                split = load_mnist().split(ds.split(":", 1)[1])
            except (MnistError, ValueError) as e:
                raise DeployError(str(e)) from None
            return _check_data(to_inputs(split.images), split.labels, n_inputs, n_classes, ds)
        spec = ds
    p = Path(spec)
    if not p.is_file():
        raise DeployError(f"--data {spec}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(z.files)
            key = "x" if "x" in files else "images" if "images" in files else None
            if key is None or "labels" not in files:
                raise DeployError(f"--data {spec}: expected arrays 'x' (or 'images') and 'labels', found {sorted(files)}")
            x, labels = z[key], z["labels"]
    except DeployError:
        raise
    except (OSError, ValueError) as e:
        raise DeployError(f"--data {spec}: not a readable .npz file ({e})") from None
    return _check_data(x, labels, n_inputs, n_classes, str(p))
