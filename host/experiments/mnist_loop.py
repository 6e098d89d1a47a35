"""MNIST fine-tuned in the loop (``mnist --train-on board``).

A trained MNIST network (a file such as models/mnist.onnx, read back with
``mnist_model.from_layers``, or the network just trained off-chip in the same run) is fine-tuned
with mini-batches measured on the board: the forward pass of each mini-batch is one sweep that
holds all ten nodes of every image (the ten nodes are time slots of one device), the backward
pass takes the surrogate's input Jacobian at the volts the board applied (host.networks.in_loop),
and everything the network learns off-chip learns here too: the linear layer, each node's input
map, output scale and offset, and the control voltages (where the network has any: rf7 puts data
on all seven electrodes and has none). A step that would push a control past its electrode range
or the board's limits is clipped (``clip_to_limits``) and counted, with a warning in the report.

Selection never sees the test set. Every ``report_every`` steps the network is measured on the
first ``val_images`` validation images, and the state with the best measured validation accuracy
is kept. At the end the start network and that best state are measured on the same test images
(the first ``test_images``) and the report says which way it went (with McNemar's p); the
fine-tuned network file is written when a fine-tuned state beat the start network on the
validation images: the test images decide nothing. A board that fails mid-run, or Ctrl-C, keeps
everything measured so far in results.json and writes the best state measured so far (the start
network if no fine-tuned state has beaten it on the validation images) as
``<name>_board_best_so_far.onnx``; the board ends at 0 V (BoardSession).

    python -m host.experiments mnist --train-on board --init models/mnist.onnx --board sim://?seed=0
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from host.experiments.errors import ExperimentError, fail
from host.experiments.results import write_json

INTERRUPTED = "interrupted (Ctrl-C)"
RESULTS = "results.json"

if TYPE_CHECKING:
    from host.experiments.board_session import BoardSession


@dataclass(frozen=True)
class MnistLoopConfig:
    steps: int = 400            # optimiser steps on the board (one mini-batch sweep each)
    batch: int = 128            # training images per step (x 10 nodes = points per sweep)
    lr: float = 1e-4            # Adam, every trainable parameter
    report_every: int = 50      # steps per report line; the validation images are measured then
    val_images: int = 1000      # first N validation images: the measured accuracy that picks the best state
    test_images: int = 2000     # first N test images: start and fine-tuned network measured on the same ones
    eval_batch: int = 1000      # images per board sweep when measuring validation and test accuracy
    seed: int = 0               # order of the training images

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "report_every", "val_images", "test_images", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"the loop's {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"the loop's learning rate must be > 0, got {self.lr}")


@dataclass
class StartNetwork:
    """The network the loop starts from: its name in the results, the torch model, its file."""

    name: str
    model: Any                  # mnist_model.LinearDNPUClassifier on the loop's surrogate
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class MnistLoopOutcome:
    history: list[dict[str, Any]] = field(default_factory=list)
    start_state: dict[str, np.ndarray] = field(default_factory=dict)
    start_val_accuracy: float | None = None
    best_state: dict[str, np.ndarray] | None = None     # best fine-tuned state (by measured validation accuracy)
    best_step: int = 0                                   # its step; 0: no fine-tuned state measured yet
    best_val_accuracy: float | None = None
    steps_done: int = 0
    train_points: int = 0                                # points measured by the training steps (steps x batch x 10)
    clipped_values: int = 0
    error: str | None = None
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    account: dict[str, Any] = field(default_factory=dict)

    def best_so_far(self) -> tuple[str, dict[str, np.ndarray], int, float | None]:
        """(which, state, step, validation accuracy) of the best network measured so far, the start included."""
        if self.best_state is not None and (self.start_val_accuracy is None
                                            or (self.best_val_accuracy or 0.0) > self.start_val_accuracy):
            return "fine-tuned", self.best_state, self.best_step, self.best_val_accuracy
        return "start", self.start_state, 0, self.start_val_accuracy

    def to_json(self) -> dict[str, Any]:
        return {"history": self.history, "steps_done": self.steps_done, "train_points": self.train_points,
                "start_val_accuracy": self.start_val_accuracy,
                "best_step": self.best_step, "best_val_accuracy": self.best_val_accuracy,
                "clipped_control_values": self.clipped_values, "error": self.error,
                "interrupted": self.interrupted, "warnings": self.warnings, "account": self.account}


def trainable_state(model: Any) -> dict[str, np.ndarray]:
    """Copies of the parameters the loop trains (the frozen surrogate is not part of them)."""
    return {k: p.detach().cpu().numpy().copy() for k, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, np.ndarray]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(torch.as_tensor(v))


def board_logits(model: Any, loop: Any, images: np.ndarray, batch: int) -> np.ndarray:
    """Logits [n, 10] of uint8 images [n, 28, 28] measured on the board, `batch` images per sweep."""
    import torch

    from host.mnist_data import to_inputs
    from host.networks.in_loop import on_board

    out = []
    model.eval()
    with on_board(model, loop), torch.no_grad():
        for a in range(0, len(images), batch):
            out.append(model(torch.as_tensor(to_inputs(images[a:a + batch]))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def surrogate_logits(model: Any, images: np.ndarray, batch: int = 2000) -> np.ndarray:
    """Logits [n, 10] through the surrogate (the off-chip prediction), noise-free."""
    import torch

    from host.mnist_data import to_inputs

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.as_tensor(to_inputs(images[a:a + batch]))).numpy()
                               for a in range(0, len(images), batch)])


def _check_sizes(data: Any, cfg: MnistLoopConfig) -> None:
    for what, split, n in (("batch", data.train, cfg.batch), ("val_images", data.val, cfg.val_images),
                           ("test_images", data.test, cfg.test_images)):
        if n > len(split):
            raise ExperimentError(f"the loop's {what} is {n}, the split holds only {len(split)} images")


def fine_tune(loop: Any, limits_v: np.ndarray | None, model: Any, data: Any, cfg: MnistLoopConfig, *,
              progress: bool = False, log: Callable[[str], None] = print, name: str = "mnist",
              on_report: Callable[[MnistLoopOutcome], None] | None = None) -> MnistLoopOutcome:
    """Fine-tune `model` (a LinearDNPUClassifier) in the loop; see the module doc.

    loop: a host.networks.in_loop.BoardLoop on the board; limits_v [7, 2]: the board's limits. A
    board failure (ExperimentError) or Ctrl-C ends the loop with ``outcome.error`` set; the
    history and the best state so far are kept. The model is left in its last state."""
    import torch
    from tqdm import tqdm

    from host.mnist_data import to_inputs
    from host.networks.in_loop import clip_to_limits, on_board

    _check_sizes(data, cfg)
    outcome = MnistLoopOutcome()
    clipped = clip_to_limits(model, limits_v)
    if clipped:
        outcome.warnings.append(f"{clipped} control values of the start network outside the electrode ranges or "
                                "the board's limits were clipped before the loop")
    outcome.start_state = trainable_state(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    imgs, labels = data.train.images, torch.as_tensor(np.asarray(data.train.labels, dtype=np.int64))
    order, pos = torch.randperm(len(labels), generator=gen), 0
    val_img, val_lab = data.val.images[:cfg.val_images], np.asarray(data.val.labels[:cfg.val_images])

    def account() -> dict[str, Any]:
        return {**loop.account.to_json(), "train_points": outcome.train_points}

    def val_accuracy() -> float:
        return float((board_logits(model, loop, val_img, cfg.eval_batch).argmax(1) == val_lab).mean())

    win = {"loss": 0.0, "right": 0, "n": 0}
    try:
        outcome.start_val_accuracy = val_accuracy()
        outcome.history.append({"step": 0, "val_accuracy": outcome.start_val_accuracy, **account()})
        log(f"[{name}] in the loop on the board: start network val {outcome.start_val_accuracy:.4f} "
            f"(first {cfg.val_images} validation images, measured)")
        if on_report is not None:
            on_report(outcome)
        with tqdm(total=cfg.steps, desc=f"{name} in the loop", unit="step", disable=not progress, leave=False,
                  dynamic_ncols=True) as bar:
            for step in range(1, cfg.steps + 1):
                if pos + cfg.batch > len(order):        # every mini-batch full: the points are steps x batch x 10
                    order, pos = torch.randperm(len(labels), generator=gen), 0
                idx = order[pos:pos + cfg.batch]
                pos += cfg.batch
                x = torch.as_tensor(to_inputs(imgs[idx.numpy()]))
                y = labels[idx]
                model.train()
                with on_board(model, loop):
                    logits = model(x)                   # [B, 10]: one sweep of B x 10 points
                outcome.train_points += int(logits.numel())
                loss = torch.nn.functional.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()                         # the surrogate's Jacobian at the applied volts
                opt.step()
                outcome.clipped_values += clip_to_limits(model, limits_v)
                outcome.steps_done = step
                win["loss"] += float(loss.detach()) * len(idx)
                win["right"] += int((logits.detach().argmax(1) == y).sum())
                win["n"] += len(idx)
                bar.update(1)
                if step % cfg.report_every and step != cfg.steps:
                    continue
                val = val_accuracy()
                if outcome.best_val_accuracy is None or val > outcome.best_val_accuracy:
                    outcome.best_val_accuracy, outcome.best_step = val, step
                    outcome.best_state = trainable_state(model)
                rec = {"step": step, "images": step * cfg.batch, "loss": win["loss"] / win["n"],
                       "train_accuracy": win["right"] / win["n"], "val_accuracy": val,
                       "best_val_accuracy": outcome.best_val_accuracy, "best_step": outcome.best_step,
                       "clipped_control_values": outcome.clipped_values, **account()}
                outcome.history.append(rec)
                win = {"loss": 0.0, "right": 0, "n": 0}
                log(f"[{name}] step {step}/{cfg.steps} loss {rec['loss']:.4f} train {rec['train_accuracy']:.4f} "
                    f"val {val:.4f} (measured; best {outcome.best_val_accuracy:.4f} @ {outcome.best_step}) | "
                    f"{rec['points']} board points, board {rec['board_s']:.1f} s, host {rec['host_s']:.1f} s"
                    + (f" | warning: {outcome.clipped_values} control values clipped to their limits so far"
                       if outcome.clipped_values else ""))
                if on_report is not None:
                    on_report(outcome)
    except ExperimentError as e:
        outcome.error = str(e)
    except KeyboardInterrupt:
        outcome.error, outcome.interrupted = INTERRUPTED, True
    if outcome.clipped_values:
        outcome.warnings.append(f"{outcome.clipped_values} control values of optimiser steps would have left the "
                                "electrodes' ranges or the board's limits; clipped, never sent")
    outcome.account = account()
    return outcome


def compare_on_test(loop: Any, model: Any, outcome: MnistLoopOutcome, data: Any,
                    cfg: MnistLoopConfig) -> dict[str, Any]:
    """The start network and the best fine-tuned state measured on the same test images (and
    predicted through the surrogate); the model is left in the best fine-tuned state."""
    if outcome.best_state is None:
        raise ValueError("no fine-tuned state to compare (the loop measured none)")
    img, lab = data.test.images[:cfg.test_images], np.asarray(data.test.labels[:cfg.test_images])
    right: dict[str, np.ndarray] = {}
    rec: dict[str, Any] = {"test_images": int(len(lab))}
    for which, state in (("start", outcome.start_state), ("fine_tuned", outcome.best_state)):
        load_trainable_state(model, state)
        p0 = loop.account.points
        right[which] = board_logits(model, loop, img, cfg.eval_batch).argmax(1) == lab
        rec[which] = {"board_accuracy": float(right[which].mean()),
                      "predicted_accuracy": float((surrogate_logits(model, img).argmax(1) == lab).mean()),
                      "board_points": loop.account.points - p0}
    rec["fine_tuned"].update(step=outcome.best_step, val_accuracy=outcome.best_val_accuracy)
    rec["start"]["val_accuracy"] = outcome.start_val_accuracy
    only_new = int((right["fine_tuned"] & ~right["start"]).sum())
    only_old = int((right["start"] & ~right["fine_tuned"]).sum())
    rec["paired"] = {"only_fine_tuned_right": only_new, "only_start_right": only_old,
                     "gain_points": 100.0 * (only_new - only_old) / max(1, len(lab)),
                     "mcnemar_p": mcnemar_p(only_new, only_old)}
    rec["fine_tuned_measured_better"] = bool(rec["fine_tuned"]["board_accuracy"] > rec["start"]["board_accuracy"])
    return rec


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value of b against c discordant images (1.0 when there are none):
    how likely a split at least this uneven is if both networks were equally good."""
    import math

    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))


