"""Fit the surrogate network (N_ELECTRODES -> layers x hidden ReLU -> 1) to a measured dataset.

Inputs are scaled to [-1, 1] over the electrode ranges and outputs standardised for training;
both maps are folded into the first and last Gemm at export, so the ONNX file maps volts to nA.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.electrodes import N_ELECTRODES
from host.surrogate.config import TrainConfig, config_json  # noqa: F401 (re-exported)
from host.surrogate.torch_model import build_mlp, pick_device


@dataclass
class TrainResult:
    model: nn.Sequential             # in volts -> nA (normalisation folded in), float32, cpu, eval
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = ""
    wall_s: float = 0.0
    device: str = "cpu"

    HISTORY = ("epoch", "train_rmse_na", "val_rmse_na", "lr")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The result as plain arrays (weights, biases, history, outcome): what a farm worker
        sends back and a job stores on disk (`np.savez`, no pickle)."""
        lin = [m for m in self.model if isinstance(m, nn.Linear)]
        d = {f"weight{i}": m.weight.detach().cpu().numpy() for i, m in enumerate(lin)}
        d.update({f"bias{i}": m.bias.detach().cpu().numpy() for i, m in enumerate(lin)})
        d.update({f"history_{k}": np.array([h[k] for h in self.history], dtype=np.float64) for k in self.HISTORY})
        d.update(best_epoch=np.array(self.best_epoch), stopped=np.array(self.stopped),
                 wall_s=np.array(self.wall_s), device=np.array(self.device))
        return d

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> "TrainResult":
        n_lin = sum(1 for k in d if k.startswith("weight"))
        ws = [np.asarray(d[f"weight{i}"]) for i in range(n_lin)]
        model = build_mlp(ws[0].shape[1], ws[0].shape[0], n_lin - 1)
        with torch.no_grad():
            for i, m in enumerate(m for m in model if isinstance(m, nn.Linear)):
                m.weight.copy_(torch.from_numpy(np.array(ws[i], dtype=np.float32)))
                m.bias.copy_(torch.from_numpy(np.array(d[f"bias{i}"], dtype=np.float32)))
        cols = [np.asarray(d[f"history_{k}"]) for k in cls.HISTORY]
        hist = [{k: (int(v[j]) if k == "epoch" else float(v[j])) for k, v in zip(cls.HISTORY, cols)}
                for j in range(len(cols[0]))]
        return cls(model=model.eval(), history=hist, best_epoch=int(d["best_epoch"]), stopped=str(d["stopped"]),
                   wall_s=float(d["wall_s"]), device=str(d["device"]))


def fit(volts: np.ndarray, current: np.ndarray, ranges: np.ndarray, cfg: TrainConfig,
        progress: bool = True) -> TrainResult:
    """Train on (volts [n, N_ELECTRODES], current nA [n]) with a validation split and early stopping."""
    if volts.ndim != 2 or volts.shape[1] != N_ELECTRODES or current.shape != (volts.shape[0],):
        raise ValueError(f"expected volts [n, {N_ELECTRODES}] and current [n], got {volts.shape} and {current.shape}")
    if volts.shape[0] < 20:
        raise ValueError(f"need at least 20 samples to train, got {volts.shape[0]}")
    torch.manual_seed(cfg.seed)
    dev = pick_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(volts.shape[0])
    n_val = max(1, int(round(cfg.val_fraction * len(perm))))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]

    lo, hi = ranges[:, 0], ranges[:, 1]
    x_mid, x_half = (hi + lo) / 2, (hi - lo) / 2
    y_mean, y_std = float(current[tr_idx].mean()), float(current[tr_idx].std() or 1.0)

    def prep(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(((volts[idx] - x_mid) / x_half).astype(np.float32), device=dev)
        y = torch.as_tensor(((current[idx] - y_mean) / y_std).astype(np.float32), device=dev)
        return x, y

    xt, yt = prep(tr_idx)
    xv, yv = prep(val_idx)
    net = build_mlp(N_ELECTRODES, cfg.hidden, cfg.layers).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=cfg.lr_patience, min_lr=cfg.min_lr)
    best = (math.inf, 0, [p.detach().clone() for p in net.parameters()])
    hist: list[dict[str, float]] = []
    t0 = time.monotonic()
    stopped = "max_epochs"
    from tqdm import trange
    bar = trange(cfg.max_epochs, desc="training", unit="epoch", disable=not progress, dynamic_ncols=True)
    try:
        for epoch in bar:
            net.train()
            order = torch.randperm(xt.shape[0], device=dev)
            tot = 0.0
            for a in range(0, xt.shape[0], cfg.batch):
                b = order[a:a + cfg.batch]
                loss = torch.mean((net(xt[b])[:, 0] - yt[b]) ** 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * b.numel()
            train_rmse = math.sqrt(tot / xt.shape[0]) * y_std
            val_rmse = _rmse(net, xv, yv) * y_std
            sched.step(val_rmse)
            lr = opt.param_groups[0]["lr"]
            hist.append({"epoch": epoch + 1, "train_rmse_na": train_rmse, "val_rmse_na": val_rmse, "lr": lr})
            bar.set_postfix(val_nA=f"{val_rmse:.3f}", lr=f"{lr:.1e}")
            if val_rmse < best[0]:
                best = (val_rmse, epoch + 1, [p.detach().clone() for p in net.parameters()])
            elif epoch + 1 - best[1] >= cfg.patience:
                stopped = "early_stopping"
                break
            if lr <= cfg.min_lr * 1.0001 and epoch + 1 - best[1] >= cfg.lr_patience:
                stopped = "min_lr"
                break
            if time.monotonic() - t0 > cfg.max_wall_s:
                stopped = "max_wall_s"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        bar.close()
    with torch.no_grad():
        for p, q in zip(net.parameters(), best[2]):
            p.copy_(q)
    model = fold_normalisation(net.cpu(), x_mid, x_half, y_mean, y_std)
    return TrainResult(model=model, history=hist, best_epoch=best[1], stopped=stopped,
                       wall_s=time.monotonic() - t0, device=str(dev))


def _rmse(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    se = 0.0
    with torch.inference_mode():
        for a in range(0, x.shape[0], 65536):
            se += float(torch.sum((net(x[a:a + 65536])[:, 0] - y[a:a + 65536]) ** 2))
    return math.sqrt(se / max(1, x.shape[0]))


def fold_normalisation(net: nn.Sequential, x_mid: np.ndarray, x_half: np.ndarray,
                       y_mean: float, y_std: float) -> nn.Sequential:
    """Return a copy whose first layer takes volts and whose last layer gives nA."""
    lin = [m for m in net if isinstance(m, nn.Linear)]
    out = build_mlp(lin[0].in_features, lin[0].out_features, len(lin) - 1)
    out.load_state_dict(net.state_dict())
    first, last = [m for m in out if isinstance(m, nn.Linear)][0], [m for m in out if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        s = torch.as_tensor(1.0 / x_half, dtype=torch.float64)
        m = torch.as_tensor(x_mid, dtype=torch.float64)
        w = first.weight.double()
        first.bias.copy_((first.bias.double() - w @ (m * s)).float())
        first.weight.copy_((w * s).float())
        last.weight.mul_(y_std)
        last.bias.copy_(last.bias * y_std + y_mean)
    return out.eval()
