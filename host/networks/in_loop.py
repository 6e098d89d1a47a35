"""Hardware-in-the-loop training: the forward pass on the board, the backward pass through the surrogate.

Off-chip training leaves a gap between what the surrogate predicts and what the device does.
Physics-aware training closes it: every node's output comes from the device itself, and the
gradient of the loss with respect to a node's electrode voltages is the surrogate's input
Jacobian evaluated at the voltages the board actually applied (its DAC codes, not the float
the host asked for), so the loss is the device's loss and only the direction of the step comes
from the model.

    loop = BoardLoop(session.measure, sur.model, applied=board.codes_to_volts ∘ volts_to_codes)
    with on_board(net, loop):          # every DNPUNodes of `net` now measures on the board
        out = net(x)                   # [T, B] nA, measured, layer by layer, all trials at once
        loss(out).backward()           # d loss / d controls through the surrogate's Jacobian

``on_board`` swaps each node's surrogate for a ``BoardSurrogate`` (and switches the surrogate's
training noise off: the board brings its own) and restores both on exit. On a board of several
chips, ``NodeLoops`` gives every device a loop of its own (its measurements on that device, its
gradients through that chip's surrogate) and every node measures on its own device. Everything measured
inside the loop is counted in ``loop.account`` (points, board seconds, calls) and, with
``record=True``, kept as (volts, nA) pairs for the twin to learn from (``fine_tune_twin``).

The optimiser's steps are kept inside the electrodes' ranges and the board's limits by
``clip_to_limits``, which counts every clipped value: a step is clipped with a warning, never sent.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from core.electrodes import N_ELECTRODES

Measure = Callable[[np.ndarray], np.ndarray]


@dataclass
class BoardAccount:
    """What a run cost on the board: points measured, seconds inside the board calls, calls; and,
    from its creation on, the wall seconds and the host's share of them (wall less board)."""

    points: int = 0
    board_s: float = 0.0
    calls: int = 0
    started: float = field(default_factory=time.perf_counter, repr=False)

    def to_json(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        return {"points": self.points, "board_s": self.board_s, "calls": self.calls, "wall_s": wall,
                "host_s": wall - self.board_s}


@dataclass
class BoardLoop:
    """The board side of in-the-loop training.

    measure: volts [n, 7] (float64) -> nA [n], the caller's safe board access (limit checks,
    0 V on failure: host.experiments.board_session.BoardSession.measure).
    gradient_model: the surrogate whose input Jacobian drives the backward pass: a
    host.networks.core_surrogate.CoreSurrogate (fused core pass) or any torch module volts [n, 7] -> nA [n, 1].
    applied: volts -> the volts the board's DACs really produce (code quantisation); None: as asked.
    record: keep every (applied volts, nA) pair measured (``pairs``), for ``fine_tune_twin``.
    """

    measure: Measure
    gradient_model: nn.Module
    applied: Callable[[np.ndarray], np.ndarray] | None = None
    record: bool = False
    threads: int = 1
    account: BoardAccount = field(default_factory=BoardAccount)
    _volts: list[np.ndarray] = field(default_factory=list, repr=False)
    _currents: list[np.ndarray] = field(default_factory=list, repr=False)

    def run(self, volts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Measure volts [n, 7] on the board: (nA [n], the applied volts [n, 7]); counted (and recorded)."""
        v = np.ascontiguousarray(volts, dtype=np.float64).reshape(-1, N_ELECTRODES)
        t0 = time.perf_counter()
        try:
            y = np.asarray(self.measure(v), dtype=np.float64).reshape(-1)
        finally:
            self.account.board_s += time.perf_counter() - t0
            self.account.calls += 1
        if y.shape[0] != v.shape[0]:
            raise ValueError(f"the board returned {y.shape[0]} currents for {v.shape[0]} voltage rows")
        self.account.points += len(v)
        seen = v if self.applied is None else np.asarray(self.applied(v), dtype=np.float64).reshape(v.shape)
        if self.record:
            self._volts.append(seen.astype(np.float32))
            self._currents.append(y.astype(np.float32))
        return y, seen

    def jacobian(self, volts: np.ndarray) -> np.ndarray:
        """d nA / d volts [n, 7] of the gradient model at volts [n, 7] (float32)."""
        x = np.ascontiguousarray(volts, dtype=np.float32)
        core = getattr(self.gradient_model, "core", None)
        if core is not None:
            return np.asarray(core.value_and_grad(x, threads=self.threads)[1], dtype=np.float32)
        v = torch.from_numpy(x).requires_grad_(True)
        with torch.enable_grad():
            out = self.gradient_model(v).sum()
            (g,) = torch.autograd.grad(out, v)
        return g.detach().numpy().astype(np.float32)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every recorded (applied volts [n, 7], nA [n]) pair so far."""
        if not self._volts:
            return np.zeros((0, N_ELECTRODES), np.float32), np.zeros(0, np.float32)
        return np.concatenate(self._volts), np.concatenate(self._currents)


@dataclass
class NodeLoops:
    """In-the-loop training on a board of several devices: ``loops[d]`` measures on device d and
    takes its gradients from d's chip's surrogate (every loop shares one account); node k of DNPU
    layer l runs on device ``node_devices[l][k]``. Recording pairs for a twin needs one chip."""

    loops: dict[int, BoardLoop]
    node_devices: list[list[int]]

    def __post_init__(self) -> None:
        missing = sorted({d for layer in self.node_devices for d in layer} - set(self.loops))
        if missing:
            raise ValueError(f"nodes on devices {missing} that have no loop")

    @property
    def account(self) -> BoardAccount:
        return next(iter(self.loops.values())).account


class _MeasuredForward(torch.autograd.Function):
    """Forward: the board's currents. Backward: the surrogate's Jacobian at the applied volts."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, loop: BoardLoop) -> torch.Tensor:  # type: ignore[override]
        y, seen = loop.run(v.detach().to(torch.float64).cpu().numpy())
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(torch.from_numpy(loop.jacobian(seen)).to(v.device))
        ctx.in_dtype = v.dtype
        return torch.from_numpy(y.astype(np.float32)).to(v.device).unsqueeze(1)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (g,) = ctx.saved_tensors
        return (grad_out.to(g.dtype) * g).to(ctx.in_dtype), None


class BoardSurrogate(nn.Module):
    """A node's surrogate replaced by the board: volts [n, 7] -> measured nA [n, 1], differentiable."""

    def __init__(self, loop: BoardLoop) -> None:
        super().__init__()
        self.loop = loop

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return _MeasuredForward.apply(v.reshape(-1, N_ELECTRODES), self.loop)

    def __deepcopy__(self, memo: dict[int, Any]) -> "BoardSurrogate":
        return self     # the board is one instrument: copies of a network share it


def _dnpu_layers(model: nn.Module) -> list[nn.Module]:
    from host.networks.dnpu_nodes import DNPUNodes

    layers = [m for m in model.modules() if isinstance(m, DNPUNodes)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no DNPU layer to run on a board")
    return layers


@contextmanager
def on_board(model: nn.Module, loop: BoardLoop | NodeLoops) -> Iterator[nn.Module]:
    """Every DNPU layer of `model` measures on the board inside the block (training noise off):
    on one device (a BoardLoop), or each node on its own device (NodeLoops)."""
    layers = _dnpu_layers(model)
    if isinstance(loop, NodeLoops):
        sizes = [len(d) for d in loop.node_devices]
        if sizes != [layer.n_nodes for layer in layers]:
            raise ValueError(f"node devices for layers of {sizes} nodes, the network has "
                             f"{[layer.n_nodes for layer in layers]}")
        boards = {d: BoardSurrogate(one) for d, one in loop.loops.items()}   # one per device: its nodes run together
        swapped = [nn.ModuleList([boards[d] for d in devices]) for devices in loop.node_devices]
    else:
        board = BoardSurrogate(loop)
        swapped = [nn.ModuleList([board]) for _ in layers]
    saved = [(layer, layer.surrogates, layer.noise_std_na, layer.noise_in_eval) for layer in layers]
    try:
        for layer, surrogates in zip(layers, swapped):
            layer.surrogates = surrogates
            layer.noise_std_na = 0.0
            layer.noise_in_eval = False
        yield model
    finally:
        for layer, surrogates, noise, in_eval in saved:
            layer.surrogates = surrogates
            layer.noise_std_na = noise
            layer.noise_in_eval = in_eval


def control_bounds(layer: nn.Module, limits_v: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) [C] of a DNPU layer's controls: its electrodes' ranges inside the board's limits."""
    lo, hi = layer.ctrl_lo.clone(), layer.ctrl_hi.clone()
    if limits_v is not None:
        lim = torch.as_tensor(np.asarray(limits_v, dtype=np.float64)[list(layer.control_electrodes)],
                              dtype=lo.dtype)
        lo, hi = torch.maximum(lo, lim[:, 0]), torch.minimum(hi, lim[:, 1])
    if torch.any(lo > hi):
        raise ValueError("the board's limits and the electrode ranges do not overlap on a control electrode")
    return lo, hi


@torch.no_grad()
def clip_to_limits(model: nn.Module, limits_v: np.ndarray | None) -> int:
    """Clip every DNPU layer's controls into their ranges and the board's limits; returns how many
    values had to be clipped (an optimiser step that would leave the limits is clipped, never sent)."""
    n = 0
    for layer in _dnpu_layers(model):
        lo, hi = control_bounds(layer, limits_v)
        c = layer.control
        n += int(((c < lo) | (c > hi)).sum())
        c.copy_(torch.maximum(torch.minimum(c, hi), lo))
    return n


@dataclass(frozen=True)
class TwinTuning:
    """Fine-tuning the surrogate on the states the loop measured."""

    epochs: int = 30
    lr: float = 2e-4
    batch: int = 256
    holdout: float = 0.2
    max_states: int = 50_000     # a random subset of the measured states when the loop measured more
    seed: int = 0


def fine_tune_twin(torch_model: nn.Sequential, volts: np.ndarray, currents: np.ndarray,
                   cfg: TwinTuning = TwinTuning()) -> tuple[nn.Sequential, dict[str, Any]]:
    """A copy of the surrogate fine-tuned on measured (volts, nA) pairs, and a report of its error on
    held-out pairs before and after (RMSE in nA). The original is not changed."""
    import copy

    v = torch.as_tensor(np.asarray(volts, dtype=np.float32)).reshape(-1, N_ELECTRODES)
    y = torch.as_tensor(np.asarray(currents, dtype=np.float32)).reshape(-1, 1)
    if len(v) < 10:
        raise ValueError(f"fine-tuning the twin needs at least 10 measured states, got {len(v)}")
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(v), generator=gen)[:cfg.max_states]
    n_hold = max(1, int(round(cfg.holdout * len(perm))))
    hold, fit = perm[:n_hold], perm[n_hold:]
    total = len(v)
    model = copy.deepcopy(torch_model)
    for p in model.parameters():
        p.requires_grad_(True)

    def rmse(m: nn.Module, idx: torch.Tensor) -> float:
        with torch.no_grad():
            return float(torch.sqrt(torch.mean((m(v[idx]) - y[idx]) ** 2)))

    before, before_fit = rmse(model, hold), rmse(model, fit)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for _ in range(cfg.epochs):
        order = fit[torch.randperm(len(fit), generator=gen)]
        for a in range(0, len(order), cfg.batch):
            b = order[a:a + cfg.batch]
            loss = torch.mean((model(v[b]) - y[b]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    report = {"states": int(total), "used": int(len(perm)), "held_out": int(n_hold), "epochs": cfg.epochs, "lr": cfg.lr,
              "held_out_rmse_na_before": before, "held_out_rmse_na_after": rmse(model, hold),
              "fit_rmse_na_before": before_fit, "fit_rmse_na_after": rmse(model, fit)}
    return model, report
