"""What every experiment shares: options, output folder, surrogate loading, safe board access.

Board safety: every voltage that an experiment sends goes through ``BoardSession.measure``,
which checks it against the board's own limits first (``limit_policy``: "refuse" raises,
"clip" clips and records a warning that ends up in the results). A board error mid-run
(disconnect, timeout, safe state) becomes an ``ExperimentError`` after the board has been
asked to go to 0 V; the caller writes what it measured so far before reporting it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

DEFAULT_BOARD = "sim://?seed=0"
DEFAULT_SURROGATE = "models/surrogate.onnx"
ENGINES = ("core", "torch")


class ExperimentError(Exception):
    """A problem the user can act on (bad file, bad option, board gone): printed, not traced."""


def add_common_arguments(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--board", default=DEFAULT_BOARD,
                   help="board URL for validation (sim://?seed=N, /dev/ttyACM0, socket://host:port)")
    p.add_argument("--no-board", action="store_true", help="skip the validation on the board")
    p.add_argument("--surrogate", default=DEFAULT_SURROGATE, help="surrogate ONNX file to train through")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and noise")
    p.add_argument("--out", default=out_default, help="output folder (results.json, config.json, plots)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    p.add_argument("--engine", choices=ENGINES, default="core",
                   help="surrogate engine for training: the C core's fused forward + input gradient "
                        "(bfloat16 AMX tiles where the CPU has them) or plain torch")
    p.add_argument("--limit-policy", choices=("refuse", "clip"), default="clip",
                   help="a trained control voltage outside the board's limits: refuse it, or clip it with a warning")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def set_threads(n: int, engine: str = "torch") -> None:
    """Threads for training. With the core engine the surrogate (nearly all the work) runs on the
    core's n threads (load_surrogate's `threads`) and torch keeps one: its OpenMP workers spin
    between the many small ops around the surrogate and would take the cores from the core's."""
    import torch

    if n < 1:
        raise ExperimentError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(1 if engine == "core" else n)


@dataclass
class SurrogateInfo:
    path: str
    model: Any                     # frozen module volts [n,7] -> nA [n,1] (core or torch engine)
    ranges_v: np.ndarray           # [7, 2]
    test_rmse_na: float
    noise_floor_na: float
    metadata: dict[str, Any]


def load_surrogate(path: str | Path, engine: str = "core", threads: int | None = None) -> SurrogateInfo:
    """The surrogate as a frozen torch module, with its ranges and error figures; clear errors.

    engine "core": forward and input gradient by the C core (host.core_surrogate, the fast path
    on a CPU) on `threads` threads (None: torch's thread count at each call); "torch": the plain
    torch module."""
    from host.surrogate import onnx_file
    from host.surrogate.train import load_torch

    if engine not in ENGINES:
        raise ExperimentError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    p = Path(path)
    if not p.is_file():
        raise ExperimentError(f"surrogate file {str(p)!r} does not exist")
    try:
        sf = onnx_file.read(p)
        model = load_torch(p)
        if engine == "core":
            from host.core_surrogate import CoreSurrogate

            model = CoreSurrogate.from_torch(model, threads=threads)
    except Exception as e:  # every loader error becomes one readable line
        raise ExperimentError(f"surrogate file {str(p)!r} is not a usable DNPU surrogate: {e}") from None
    meta = dict(sf.metadata)
    try:
        ranges = np.asarray(meta["electrode_ranges_v"], dtype=np.float64).reshape(7, 2)
        rmse = float(meta.get("test_rmse_na", float("nan")))
        floor = float(meta.get("noise_floor_na", float("nan")))
    except (KeyError, ValueError, TypeError) as e:
        raise ExperimentError(f"surrogate file {str(p)!r}: metadata lacks electrode ranges or error figures ({e})") from None
    if not np.all(ranges[:, 0] < ranges[:, 1]):
        raise ExperimentError(f"surrogate file {str(p)!r}: electrode ranges {ranges.tolist()} are not lo < hi")
    if not math.isfinite(rmse) or rmse <= 0:
        raise ExperimentError(f"surrogate file {str(p)!r}: test_rmse_na {rmse} is not a positive number")
    if not math.isfinite(floor) or floor <= 0:
        floor = rmse
    return SurrogateInfo(str(p), model, ranges, rmse, floor, meta)


