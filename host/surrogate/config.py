"""The surrogate training recipe's settings, without torch: the CLIs read their defaults here."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 90
    layers: int = 5
    lr: float = 5e-4                 # Adam, the paper's rate
    batch: int = 128                 # the paper's batch size
    max_epochs: int = 200
    patience: int = 12               # epochs without validation improvement before stopping
    lr_patience: int = 4             # epochs without improvement before the rate is halved
    min_lr: float = 1e-6
    val_fraction: float = 0.1        # the paper's 90/10 split
    seed: int = 0
    device: str = "auto"             # "auto": cuda when present, else cpu
    max_wall_s: float = math.inf     # stop (keeping the best model) after this long


def config_json(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    if math.isinf(d["max_wall_s"]):
        d["max_wall_s"] = None
    return d


def add_recipe_arguments(p: Any) -> None:
    """The recipe's options on an argparse parser, their defaults those of TrainConfig: one list
    for every command that trains surrogates (python -m host.surrogate train, host.farm train)."""
    d = TrainConfig()
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden width (default %(default)s)")
    p.add_argument("--layers", type=int, default=d.layers, help="hidden layers (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--batch", type=int, default=d.batch, help="batch size (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.max_epochs, help="maximum epochs (default %(default)s)")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience in epochs")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="validation share (default %(default)s)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop a training after this long, keeping its best model")
    p.add_argument("--seed", type=int, default=d.seed)


def recipe_from_args(args: Any) -> TrainConfig:
    """The TrainConfig of the options `add_recipe_arguments` declared (and the command's --device)."""
    return TrainConfig(hidden=args.hidden, layers=args.layers, lr=args.lr, batch=args.batch, max_epochs=args.epochs,
                       patience=args.patience, val_fraction=args.val_fraction, seed=args.seed, device=args.device,
                       max_wall_s=args.max_minutes * 60 if args.max_minutes else math.inf)
