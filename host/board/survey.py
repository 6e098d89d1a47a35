"""What a newcomer to a chip needs first: how strongly each electrode moves the current, the
range of the output, and the noise floor against the signal.

`survey(measure, ranges_v, cfg)` works on anything that turns volts [n, 7] into nA [n]: a board
(`python -m host.board --port URL survey`) or a surrogate (`python -m host.surrogate report FILE`,
which adds which electrode pairs realise XOR). Per electrode it takes central differences at
`cfg.points` random base points inside the ranges (a step of `cfg.step_fraction` of the range)
and reports the median and 90th percentile of |dI/dV| and the typical swing over the whole range
(median |dI/dV| x span). The output range comes from `cfg.samples` uniform samples; the noise
floor from `cfg.repeats` repeats of `cfg.refs` fixed points (unless the caller knows it, e.g.
from a surrogate file).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.electrodes import ELECTRODE_NAMES, N_ELECTRODES


@dataclass(frozen=True)
class SurveyConfig:
    points: int = 200            # base points of the sensitivity estimate
    step_fraction: float = 0.05  # central-difference step, as a fraction of each range
    samples: int = 5000          # uniform samples for the output range
    refs: int = 5                # fixed points repeated for the noise floor ...
    repeats: int = 40            # ... this many times each
    seed: int = 0

    def __post_init__(self) -> None:
        if self.points < 2 or self.samples < 10 or self.refs < 1 or self.repeats < 2:
            raise ValueError("survey needs points >= 2, samples >= 10, refs >= 1 and repeats >= 2")
        if not 0 < self.step_fraction < 0.5:
            raise ValueError(f"step_fraction must be in (0, 0.5), got {self.step_fraction}")


def _uniform(ranges: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(ranges[:, 0], ranges[:, 1], (n, N_ELECTRODES))


def survey(measure: Callable[[np.ndarray], np.ndarray], ranges_v: np.ndarray, cfg: SurveyConfig = SurveyConfig(),
           noise_floor_na: float | None = None, measure_raw: Callable[[np.ndarray], np.ndarray] | None = None,
           averaged: int = 1) -> dict[str, Any]:
    """Sensitivity per electrode, output range, noise floor and signal-to-noise of a device.

    `measure` may average `averaged` readings per point (a board's oversampling, for cleaner
    differences); the noise floor is that of single readings, from `measure_raw` (default
    `measure`). The report states the sensitivity's own noise (the floor through the difference)."""
    r = np.asarray(ranges_v, dtype=np.float64)
    if r.shape != (N_ELECTRODES, 2) or np.any(r[:, 0] >= r[:, 1]):
        raise ValueError(f"ranges must be {N_ELECTRODES} (lo, hi) pairs with lo < hi")
    rng = np.random.default_rng(cfg.seed)
    span = r[:, 1] - r[:, 0]
    h = cfg.step_fraction * span
    # base points away from the edges by one step, so both sides of every difference are inside
    base = rng.uniform(r[:, 0] + h, r[:, 1] - h, (cfg.points, N_ELECTRODES))
    plus = np.repeat(base[:, None, :], N_ELECTRODES, axis=1)
    minus = plus.copy()
    idx = np.arange(N_ELECTRODES)
    plus[:, idx, idx] += h
    minus[:, idx, idx] -= h
    both = np.concatenate([plus.reshape(-1, N_ELECTRODES), minus.reshape(-1, N_ELECTRODES)])
    cur = np.asarray(measure(both), dtype=np.float64)
    n = cfg.points * N_ELECTRODES
    grad = np.abs((cur[:n] - cur[n:]).reshape(cfg.points, N_ELECTRODES) / (2 * h))
    samples = np.asarray(measure(_uniform(r, cfg.samples, rng)), dtype=np.float64)
    if noise_floor_na is None:
        refs = _uniform(r, cfg.refs, rng)
        raw = measure if measure_raw is None else measure_raw
        rep = np.asarray(raw(np.tile(refs, (cfg.repeats, 1))), dtype=np.float64).reshape(cfg.repeats, cfg.refs)
        floor, floor_from = float(np.sqrt(np.mean(rep.std(axis=0, ddof=1) ** 2))), "measured repeats"
    else:
        floor, floor_from = float(noise_floor_na), "given"
    signal = float(samples.std())
    per = []
    for e in range(N_ELECTRODES):
        med = float(np.median(grad[:, e]))
        per.append({"electrode": ELECTRODE_NAMES[e], "range_v": r[e].tolist(), "median_abs_na_per_v": med,
                    "p90_abs_na_per_v": float(np.percentile(grad[:, e], 90)), "typical_swing_na": med * float(span[e]),
                    "swing_over_noise": med * float(span[e]) / floor if floor > 0 else float("inf")})
    order = sorted(range(N_ELECTRODES), key=lambda e: -per[e]["typical_swing_na"])
    return {
        "config": asdict(cfg),
        "electrodes": per,
        "most_sensitive_first": [ELECTRODE_NAMES[e] for e in order],
        "output_na": {"min": float(samples.min()), "max": float(samples.max()),
                      "p1": float(np.percentile(samples, 1)), "p99": float(np.percentile(samples, 99)),
                      "mean": float(samples.mean()), "std": signal},
        "noise_floor_na": floor, "noise_floor_from": floor_from, "readings_averaged": int(averaged),
        # |dI/dV| below this per electrode is not resolved: the floor through one central difference
        "sensitivity_resolution_na_per_v": [floor / np.sqrt(averaged) * np.sqrt(2) / (2 * float(x)) for x in h],
        "signal_over_noise": signal / floor if floor > 0 else float("inf"),
        "measurements": int(len(both) + cfg.samples + (0 if noise_floor_na is not None else cfg.refs * cfg.repeats)),
        "_samples": samples,           # for the plot; not in JSON
    }


