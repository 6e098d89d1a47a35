"""Capacity labellings that failed on the board, fine-tuned in the loop (``capacity --train-on board``).

After the off-chip search and the device check, every labelling of an N whose check failed is
fine-tuned on the board from its off-chip controls. All of them are trials of one
TrialDNPUClassifier: an epoch is ONE board sweep (every trial's controls with the N points, each
point ``repeats`` times) whose currents are the forward pass; the backward pass takes the
surrogate's input Jacobian at the volts the board applied (host.networks.in_loop). A labelling
and its complement are one problem for a threshold on the current (the same controls realise
both), so a complement pair whose checks both failed is trained once.

Each labelling is trained as ``starts`` copies in the same sweep: its off-chip controls, and
copies of them moved by Gaussian steps of ``jitter_v`` (inside the ranges and the board's
limits). On the shipped device the failed labellings sit in narrow local optima (the surrogate
agrees with the board there to about a nanoampere, and the off-chip solutions failed because
their gap is at the noise): fine-tuning the off-chip controls alone rescued about as many as
re-measuring them unchanged at N = 6 and one or two more at N = 7, while 16 starts rescued
nearly all failed labellings of N = 6 and two thirds of N = 7 (each state re-checked ten times).
The training matters, not only the starts: the same 16 starts measured and selected after one
step rescued no more than re-measuring. The copies of all labellings share one sweep, at most
``max_trials`` trials: where more labellings failed, fewer copies each.

The loss is the BCE through the decision node, as off-chip, with that node being the check's own:
each epoch the logistic neuron (gain and bias on the standardised current) is fitted to the
sweep's measured currents exactly as device_check fits it (host.networks.logistic.fit_logistic,
its L2 included), then held fixed while the BCE's gradient flows into the currents and their
standardisation. Why this on measured currents: (1) the off-chip solutions keep no trained gain
and bias, and a decision node restarted from gain 1 would spend the loop's few epochs learning
its own sign and scale; the fitted one is at its optimum from the first sweep; (2) the check
passes on the held-out accuracy of that very logistic, and its L2 on the standardised current
makes a gap that is small against the spread of all the currents as costly as one that is small
against the noise (on the surrogate, some failed labellings fail the check even without noise:
the L2-limited logistic puts its threshold beside a gap of a nanoampere): this loss sees both;
(3) the sweep's repeated raw measurements carry the noise itself, so the gradient acts where
single measurements cross the fitted threshold, as the check's errors do. Tried on the shipped
device (one start per labelling): a soft class margin (log-sum-exp of the point means against a
goal of 6 noise floors) and this BCE with the standardisation held fixed did as well, within the
checks' noise; a pairwise soft margin over all (class 1, class 0) measurement pairs rescued no
more than re-measuring (it pushes the class means apart and lets the overlap grow).

The state each labelling is checked with is chosen on fresh sweeps, not by the lowest training
loss (the lowest of many noisy sweeps is partly luck): the candidates are, for every copy, its
``select_candidates`` epochs (>= 1) of lowest training loss and its final state; each is
measured ``select_passes`` more times, the check's logistic is fitted to the pooled currents and
the best in-sample accuracy wins (then the lower BCE). Epoch 0, the unchanged off-chip solution,
is no candidate: a labelling counts as rescued only for controls the loop produced. Nothing the
check measures is seen here: the re-check (capacity_cli.device_check, unchanged) measures
afresh. A board that fails mid-loop keeps the history and the best states so far
(``CapacityLoopOutcome.error``); the session has already taken the board to 0 V.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from host.experiments.board_session import BoardSession
from host.experiments.data_electrodes import PAPER_DATA_ELECTRODES
from host.experiments.errors import ExperimentError
from host.experiments.results import progress_bar
from host.experiments.surrogates import SurrogateInfo


@dataclass(frozen=True)
class CapacityLoopConfig:
    epochs: int = 80                       # optimiser steps on the board (epochs + 1 training sweeps)
    lr: float = 0.005                      # Adam: at most about this many volts per control and step
    betas: tuple[float, float] = (0.9, 0.999)
    repeats: int = 10                      # measurements of every point per sweep (the check's default)
    starts: int = 16                       # copies per labelling: its off-chip controls and jittered ones
    jitter_v: float = 0.3                  # std of the jitter of copies 1.. (volts, per control)
    max_trials: int = 256                  # copies x labellings per sweep at most (fewer copies, not fewer labellings)
    select_candidates: int = 4             # per copy: its states of lowest training loss, and the final one,
    select_passes: int = 4                 # ... measured on this many fresh sweeps to choose the state checked
    alpha: float = 1.0                     # L1 penalty outside the ranges (0 after clipping; kept for parity)
    seed: int = 0                          # the jitter

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"the loop needs at least 1 epoch, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"the loop's learning rate must be > 0, got {self.lr}")
        if self.repeats < 2:
            raise ValueError(f"the loop's repeats must be >= 2, got {self.repeats}")
        if self.starts < 1 or self.max_trials < 1 or self.jitter_v < 0:
            raise ValueError("the loop needs starts >= 1, max_trials >= 1 and jitter_v >= 0")
        if self.select_candidates < 1 or self.select_passes < 1:
            raise ValueError("the loop's selection needs >= 1 candidate and >= 1 pass")
        if self.alpha < 0:
            raise ValueError(f"the loop's alpha must be >= 0, got {self.alpha}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"Adam betas must lie in [0, 1), got {self.betas}")

    def copies(self, labellings: int) -> int:
        """Copies per labelling when `labellings` are trained together."""
        return max(1, min(self.starts, self.max_trials // max(1, labellings)))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CapacityLoopOutcome:
    """What the loop did for one N's trained labellings (T of them, rows of `labels`)."""

    labels: np.ndarray                  # [T, n] the trained labellings
    start: np.ndarray                   # [T, C] their off-chip controls
    solution: np.ndarray                # [T, C] the state to check (start until the loop has stepped)
    chosen_epoch: np.ndarray            # [T] the epoch of that state
    chosen_copy: np.ndarray             # [T] the copy it came from (0: the off-chip controls)
    copies: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    account: dict[str, Any] = field(default_factory=dict)
    clipped_values: int = 0
    selection: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"trained": int(len(self.labels)), "copies": self.copies, "history": self.history,
                "account": self.account, "clipped_control_values": self.clipped_values,
                "chosen_epoch": self.chosen_epoch, "chosen_copy": self.chosen_copy, "selection": self.selection,
                "solutions": self.solution, "warnings": self.warnings, "error": self.error}