def write_network_file(path: Path, model: Any, surrogate_path: str, metadata: dict[str, Any]) -> str:
    """The model (its current state) as a network ONNX file, through the MNIST exporter."""
    from core.io import write_network
    from host.experiments import mnist_model as mm

    write_network(path, mm.N_PIXELS, mm.to_layers(model), [surrogate_path], metadata)
    return str(path)


def load_start(path: str | Path, sur: Any, name: str | None = None) -> StartNetwork:
    """A network file of the MNIST experiment as the loop's start, on the loop's surrogate `sur`
    (a host.experiments.surrogates.SurrogateInfo); a file trained through another surrogate is
    accepted with a warning (gradients and the written file use `sur`)."""
    from core.io import read_network
    from host.experiments import mnist_model as mm

    p = Path(path)
    if not p.is_file():
        raise ExperimentError(f"--init {str(p)!r}: no such file")
    try:
        nf = read_network(p)
        if nf.n_inputs != mm.N_PIXELS:
            raise mm.NetworkFileError(f"{p}: not an MNIST network ({nf.n_inputs} inputs)")
        if len(nf.surrogates) != 1:
            raise mm.NetworkFileError(f"{p} was trained for a board of {len(nf.surrogates)} devices (one surrogate "
                                      f"each); the loop fine-tunes a network of one device")
        model = mm.from_layers(nf.layers, sur.model, sur.ranges_v, source=str(p))
    except ValueError as e:
        raise ExperimentError(f"--init {str(p)!r}: {e}") from None
    warnings: list[str] = []
    ours = getattr(sur.model, "torch_model", sur.model)
    theirs = mm.surrogate_module(nf.surrogates[0])
    a, b = list(ours.parameters()), list(theirs.parameters())
    if len(a) != len(b) or any(x.shape != y.shape or float((x - y).abs().max()) > 1e-5 for x, y in zip(a, b)):
        warnings.append(f"{p} was trained through another surrogate than {sur.path}; the loop's gradients, the "
                        f"surrogate predictions and the written file use {sur.path}")
    return StartNetwork(name or p.stem, model, str(p), dict(nf.metadata), warnings)


