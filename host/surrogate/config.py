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
