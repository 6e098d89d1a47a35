"""A logistic output neuron fitted after training, on outputs measured on a board or predicted."""
from __future__ import annotations

import torch


@torch.no_grad()
def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """A logistic neuron on one feature per trial: p = sigmoid(w * (x - mean)/std + b), fitted by Newton.

    x [T, B] (e.g. currents measured on a board), y [T|1, B] in {0, 1}. Returns (w, b) [T] on the
    per-trial standardised feature together with the standardisation: call ``logistic_logits``.
    A small L2 penalty on w keeps separable data from running to infinite weights.
    """
    xs = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, unbiased=False, keepdim=True) + 1e-9)
    y = y.expand_as(x).to(x.dtype)
    w = torch.zeros(x.shape[0], dtype=x.dtype)
    b = torch.zeros(x.shape[0], dtype=x.dtype)
    for _ in range(iters):
        p = torch.sigmoid(w[:, None] * xs + b[:, None])
        r = p - y
        gw = (r * xs).mean(dim=1) + l2 * w
        gb = r.mean(dim=1)
        s = p * (1 - p)
        hww = (s * xs * xs).mean(dim=1) + l2
        hwb = (s * xs).mean(dim=1)
        hbb = s.mean(dim=1) + 1e-9
        det = hww * hbb - hwb * hwb
        dw = (hbb * gw - hwb * gb) / det
        db = (hww * gb - hwb * gw) / det
        dw, db = dw.clamp(-5.0, 5.0), db.clamp(-5.0, 5.0)   # damped Newton: no overshoot from w = 0
        w, b = w - dw, b - db
        if float(torch.max(torch.abs(dw)).item()) < 1e-7 * (1 + float(torch.max(torch.abs(w)).item())):
            break
    return w, b


def logistic_logits(x: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits of new data x [T, B'] under a neuron fitted by ``fit_logistic`` on ref [T, B]."""
    m = ref.mean(dim=1, keepdim=True)
    s = ref.std(dim=1, unbiased=False, keepdim=True) + 1e-9
    return w[:, None] * (x - m) / s + b[:, None]


@torch.no_grad()
def fitted_correct(fit: torch.Tensor, y_fit: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1.0 where the neuron fitted on `fit` [T, B] (labels y_fit [T|1, B]) classifies x [T, B'] as
    y [T|1, B'] says, else 0.0: [T, B'] in the dtype of x. Pass several measured passes side by side
    (concatenated along B) to fit one neuron to all of them and score each."""
    w, b = fit_logistic(fit, y_fit)
    lg = logistic_logits(x, fit, w, b)
    return ((lg > 0) == (y.expand_as(x) > 0.5)).to(x.dtype)
