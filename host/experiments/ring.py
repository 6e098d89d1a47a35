"""python -m host.experiments ring: two concentric classes, single DNPU against a 2-2-1 DNPU network.

Architectures (``--archs``): ``single`` (one DNPU), ``2-2-1`` (the paper's five nodes: two input
nodes on the data, two hidden nodes on both their outputs, one output node) and ``2-1`` (two
nodes on the data feeding one output node: three in all).

Data: points in the unit disc of normalised inputs, which map linearly onto the data electrodes
(the disc's radius is half the electrodes' span, centred in their range). Class 0 is the inner
disc of radius r0, class 1 the ring r0 + g <= r <= 1; g is the gap in volts divided by the
half-span, and r0 makes the two areas equal. Points are uniform in area, ``n_per_class`` per class
for the training and the test set, ``val_per_class`` for a validation set (on which the
in-the-loop selection chooses) and ``confirm_per_class`` for a confirmation set (on which its
choice must beat the off-chip network), each drawn independently (the last two after the others,
so a seed's training and test sets do not depend on them).

Training (per architecture, ``trials`` independent trials trained as batched tensor programs of
``chunk`` trials each): negative Fisher criterion of the last node's output plus alpha x the L1
range penalty, full batch, Adam, Gaussian noise of the surrogate's test RMSE on every node output;
between layers the outputs are standardised and mapped into the next node's electrode ranges.

Selection for robustness: every trial is scored by its accuracy under noise (node outputs with
the surrogate's RMSE added, the logistic output neuron fitted on a noisy pass over the training
set and scored on another); the best trial's noisy test accuracy is the prediction for the board.
(Scoring on the validation set instead changed seeds 0, 1, 2 from 93.60, 88.60, 90.10 % predicted
to 93.60, 88.30, 89.30 %: no gain, so the search keeps the paper's way.) On the board the best
network runs node by node; the logistic output neuron is re-trained on the currents of
``board_train_runs`` passes over the training set, then the test set is measured ``board_runs``
times.

``--train-on board``: the best ``--loop-candidates`` trials are then fine-tuned in the loop
(forward on the board, backward through the surrogate: host.experiments.ring_loop) and the
result is validated the same way; the report adds the loop's history, its board points and
seconds, and ``ring_board_time.png`` (accuracy against board time).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from host.experiments.board_session import BoardSession, check_chips
from host.experiments.errors import ExperimentError, fail
from host.experiments.data_electrodes import AUTO, Screening, choose_electrodes, parse_data_electrodes, screen_pairs
from host.experiments.options import add_common_arguments, add_train_on, run_info, set_threads, trains_on_board
from host.experiments.results import out_folder, progress_bar, timer, write_json
from host.experiments.ring_loop import SINGLE_NODE_GA, LoopConfig, fine_tune_on_board, paired_gain
from host.experiments.surrogates import ChipSurrogates, SurrogateInfo, load_surrogates

DESCRIPTION = "ring classification: 1,000 trials of a single DNPU and of a 2-2-1 DNPU network, validated on a board"

ARCHS = {"single": (1,), "2-1": (2, 1), "2-2-1": (2, 2, 1)}


@dataclass(frozen=True)
class RingConfig:
    gap_mv: float = 6.25
    n_per_class: int = 100          # per class and split (train, test)
    val_per_class: int = 400        # per class of a third split that the in-the-loop selection uses (0: the training set)
    confirm_per_class: int = 1000   # per class of a fourth split on which the loop's winner must beat the off-chip
                                    # network (0: the validation split again)
    trials: int = 1000
    epochs: int = 400
    lr: float = 0.0065
    alpha: float = 1.0
    noise_std_na: float | None = None   # None: the surrogate's test RMSE
    train_noise_factor: float = 1.0     # training noise = factor x noise_std_na
    data_electrodes: tuple[int, int] = (2, 4)
    span_sigmas: float = 2.0
    chunk: int = 250                # trials per batched tensor program
    noise_draws: int = 10           # noisy passes used to score each trial
    board_runs: int = 50
    board_train_runs: int = 40      # board passes over the training set that the logistic neuron is re-fitted on
                                    # (the paper: about 80 readings per point)
    oversample: int = 1             # board readout averaged over this many ADC samples per point
    bf16: bool = False
    # successive halving: at each of these epochs a chunk keeps the `prune_keep` share of its
    # trials with the best (noisy) training Fisher value; the others stop there and are scored
    # as they are (their epochs are recorded). () trains every trial for all epochs.
    prune_at: tuple[int, ...] = ()
    prune_keep: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not all(0 < e < self.epochs for e in self.prune_at) or not 0 < self.prune_keep <= 1:
            raise ValueError(f"prune_at must be epochs inside 1..{self.epochs - 1} and prune_keep in (0, 1]")
        if not (0 <= self.gap_mv < 1000):
            raise ValueError(f"gap_mv must be in [0, 1000) mV, got {self.gap_mv}")
        if self.val_per_class != 0 and self.val_per_class < 4:
            raise ValueError(f"val_per_class must be 0 (select on the training set) or >= 4, got {self.val_per_class}")
        if self.confirm_per_class != 0 and self.confirm_per_class < 4:
            raise ValueError(f"confirm_per_class must be 0 (confirm on the validation split) or >= 4, "
                             f"got {self.confirm_per_class}")
        if self.n_per_class < 4 or self.trials < 1 or self.epochs < 1 or self.chunk < 1:
            raise ValueError("n_per_class >= 4 and trials, epochs, chunk >= 1 are needed")
        if self.lr <= 0 or self.alpha < 0 or self.train_noise_factor < 0:
            raise ValueError("lr must be > 0, alpha and train_noise_factor >= 0")
        if self.noise_draws < 2 or self.board_runs < 1 or self.board_train_runs < 1 or self.oversample < 1:
            raise ValueError("noise_draws >= 2, board_runs >= 1, board_train_runs >= 1 and oversample >= 1 are needed")
        if len(set(self.data_electrodes)) != 2 or not all(0 <= e < 7 for e in self.data_electrodes):
            raise ValueError(f"data_electrodes must be two distinct electrodes in 0..6, got {self.data_electrodes}")


def ring_radii(gap: float) -> tuple[float, float]:
    """(r0, r0 + gap) in normalised units with equal class areas: r0^2 = 1 - (r0 + gap)^2."""
    if not 0 <= gap < 1:
        raise ValueError(f"normalised gap must be in [0, 1), got {gap}")
    r0 = (-gap + math.sqrt(2 - gap * gap)) / 2
    return r0, r0 + gap


def ring_splits(cfg: RingConfig, gap: float) -> dict[str, np.ndarray]:
    """The run's data: x_/y_train, x_/y_test and, with cfg.val_per_class and cfg.confirm_per_class,
    x_/y_val and x_/y_confirm (drawn in that order after them, so a seed's training and test sets
    do not depend on them)."""
    rng = np.random.default_rng(cfg.seed)
    data: dict[str, np.ndarray] = {}
    for split, n in (("train", cfg.n_per_class), ("test", cfg.n_per_class), ("val", cfg.val_per_class),
                     ("confirm", cfg.confirm_per_class)):
        if n:
            data[f"x_{split}"], data[f"y_{split}"] = ring_data(n, gap, rng)
    return data


def ring_data(n_per_class: int, gap: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x [2n, 2] in the unit disc (class 0 inside r0, class 1 in r0+gap..1), y [2n] in {0, 1}; shuffled."""
    r0, r1 = ring_radii(gap)
    u = rng.random((2, n_per_class))
    th = rng.uniform(0, 2 * np.pi, (2, n_per_class))
    r_in = r0 * np.sqrt(u[0])
    r_out = np.sqrt(r1 ** 2 + u[1] * (1 - r1 ** 2))
    r = np.concatenate([r_in, r_out])
    t = np.concatenate([th[0], th[1]])
    x = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    y = np.concatenate([np.zeros(n_per_class), np.ones(n_per_class)])
    p = rng.permutation(len(y))
    return x[p].astype(np.float32), y[p].astype(np.float32)


