"""The capacity search's settings (torch-free, so command lines parse without torch): the
paper's points, `CapacityConfig`, the settings for a surrogate and the search's options."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: The paper's capacity test points, volts on PAPER_DATA_ELECTRODES.
CAPACITY_POINTS_V = np.array([(-0.7, -0.7), (-0.7, 0.5), (0.5, -0.7), (0.5, 0.5), (-0.35, 0.0),
                              (0.25, 0.0), (0.0, -0.35), (0.0, 0.25), (-1.1, 0.35), (0.35, -1.1)])


@dataclass(frozen=True)
class CapacityConfig:
    n_min: int = 4
    n_max: int = 10
    attempts: int = 15
    epochs: int = 1500
    lr: float = 0.03
    betas: tuple[float, float] = (0.995, 0.999)
    alpha: float = 1.0              # L1 penalty on control voltages outside their ranges
    noise_std0: float = 1.4         # output noise std of the first attempt (the surrogate's test RMSE)
    noise_rms: float = 1.4          # measurement noise that a robust solution must beat (nA)
    seed: int = 0
    # speed: a trial stops once its class margin reaches margin_goal, or after `patience` epochs
    # without a better margin (checked every check_every epochs, noise-free, float32, clipped controls)
    margin_goal: float = 2.8
    patience: int = 200
    check_every: int = 25
    min_delta: float = 0.05         # a margin gain below this (nA) does not count as progress
    bf16: bool = False              # train in bfloat16 autocast (checks stay float32)
    # also search again labellings found with a margin inside the noise (slower; raises the robust count)
    research_non_robust: bool = False
    # a labelling and its complement are the same problem for a system followed by a decision
    # node (the margin and separability are symmetric; the node's gain takes either sign): train
    # one of each pair and give the other the same result (halves the work)
    use_complements: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.n_min <= self.n_max <= len(CAPACITY_POINTS_V):
            raise ValueError(f"need 1 <= n_min <= n_max <= {len(CAPACITY_POINTS_V)}")
        if self.attempts < 1 or self.epochs < 1:
            raise ValueError("attempts and epochs must be >= 1")
        if self.check_every < 1 or self.patience < self.check_every:
            raise ValueError("check_every must be >= 1 and patience >= check_every")
        if not (self.lr > 0 and self.noise_std0 >= 0 and self.noise_rms >= 0):
            raise ValueError("lr must be > 0 and the noise figures >= 0")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def config_for(sur: Any, **settings: Any) -> CapacityConfig:
    """The search's settings for the surrogate `sur` (host.experiments.surrogates.SurrogateInfo):
    training noise starting at its test RMSE, robust margins above its noise floor, a margin goal
    of twice that floor; `settings` the rest (n_min, n_max, attempts, epochs, seed, bf16, ...)."""
    return CapacityConfig(**{"noise_std0": sur.test_rmse_na, "noise_rms": sur.noise_floor_na,
                             "margin_goal": 2 * sur.noise_floor_na, **settings})




def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The surrogate search's options (python -m host.experiments capacity and host.farm capacity),
    defaults from CapacityConfig."""
    d = CapacityConfig()
    p.add_argument("--n-min", type=int, default=d.n_min)
    p.add_argument("--n-max", type=int, default=d.n_max)
    p.add_argument("--attempts", type=int, default=d.attempts, help="attempts per labelling (shrinking noise)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="full-batch epochs per attempt (at most)")
    p.add_argument("--bf16", action="store_true", help="train in bfloat16 autocast (faster, checks stay float32)")
