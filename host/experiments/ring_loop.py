"""The ring's networks fine-tuned in the loop (``ring --train-on board``).

The off-chip search's best ``candidates`` trials of an architecture are fine-tuned together on
the board: every epoch each layer of all candidates is one sweep (the forward pass is the
device's), the loss is the ring's (negative Fisher criterion of the measured last-node output
plus the range penalty), and the backward pass takes the surrogate's Jacobian at the voltages the
board applied (host.networks.in_loop). Between layers the outputs are standardised with the
statistics of the measured outputs (batch statistics while training; the stored ones are
re-calibrated on the board at the end).

With ``ga_generations`` (``--loop-ga``; by default for a single DNPU only) a genetic algorithm on
the board (host.networks.model_free) follows the gradient epochs: its first generation holds
every candidate's start, best-epoch and final state (the rest of the population random), its
fitness is one measured pass's training accuracy (ties by Fisher), and the fittest
``candidates`` of its last generation join the contenders. It needs no gradient, so it moves where the surrogate's slopes mislead the loop or the
controls sit at their limits (device 5's single DNPU: docs/experiments.md).

Selection never sees the test set, and a noisy pass cannot pick a network. The contenders are
every candidate's off-chip start, its state at the epoch of its best measured training accuracy
(the logistic output neuron fitted on that epoch's measured currents; ties by Fisher) and its
final state (and the GA's fittest). All are measured on ``select_passes`` fresh passes over the training set and the
validation set (the run's third split; the training set again without one): one logistic neuron
per contender is fitted to all its training passes, as the validation fits it, and the best mean
accuracy on the validation passes wins. Then the winner and the off-chip network (the search's
best trial, as the off-chip validation measured it) are measured again on fresh passes over the
confirmation split (the run's fourth; the validation split again without one), and the winner
replaces the off-chip network only if its paired gain there (per point: the share of passes
classified right, new less old) exceeds ``significance`` standard errors: the loop keeps the
off-chip result where it cannot measurably improve on it. The confirmation points did not choose
the winner, so its gain there is not raised by the choice of the best of many on the same points.
What the loop claims for the network it returns is that second round's training accuracy
(``claim_passes`` passes over the training set), which the validation
(``ring.board_validate``, the same procedure in the deployed form: stored standardisation, node by
node) measures again: ``loop_claim``.
A board that fails mid-run keeps the history and the best state so far (``LoopOutcome.error``).

Across chips (one surrogate per device, ``ChipSurrogates``) every node measures on its own
device and takes its gradient from its own chip's surrogate (``host.networks.in_loop.NodeLoops``);
the controls stay inside the limits of every device the network uses.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from host.experiments.board_session import BoardSession
from host.experiments.errors import ExperimentError
from host.experiments.results import progress_bar
from host.experiments.surrogates import ChipSurrogates, SurrogateInfo


# The GA's generations by default for a single DNPU. There the surrogate's slopes can mislead the
# gradient loop (device 5: +0.85 points with the gradient alone, +4.11 with 100 generations, 960,000
# board points; docs/experiments.md); on a network the gradient loop gains (device 5's 2-2-1: +6.94)
# and a generation costs one sweep per node, so networks run it only when asked.
SINGLE_NODE_GA = 100


@dataclass(frozen=True)
class LoopConfig:
    candidates: int = 8        # best off-chip trials fine-tuned together
    epochs: int = 60           # optimiser steps on the board
    lr: float = 0.005          # Adam (the off-chip search uses 0.0065)
    select_passes: int = 5     # fresh passes per contender over the training and validation (round 1) and
                               # confirmation (round 2) points
    claim_passes: int | None = None  # training-set passes of the second round (the loop's claim, fitted as the
                               # validation fits its neuron: ring passes its --board-train-runs); None: select_passes
    significance: float = 2.0  # the loop's winner replaces the off-chip network when its paired gain on the
                               # confirmation points (never used to choose it) exceeds this many standard errors
    learn_twin: bool = False   # fine-tune a copy of the surrogate on the measured states (LoopOutcome.twin_model)
    ga_generations: int | None = None  # > 0: after the gradient epochs a genetic algorithm on the board
                               # (host.networks.model_free) refines the candidates' states; its best join the
                               # contenders. None: SINGLE_NODE_GA generations for one DNPU, none for networks
    ga_population: int = 48    # its population: the candidates' start, best-epoch and final states, the rest random
    ga_seed: int = 0

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.epochs < 0 or self.select_passes < 2 or self.claim_train_passes < 2:
            raise ValueError("loop candidates >= 1, epochs >= 0 and select and claim passes >= 2 are needed")
        if not self.lr > 0:
            raise ValueError(f"the loop's learning rate must be > 0, got {self.lr}")
        if (self.ga_generations is not None and self.ga_generations < 0) or self.ga_population < 2:
            raise ValueError("the loop's GA needs generations >= 0 and a population >= 2")
        if self.significance < 0:
            raise ValueError(f"the loop's significance must be >= 0 standard errors, got {self.significance}")
        if self.ga_for(1) and self.ga_population < self.candidates:     # one node: the most generations
            raise ValueError(f"the loop's GA population ({self.ga_population}) must hold at least the "
                             f"{self.candidates} candidates it returns")

    @property
    def claim_train_passes(self) -> int:
        """Training-set passes of the second selection round."""
        return self.select_passes if self.claim_passes is None else self.claim_passes

    def ga_for(self, nodes: int) -> int:
        """The GA's generations for a network of `nodes` DNPU nodes."""
        if self.ga_generations is not None:
            return self.ga_generations
        return SINGLE_NODE_GA if nodes == 1 else 0