def text(report: dict[str, Any]) -> str:
    """The survey as a short table."""
    lines = [f"{'electrode':9} {'range (V)':>16} {'median |dI/dV|':>15} {'p90':>9} {'swing':>9} {'swing/noise':>11}",
             f"{'':9} {'':>16} {'(nA/V)':>15} {'(nA/V)':>9} {'(nA)':>9}"]
    for p in report["electrodes"]:
        lo, hi = p["range_v"]
        lines.append(f"{p['electrode']:9} [{lo:6.2f}, {hi:6.2f}] {p['median_abs_na_per_v']:15.1f} "
                     f"{p['p90_abs_na_per_v']:9.1f} {p['typical_swing_na']:9.1f} {p['swing_over_noise']:11.1f}")
    o = report["output_na"]
    lines.append(f"output: {o['min']:.1f} .. {o['max']:.1f} nA (1-99 %: {o['p1']:.1f} .. {o['p99']:.1f}), "
                 f"std {o['std']:.1f} nA")
    lines.append(f"noise floor: {report['noise_floor_na']:.3f} nA ({report['noise_floor_from']}); "
                 f"signal/noise {report['signal_over_noise']:.0f}")
    return "\n".join(lines)


def json_ready(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if not k.startswith("_")}


def plot(report: dict[str, Any], path: str | Path, title: str, xor: list[dict[str, Any]] | None = None) -> None:
    """Sensitivity bars, the output histogram against the noise floor, and (if given) the XOR
    margin of every electrode pair as a 7 x 7 map."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if xor else 2
    fig, ax = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8))
    per = report["electrodes"]
    x = np.arange(len(per))
    ax[0].bar(x, [p["median_abs_na_per_v"] for p in per], label="median")
    ax[0].plot(x, [p["p90_abs_na_per_v"] for p in per], "k_", ms=14, label="90th pct")
    ax[0].set_xticks(x, [p["electrode"] for p in per])
    ax[0].set_yscale("log")
    ax[0].set_ylabel("|dI/dV| (nA/V)")
    ax[0].set_title("sensitivity per electrode")
    ax[0].legend(fontsize=7)
    s = report["_samples"]
    ax[1].hist(s, bins=80)
    ax[1].axvspan(float(np.median(s)) - report["noise_floor_na"], float(np.median(s)) + report["noise_floor_na"],
                  color="r", alpha=0.3, label=f"+-noise floor ({report['noise_floor_na']:.2f} nA)")
    ax[1].set_xlabel("output current (nA)")
    ax[1].set_ylabel("samples")
    ax[1].set_title("output over uniform inputs")
    ax[1].legend(fontsize=7)
    if xor:
        m = np.full((N_ELECTRODES, N_ELECTRODES), np.nan)
        for row in xor:
            a, b = row["electrodes"]
            m[a, b] = m[b, a] = row["score"]
        im = ax[2].imshow(m, cmap="RdYlGn", vmin=-abs(np.nanmax(np.abs(m))), vmax=abs(np.nanmax(np.abs(m))))
        ax[2].set_xticks(range(N_ELECTRODES), ELECTRODE_NAMES)
        ax[2].set_yticks(range(N_ELECTRODES), ELECTRODE_NAMES)
        ax[2].set_title("XOR margin per input pair (nA)")
        fig.colorbar(im, ax=ax[2], fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
