"""Classification metrics shared by the experiments and deploy (numpy only, no torch)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def n_classes(n_outputs: int) -> int:
    """A network with one output is a binary classifier (class 1 where the output, a logit, is > 0)."""
    return 2 if n_outputs == 1 else n_outputs


def predict(logits: np.ndarray) -> np.ndarray:
    """Class per sample: argmax of the outputs, or output > 0 for a single-output network."""
    logits = np.asarray(logits)
    return (logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else logits.argmax(1)


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """[k, k] counts, rows the true class, columns the predicted one."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(pred)), 1)
    return cm


def accuracy(cm: np.ndarray) -> float:
    """The fraction on the diagonal of a confusion matrix."""
    return float(np.trace(cm) / max(1, int(cm.sum())))


def summarise(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, confusion matrix and sample count of a classifier's outputs."""
    pred = predict(logits)
    cm = confusion_matrix(pred, labels, n_classes(logits.shape[1]))
    return {"accuracy": float((pred == labels).mean()), "confusion_matrix": cm.tolist(), "n_samples": int(len(labels))}


def format_confusion(cm: Sequence[Sequence[int]]) -> str:
    """A confusion matrix as an aligned text table."""
    cm = np.asarray(cm)
    w = max(5, len(str(cm.max())) + 1)
    head = "true\\pred" + "".join(f"{j:>{w}}" for j in range(cm.shape[1]))
    rows = [f"{i:>9}" + "".join(f"{v:>{w}}" for v in row) for i, row in enumerate(cm)]
    return "\n".join([head] + rows)