@dataclass
class LoopOutcome:
    best: Any                                   # DNPUNet (T = 1), calibrated on the board
    history: list[dict[str, Any]] = field(default_factory=list)
    account: dict[str, Any] = field(default_factory=dict)
    clipped_values: int = 0
    chosen_candidate: int = -1
    chosen_epoch: int = -1
    chosen_state: str = ""                      # "start", "best epoch" or "final"
    kept_off_chip: bool = False                 # the loop did not measurably improve on the off-chip network
    selection: dict[str, Any] = field(default_factory=dict)
    twin: dict[str, Any] | None = None
    twin_model: Any = None                      # the fine-tuned surrogate (torch), when learn_twin
    ga: dict[str, Any] | None = None            # the GA stage's record (LoopConfig.ga_generations > 0)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"history": self.history, "account": self.account, "clipped_control_values": self.clipped_values,
                "chosen_candidate": self.chosen_candidate, "chosen_epoch": self.chosen_epoch,
                "chosen_state": self.chosen_state, "kept_off_chip": self.kept_off_chip,
                "selection": self.selection, "twin": self.twin, "ga": self.ga, "error": self.error,
                "warnings": self.warnings}


def _train_accuracy(out: Any, y: Any) -> np.ndarray:
    """Per trial: the logistic neuron fitted on measured outputs [T, B], scored on them."""
    from host.networks.logistic import fitted_correct

    o = out.detach().double()
    return fitted_correct(o, y.double()[None], o, y.double()[None]).mean(dim=-1).numpy()


@dataclass
class MeasuredScores:
    """Contenders measured on fresh board passes (T trials)."""

    train_accuracy: np.ndarray   # [T] the neuron fitted on all training passes, scored on each
    selection: np.ndarray        # [T] accuracy on the selection split (validation; training without one)
    fisher: np.ndarray           # [T] mean Fisher criterion on the training passes
    per_point: np.ndarray        # [T, B_sel] each selection point's share of passes classified right


def _one(net: Any, t: int) -> Any:
    """Trial t of a network, as a network of its own."""
    import torch

    one = copy.deepcopy(net)
    one.keep_trials(torch.tensor([t]))
    return one