def board_noise_std(sur: SurrogateInfo, oversample: int) -> float:
    """Deviation of a board reading from the surrogate: the surrogate's own error (test RMSE less
    the noise floor, in quadrature) plus the white noise floor averaged over `oversample` samples."""
    model_err2 = max(sur.test_rmse_na ** 2 - sur.noise_floor_na ** 2, 0.0)
    return math.sqrt(model_err2 + sur.noise_floor_na ** 2 / oversample)


def normalised_gap(gap_mv: float, ranges_v: np.ndarray, data_electrodes: tuple[int, ...]) -> float:
    half = float(np.min(ranges_v[list(data_electrodes), 1] - ranges_v[list(data_electrodes), 0])) / 2
    return gap_mv / 1000.0 / half


@dataclass
class ArchResult:
    """One architecture's trials: scores per trial, and the best network (T = 1)."""

    fisher: np.ndarray           # [trials] Fisher criterion on the training set, noise-free
    clean_test_acc: np.ndarray   # [trials]
    selection_acc: np.ndarray   # [trials] selection score: accuracy under noise on the training set
    noisy_test_acc: np.ndarray   # [trials] prediction for the board
    best: Any                    # DNPUNet with the best trial only
    best_index: int
    wall_s: float
    epochs: np.ndarray           # [trials] epochs each trial trained (pruning)
    top: list[Any] = dataclasses.field(default_factory=list)   # the best `keep` trials (DNPUNet each), best first
    top_index: list[int] = dataclasses.field(default_factory=list)


def _accuracy(logits: Any, y: Any) -> Any:
    return ((logits > 0).float() == y).float().mean(dim=-1)


def _finish(net: Any, x_tr: Any, noise: float) -> Any:
    net.clip_controls()
    net.set_noise(noise)
    net.calibrate(x_tr)
    return net


def train_chunk_parts(sur: SurrogateInfo, nodes: tuple[int, ...], cfg: RingConfig, trials: int, x_tr: Any,
                      y_tr: Any, noise: float, gen: Any) -> list[tuple[Any, np.ndarray, int]]:
    """Train `trials` networks at once (one batched tensor program).

    Returns (calibrated DNPUNet, trial indices within the chunk, epochs trained) per group of
    trials that stopped together (one group unless cfg.prune_at prunes)."""
    import copy as _copy

    import torch

    from host.networks.losses import neg_fisher_per_trial
    from host.networks.classifiers import DNPUNet
    from host.networks.trials import TrialAdam

    net = DNPUNet(sur.node_models(nodes), sur.ranges_v, trials, nodes=nodes, data_electrodes=cfg.data_electrodes,
                  span_sigmas=cfg.span_sigmas, noise_std_na=float(cfg.noise_std_na or noise) * cfg.train_noise_factor,
                  generator=gen, noise_scale=sur.node_noise_scale(nodes))
    opt = TrialAdam(net, cfg.lr)
    net.train()
    idx = np.arange(trials)
    parts: list[tuple[Any, np.ndarray, int]] = []
    prune = set(cfg.prune_at)
    for ep in range(1, cfg.epochs + 1):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            out = net(x_tr)
        per_trial = neg_fisher_per_trial(out.float(), y_tr)
        loss = per_trial.sum() + cfg.alpha * net.penalty().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ep in prune and len(idx) > 1:
            k = max(1, int(round(cfg.prune_keep * len(idx))))
            order = torch.argsort(per_trial.detach())          # most negative = best Fisher first
            keep, drop = order[:k], order[k:]
            if len(drop):
                stopped = _copy.deepcopy(net)
                stopped.keep_trials(drop)
                parts.append((_finish(stopped, x_tr, noise), idx[drop.numpy()], ep))
                opt.keep(keep)
                idx = idx[keep.numpy()]
    parts.append((_finish(net, x_tr, noise), idx, cfg.epochs))
    return parts


def train_chunk(sur: SurrogateInfo, nodes: tuple[int, ...], cfg: RingConfig, trials: int, x_tr: Any, y_tr: Any,
                noise: float, gen: Any) -> Any:
    """Train `trials` networks at once, all for cfg.epochs; returns the calibrated DNPUNet."""
    return train_chunk_parts(sur, nodes, dataclasses.replace(cfg, prune_at=()), trials, x_tr, y_tr, noise,
                             gen)[0][0]


