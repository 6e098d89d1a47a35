"""MNIST with 10 DNPU nodes: `python -m host.experiments mnist`.

Trains, on the 55k/5k/10k split of host.mnist_data (pixels scaled to [-0.5, 0.5]):

    rf3     linear 784 -> 30 (no bias) feeding 10 DNPU nodes, data on e0, e3, e4 (4 control voltages each)
    rf7     linear 784 -> 70 feeding 10 DNPU nodes, data on all 7 electrodes (no control voltages)
    nn3     the neural-network baseline with rf3's receptive fields (per class an MLP 3 -> 16 -> 16 -> 1)
    nn7     the same with rf7's receptive fields (7 -> 16 -> 16 -> 1)
    linear  plain linear softmax 784 -> 10 (reference)

Each node's current times a learnable per-node scale plus offset is one class logit
(cross-entropy). The DNPU models are exported as network ONNX files (core.io.write_network) and their
test accuracy is measured by the C core on that file, next to torch's.

Recipes: ``--recipe paper`` is the paper's (Adam lr 2e-5, batch 64, 80 epochs, weight decay 0.1
on the linear layer, constant lr); ``--recipe default`` is the better one found here (see
RECIPES and docs/model-format.md). Everything lands in --out: per model a checkpoint (.npz,
resumable with --resume), a JSON report, a confusion-matrix plot; plus summary.json.

``--train-on board`` then fine-tunes a DNPU network in the loop on ``--board`` (the ``--init`` file,
or each DNPU model just trained): host.experiments.mnist_loop; results.json, and <name>_board.onnx
when a fine-tuned state measured better on the board than the start on the validation images.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from host.experiments.options import add_train_on

DESCRIPTION = "MNIST with 10 DNPU nodes (3 or 7 data electrodes each), NN baselines, linear softmax; exports network ONNX"

MODEL_NAMES = ("rf3", "rf7", "nn3", "nn7", "linear")
#: where `--export DIR` puts each DNPU model
EXPORT_NAMES = {"rf7": "mnist.onnx", "rf3": "mnist_rf3.onnx"}


@dataclass(frozen=True)
class Recipe:
    """How to train. schedule: 'const' | 'onecycle' (linear warm-up, cosine decay to 0)."""

    name: str = "default"
    lr: float = 3e-3
    batch: int = 128
    epochs: int = 40
    weight_decay: float = 0.0       # L2 (Adam weight_decay) on the 784 -> K*D linear layer only
    schedule: str = "onecycle"
    warmup: float = 0.1             # fraction of the steps spent warming up (onecycle)
    shift_px: int = 1               # augmentation: random shift of each training image by up to this many pixels
    noise: float = -1.0             # DNPU output noise while training (nA); < 0: the surrogate's test RMSE
    range_penalty: float = 0.0      # weight of the L1 penalty on data voltages outside their ranges
    lr_head_factor: float = 1.0     # lr multiplier for everything but the linear layer

    def __post_init__(self) -> None:
        if self.schedule not in ("const", "onecycle"):
            raise ValueError(f"schedule must be 'const' or 'onecycle', got {self.schedule!r}")
        if not (self.lr > 0 and self.batch >= 1 and self.epochs >= 1 and self.shift_px >= 0):
            raise ValueError("lr > 0, batch >= 1, epochs >= 1, shift_px >= 0 are required")


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(name="paper", lr=2e-5, batch=64, epochs=80, weight_decay=0.1, schedule="const",
                    warmup=0.0, shift_px=0, noise=0.0, range_penalty=0.0),
    "default": Recipe(),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=",".join(MODEL_NAMES),
                   help=f"comma-separated subset of {', '.join(MODEL_NAMES)}")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                   help="'default': Adam lr 3e-3 one-cycle (10 %% warm-up, cosine), batch 128, 40 epochs, batch-norm "
                        "mapping into the electrode ranges, 1-pixel shifts, surrogate-RMSE output noise; 'paper': "
                        "Adam lr 2e-5, batch 64, 80 epochs, weight decay 0.1")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    p.add_argument("--batch", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--shift-px", type=int, default=None, help="override the recipe's augmentation shift")
    p.add_argument("--noise", type=float, default=None, help="override the recipe's output noise (nA)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--range-penalty", type=float, default=None)
    p.add_argument("--surrogate", default="models/surrogate.onnx",
                   help="surrogate ONNX the DNPU nodes run on; or a comma-separated list, one per device of a board "
                        "of several chips (in the board's device order): node k trains through device k mod K's "
                        "surrogate with that chip's noise, and deploy runs it on a device of that chip")
    p.add_argument("--out", default="results/mnist", help="output folder")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="also copy the DNPU networks to DIR/mnist.onnx (rf7) and DIR/mnist_rf3.onnx (+ .json)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=None, help="train on the first N training images (quick runs)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--no-progress", action="store_true")
    from host.experiments.mnist_loop import MnistLoopConfig
    from host.experiments.options import DEFAULT_BOARD

    lc = MnistLoopConfig()
    g = p.add_argument_group("in the loop (--train-on board, host.experiments.mnist_loop)")
    add_train_on(g, "fine-tune a trained DNPU network with mini-batches measured on --board (forward on "
                        "the board, backward through the surrogate): the --init file, or else each DNPU model of "
                        "--models just trained off-chip; writes results.json and <name>_board.onnx when it measured "
                        "better than the start on the validation images (the test images are only reported)")
    g.add_argument("--init", default=None, metavar="FILE",
                   help="with --train-on board: the network file to start from (e.g. models/mnist.onnx); no "
                        "off-chip training, --models and the recipe are not used")
    g.add_argument("--board", default=DEFAULT_BOARD, help="board URL (sim://?seed=N, /dev/ttyACM0, socket://host:port)")
    g.add_argument("--board-device", type=int, default=0, metavar="K",
                   help="on a board of several devices, train on device K (its chip is checked against the surrogate's)")
    g.add_argument("--limit-policy", choices=("refuse", "clip"), default="clip",
                   help="a voltage outside the board's limits: refuse it, or clip it with a warning")
    g.add_argument("--loop-steps", type=int, default=lc.steps, help="optimiser steps on the board")
    g.add_argument("--loop-batch", type=int, default=lc.batch, help="training images per step (one sweep)")
    g.add_argument("--loop-lr", type=float, default=lc.lr, help="Adam learning rate in the loop")
    g.add_argument("--loop-report-every", type=int, default=lc.report_every,
                   help="steps per report; the validation images are measured then and the best state kept")
    g.add_argument("--loop-val-images", type=int, default=lc.val_images,
                   help="first N validation images measured to pick the best state")
    g.add_argument("--test-images", type=int, default=lc.test_images,
                   help="first N test images on which the start and the fine-tuned network are measured")


def _loop_config_from(args: argparse.Namespace):
    from host.experiments.mnist_loop import MnistLoopConfig

    return MnistLoopConfig(steps=args.loop_steps, batch=args.loop_batch, lr=args.loop_lr,
                           report_every=args.loop_report_every, val_images=args.loop_val_images,
                           test_images=args.test_images, seed=args.seed)


def _run_on_board(args: argparse.Namespace, loop_cfg, data, starts: list[tuple[str, Path]], out: Path) -> int:
    """--train-on board: each (name, network file) fine-tuned in the loop (host.experiments.mnist_loop)."""
    from host.experiments.errors import ExperimentError
    from host.experiments.mnist_loop import load_start, run_on_board
    from host.experiments.surrogates import load_surrogate

    try:
        sur = load_surrogate(args.surrogate, engine="core", threads=args.threads)
        nets = [load_start(path, sur, name) for name, path in starts]
    except ExperimentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_on_board(nets, sur, data, loop_cfg, args.board, args.limit_policy, out, progress=not args.no_progress,
                        board_device=args.board_device)


def _recipe_from(args: argparse.Namespace) -> Recipe:
    r = RECIPES[args.recipe]
    over = {k: getattr(args, a) for k, a in (("epochs", "epochs"), ("lr", "lr"), ("batch", "batch"),
                                            ("shift_px", "shift_px"), ("noise", "noise"),
                                            ("weight_decay", "weight_decay"), ("range_penalty", "range_penalty"))
            if getattr(args, a, None) is not None}
    return dataclasses.replace(r, **over)


def model_config(name: str):
    from host.experiments.mnist_model import ModelConfig
    return {
        "rf3": ModelConfig(kind="dnpu", data_electrodes=(0, 3, 4), bias=False),
        "rf7": ModelConfig(kind="dnpu", data_electrodes=tuple(range(7)), bias=True),
        "nn3": ModelConfig(kind="nn", data_electrodes=(0, 3, 4), bias=False),
        "nn7": ModelConfig(kind="nn", data_electrodes=tuple(range(7)), bias=True),
        "linear": ModelConfig(kind="linear"),
    }[name]


def shift_batch(images, max_shift: int, gen):
    """Random integer shifts (up to max_shift pixels in x and y, zero fill) of uint8 images [B, 28, 28]."""
    import torch
    if max_shift <= 0:
        return images
    b = images.shape[0]
    m = max_shift
    pad = torch.nn.functional.pad(images, (m, m, m, m))
    dy = torch.randint(0, 2 * m + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * m + 1, (b,), generator=gen)
    ar = torch.arange(28)
    rows = (dy[:, None] + ar)[:, :, None]
    cols = (dx[:, None] + ar)[:, None, :]
    return pad[torch.arange(b)[:, None, None], rows, cols]


def _lr_at(step: int, total: int, r: Recipe) -> float:
    if r.schedule == "const":
        return r.lr
    warm = max(1, int(r.warmup * total))
    if step < warm:
        return r.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return r.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _opt_to_npz(opt) -> dict[str, np.ndarray]:
    sd = opt.state_dict()
    out: dict[str, np.ndarray] = {"opt.param_groups": np.frombuffer(json.dumps(sd["param_groups"]).encode(), np.uint8)}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            out[f"opt.state.{idx}.{k}"] = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
    return out


def _opt_from_npz(opt, z: dict[str, np.ndarray]) -> None:
    import torch
    state: dict[int, dict[str, Any]] = {}
    for key, v in z.items():
        if key.startswith("opt.state."):
            _, _, idx, name = key.split(".", 3)
            state.setdefault(int(idx), {})[name] = torch.as_tensor(v)
    groups = json.loads(bytes(z["opt.param_groups"]).decode())
    opt.load_state_dict({"state": state, "param_groups": groups})


def accuracy_and_confusion(pred: np.ndarray, labels: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    from host.metrics import accuracy, confusion_matrix

    cm = confusion_matrix(pred, labels, k)
    return accuracy(cm), cm


def plot_confusion(cm: np.ndarray, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(cm.shape[1]))
    ax.set_yticks(range(cm.shape[0]))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _predict(model, x, batch: int = 2000) -> np.ndarray:
    import torch
    model.eval()
    out = []
    with torch.inference_mode():
        for a in range(0, x.shape[0], batch):
            out.append(model(x[a:a + batch]).argmax(1).cpu().numpy())
    return np.concatenate(out)


def train_model(name: str, recipe: Recipe, data, surrogate_path: str | Path, out: Path, *, device: str = "cpu",
                seed: int = 0, train_subset: int | None = None, resume: bool = False,
                progress: bool = True, log=print, model_cfg=None) -> dict[str, Any]:
    """Train one model; returns its report (also written to out/<name>.json).

    surrogate_path: one surrogate file, or a comma-separated list of them, one per device of a
    board of several chips (host.experiments.surrogates.load_surrogates): the nodes take the
    devices in turn (node k on device k mod K) and each trains through its chip's surrogate."""
    import torch
    from tqdm import tqdm

    from host.experiments import mnist_model as mm
    from host.experiments.surrogates import load_surrogates
    from host.mnist_data import to_inputs
    from host.surrogate.torch_model import pick_device

    dev = pick_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = model_config(name) if model_cfg is None else model_cfg
    sur = None
    if cfg.kind == "dnpu":
        sur = load_surrogates(str(surrogate_path), engine="torch")
        nodes = [cfg.n_classes]
        devices = sur.node_devices(nodes, multiplex=True)
        models, scale = sur.node_models(nodes, multiplex=True), sur.node_noise_scale(nodes, multiplex=True)
        model = mm.build(cfg, models if devices is None else models[0], sur.ranges_v,
                         node_surrogates=None if devices is None else devices[0],
                         noise_scale=None if scale is None else scale[0])
        noise = sur.test_rmse_na if recipe.noise < 0 else recipe.noise
        model.noise_std_na = noise
    else:
        model = mm.build(cfg)
        noise = 0.0
    model.to(dev)
    n_train = len(data.train) if train_subset is None else min(train_subset, len(data.train))
    tr_img = torch.as_tensor(data.train.images[:n_train])
    tr_lab = torch.as_tensor(data.train.labels[:n_train], device=dev)
    xv = torch.as_tensor(to_inputs(data.val.images), device=dev)
    xt = torch.as_tensor(to_inputs(data.test.images), device=dev)
    lin_params = list(model.linear.parameters())
    lin_ids = {id(p) for p in lin_params}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in lin_ids]
    groups = [{"params": lin_params, "weight_decay": recipe.weight_decay, "lr_factor": 1.0}]
    if head:
        groups.append({"params": head, "weight_decay": 0.0, "lr_factor": recipe.lr_head_factor})
    opt = torch.optim.Adam(groups, lr=recipe.lr)
    steps_per_epoch = -(-n_train // recipe.batch)
    total = steps_per_epoch * recipe.epochs
    ckpt = out / f"{name}.ckpt.npz"
    history: list[dict[str, float]] = []
    start_epoch, best = 0, {"val_acc": -1.0, "epoch": 0}
    best_state = mm.state_to_numpy(model)
    if resume and ckpt.is_file():
        with np.load(ckpt, allow_pickle=False) as z:
            zd = {k: z[k] for k in z.files}
        try:
            mm.load_numpy_state(model, {k[6:]: v for k, v in zd.items() if k.startswith("model.")})
        except ValueError as e:
            raise mm.CheckpointError(f"--resume: {ckpt}: {e}; delete it or run without --resume") from None
        best_state = {k[5:]: v for k, v in zd.items() if k.startswith("best.")}
        _opt_from_npz(opt, zd)
        info = json.loads(bytes(zd["info"]).decode())
        start_epoch, best, history = info["epoch"], info["best"], info["history"]
        gen.manual_seed(seed + 7919 * start_epoch)
        log(f"[{name}] resumed from {ckpt} at epoch {start_epoch}")
    t0 = time.monotonic()
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        order = torch.randperm(n_train, generator=gen)
        tot_loss, tot_ok = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{recipe.epochs}", unit="batch",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for i in bar:
            idx = order[i * recipe.batch:(i + 1) * recipe.batch]
            img = shift_batch(tr_img[idx], recipe.shift_px, gen)
            x = (img.reshape(len(idx), -1).to(torch.float32) / 255.0 - 0.5).to(dev)
            y = tr_lab[idx.to(dev)]
            lr = _lr_at(step, total, recipe)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_factor"]
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            if recipe.range_penalty > 0 and cfg.kind == "dnpu":
                loss = loss + recipe.range_penalty * model.range_penalty(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.project()
            step += 1
            tot_loss += float(loss.detach()) * len(idx)
            tot_ok += int((logits.detach().argmax(1) == y).sum())
            if i % 50 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.1e}")
        bar.close()
        val_acc = float((_predict(model, xv) == data.val.labels).mean())
        rec = {"epoch": epoch + 1, "train_loss": tot_loss / n_train, "train_acc": tot_ok / n_train,
               "val_acc": val_acc, "lr": lr, "wall_s": time.monotonic() - t0}
        history.append(rec)
        if val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "epoch": epoch + 1}
            best_state = mm.state_to_numpy(model)
        log(f"[{name}] epoch {epoch + 1}/{recipe.epochs} loss {rec['train_loss']:.4f} train {rec['train_acc']:.4f} "
            f"val {val_acc:.4f} (best {best['val_acc']:.4f} @ {best['epoch']}) {rec['wall_s']:.0f} s")
        z = {f"model.{k}": v for k, v in mm.state_to_numpy(model).items()}
        z.update({f"best.{k}": v for k, v in best_state.items()})
        z.update(_opt_to_npz(opt))
        z["info"] = np.frombuffer(json.dumps({"epoch": epoch + 1, "best": best, "history": history}).encode(), np.uint8)
        tmp = ckpt.with_name(ckpt.name + ".tmp.npz")
        np.savez(tmp, **z)
        tmp.replace(ckpt)
    wall = time.monotonic() - t0
    mm.load_numpy_state(model, best_state)
    model.cpu()
    xt_cpu = xt.cpu()
    pred = _predict(model, xt_cpu)
    acc, cm = accuracy_and_confusion(pred, data.test.labels)
    report: dict[str, Any] = {
        "model": name, "config": asdict(cfg), "recipe": asdict(recipe), "train_images": n_train,
        "params": mm.params_count(model), "best_epoch": best["epoch"], "val_acc": best["val_acc"],
        "test_acc_torch": acc, "train_wall_s": wall, "device": str(dev), "seed": seed,
        "noise_std_na": noise, "history": history, "confusion_matrix": cm.tolist(),
    }
    if sur is not None:
        from core.io import load_network, write_network
        onnx_path = out / f"{name}.onnx"
        meta = {"task": "mnist", "dataset": "mnist:test", "input": "pixels/255 - 0.5, [n, 784] row-major 28x28",
                "classes": list(range(10)), "model": name, "test_accuracy": acc,
                "val_accuracy": best["val_acc"], "recipe": asdict(recipe),
                "surrogate_test_rmse_na": sur.test_rmse_na}
        if len(sur.paths) > 1:
            meta["node_devices"] = list(model.node_surrogates)
            report["surrogates"] = sur.paths
            report["node_devices"] = list(model.node_surrogates)
        write_network(onnx_path, mm.N_PIXELS, mm.to_layers(model), sur.paths, meta)
        net = load_network(onnx_path)
        logits_core = net.evaluate(to_inputs(data.test.images), threads=1)
        with torch.inference_mode():
            logits_torch = model(xt_cpu).numpy()
        acc_core, cm_core = accuracy_and_confusion(logits_core.argmax(1), data.test.labels)
        import onnxruntime as ort
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        logits_ort = sess.run(None, {sess.get_inputs()[0].name: to_inputs(data.test.images)})[0]
        report["ort_vs_torch_max_abs_logit_diff"] = float(np.max(np.abs(logits_ort - logits_torch)))
        report["test_acc_onnxruntime"] = float((logits_ort.argmax(1) == data.test.labels).mean())
        report.update({"onnx": str(onnx_path), "test_acc": acc_core, "confusion_matrix": cm_core.tolist(),
                       "core_vs_torch_max_abs_logit_diff": float(np.max(np.abs(logits_core - logits_torch))),
                       "core_vs_torch_argmax_agreement": float((logits_core.argmax(1) == logits_torch.argmax(1)).mean())})
        cm = cm_core
    else:
        report["test_acc"] = acc
    plot_confusion(cm, f"MNIST {name}: test accuracy {report['test_acc'] * 100:.2f} %", out / f"{name}_confusion.png")
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"[{name}] test accuracy {report['test_acc'] * 100:.2f} % (val {best['val_acc'] * 100:.2f} %, "
        f"{wall / 60:.1f} min)")
    return report