def _measured_scores(net: Any, loop: Any, data: dict[str, Any], passes: int, split: str = "val",
                     fit_passes: int | None = None) -> MeasuredScores:
    """`passes` fresh board passes over the data's `split` ("val", "confirm"; the training set again
    when the data has none) and `fit_passes` (default `passes`) over the training set: as the
    validation does, one logistic neuron per trial is fitted to all the training passes' outputs; it
    scores each training pass and each pass over the split."""
    import torch

    from host.networks.in_loop import on_board
    from host.networks.logistic import fitted_correct
    from host.networks.losses import neg_fisher_per_trial

    x_tr, y_tr = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"]).double()
    val = f"x_{split}" in data
    x_s, y_s = (torch.as_tensor(data[f"x_{split}"]), torch.as_tensor(data[f"y_{split}"]).double()) if val else (x_tr, y_tr)
    with on_board(net, loop), torch.no_grad():
        net.train()                  # batch statistics of each pass's measured outputs, as in the loop
        fit = [net(x_tr).double() for _ in range(fit_passes or passes)]
        sel = [net(x_s).double() for _ in range(passes)] if val else fit
    fis = np.mean([(-neg_fisher_per_trial(o, y_tr)).numpy() for o in fit], axis=0)
    ref, y_ref = torch.cat(fit, dim=1), y_tr.repeat(len(fit))[None]
    t = ref.shape[0]
    train = fitted_correct(ref, y_ref, ref, y_ref).reshape(t, len(fit), -1).numpy()
    right = fitted_correct(ref, y_ref, torch.cat(sel, dim=1), y_s.repeat(passes)[None]).reshape(t, passes, -1).numpy()
    per_point = right.mean(axis=1)
    return MeasuredScores(train.mean(axis=(1, 2)), per_point.mean(axis=-1), fis, per_point)