def _board_summary(session: "BoardSession") -> dict[str, Any]:
    ident = session.identity
    return {k: ident.get(k) for k in ("serial", "model", "firmware")}


def run_on_board(starts: list[StartNetwork], sur: Any, data: Any, cfg: MnistLoopConfig, board_url: str,
                 limit_policy: str, out: Path, *, progress: bool = True,
                 log: Callable[[str], None] = print, board_device: int = 0) -> int:
    """Fine-tune each start network on the board; out/results.json, out/<name>_board.onnx (when it
    measured better on the validation images). Returns the exit status (0; 2 for a board failure; 130 for Ctrl-C)."""
    from host.experiments.board_session import BoardSession

    results: dict[str, Any] = {"board_url": board_url, "config": asdict(cfg), "surrogate": sur.path,
                               "networks": {}, "warnings": []}
    path = out / RESULTS

    def save() -> None:
        write_json(path, results)

    status = 0
    try:
        _check_sizes(data, cfg)
        with BoardSession(board_url, limit_policy, board_device) as session:
            results["board"] = _board_summary(session)
            results["board"]["chip"] = session.check_chip(sur)
            for st in starts:
                status = _one_network(session, st, sur, data, cfg, out, results, save, progress, log)
                if status:
                    break
    except ExperimentError as e:                 # the board did not open, or a size does not fit the data
        results["error"] = str(e)
        save()
        return fail(f"{e}; results so far are in {path}")
    save()
    return status


