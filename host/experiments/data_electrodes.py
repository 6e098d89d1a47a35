"""Which electrodes carry the data, and where the paper's input voltages land on this chip.

The paper's gate levels and capacity points are volts on its chip's e1, e2, whose working range
is PAPER_INPUT_RANGE_V. On another chip they are kept as they are on an electrode whose range
holds them all, and mapped linearly from the paper's range onto the electrode's own range where
it does not (`place_paper_points`, which says which it did).

`--data-electrodes auto` screens every pair of electrodes with a short, batched run of the
experiment's own training (`screen_pairs`): each pair gets a robust score from its task (the
smallest class margin over the gates, labellings found clear of the noise, a node's accuracy),
the best pair is chosen, and the table of all pairs goes into the report. When no pair reaches
the task's bar the best one is still run, and the report says so in a warning.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from core.electrodes import N_ELECTRODES
from host.experiments.errors import ExperimentError

#: The electrodes the paper puts its capacity points and the gates' inputs on.
PAPER_DATA_ELECTRODES = (1, 2)
#: The paper's working range of its input electrodes e0..e4 (V): its points are volts in it.
PAPER_INPUT_RANGE_V = (-1.2, 0.6)
AUTO = "auto"


def all_pairs() -> list[tuple[int, int]]:
    """Every unordered pair of distinct electrodes (21 of them)."""
    return list(itertools.combinations(range(N_ELECTRODES), 2))


def parse_data_electrodes(text: str, n: int = 2) -> tuple[int, ...] | str:
    """'auto' or n distinct electrode indices like '1,2' (ExperimentError otherwise)."""
    t = text.strip().lower()
    if t == AUTO:
        return AUTO
    try:
        idx = tuple(int(e) for e in t.split(","))
    except ValueError:
        idx = ()
    if len(idx) != n or len(set(idx)) != n or not all(0 <= e < N_ELECTRODES for e in idx):
        raise ExperimentError(f"--data-electrodes: expected 'auto' or {n} distinct indices in 0..{N_ELECTRODES - 1} "
                              f"like 1,2; got {text!r}")
    return idx


@dataclass(frozen=True)
class PlacedPoints:
    """Points [n, D] in volts on `electrodes`, and how each electrode's values were obtained."""

    volts: np.ndarray
    electrodes: tuple[int, ...]
    mapping: dict[str, str]          # "e5": "kept" | "scaled from [-1.2, 0.6] V onto [lo, hi] V"

    @property
    def scaled(self) -> bool:
        return any(m != "kept" for m in self.mapping.values())

    def note(self) -> str:
        if not self.scaled:
            return "the paper's input voltages fit the chosen electrodes' ranges and are used as they are"
        parts = [f"{e}: {m}" for e, m in self.mapping.items() if m != "kept"]
        return "the paper's input voltages do not fit every chosen electrode's range: " + "; ".join(parts)