def paired_gain(per_point_new: np.ndarray, per_point_old: np.ndarray) -> tuple[float, float]:
    """(accuracy gain, its standard error over the draw of the points) of one network on another,
    measured on the same points: the mean and standard error of the per-point differences."""
    d = np.asarray(per_point_new, dtype=np.float64) - np.asarray(per_point_old, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")


def _flat_controls(net: Any) -> np.ndarray:
    """Every trial's controls of every layer as one row: [T, sum of nodes x controls]."""
    return np.concatenate([layer.control.detach().double().reshape(net.trials, -1).numpy() for layer in net.layers],
                          axis=1)


def _set_flat_controls(net: Any, rows: np.ndarray) -> None:
    import torch

    a = 0
    with torch.no_grad():
        for layer in net.layers:
            c = layer.control
            w = int(np.prod(c.shape[1:]))
            c.copy_(torch.as_tensor(rows[:, a:a + w], dtype=c.dtype).reshape(c.shape))
            a += w


def _flat_bounds(net: Any, limits_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from host.networks.in_loop import control_bounds

    lo, hi = [], []
    for layer in net.layers:
        l, h = control_bounds(layer, limits_v)
        k = int(np.prod(layer.control.shape[1:-1]))
        lo.append(np.tile(l.double().numpy(), k))
        hi.append(np.tile(h.double().numpy(), k))
    return np.concatenate(lo), np.concatenate(hi)


def ga_refine(seeds: Any, loop: Any, x_tr: Any, y_tr: Any, limits_v: np.ndarray, cfg: LoopConfig, keep: int,
              generations: int, quiet: bool = True, desc: str = "loop GA") -> tuple[Any, dict[str, Any]]:
    """A genetic algorithm on the board over the controls of every node (host.networks.model_free),
    its first generation the trials of `seeds` (a DNPUNet) and random candidates. Fitness: the
    training accuracy of one measured pass (the logistic neuron fitted on it), ties by the Fisher
    criterion. Returns (a DNPUNet of the `keep` fittest of the last generation measured, the
    stage's record); the record's "error" is the board's failure, if any (the best so far is kept)."""
    import torch

    from host.networks.classifiers import DNPUNet
    from host.networks.in_loop import on_board
    from host.networks.losses import neg_fisher_per_trial
    from host.networks.model_free import GAConfig, SearchInterrupted, genetic_search

    p = cfg.ga_population
    init = _flat_controls(seeds)[:p]
    pop_net = DNPUNet.concat_trials([_one(seeds, 0)] * p)
    lo, hi = _flat_bounds(pop_net, limits_v)
    last: dict[str, np.ndarray] = {}
    start = loop.account.to_json()

    def fitness(pop: np.ndarray) -> np.ndarray:
        _set_flat_controls(pop_net, pop)
        with on_board(pop_net, loop), torch.no_grad():
            pop_net.train()
            out = pop_net(x_tr)
        acc = _train_accuracy(out, y_tr)
        fis = (-neg_fisher_per_trial(out, y_tr)).numpy()
        f = acc + 1e-3 * np.tanh(fis)               # a Fisher tie-break below one point of 200
        last["pop"], last["f"], last["acc"] = pop.copy(), f, acc
        return f

    history: list[dict[str, Any]] = []
    error = None
    with progress_bar(generations, desc, quiet) as bar:
        def on_gen(rec: dict[str, Any]) -> None:
            acc = loop.account.to_json()
            history.append({"generation": rec["index"], "best_fitness": rec["best_fitness"],
                            "mean_fitness": rec["mean_fitness"], "points": acc["points"] - start["points"],
                            "board_s": acc["board_s"]})
            bar.update(1)
        try:
            res = genetic_search(fitness, lo, hi, GAConfig(population=p, generations=generations,
                                                          seed=cfg.ga_seed), on_gen, initial=init)
        except SearchInterrupted as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                raise KeyboardInterrupt from e
            res, error = e.result, str(e.__cause__ or e)
    if "pop" not in last:
        raise ExperimentError(error or "the loop's GA measured nothing")
    order = np.argsort(-last["f"], kind="stable")[:keep]
    _set_flat_controls(pop_net, last["pop"])
    pop_net.keep_trials(torch.as_tensor(order))
    record = {"generations": len(history), "population": p, "seeded": int(len(init)), "evaluations": res.evaluations,
              "clipped": res.clipped, "best_fitness": res.best_fitness,
              "last_generation_best": [float(v) for v in last["f"][order]],
              "last_generation_train_accuracy": [float(v) for v in last["acc"][order]],
              "points": loop.account.points - start["points"], "board_s": loop.account.board_s - start["board_s"],
              "history": history, "error": error}
    return pop_net, record


def board_loops(session: BoardSession, sur: SurrogateInfo | ChipSurrogates, nodes: Any,
                record: bool = False) -> tuple[Any, np.ndarray]:
    """The board side of the loop for a network of layer sizes `nodes`, and the limits its controls
    must keep: one loop on the session's device; across chips one per device (NodeLoops), every
    node on its own device, within the limits common to all of them."""
    from host.networks.in_loop import BoardAccount, NodeLoops

    devices = sur.node_devices(list(nodes))
    if devices is None:
        return session.in_loop(sur.model, record=record), session.limits_v
    if record:
        raise ExperimentError("learning a twin in the loop needs one chip; with one surrogate per device "
                              "leave --learn-twin off")
    used = sorted({d for layer in devices for d in layer})
    account = BoardAccount()
    loops = {d: session.in_loop(sur.surrogates[d].model, device=d, account=account) for d in used}
    lims = np.stack([session.device_limits_v(d) for d in used])
    return NodeLoops(loops, devices), np.stack([lims[:, :, 0].max(0), lims[:, :, 1].min(0)], axis=1)


def fine_tune_on_board(session: BoardSession, sur: SurrogateInfo | ChipSurrogates, candidates: list[Any],
                       data: dict[str, Any],
                       alpha: float, cfg: LoopConfig, quiet: bool = True, desc: str = "in the loop") -> LoopOutcome:
    """Fine-tune the candidate networks (DNPUNet, one trial each) on the board; see the module doc."""
    import torch

    from host.networks.classifiers import DNPUNet
    from host.networks.in_loop import clip_to_limits, on_board
    from host.networks.losses import neg_fisher_per_trial
    from host.networks.trials import TrialAdam

    x_tr, y_tr = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"])
    net = DNPUNet.concat_trials(candidates)
    loop, limits_v = board_loops(session, sur, net.nodes, record=cfg.learn_twin)
    opt = TrialAdam(net, cfg.lr)
    n = net.trials
    best_key = [(-1.0, -np.inf)] * n
    best_ctrl = [[layer.control.detach()[t].clone() for layer in net.layers] for t in range(n)]
    best_epoch = [0] * n
    outcome = LoopOutcome(best=None)
    clipped = clip_to_limits(net, limits_v)              # the off-chip controls inside the board's limits
    if clipped:
        outcome.warnings.append(f"{clipped} off-chip control values outside the board's limits were clipped "
                                "before the loop")
    outcome.clipped_values = clipped
    start_net = copy.deepcopy(net)

    try:
        with progress_bar(cfg.epochs + 1, desc, quiet) as bar:
            for ep in range(cfg.epochs + 1):
                with on_board(net, loop):
                    net.train()
                    out = net(x_tr)                                   # [T, B] measured
                per_trial = neg_fisher_per_trial(out, y_tr)
                fisher = (-per_trial.detach()).numpy()
                acc = _train_accuracy(out, y_tr)
                for t in range(n):
                    key = (float(acc[t]), float(fisher[t]))
                    if key > best_key[t]:
                        best_key[t], best_epoch[t] = key, ep
                        best_ctrl[t] = [layer.control.detach()[t].clone() for layer in net.layers]
                outcome.history.append({
                    "epoch": ep, "loss": float(per_trial.detach().sum()), "train_accuracy": acc.tolist(),
                    "fisher": fisher.tolist(), "best_train_accuracy": float(acc.max()), **loop.account.to_json()})
                bar.update(1)
                if ep == cfg.epochs:
                    break
                loss = per_trial.sum() + alpha * net.penalty().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                outcome.clipped_values += clip_to_limits(net, limits_v)
    except ExperimentError as e:
        outcome.error = str(e)
    best_net = copy.deepcopy(net)
    with torch.no_grad():
        for t in range(n):
            for layer, c in zip(best_net.layers, best_ctrl[t]):
                layer.control[t].copy_(c)
    if outcome.clipped_values:
        outcome.warnings.append(f"{outcome.clipped_values} control values of optimiser steps would have left the "
                                "electrodes' ranges or the board's limits; clipped, never sent")
    kinds = ("start", "best epoch", "final", "GA")
    stages = [start_net, best_net, net]
    chosen = start_net
    try:
        if outcome.error is not None:
            raise ExperimentError(outcome.error)
        generations = cfg.ga_for(sum(net.nodes))
        if generations > 0:
            ga_net, outcome.ga = ga_refine(DNPUNet.concat_trials(stages), loop, x_tr, y_tr, limits_v, cfg, n,
                                           generations, quiet, f"{desc} GA")
            stages.append(ga_net)
            if outcome.ga["clipped"]:
                outcome.warnings.append(f"{outcome.ga['clipped']} of the loop's GA candidates left the electrodes' "
                                        "ranges or the board's limits; clipped onto them, never sent")
            if outcome.ga["error"] is not None:
                raise ExperimentError(outcome.ga["error"])
        contenders = DNPUNet.concat_trials(stages)                        # T = 3n (4n with the GA)
        r1 = _measured_scores(contenders, loop, data, cfg.select_passes, "val")
        c = max(range(contenders.trials), key=lambda i: (r1.selection[i], r1.fisher[i]))
        pair = DNPUNet.concat_trials([_one(contenders, c), _one(start_net, 0)])
        confirm = "confirm" if "x_confirm" in data else "val"
        r2 = _measured_scores(pair, loop, data, cfg.select_passes, confirm, cfg.claim_train_passes)
        gain, se = paired_gain(r2.per_point[0], r2.per_point[1])
        # the winner must beat the off-chip network on fresh passes by more than the points' draw
        # explains (a network that fits 200 points better by chance does not generalise), on points
        # that did not choose it (the best of many on the same points measures high by the choice alone)
        take = c != 0 and gain > cfg.significance * se and gain > 0
        names = {"val": "validation", "confirm": "confirmation"}
        split = names["val"] if "x_val" in data else "training"
        outcome.selection = {
            "passes": cfg.select_passes, "split": split,
            "confirmation_split": names[confirm] if f"x_{confirm}" in data else "training",
            "round1_selection_accuracy": r1.selection.tolist(),
            "round1_train_accuracy": r1.train_accuracy.tolist(), "round1_fisher": r1.fisher.tolist(),
            "contenders": [f"{kinds[i // n]} of candidate {i % n}" for i in range(contenders.trials)],
            "round2": {"winner": f"{kinds[c // n]} of candidate {c % n}",
                       "winner_selection_accuracy": float(r2.selection[0]),
                       "off_chip_selection_accuracy": float(r2.selection[1]),
                       "winner_train_accuracy": float(r2.train_accuracy[0]),
                       "off_chip_train_accuracy": float(r2.train_accuracy[1]),
                       "winner_fisher": float(r2.fisher[0]), "off_chip_fisher": float(r2.fisher[1]),
                       "gain": gain, "gain_standard_error": se, "required_sigmas": cfg.significance,
                       "confirmation_points": int(r2.per_point.shape[1]),
                       "train_passes": cfg.claim_train_passes,
                       "adopted": bool(take)}}
        c = c if take else 0
        outcome.kept_off_chip = not take
        chosen = _one(contenders, c)
        outcome.chosen_candidate, outcome.chosen_state = c % n, kinds[c // n]
        outcome.chosen_epoch = {0: 0, 1: best_epoch[c % n]}.get(c // n, len(outcome.history) - 1)
        with on_board(chosen, loop):
            chosen.calibrate(x_tr)                                # stored statistics of measured outputs
    except ExperimentError as e:
        outcome.error = str(e)
        if not outcome.chosen_state:                             # the best measured state so far
            t = int(max(range(n), key=lambda i: best_key[i]))
            chosen = _one(best_net, t)
            outcome.chosen_candidate, outcome.chosen_state, outcome.chosen_epoch = t, kinds[1], best_epoch[t]
            ga_best = (outcome.ga or {}).get("last_generation_train_accuracy") or [-1.0]
            if len(stages) == 4 and ga_best[0] > best_key[t][0]:        # the GA's fittest measured better
                chosen = _one(stages[3], 0)
                outcome.chosen_candidate, outcome.chosen_state = 0, kinds[3]
                outcome.chosen_epoch = len(outcome.history) - 1
    net = chosen
    outcome.best = net
    if cfg.learn_twin and loop.record:
        outcome.twin_model, outcome.twin = _learn_twin(sur, loop)
    outcome.account = loop.account.to_json()
    return outcome


def _learn_twin(sur: SurrogateInfo, loop: Any) -> tuple[Any, dict[str, Any]]:
    """The surrogate fine-tuned on the states the loop measured (None when there are too few), and
    its error there before and after."""
    from host.networks.in_loop import fine_tune_twin

    volts, cur = loop.pairs()
    torch_model = getattr(sur.model, "torch_model", sur.model)
    try:
        return fine_tune_twin(torch_model, volts, cur)
    except ValueError as e:
        return None, {"error": str(e)}