def score(net: Any, x_tr: Any, y_tr: Any, x_te: Any, y_te: Any, draws: int) -> dict[str, Any]:
    """Noise-free Fisher and test accuracy; accuracy under noise on train (selection) and test, the
    logistic neuron fitted on another noisy pass over the training set each time."""
    import torch

    from host.networks.logistic import fit_logistic, logistic_logits
    from host.networks.losses import neg_fisher_per_trial

    with torch.no_grad():
        net.eval()
        net.set_noise_in_eval(False)
        o_tr, o_te = net(x_tr), net(x_te)
        fisher = -neg_fisher_per_trial(o_tr, y_tr)
        w, b = fit_logistic(o_tr.double(), y_tr.double())
        clean = _accuracy(logistic_logits(o_te.double(), o_tr.double(), w, b), y_te)
        net.set_noise_in_eval(True)
        sel, pred = [], []
        for _ in range(draws):
            n_fit = net(x_tr).double()
            w, b = fit_logistic(n_fit, y_tr.double())
            sel.append(_accuracy(logistic_logits(net(x_tr).double(), n_fit, w, b), y_tr))
            pred.append(_accuracy(logistic_logits(net(x_te).double(), n_fit, w, b), y_te))
        net.set_noise_in_eval(False)
    return {"fisher": fisher.numpy(), "clean": clean.numpy(),
            "sel": torch.stack(sel).mean(0).numpy(), "pred": torch.stack(pred).mean(0).numpy()}