def out_folder(path: str | Path) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExperimentError(f"cannot create output folder {str(p)!r}: {e}") from None
    return p


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    return o


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=1) + "\n")
    tmp.replace(path)


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    """The exact invocation, for config.json."""
    import torch

    return {"argv": sys.argv, "args": {k: v for k, v in vars(args).items()},
            "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def progress_bar(total: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=quiet, leave=False, dynamic_ncols=True)


def check_controls(volts: np.ndarray, limits_v: np.ndarray, policy: str, what: str,
                   warnings_out: list[str]) -> np.ndarray:
    """Control voltages [..., 7] inside the limits: clip (with a stated warning) or refuse."""
    v = np.asarray(volts, dtype=np.float64)
    lo, hi = limits_v[:, 0], limits_v[:, 1]
    if not np.all(np.isfinite(v)):
        raise ExperimentError(f"{what}: non-finite voltages")
    from host.board import FLOAT32_SLACK_V

    # float32 rounding of a value trained or clipped to a limit (< 1 uV past it) is not a violation
    v = np.where((v < lo) & (v >= lo - FLOAT32_SLACK_V), lo, np.where((v > hi) & (v <= hi + FLOAT32_SLACK_V), hi, v))
    bad = (v < lo) | (v > hi)
    if not bad.any():
        return v
    worst = float(np.max(np.maximum(lo - v, v - hi)))
    msg = (f"{what}: {int(bad.sum())} voltages outside the board limits (worst by {worst * 1e3:.1f} mV)")
    if policy == "refuse":
        raise ExperimentError(msg + "; refused (use --limit-policy clip to clip them)")
    msg += "; clipped to the limits"
    warnings_out.append(msg)
    warnings.warn(msg, stacklevel=2)
    return np.clip(v, lo, hi)


@dataclass
class BoardSession:
    """An open board for validation: limit checks before sending, 0 V on exit and on any error."""

    url: str
    limit_policy: str = "clip"
    warnings: list[str] = field(default_factory=list)
    samples: int = 0
    board: Any = None

    def __enter__(self) -> "BoardSession":
        from host.board.client import Board
        from host.board.errors import BoardError

        try:
            self.board = Board.open(self.url)
        except (BoardError, OSError, ValueError) as e:
            raise ExperimentError(f"cannot open board {self.url!r}: {e}") from None
        return self

    @property
    def limits_v(self) -> np.ndarray:
        return np.asarray(self.board.limits_v, dtype=np.float64)

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.board.identity)

    def measure(self, volts: np.ndarray, what: str = "volts", oversample: int = 1) -> np.ndarray:
        """nA [n] for volts [n, 7]; out-of-range values are refused or clipped, never sent."""
        from host.board.errors import BoardError

        v = check_controls(np.asarray(volts, dtype=np.float64).reshape(-1, 7), self.limits_v,
                           self.limit_policy, what, self.warnings)
        try:
            out = self.board.measure(v, oversample=oversample)
        except BoardError as e:
            self._zero_quietly()
            raise ExperimentError(f"board {self.url!r} failed during validation after {self.samples} samples: "
                                  f"{type(e).__name__}: {e}") from None
        self.samples += len(v)
        return out

    def _zero_quietly(self) -> None:
        try:
            self.board.zero()
        except Exception:  # the link is gone; the board's watchdog takes it to 0 V by itself
            pass

    def __exit__(self, *exc: object) -> None:
        if self.board is not None:
            self.board.close()      # ramps every output to 0 V unless the link is broken
            self.board = None


def timer() -> Callable[[], float]:
    t0 = time.monotonic()
    return lambda: round(time.monotonic() - t0, 2)


def fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def trial_chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(n, a + size)