#: the paper's MNIST test accuracies, for the report
PAPER = {"rf3": 0.947, "rf7": 0.961, "nn3": 0.945, "nn7": 0.960}


def write_summary(reports: dict[str, dict[str, Any]], path: Path) -> None:
    """One table of every model's test accuracy beside the paper's (models/mnist_summary.json)."""
    rows = {n: {"test_acc": r["test_acc"], "val_acc": r["val_acc"], "paper_test_acc": PAPER.get(n),
                "params": r["params"], "best_epoch": r["best_epoch"], "train_wall_s": r["train_wall_s"],
                "recipe": r["recipe"]["name"]} for n, r in reports.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": "mnist", "split": "55k train / 5k val / 10k test", "models": rows},
                               indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    from host.experiments import mnist_model as mm
    from host.experiments.errors import ExperimentError
    from host.mnist_data import MnistError, load_mnist

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    bad = [n for n in names if n not in MODEL_NAMES]
    if bad or not names:
        print(f"error: --models: unknown {bad}; choose from {', '.join(MODEL_NAMES)}", file=sys.stderr)
        return 2
    try:
        recipe = _recipe_from(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    loop_cfg = None
    if args.train_on == "board":
        try:
            loop_cfg = _loop_config_from(args)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if "," in args.surrogate.strip(","):
            print("error: --train-on board runs a network on one device; --surrogate names several (one per "
                  "device): train off-chip for the board of several chips, then deploy it", file=sys.stderr)
            return 2
        if args.init is None and not any(model_config(n).kind == "dnpu" for n in names):
            print("error: --train-on board fine-tunes a DNPU model: give --init FILE or --models with rf3 or rf7",
                  file=sys.stderr)
            return 2
    elif args.init is not None:
        print("error: --init is the start of --train-on board; add --train-on board", file=sys.stderr)
        return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        data = load_mnist()
    except MnistError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if loop_cfg is not None and args.init is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        return _run_on_board(args, loop_cfg, data, [(Path(args.init).stem, Path(args.init))], out)
    sur = args.surrogate
    missing = [p for p in (q.strip() for q in sur.split(",")) if p and not Path(p).is_file()]
    if any(model_config(n).kind == "dnpu" for n in names) and (missing or not sur.strip(",").strip()):
        print(f"error: --surrogate: no such file {missing[0] if missing else sur!r}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"argv": sys.argv, "recipe": asdict(recipe), "models": names,
                                                 "surrogate": str(sur), "seed": args.seed}, indent=2) + "\n")
    reports = {}
    for n in names:
        try:
            reports[n] = train_model(n, recipe, data, sur, out, device=args.device, seed=args.seed,
                                     train_subset=args.train_subset, resume=args.resume,
                                     progress=not args.no_progress)
        except (mm.CheckpointError, ExperimentError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    summary = {n: {"test_acc": r["test_acc"], "val_acc": r["val_acc"], "train_wall_s": r["train_wall_s"],
                   "best_epoch": r["best_epoch"]} for n, r in reports.items()}
    (out / "summary.json").write_text(json.dumps({"recipe": asdict(recipe), "models": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if args.export:
        import shutil
        write_summary(reports, Path(args.export) / "mnist_summary.json")
        exp = Path(args.export)
        exp.mkdir(parents=True, exist_ok=True)
        for n, fname in EXPORT_NAMES.items():
            if n in reports:
                shutil.copyfile(out / f"{n}.onnx", exp / fname)
                rep = {k: v for k, v in reports[n].items() if k != "history"}
                rep["onnx"] = str(exp / fname)
                rep["history"] = reports[n]["history"]
                (exp / fname.replace(".onnx", ".json")).write_text(json.dumps(rep, indent=2) + "\n")
                shutil.copyfile(out / f"{n}_confusion.png", exp / fname.replace(".onnx", "_confusion.png"))
                print(f"exported {exp / fname}")
    if loop_cfg is not None:
        return _run_on_board(args, loop_cfg, data, [(n, out / f"{n}.onnx") for n in names
                                                    if model_config(n).kind == "dnpu"], out)
    return 0
