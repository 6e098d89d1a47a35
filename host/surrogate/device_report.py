"""`python -m host.surrogate report FILE`: a chip at a glance, from its surrogate.

Per-electrode sensitivity, output range and the noise floor against the signal (host.board.survey
on the surrogate evaluated by the core, the file's noise floor as the noise), and which electrode
pairs realise XOR with what margin: every pair trained briefly for XOR through the surrogate (the
gates experiment's own training), the margin against the noise floor. Printed as tables, written
as JSON and a PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from host.board import survey as sv


def surrogate_report(path: str | Path, cfg: sv.SurveyConfig = sv.SurveyConfig(), xor: bool = True,
                     xor_trials: int = 4, xor_epochs: int = 300, quiet: bool = True) -> dict[str, Any]:
    """The survey of surrogate `path`, and (with `xor`) every pair's XOR margin, best first."""
    from core.io import load_surrogate as core_surrogate
    from host.experiments.surrogates import load_surrogate

    sur = load_surrogate(path, threads=1)        # ranges, error figures (the noise floor rule), model
    model = core_surrogate(path)

    def measure(v: np.ndarray) -> np.ndarray:
        return np.asarray(model.evaluate(np.ascontiguousarray(v, dtype=np.float32)), dtype=np.float64).reshape(-1)

    rep = sv.survey(measure, sur.ranges_v, cfg, noise_floor_na=sur.noise_floor_na)
    rep["file"] = str(path)
    rep["amplification"] = model.amplification
    rep["test_rmse_na"] = sur.test_rmse_na
    rep["output_range_trained_na"] = sur.metadata.get("output_range_na")
    if xor:
        rep["xor"] = xor_pairs(sur, xor_trials, xor_epochs, quiet)
    return rep


def xor_pairs(sur: Any, trials: int, epochs: int, quiet: bool) -> dict[str, Any]:
    """XOR on every input pair of surrogate `sur` (host.experiments.surrogates.SurrogateInfo),
    through the surrogate (the paper's input levels where they fit)."""
    from host.experiments.gates import GatesConfig, screen_gates

    cfg = GatesConfig(trials=trials, epochs=epochs)
    s = screen_gates(sur, cfg, ["XOR"], quiet)
    rows = [{**r, "margin_over_noise": r["score"] / sur.noise_floor_na} for r in s.rows]
    return {"trials": trials, "epochs": epochs, "noise_floor_na": sur.noise_floor_na,
            "pairs_realising_xor": [r["electrodes"] for r in rows if r["score"] > sur.noise_floor_na],
            "table": rows, "best": rows[0]}


def xor_text(x: dict[str, Any], top: int = 8) -> str:
    lines = [f"XOR through the surrogate ({x['trials']} starts x {x['epochs']} epochs per pair): "
             f"{len(x['pairs_realising_xor'])} of {len(x['table'])} pairs clear the noise floor "
             f"({x['noise_floor_na']:.2f} nA)",
             f"{'pair':>7} {'margin (nA)':>12} {'x noise':>8}"]
    for r in x["table"][:top]:
        lines.append(f"  e{r['electrodes'][0]},e{r['electrodes'][1]} {r['score']:12.1f} {r['margin_over_noise']:8.1f}")
    return "\n".join(lines)