def train_arch(sur: SurrogateInfo, nodes: tuple[int, ...], cfg: RingConfig, data: dict[str, Any], noise: float,
               quiet: bool = True, desc: str = "", keep: int = 1) -> ArchResult:
    """All trials of one architecture; the best `keep` trials (selection score, then Fisher) are kept."""
    import torch

    from host.networks.trials import trial_chunks

    t = timer()
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(data[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    gen = torch.Generator().manual_seed(cfg.seed * 7 + sum(nodes))
    torch.manual_seed(cfg.seed * 7 + sum(nodes))
    cat = {k: np.zeros(cfg.trials) for k in ("fisher", "clean", "sel", "pred", "epochs")}
    top: list[tuple[tuple[float, float], int, Any]] = []      # (key, trial, DNPUNet), best first
    with progress_bar(cfg.trials, desc, quiet) as bar:
        for a, b in trial_chunks(cfg.trials, cfg.chunk):
            for net, idx, eps in train_chunk_parts(sur, nodes, cfg, b - a, x_tr, y_tr, noise, gen):
                s = score(net, x_tr, y_tr, x_te, y_te, cfg.noise_draws)
                for k in ("fisher", "clean", "sel", "pred"):
                    cat[k][a + idx] = s[k]
                cat["epochs"][a + idx] = eps
                order = sorted(range(len(idx)), key=lambda i: (float(s["sel"][i]), float(s["fisher"][i])),
                               reverse=True)[:keep]
                for i in order:
                    key = (float(s["sel"][i]), float(s["fisher"][i]))
                    if len(top) == keep and key <= top[-1][0]:
                        break
                    one = copy.deepcopy(net)
                    one.keep_trials(torch.tensor([i]))
                    top.append((key, a + int(idx[i]), one))
                    top.sort(key=lambda e: e[0], reverse=True)
                    del top[keep:]
            bar.update(b - a)
    return ArchResult(cat["fisher"], cat["clean"], cat["sel"], cat["pred"], top[0][2], top[0][1], t(),
                      cat["epochs"].astype(int), top=[e[2] for e in top], top_index=[e[1] for e in top])


#: --data-electrodes auto: each pair's short run (trials, epochs) of the network to be trained
#: (at most the run's own)
SCREEN_TRIALS, SCREEN_EPOCHS = 48, 150


def screen_ring(sur: SurrogateInfo, cfg: RingConfig, arch: str, quiet: bool = True) -> Screening:
    """--data-electrodes auto: `arch` trained briefly with its data on each pair (the ring's own
    data, gap and noise); a pair scores its best trial's accuracy under noise on the training
    set (the ring's selection score; the test set stays unseen), and works above chance + 10 points."""
    def score_pair(pair: tuple[int, int]) -> dict[str, Any]:
        trials, epochs = min(SCREEN_TRIALS, cfg.trials), min(SCREEN_EPOCHS, cfg.epochs)
        short = dataclasses.replace(cfg, data_electrodes=pair, trials=trials, epochs=epochs, chunk=trials, prune_at=())
        gap = normalised_gap(short.gap_mv, sur.ranges_v, pair)
        data = ring_splits(short, gap)
        r = train_arch(sur, ARCHS[arch], short, data, board_noise_std(sur, short.oversample))
        i = int(np.argmax(r.selection_acc))
        return {"score": float(r.selection_acc[i]), "tie": float(r.fisher[i]), "fisher": float(r.fisher[i]),
                "normalised_gap": gap}
    return screen_pairs(score_pair, f"the {arch} network's best accuracy under noise on the training data "
                                    f"({min(SCREEN_TRIALS, cfg.trials)} trials of {min(SCREEN_EPOCHS, cfg.epochs)} "
                                    "epochs)", 0.6, quiet=quiet)


def nn_baseline(hidden: int, cfg: RingConfig, data: dict[str, Any], trials: int) -> dict[str, Any]:
    """The same experiment with `hidden` logistic units in place of DNPUs (2 -> hidden -> 1): the
    ring's loss, epochs and optimiser on the same data, noise-free (no device), `trials` trials
    batched; the trial with the best training accuracy is reported on the test set."""
    import torch

    from host.networks.logistic import fit_logistic, logistic_logits
    from host.networks.losses import neg_fisher_per_trial
    from host.networks.classifiers import TrialNNClassifier
    from host.networks.trials import TrialAdam

    t = timer()
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(data[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    gen = torch.Generator().manual_seed(cfg.seed * 7 + 100 + hidden)
    model = TrialNNClassifier(hidden, trials, generator=gen)
    opt = TrialAdam(model, cfg.lr)
    model.train()
    for _ in range(cfg.epochs):
        loss = neg_fisher_per_trial(model(x_tr), y_tr).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        o_tr, o_te = model(x_tr).double(), model(x_te).double()
        w, b = fit_logistic(o_tr, y_tr.double())
        train_acc = _accuracy(logistic_logits(o_tr, o_tr, w, b), y_tr.double())
        test_acc = _accuracy(logistic_logits(o_te, o_tr, w, b), y_te.double())
    best = int(torch.argmax(train_acc))
    return {"hidden": hidden, "trials": trials, "best_trial": best, "train_accuracy": float(train_acc[best]),
            "test_accuracy": float(test_acc[best]), "max_test_accuracy": float(test_acc.max()),
            "median_test_accuracy": float(test_acc.median()), "wall_s": t()}


def board_validate(session: BoardSession, net: Any, data: dict[str, np.ndarray], runs: int,
                   record: dict[str, Any], quiet: bool = True, desc: str = "board", oversample: int = 1,
                   train_runs: int = RingConfig.board_train_runs, devices: list[list[int]] | None = None) -> None:
    """Best network on the board: the logistic neuron re-trained on the currents of `train_runs`
    passes over the training set (all pooled, as the paper's ~80 samples per point), scored on each
    of them (train accuracy) and on `runs` test passes. `devices`: the device of every node (per
    layer) on a board of several chips, each layer's nodes measured together; None: every node
    on the board's device 0, time-multiplexed.

    Fills `record` as it goes, so a board failure keeps the runs measured so far."""
    import torch

    from host.networks.logistic import fit_logistic, fitted_correct, logistic_logits

    x_tr, y_tr = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"]).double()
    x_te, y_te = torch.as_tensor(data["x_test"]), data["y_test"]

    def measure(v: np.ndarray) -> np.ndarray:
        return session.measure(v, what="ring network", oversample=oversample)

    def measure_layer(i: int, v: np.ndarray) -> np.ndarray:
        return session.measure_devices(v, devices[i], what=f"ring network layer {i}", oversample=oversample)

    def on_board(x: Any) -> Any:
        return net.measured(x, measure) if devices is None else net.measured(x, measure_layer, by_layer=True)

    if devices is not None:
        record["node_devices"] = devices
    fit_out = torch.cat([on_board(x_tr).double() for _ in range(train_runs)], dim=1)   # [1, P B] nA
    y_fit = y_tr.repeat(train_runs)[None]
    w, b = fit_logistic(fit_out, y_fit)
    record["logistic"] = {"w": float(w[0]), "b": float(b[0])}
    record["train_runs"] = train_runs
    record["train_accuracy"] = float(fitted_correct(fit_out, y_fit, fit_out, y_fit).mean())
    record["runs"] = []
    outs = []
    with progress_bar(runs, desc, quiet) as bar:
        for _ in range(runs):
            o = on_board(x_te).double()
            lg = logistic_logits(o, fit_out, w, b)[0].numpy()
            record["runs"].append(float(np.mean((lg > 0) == (y_te > 0.5))))
            outs.append(lg)
            bar.update(1)
    record["accuracy_mean"] = float(np.mean(record["runs"]))
    record["accuracy_std"] = float(np.std(record["runs"]))
    record["test_logits"] = np.stack(outs)        # for the violin plot; dropped from JSON
    # the fitted neuron expressed on the network's stored output standardisation (for export)
    m = float(fit_out.mean())
    s = float(fit_out.std(unbiased=False)) + 1e-9
    mu, sd = float(net.norms[-1].mean[0, 0, 0]), float(net.norms[-1].std()[0, 0, 0])
    record["logistic_on_standardised"] = (float(w[0]) * sd / s, float(w[0]) * (mu - m) / s + float(b[0]))


def _plots(out: Path, res: dict[str, ArchResult], board: dict[str, Any], pred_logits: dict[str, np.ndarray],
           x_te: np.ndarray, y_te: np.ndarray) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in res.items():
        ax[0].hist(r.fisher, bins=40, alpha=0.6, label=name)
        ax[1].hist(100 * r.noisy_test_acc, bins=40, alpha=0.6, label=f"{name} (under noise)")
        ax[1].hist(100 * r.clean_test_acc, bins=40, alpha=0.4, histtype="step", label=f"{name} (noise-free)")
    ax[0].set_xlabel("Fisher criterion (train, noise-free)")
    ax[0].set_ylabel("trials")
    ax[1].set_xlabel("test accuracy (%)")
    for a in ax:
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ring_histograms.png", dpi=120)
    plt.close(fig)

    panels = [(n, "surrogate (noisy)", pred_logits[n]) for n in res if n in pred_logits]
    panels += [(n, "board", board[n]["test_logits"]) for n in res if n in board and "test_logits" in board[n]]
    if not panels:
        return
    fig, axs = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for a, (name, src, lg) in zip(axs[0], panels):
        lg = np.atleast_2d(lg)
        data = [lg[:, y_te < 0.5].ravel(), lg[:, y_te > 0.5].ravel()]
        a.violinplot(data, showmedians=True)
        a.axhline(0.0, color="k", lw=0.6, ls="--")
        a.set_xticks([1, 2], ["class 0\n(inner)", "class 1\n(ring)"])
        a.set_title(f"{name}: {src}", fontsize=9)
        a.set_ylabel("output neuron logit")
    fig.tight_layout()
    fig.savefig(out / "ring_violins.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x_te[:, 0], x_te[:, 1], c=y_te, s=8, cmap="coolwarm")
    ax.set_aspect("equal")
    ax.set_title("ring test data (normalised inputs)")
    fig.savefig(out / "ring_data.png", dpi=120)
    plt.close(fig)


def loop_and_validate(session: BoardSession, sur: SurrogateInfo, r: ArchResult, data: dict[str, Any], cfg: RingConfig,
                      loop_cfg: LoopConfig, rec: dict[str, Any], off_chip: dict[str, Any], out: Path, quiet: bool,
                      name: str, save: Any) -> tuple[Any, dict[str, Any]]:
    """--train-on board for one architecture: fine-tune its best trials in the loop, validate the
    result like the off-chip network; `rec` is filled as it goes (a board failure keeps it)."""
    outcome = fine_tune_on_board(session, sur, r.top, data, cfg.alpha, loop_cfg, quiet, f"loop {name}")
    rec.update(outcome.to_json())
    rec["control_voltages"] = outcome.best.controls(0)
    save()
    if outcome.error is not None:
        raise ExperimentError(f"in-the-loop training of {name}: {outcome.error} (the best controls so far are "
                              f"in results.json)")
    val: dict[str, Any] = {}
    if outcome.kept_off_chip and "accuracy_mean" in off_chip:
        # the off-chip network itself: its validation stands (measuring it again would only re-draw the noise)
        val = dict(off_chip, account={"points": 0, "board_s": 0.0})
    else:
        samples, board_s = session.samples, session.board_s
        board_validate(session, outcome.best, data, cfg.board_runs, val, quiet, f"board {name} (loop)",
                       cfg.oversample, cfg.board_train_runs, sur.node_devices(ARCHS[name]))
        val["account"] = {"points": session.samples - samples, "board_s": session.board_s - board_s}
    rec["board"] = {k: v for k, v in val.items() if k != "test_logits"}
    rec["off_chip_board_accuracy"] = off_chip.get("accuracy_mean")
    rec["gain_points"] = 100 * (val["accuracy_mean"] - off_chip.get("accuracy_mean", float("nan")))
    # its standard error over the draw of the test points (the same points for both: paired); the
    # confirmation split measured the same gain on more points (selection.round2)
    rec["gain_standard_error_points"] = (0.0 if outcome.kept_off_chip else
                                         100 * paired_test_gain(val, off_chip, data["y_test"])[1]
                                         if "test_logits" in off_chip else None)
    last = outcome.history[-1]["train_accuracy"][outcome.chosen_candidate] if outcome.history else None
    if outcome.chosen_state == "GA" and outcome.ga:         # its last generation's measured pass
        last = outcome.ga["last_generation_train_accuracy"][outcome.chosen_candidate]
    # what the loop claimed for the chosen network (its re-measured training accuracy), against
    # what the validation measured with the stored (board-calibrated) standardisation
    r2 = outcome.selection.get("round2", {})
    who = "off_chip" if outcome.kept_off_chip else "winner"
    claim = r2.get(f"{who}_train_accuracy")
    rec["loop_claim"] = {"train_accuracy_in_loop": claim, "train_accuracy_validated": val["train_accuracy"],
                         "difference_points": (None if claim is None else 100 * (val["train_accuracy"] - claim)),
                         "validation_accuracy_in_loop": r2.get(f"{who}_selection_accuracy"),
                         "selection_split": outcome.selection.get("confirmation_split"),
                         "test_accuracy_validated": val["accuracy_mean"],
                         "last_epoch_train_accuracy": last}
    if outcome.twin is not None and loop_cfg.learn_twin:
        rec["twin"] = dict(outcome.twin)
        if outcome.twin_model is not None:
            rec["twin"]["path"] = str(write_twin(out / f"surrogate_tuned_{name}.onnx", outcome.twin_model, sur, outcome.twin))
    return outcome.best, val


def paired_test_gain(new: dict[str, Any], old: dict[str, Any], y_test: np.ndarray) -> tuple[float, float]:
    """(accuracy gain, standard error over the points) of one validated network on another, from
    their test logits [runs, B]: per test point, the share of runs classified right."""
    right = [np.mean((np.asarray(r["test_logits"]) > 0) == (np.asarray(y_test) > 0.5), axis=0) for r in (new, old)]
    return paired_gain(right[0], right[1])


def write_twin(path: Path, model: Any, sur: SurrogateInfo, report: dict[str, Any]) -> Path:
    """The surrogate fine-tuned in the loop as a surrogate file of its own: the original's metadata,
    its amplification folded into the weights (the torch model is in nA), the fine-tuning's report and
    provenance. It loads like any surrogate (``--surrogate``, ``sim://?device=surrogate&model=``)."""
    from host.surrogate.torch_model import export_onnx

    meta = {k: v for k, v in sur.metadata.items() if k != "format"}
    meta.update(amplification=1.0, fine_tuned_from=sur.path, fine_tuned_in_loop=report,
                note="fine-tuned on the (volts, current) pairs measured during ring --train-on board; accurate where "
                     "that network operates, not re-tested over the whole ranges")
    export_onnx(model, path, meta)
    return path


def plot_board_time(path: Path, off_chip: dict[str, Any], loops: dict[str, Any], archs: list[str]) -> None:
    """Accuracy against board time: the off-chip network's validation, then the loop's epochs
    (best measured training accuracy over the candidates) and its validated result."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, name in enumerate(archs):
        col = f"C{i}"
        oc, lp = off_chip.get(name, {}), loops.get(name, {})
        t0 = oc.get("account", {}).get("board_s", 0.0)
        if "accuracy_mean" in oc:
            ax.plot([t0], [100 * oc["accuracy_mean"]], "o", color=col, label=f"{name}: off-chip, validated")
        hist = lp.get("history", [])
        if hist:
            ax.plot([t0 + h["board_s"] for h in hist], [100 * h["best_train_accuracy"] for h in hist], "-",
                    color=col, alpha=0.7, label=f"{name}: in the loop (train, measured)")
        ga = (lp.get("ga") or {}).get("history", [])
        if ga:
            ax.plot([t0 + g["board_s"] for g in ga], [100 * g["best_fitness"] for g in ga], "--", color=col, alpha=0.7,
                    label=f"{name}: the loop's GA (train, best measured)")
        b = lp.get("board", {})
        if "accuracy_mean" in b and hist:
            ax.plot([t0 + lp["account"]["board_s"] + b["account"]["board_s"]], [100 * b["accuracy_mean"]], "*",
                    ms=12, color=col, label=f"{name}: in the loop, validated")
    ax.set_xlabel("board time (s)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, "results/ring")
    d = RingConfig()
    p.add_argument("--gap-mv", type=float, default=d.gap_mv, help="gap between the classes, mV on the data electrodes")
    p.add_argument("--n-per-class", type=int, default=d.n_per_class, help="points per class and split")
    p.add_argument("--val-per-class", type=int, default=d.val_per_class,
                   help="points per class of a validation split (drawn like train and test, never trained on) on "
                        "which --train-on board chooses its network; 0: on the training set")
    p.add_argument("--confirm-per-class", type=int, default=d.confirm_per_class,
                   help="points per class of a confirmation split (drawn after the validation split, never trained "
                        "on or chosen on) on which the loop's choice must beat the off-chip network; 0: on the "
                        "validation split again")
    p.add_argument("--trials", type=int, default=d.trials, help="independent trials per architecture")
    p.add_argument("--epochs", type=int, default=d.epochs, help="full-batch epochs per trial")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--data-electrodes", default=",".join(map(str, d.data_electrodes)),
                   help="the two data electrodes of every node, like 2,4, or auto: train the network briefly "
                        "on every pair and take the best")
    p.add_argument("--chunk", type=int, default=d.chunk, help="trials per batched tensor program")
    p.add_argument("--train-noise-factor", type=float, default=d.train_noise_factor,
                   help="training noise std in units of the surrogate's test RMSE")
    p.add_argument("--noise-draws", type=int, default=d.noise_draws, help="noisy passes that score each trial")
    p.add_argument("--board-runs", type=int, default=d.board_runs, help="board passes over the test set")
    p.add_argument("--board-train-runs", type=int, default=d.board_train_runs,
                   help="board passes over the training set; the logistic output neuron is re-fitted on all of them")
    p.add_argument("--oversample", type=int, default=d.oversample,
                   help="board readout averaged over this many ADC samples per point (the prediction "
                        "uses the matching noise)")
    p.add_argument("--archs", default="single,2-2-1",
                   help="comma-separated: single, 2-2-1 (the paper's five nodes), 2-1 (three nodes)")
    p.add_argument("--fp32", action="store_true", help="train in float32 (default: bfloat16 autocast; "
                   "scores, selection and the board stay float32)")
    p.add_argument("--prune-at", default="0.25,0.5,0.75",
                   help="successive halving: fractions of --epochs at which each chunk keeps its better "
                        "--prune-keep share of trials ('' for none)")
    p.add_argument("--prune-keep", type=float, default=0.5, help="share of a chunk's trials kept at each pruning")
    p.add_argument("--nn-baselines", default="2,3",
                   help="hidden-unit counts of neural-network baselines trained the same way on the same data "
                        "('' for none)")
    p.add_argument("--no-export", action="store_true", help="do not write the best 2-2-1 network file")
    lc = LoopConfig()
    add_train_on(p, "after the off-chip search and its validation, fine-tune the best --loop-candidates "
                        "trials in the loop (forward on the board, backward through the surrogate) and validate again")
    p.add_argument("--loop-candidates", type=int, default=lc.candidates, help="off-chip trials fine-tuned on the board")
    p.add_argument("--loop-epochs", type=int, default=lc.epochs, help="optimiser steps on the board")
    p.add_argument("--loop-lr", type=float, default=lc.lr, help="Adam learning rate in the loop")
    p.add_argument("--loop-ga", type=_loop_ga, default="auto", metavar="GENERATIONS",
                   help="after the gradient epochs, a genetic algorithm on the board refines the candidates (its first "
                        "generation their start, best and final states, the rest random) for this many generations; "
                        f"its fittest join the selection (0: none; auto: {SINGLE_NODE_GA} for the single DNPU, "
                        "none for the networks)")
    p.add_argument("--loop-significance", type=float, default=lc.significance, metavar="SIGMAS",
                   help="the loop's network replaces the off-chip one only when its gain on the confirmation "
                        "points exceeds this many standard errors")
    p.add_argument("--loop-ga-population", type=int, default=lc.ga_population, help="the loop's GA population")
    p.add_argument("--learn-twin", action="store_true",
                   help="fine-tune a copy of the surrogate on the states measured in the loop and report its error "
                        "there before and after; written as surrogate_tuned_<arch>.onnx, a surrogate file like any other")


def _loop_ga(text: str) -> int | None:
    """--loop-ga: generations, or auto (None: LoopConfig's default per network)."""
    if text == "auto":
        return None
    try:
        g = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of generations, got {text!r}") from None
    if g < 0:
        raise argparse.ArgumentTypeError(f"generations must be >= 0, got {g}")
    return g


def _prune_epochs(text: str, epochs: int) -> tuple[int, ...]:
    try:
        fr = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise ExperimentError(f"--prune-at: expected fractions like 0.25,0.5, got {text!r}") from None
    if any(not 0 < f < 1 for f in fr):
        raise ExperimentError(f"--prune-at: fractions must lie in (0, 1), got {text!r}")
    return tuple(sorted({e for e in (int(round(f * epochs)) for f in fr) if 0 < e < epochs}))


def export_network(out: Path, net: Any, logistic: tuple[float, float], sur: SurrogateInfo,
                   meta: dict[str, Any]) -> dict[str, Any]:
    """The best 2-2-1 as a network ONNX file (core.io.write_network).

    The file ends in two class scores (-logit/2, +logit/2), so that argmax is the class and
    `python -m host.deploy --model FILE --data ring_test.npz` scores it like any classifier."""
    from core.io import write_network
    from core.network import DnpuLayer, Linear

    layers = net.to_core_layers(0, logistic) + [Linear(weight=np.array([[-0.5], [0.5]]), bias=np.zeros(2))]
    path = out / "ring_2-2-1.onnx"
    if isinstance(sur, ChipSurrogates):     # each node names its device's surrogate (and so its chip)
        devices = iter(d for layer in sur.node_devices(net.nodes) for d in layer)
        layers = [dataclasses.replace(l, nodes=[dataclasses.replace(n, surrogate=next(devices)) for n in l.nodes])
                  if isinstance(l, DnpuLayer) else l for l in layers]
        write_network(path, 2, layers, sur.paths, meta)
    else:
        write_network(path, 2, layers, sur.path, meta)
    return {"format": "network-onnx", "path": str(path)}


def run(args: argparse.Namespace) -> int:
    import torch

    clock = timer()
    try:
        set_threads(args.threads, args.engine)
        archs = [a.strip() for a in args.archs.split(",") if a.strip()]
        if not archs or any(a not in ARCHS for a in archs):
            raise ExperimentError(f"--archs: choose from {', '.join(ARCHS)}, got {args.archs!r}")
        sur = load_surrogates(args.surrogate, engine=args.engine, threads=args.threads)
        choice = parse_data_electrodes(args.data_electrodes)
        try:
            nn_hidden = [int(h) for h in args.nn_baselines.split(",") if h.strip()]
        except ValueError:
            raise ExperimentError(f"--nn-baselines: expected hidden-unit counts like 2,3, got {args.nn_baselines!r}") from None
        if any(h < 1 for h in nn_hidden):
            raise ExperimentError(f"--nn-baselines: hidden-unit counts must be >= 1, got {args.nn_baselines!r}")
        # with auto, the screening starts from the default pair and replaces it below
        cfg = RingConfig(gap_mv=args.gap_mv, data_electrodes=RingConfig.data_electrodes if choice == AUTO else choice,
                         n_per_class=args.n_per_class, val_per_class=args.val_per_class,
                         confirm_per_class=args.confirm_per_class,
                         trials=args.trials, epochs=args.epochs,
                         lr=args.lr, chunk=args.chunk, train_noise_factor=args.train_noise_factor,
                         noise_draws=args.noise_draws, board_runs=args.board_runs,
                         board_train_runs=args.board_train_runs, bf16=not args.fp32,
                         oversample=args.oversample,
                         seed=args.seed, noise_std_na=sur.test_rmse_na, prune_keep=args.prune_keep,
                         prune_at=_prune_epochs(args.prune_at, args.epochs))
        loop_cfg = (LoopConfig(candidates=args.loop_candidates, epochs=args.loop_epochs, lr=args.loop_lr,
                               learn_twin=args.learn_twin, ga_generations=args.loop_ga,
                               significance=args.loop_significance, claim_passes=args.board_train_runs,
                               ga_population=args.loop_ga_population, ga_seed=args.seed)
                    if trains_on_board(args) else None)
        if isinstance(sur, ChipSurrogates) and loop_cfg is not None and loop_cfg.learn_twin:
            raise ExperimentError("--learn-twin fine-tunes one surrogate; with one per device (several "
                                  "--surrogate files) leave it off")
        if isinstance(sur, ChipSurrogates) and args.board_device != 0:
            raise ExperimentError("--board-device runs on one device; with one surrogate per device the nodes "
                                  "take every device of the board")
        out = out_folder(args.out)
        chosen = choose_electrodes(choice, lambda: screen_ring(sur, cfg, "2-2-1" if "2-2-1" in archs else archs[0],
                                                               args.quiet))
        cfg = dataclasses.replace(cfg, data_electrodes=chosen.electrodes)
        gap = normalised_gap(cfg.gap_mv, sur.ranges_v, cfg.data_electrodes)
        data = ring_splits(cfg, gap)
    except (ExperimentError, ValueError) as e:
        return fail(str(e))
    x_tr, y_tr, x_te, y_te = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    noise = board_noise_std(sur, cfg.oversample)      # selection and prediction: the board's expected deviation
    write_json(out / "config.json", {"run": run_info(args), "ring": dataclasses.asdict(cfg), "normalised_gap": gap,
                                     "selection_noise_std_na": noise,
                                     "surrogate": {"path": sur.path, "test_rmse_na": sur.test_rmse_na}})
    write_json(out / "data.json", data)
    np.savez(out / "ring_test.npz", x=x_te, labels=y_te.astype(np.int64))
    results: dict[str, Any] = {
        "archs": {}, "board": {}, "warnings": chosen.warnings(), "wall_s": {},
        "data_electrodes": list(cfg.data_electrodes), "data_electrodes_choice": chosen.to_json()}
    board_records: dict[str, Any] = {}

    def save() -> None:
        b = {k: {kk: vv for kk, vv in v.items() if kk != "test_logits"} for k, v in board_records.items()}
        results["board"] = b
        write_json(out / "results.json", results)

    res: dict[str, ArchResult] = {}
    in_loop: dict[str, Any] = {}            # arch -> (fine-tuned DNPUNet, its validation record)
    pred_logits: dict[str, np.ndarray] = {}
    for name in archs:
        r = train_arch(sur, ARCHS[name], cfg, data, noise, args.quiet, name,
                       keep=loop_cfg.candidates if loop_cfg is not None else 1)
        res[name] = r
        s = score(r.best, *(torch.as_tensor(data[k]) for k in ("x_train", "y_train", "x_test", "y_test")),
                  draws=cfg.noise_draws)
        # predicted per-class logits under noise for the violin plot
        with torch.no_grad():
            from host.networks.logistic import fit_logistic, logistic_logits
            r.best.eval()
            r.best.set_noise_in_eval(True)
            fo = r.best(torch.as_tensor(x_tr)).double()
            w, b = fit_logistic(fo, torch.as_tensor(y_tr).double()[None])
            pred_logits[name] = np.concatenate([logistic_logits(r.best(torch.as_tensor(x_te)).double(), fo, w, b).numpy()
                                                for _ in range(cfg.noise_draws)])
            r.best.set_noise_in_eval(False)
        results["archs"][name] = {
            "trials": cfg.trials, "wall_s": r.wall_s, "best_trial": r.best_index,
            "best": {"fisher": float(s["fisher"][0]), "clean_test_accuracy": float(s["clean"][0]),
                     "selection_accuracy": float(s["sel"][0]), "predicted_board_accuracy": float(s["pred"][0]),
                     "control_voltages": r.best.controls(0)},
            "max_clean_test_accuracy": float(r.clean_test_acc.max()),
            "median_clean_test_accuracy": float(np.median(r.clean_test_acc)),
            "max_noisy_test_accuracy": float(r.noisy_test_acc.max()),
            "fisher": r.fisher, "clean_test_accuracy": r.clean_test_acc, "selection_accuracy": r.selection_acc,
            "noisy_test_accuracy": r.noisy_test_acc, "epochs_trained": r.epochs,
        }
        results["wall_s"][name] = r.wall_s
        save()
    results["nn_baselines"] = {}
    for h in nn_hidden:
        results["nn_baselines"][f"nn{h}"] = nn_baseline(h, cfg, data, cfg.trials)
        save()
    status = 0
    if not args.no_board:
        try:
            with BoardSession(args.board, args.limit_policy, args.board_device) as session:
                results["board_url"] = args.board
                if isinstance(sur, ChipSurrogates):
                    results["chips"] = check_chips(session, sur.surrogates)
                else:
                    results["chip"] = session.check_chip(sur)
                for name in archs:
                    board_records[name] = {}
                    samples, board_s = session.samples, session.board_s
                    board_validate(session, res[name].best, data, cfg.board_runs, board_records[name],
                                   args.quiet, f"board {name}", cfg.oversample, cfg.board_train_runs,
                                   sur.node_devices(ARCHS[name]))
                    pred = results["archs"][name]["best"]["predicted_board_accuracy"]
                    board_records[name]["predicted_accuracy"] = pred
                    board_records[name]["difference_points"] = 100 * (board_records[name]["accuracy_mean"] - pred)
                    board_records[name]["account"] = {"points": session.samples - samples,
                                                      "board_s": session.board_s - board_s}
                    results["warnings"] = session.warnings
                    save()
                if loop_cfg is not None:
                    results["in_loop"] = {"config": dataclasses.asdict(loop_cfg)}
                    for name in archs:
                        rec = results["in_loop"][name] = {"candidates": res[name].top_index}
                        in_loop[name] = loop_and_validate(session, sur, res[name], data, cfg, loop_cfg, rec,
                                                          board_records[name], out, args.quiet, name, save)
                        results["warnings"] = session.warnings + rec.get("warnings", [])
                        save()
        except ExperimentError as e:
            results["error"] = str(e)
            save()
            status = fail(f"{e}; results so far are in {out / 'results.json'}")
    if "2-2-1" in res and not args.no_export:
        export_net, rec = res["2-2-1"].best, board_records.get("2-2-1", {})
        if "2-2-1" in in_loop:
            export_net, rec = in_loop["2-2-1"]
        if "logistic_on_standardised" in rec:
            logistic = rec["logistic_on_standardised"]
            src = "re-fitted on board-measured training currents"
        else:
            from host.networks.logistic import fit_logistic
            with torch.no_grad():
                z = export_net.standardised(export_net(torch.as_tensor(x_tr))).double()
            w, b = fit_logistic(z, torch.as_tensor(y_tr).double()[None])
            z_m, z_s = float(z.mean()), float(z.std(unbiased=False)) + 1e-9
            logistic = (float(w[0]) / z_s, float(b[0]) - float(w[0]) * z_m / z_s)
            src = "fitted on surrogate outputs"
        meta = {"experiment": "ring", "task": "ring", "dataset": str(out / "ring_test.npz"),
                "architecture": "2-2-1", "gap_mv": cfg.gap_mv, "seed": cfg.seed,
                "output": "class scores (-logit/2, +logit/2): class 1 (ring) when the second is larger",
                "logistic": src,
                "input": "2 features in the unit disc, normalised ring coordinates",
                "predicted_accuracy": results["archs"]["2-2-1"]["best"]["predicted_board_accuracy"],
                "board_accuracy": rec.get("accuracy_mean"),
                "trained": "off-chip, fine-tuned in the loop" if "2-2-1" in in_loop else "off-chip"}
        try:
            results["export"] = export_network(out, export_net, logistic, sur, meta)
        except Exception as e:  # the export must not lose the measured results
            results["export"] = {"error": f"{type(e).__name__}: {e}"}
            status = status or fail(f"export of the 2-2-1 network failed: {e}")
    results["wall_s"]["total"] = clock()
    save()
    _plots(out, res, board_records, pred_logits, x_te, y_te)
    if results.get("in_loop"):
        plot_board_time(out / "ring_board_time.png", board_records, results["in_loop"], archs)
    for name in archs:
        a = results["archs"][name]["best"]
        line = (f"{name:7s} best trial: noise-free test {100 * a['clean_test_accuracy']:.2f} %, "
                f"predicted (under noise) {100 * a['predicted_board_accuracy']:.2f} %")
        if name in board_records and "accuracy_mean" in board_records[name]:
            line += f", board {100 * board_records[name]['accuracy_mean']:.2f} % (+- {100 * board_records[name]['accuracy_std']:.2f})"
        print(line)
    for name in archs:
        lp = results.get("in_loop", {}).get(name, {})
        if "accuracy_mean" in lp.get("board", {}):
            a, r2 = lp["account"], lp.get("selection", {}).get("round2", {})
            se = lp.get("gain_standard_error_points")
            gain = f"{lp['gain_points']:+.2f}" + (f" +- {se:.2f}" if se else "")
            if "gain" in r2:
                gain += f"; confirmation {100 * r2['gain']:+.2f} +- {100 * r2['gain_standard_error']:.2f}"
            print(f"{name:7s} in the loop: board {100 * lp['board']['accuracy_mean']:.2f} % "
                  f"({gain} points on off-chip), {a['points']:,} board points, "
                  f"{a['board_s']:.1f} board s, {a['host_s']:.1f} host s"
                  + (" (kept the off-chip network: the loop did not measurably improve on it)"
                     if lp.get("kept_off_chip") else f" ({lp['chosen_state']} of candidate {lp['chosen_candidate']})"))
    for key, nb in results["nn_baselines"].items():
        print(f"{key:7s} best trial (neural network, {nb['hidden']} logistic hidden units, noise-free): "
              f"test {100 * nb['test_accuracy']:.2f} %")
    for w in results["warnings"]:
        print(f"warning: {w}")
    print(f"results in {out}")
    return status