def complement_representatives(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train each complement pair once: (rows to train [K], for every row the index into them [L])."""
    rows = np.asarray(labels, dtype=np.int64)
    key = {tuple(r): i for i, r in enumerate(rows)}
    reps: list[int] = []
    where = np.empty(len(rows), dtype=np.int64)
    for i, r in enumerate(rows):
        j = key.get(tuple(1 - r))
        if j is not None and j < i:            # its complement came first and is trained
            where[i] = where[j]
        else:
            where[i] = len(reps)
            reps.append(i)
    return np.asarray(reps, dtype=np.int64), where


def check_bce(out: Any, labels: Any) -> tuple[Any, np.ndarray]:
    """The BCE per trial [T] of measured currents out [T, B] through the check's decision node (the
    logistic device_check would fit to exactly these currents, held fixed; the gradient flows
    through the currents and their standardisation), and the in-sample accuracy [T] of that
    logistic. labels [T, B] in {0, 1}."""
    import torch

    from host.networks.logistic import fit_logistic, logistic_logits
    from host.networks.losses import bce_per_trial

    with torch.no_grad():
        w, b = fit_logistic(out.detach(), labels.to(out.dtype))
    logits = logistic_logits(out, out, w, b)
    acc = ((logits.detach() > 0) == labels.bool()).double().mean(dim=1).numpy()
    return bce_per_trial(logits, labels), acc


def fine_tune_labellings(session: BoardSession, sur: SurrogateInfo, points: np.ndarray, labels: np.ndarray,
                         solutions: np.ndarray, cfg: CapacityLoopConfig,
                         electrodes: tuple[int, ...] = PAPER_DATA_ELECTRODES, quiet: bool = True,
                         desc: str = "in the loop",
                         on_epoch: Callable[[int, np.ndarray], None] | None = None) -> CapacityLoopOutcome:
    """Fine-tune labellings [T, n] of the first n `points` (volts on `electrodes`) on the board,
    starting from their controls `solutions` [T, C]; see the module doc. `on_epoch(epoch, currents)`,
    if given, sees every training sweep's measured nA [copies * T, R n] (row copy * T + labelling,
    column repeat * n + point), e.g. to follow a fitness of the caller's own."""
    import torch

    from host.experiments.capacity import margins
    from host.networks.classifiers import TrialDNPUClassifier
    from host.networks.in_loop import clip_to_limits, control_bounds, on_board
    from host.networks.trials import TrialAdam

    lab = np.asarray(labels, dtype=np.int64)
    t, n = lab.shape
    start = np.asarray(solutions, dtype=np.float32)
    if t == 0:
        return CapacityLoopOutcome(lab, start, start.copy(), np.zeros(0, np.int64), np.zeros(0, np.int64), copies=0,
                                   account={"points": 0, "board_s": 0.0, "calls": 0, "host_s": 0.0})
    start = start.reshape(t, -1)
    if np.asarray(points).shape[0] != n:
        raise ValueError(f"{np.asarray(points).shape[0]} points for labellings of {n}")
    k = cfg.copies(t)
    model = TrialDNPUClassifier(sur.model, sur.ranges_v, t * k, data_electrodes=electrodes)   # copy-major
    if start.shape[1] != model.dnpu.control.shape[-1]:
        raise ValueError(f"{start.shape[1]} control voltages per labelling, the DNPU has "
                         f"{model.dnpu.control.shape[-1]}")
    lo, hi = control_bounds(model.dnpu, session.limits_v)
    s0 = torch.as_tensor(start)
    outcome = CapacityLoopOutcome(lab, start, start.copy(), np.zeros(t, np.int64), np.zeros(t, np.int64), copies=k)
    clipped = int(((s0 < lo) | (s0 > hi)).sum())
    if clipped:
        outcome.warnings.append(f"{clipped} off-chip control values outside the board's limits were clipped "
                                "before the loop")
    outcome.clipped_values = clipped
    gen = torch.Generator().manual_seed(cfg.seed)
    jitter = cfg.jitter_v * torch.randn((k, t, start.shape[1]), generator=gen)
    jitter[0] = 0.0                                           # copy 0: the off-chip controls themselves
    with torch.no_grad():
        c0 = torch.maximum(torch.minimum(s0[None] + jitter, hi), lo)
        model.dnpu.control.copy_(c0.reshape(k * t, 1, -1))
    x = torch.as_tensor(np.tile(np.asarray(points, dtype=np.float32), (cfg.repeats, 1)))     # [R n, 2]
    y = torch.as_tensor(np.tile(lab, (k, cfg.repeats)))                                       # [k T, R n]
    loop = session.in_loop(sur.model)
    opt = TrialAdam(model, cfg.lr, cfg.betas)
    states: list[np.ndarray] = []                             # [k T, C] per epoch
    losses: list[np.ndarray] = []                             # [k T] per epoch
    threshold = 1 - 0.5 / n - 1e-9

    def account() -> dict[str, Any]:
        return loop.account.to_json()

    try:
        with progress_bar(cfg.epochs + 1, desc, quiet) as bar:
            for ep in range(cfg.epochs + 1):
                with on_board(model, loop):
                    model.train()
                    out = model(x).double()                                  # [k T, R n] measured nA
                per, acc = check_bce(out, y)
                lv = per.detach().numpy()
                states.append(model.solution())
                losses.append(lv)
                sep = (margins(out.detach(), y).numpy() > 0).reshape(k, t).any(axis=0)
                best_copy = lv.reshape(k, t).min(axis=0)                     # per labelling, its best copy
                outcome.history.append({
                    "epoch": ep, "loss": float(lv.mean()), "best_copy_loss": float(best_copy.mean()),
                    "labelling_loss": best_copy.tolist(),
                    "separable": int(sep.sum()),
                    "passing_in_sample": int((acc >= threshold).reshape(k, t).any(axis=0).sum()), **account()})
                if on_epoch is not None:
                    on_epoch(ep, out.detach().numpy().copy())
                bar.update(1)
                if ep == cfg.epochs:
                    break
                loss = per.sum() + cfg.alpha * model.penalty().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                outcome.clipped_values += clip_to_limits(model, session.limits_v)
        _select(outcome, model, loop, x, y, np.stack(states), np.stack(losses), cfg)
    except ExperimentError as e:
        outcome.error = str(e)
        if len(states) > 1:                  # the best measured state so far, over the copies
            _lowest_loss(outcome, np.stack(states), np.stack(losses))
    if outcome.clipped_values > clipped:
        outcome.warnings.append(f"{outcome.clipped_values - clipped} control values of optimiser steps would have "
                                "left the electrodes' ranges or the board's limits; clipped, never sent")
    outcome.account = account()
    return outcome