def place_paper_points(points_v: np.ndarray, ranges_v: np.ndarray, electrodes: Sequence[int],
                       inset: float = 0.02) -> PlacedPoints:
    """The paper's points [n, D] (volts on its e1, e2) on `electrodes` of a chip with `ranges_v`.

    Column d stays as it is where electrode electrodes[d]'s range holds all its values (with an
    `inset` fraction of the range to spare at each end); otherwise it is mapped linearly from
    PAPER_INPUT_RANGE_V onto that range (shrunk by the same inset)."""
    pts = np.asarray(points_v, dtype=np.float64)
    r = np.asarray(ranges_v, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != len(electrodes):
        raise ValueError(f"points must be [n, {len(electrodes)}], got {pts.shape}")
    out, mapping = pts.copy(), {}
    p_lo, p_hi = PAPER_INPUT_RANGE_V
    for d, e in enumerate(electrodes):
        lo, hi = r[e]
        pad = inset * (hi - lo)
        col = pts[:, d]
        if col.min() >= lo + pad and col.max() <= hi - pad:
            mapping[f"e{e}"] = "kept"
            continue
        a, b = lo + pad, hi - pad
        out[:, d] = a + (col - p_lo) * (b - a) / (p_hi - p_lo)
        mapping[f"e{e}"] = f"scaled from [{p_lo:g}, {p_hi:g}] V onto [{a:.3g}, {b:.3g}] V"
    return PlacedPoints(out, tuple(int(e) for e in electrodes), mapping)


@dataclass
class Screening:
    """The pairs tried, best first, and what was chosen."""

    task: str                          # what the score is, in words
    bar: float                         # the score a pair must exceed to count as working
    rows: list[dict[str, Any]] = field(default_factory=list)   # {"electrodes", "score", ...}
    wall_s: float = 0.0

    @property
    def best(self) -> dict[str, Any]:
        return self.rows[0]

    @property
    def chosen(self) -> tuple[int, ...]:
        return tuple(self.best["electrodes"])

    @property
    def ok(self) -> bool:
        return bool(self.best["score"] > self.bar)

    def why(self) -> str:
        b = self.best
        runner = f"; next best {self.rows[1]['electrodes']} at {self.rows[1]['score']:.3g}" if len(self.rows) > 1 else ""
        if self.ok:
            return (f"screened {len(self.rows)} electrode pairs by {self.task}: e{b['electrodes'][0]}, "
                    f"e{b['electrodes'][1]} scored best ({b['score']:.3g}, bar {self.bar:.3g}){runner}")
        return (f"no electrode pair reached the bar of {self.bar:.3g} on {self.task} in screening; running the "
                f"best found, e{b['electrodes'][0]}, e{b['electrodes'][1]} ({b['score']:.3g}){runner}")

    def to_json(self) -> dict[str, Any]:
        return {"mode": AUTO, "task": self.task, "bar": self.bar, "chosen": list(self.chosen), "ok": self.ok,
                "why": self.why(), "wall_s": round(self.wall_s, 2), "table": self.rows}

    def table_text(self, top: int = 8) -> str:
        lines = [f"{'pair':>7} {'score':>9}  detail"]
        for r in self.rows[:top]:
            detail = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in r.items() if k not in ("electrodes", "score"))
            lines.append(f"  e{r['electrodes'][0]},e{r['electrodes'][1]} {r['score']:9.3g}  {detail}")
        return "\n".join(lines)


def screen_pairs(score: Callable[[tuple[int, int]], dict[str, Any]], task: str, bar: float,
                 pairs: Sequence[tuple[int, int]] | None = None, quiet: bool = True) -> Screening:
    """Score every pair (`score(pair)` -> {"score": float, "tie": float (optional: breaks equal
    scores), ...details}) and rank them, best first (a progress bar unless `quiet`)."""
    from host.experiments.results import progress_bar

    t0 = time.monotonic()
    s = Screening(task, float(bar))
    todo = list(pairs) if pairs is not None else all_pairs()
    if not todo:
        raise ExperimentError("no electrode pairs to screen")
    with progress_bar(len(todo), "screening pairs", quiet) as pbar:
        for p in todo:
            r = dict(score(tuple(p)))
            sc = float(r.pop("score"))
            tie = float(r.pop("tie", 0.0))
            s.rows.append({"electrodes": [int(p[0]), int(p[1])], "score": sc if np.isfinite(sc) else -np.inf,
                           **r, "_tie": tie})
            pbar.set_postfix_str(f"e{p[0]},e{p[1]}: {sc:.3g}")
            pbar.update(1)
    s.rows.sort(key=lambda r: (-r["score"], -r["_tie"]))
    for r in s.rows:
        del r["_tie"]
    s.wall_s = time.monotonic() - t0
    return s


@dataclass(frozen=True)
class ElectrodeChoice:
    """The data electrodes an experiment runs on: given, or chosen by a screening."""

    electrodes: tuple[int, ...]
    screening: Screening | None = None

    def to_json(self) -> dict[str, Any]:
        """`data_electrodes_choice` of a results.json."""
        return self.screening.to_json() if self.screening else {"mode": "given", "chosen": list(self.electrodes)}

    def warnings(self) -> list[str]:
        """The screening's warning when no pair reached its bar."""
        return [self.screening.why()] if self.screening is not None and not self.screening.ok else []


def choose_electrodes(choice: tuple[int, ...] | str, screen: Callable[[], Screening]) -> ElectrodeChoice:
    """`choice` as parsed by parse_data_electrodes; for 'auto', run `screen()` and print why and
    the table of the best pairs."""
    if choice != AUTO:
        return ElectrodeChoice(tuple(choice))
    s = screen()
    print(s.why())
    print(s.table_text())
    return ElectrodeChoice(s.chosen, s)