def _one_network(session: "BoardSession", st: StartNetwork, sur: Any, data: Any, cfg: MnistLoopConfig, out: Path,
                 results: dict[str, Any], save: Callable[[], None], progress: bool,
                 log: Callable[[str], None]) -> int:
    loop = session.in_loop(sur.model)
    rec: dict[str, Any] = {"start": st.path, "start_metadata_test_accuracy": st.metadata.get("test_accuracy"),
                           "warnings": list(st.warnings)}
    results["networks"][st.name] = rec
    for w in st.warnings:
        log(f"[{st.name}] warning: {w}")

    def record(outcome: MnistLoopOutcome) -> None:
        rec.update(outcome.to_json())
        rec["warnings"] = list(st.warnings) + outcome.warnings
        rec["account"] = {**loop.account.to_json(), "train_points": outcome.train_points}
        results["warnings"] = _session_warnings(session.warnings)
        save()

    outcome = fine_tune(loop, session.limits_v, st.model, data, cfg, progress=progress, log=log, name=st.name,
                        on_report=record)
    if outcome.error is None:
        try:
            rec["test"] = test = compare_on_test(loop, st.model, outcome, data, cfg)
        except ExperimentError as e:
            outcome.error = str(e)
        except KeyboardInterrupt:
            outcome.error, outcome.interrupted = INTERRUPTED, True
    meta = {**{k: v for k, v in st.metadata.items() if k not in ("test_accuracy", "val_accuracy")},
            "fine_tuned_from": st.path, "trained": "off-chip, fine-tuned in the loop",
            "board": results.get("board", {}), "board_url": session.url, "loop": asdict(cfg)}

    def predicted_test_accuracy() -> float:
        return float((surrogate_logits(st.model, data.test.images).argmax(1) == data.test.labels).mean())

    def write(name: str) -> None:
        rec["written"] = None
        try:
            rec["written"] = write_network_file(out / name, st.model, sur.path, meta)
        except Exception as e:  # a failed write must not lose the measured results
            rec["write_error"] = f"{type(e).__name__}: {e}"
            log(f"[{st.name}] error: writing {out / name} failed: {rec['write_error']}")

    if outcome.error is None:
        s, f = test["start"]["board_accuracy"], test["fine_tuned"]["board_accuracy"]
        log(f"[{st.name}] test accuracy measured on the board (first {test['test_images']} test images): start "
            f"{100 * s:.2f} % (predicted {100 * test['start']['predicted_accuracy']:.2f} %), fine-tuned (step "
            f"{outcome.best_step}) {100 * f:.2f} % (predicted {100 * test['fine_tuned']['predicted_accuracy']:.2f} %); "
            f"{test['paired']['only_fine_tuned_right']} images right only after, {test['paired']['only_start_right']} "
            f"only before (McNemar p = {test['paired']['mcnemar_p']:.2g})")
        if outcome.best_so_far()[0] == "fine-tuned":        # chosen on the validation images, not the test
            load_trainable_state(st.model, outcome.best_state)
            meta.update(board_test_accuracy=f, start_board_test_accuracy=s, board_test_images=test["test_images"],
                        board_val_accuracy=outcome.best_val_accuracy, test_accuracy=predicted_test_accuracy())
            write(f"{st.name}_board.onnx")
            pv = test["paired"]["mcnemar_p"]
            on_test = ("better" if f > s else "no better") + " on the test images"
            caveat = "" if pv < 0.05 else f", by no more than the draw of the test images explains (p = {pv:.2g})"
            log(f"[{st.name}] the fine-tuned network measured better on the validation images and {on_test}{caveat}: "
                f"written to {rec['written']}")
        else:
            rec["written"] = None
            log(f"[{st.name}] no fine-tuned state measured better than the start network on the validation images: "
                "no file written")
    else:
        which, state, step, val = outcome.best_so_far()
        load_trainable_state(st.model, state)
        meta.update(interrupted=outcome.error, best_so_far=which, best_step=step, board_val_accuracy=val,
                    test_accuracy=predicted_test_accuracy())
        write(f"{st.name}_board_best_so_far.onnx")
        rec["best_so_far"] = {"state": which, "step": step, "val_accuracy": val}
    record(outcome)
    if outcome.error is None:
        return 0
    where = f"results so far are in {out / RESULTS}, the best network so far ({outcome.best_so_far()[0]}) in " \
            f"{rec.get('written')}"
    if outcome.interrupted:
        log(f"[{st.name}] interrupted: {where}")
        return 130
    return fail(f"in-the-loop training of {st.name}: {outcome.error}; {where}")


def _session_warnings(warnings: list[str]) -> list[str]:
    """The session's limit warnings, at most a few of them and their count (one per clipped sweep)."""
    if len(warnings) <= 3:
        return list(warnings)
    return warnings[:3] + [f"... and {len(warnings) - 3} more board calls with voltages clipped to the limits"]