def _lowest_loss(outcome: CapacityLoopOutcome, states: np.ndarray, losses: np.ndarray) -> None:
    """Each labelling's state of lowest training loss over its copies and the epochs >= 1."""
    e, kt, c = states.shape
    t = len(outcome.labels)
    k = kt // t
    flat = losses[1:].reshape(e - 1, k, t).reshape((e - 1) * k, t)
    best = flat.argmin(axis=0)
    ep, copy = best // k + 1, best % k
    outcome.solution = states[ep, copy * t + np.arange(t)].copy()
    outcome.chosen_epoch, outcome.chosen_copy = ep.astype(np.int64), copy.astype(np.int64)


def _select(outcome: CapacityLoopOutcome, model: Any, loop: Any, x: Any, y: Any, states: np.ndarray,
            losses: np.ndarray, cfg: CapacityLoopConfig) -> None:
    """Choose each labelling's state on fresh sweeps among every copy's candidates (its epochs >= 1
    of lowest training loss and its final state); see the module doc."""
    import torch

    from host.networks.in_loop import on_board

    e, kt, c = states.shape
    t = len(outcome.labels)
    k = kt // t
    m = min(cfg.select_candidates, e - 1)
    cand = np.concatenate([np.argsort(losses[1:], axis=0, kind="stable")[:m] + 1,
                           np.full((1, kt), e - 1)])                       # [m + 1, k T] epochs
    ctrl = states[cand, np.arange(kt)[None, :]]                            # [m + 1, k T, C]
    mm = cand.shape[0]
    model.keep_trials(torch.arange(kt).repeat(mm))                         # [(m + 1) k T] candidate-major
    with torch.no_grad():
        model.dnpu.control.copy_(torch.as_tensor(ctrl.reshape(mm * kt, 1, c)))
    yy = y.repeat(mm, 1)
    with on_board(model, loop), torch.no_grad():
        pooled = torch.cat([model(x).double() for _ in range(cfg.select_passes)], dim=1)
    bce, acc = check_bce(pooled, yy.repeat(1, cfg.select_passes))
    acc = acc.reshape(mm * k, t)                                           # rows: (candidate, copy)
    bce = bce.numpy().reshape(mm * k, t)
    pick = np.lexsort((bce, -acc), axis=0)[0]                              # best accuracy, then lower BCE
    cand_i, copy = pick // k, pick % k
    trial = copy * t + np.arange(t)
    outcome.solution = ctrl[cand_i, trial].copy()
    outcome.chosen_epoch = cand[cand_i, trial].astype(np.int64)
    outcome.chosen_copy = copy.astype(np.int64)
    outcome.selection = {"passes": cfg.select_passes, "candidates_per_labelling": int(mm * k),
                         "chosen_accuracy": acc[pick, np.arange(t)], "chosen_bce": bce[pick, np.arange(t)]}
