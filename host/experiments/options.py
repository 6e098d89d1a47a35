"""The options every experiment takes, their defaults, and the threads they train on."""
from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
from typing import Any

from host.experiments.errors import ExperimentError

DEFAULT_BOARD = "sim://?seed=0"
DEFAULT_SURROGATE = "models/surrogate.onnx"
ENGINES = ("core", "torch")
TRAIN_ON = ("surrogate", "board")


def add_common_arguments(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--board", default=DEFAULT_BOARD,
                   help="board URL for validation (sim://?seed=N, /dev/ttyACM0, socket://host:port)")
    p.add_argument("--board-device", type=int, default=0, metavar="K",
                   help="on a board of several devices, run on device K (the others hold their voltages); the "
                        "surrogate's chip is checked against device K's and a mismatch is warned about")
    p.add_argument("--no-board", action="store_true", help="skip the validation on the board")
    p.add_argument("--surrogate", default=DEFAULT_SURROGATE,
                   help="surrogate ONNX file to train through; or one per device of a board of several chips, "
                        "comma-separated in the board's device order (ring: the network's nodes take the devices in "
                        "turn; gates, capacity: the experiment runs on every device through its own chip's file, "
                        "into OUT/device-K, and OUT/results.json compares the chips)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and noise")
    p.add_argument("--out", default=out_default, help="output folder (results.json, config.json, plots)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    p.add_argument("--engine", choices=ENGINES, default="core",
                   help="surrogate engine for training: the C core's fused forward + input gradient "
                        "(bfloat16 AMX tiles where the CPU has them) or plain torch")
    p.add_argument("--limit-policy", choices=("refuse", "clip"), default="clip",
                   help="a trained control voltage outside the board's limits: refuse it, or clip it with a warning")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_train_on(p: Any, board_help: str) -> None:
    """--train-on: surrogate (off-chip only, the default) or board (then in the loop: `board_help`)."""
    p.add_argument("--train-on", choices=TRAIN_ON, default=TRAIN_ON[0],
                   help="surrogate: train off-chip only; board: " + board_help)


def trains_on_board(args: argparse.Namespace) -> bool:
    """Whether --train-on board was asked for; it cannot go with --no-board."""
    on_board = args.train_on == "board"
    if on_board and getattr(args, "no_board", False):
        raise ExperimentError("--train-on board needs the board: drop --no-board")
    return on_board


def set_threads(n: int, engine: str = "torch") -> None:
    """Threads for training. With the core engine the surrogate (nearly all the work) runs on the
    core's n threads (load_surrogate's `threads`) and torch keeps one: its OpenMP workers spin
    between the many small ops around the surrogate and would take the cores from the core's."""
    import torch

    if n < 1:
        raise ExperimentError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(1 if engine == "core" else n)


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    """The exact invocation, for config.json."""
    import torch

    return {"argv": sys.argv, "args": {k: v for k, v in vars(args).items()},
            "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
