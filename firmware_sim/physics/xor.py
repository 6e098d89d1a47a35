"""XOR check of the design note: inputs on e1, e2 at {-0.5, +0.3} V, the other five electrodes are
controls. gap = min(I01, I10) - max(I00, I11), which no linear device can make positive.

The search: random control vectors over the working ranges, then an adaptive (1 + 16) local
search from the best few. Used by the tests and by bench/physics_bench.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.electrodes import N_ELECTRODES, control_electrodes

from .geometry import WORKING_RANGES_V

INPUT_ELECTRODES = (1, 2)
CONTROL_ELECTRODES = control_electrodes(INPUT_ELECTRODES)
INPUT_LEVELS_V = (-0.5, 0.3)
# rows: (x1, x2) = 00, 01, 10, 11
XOR_INPUTS = np.array([[INPUT_LEVELS_V[a], INPUT_LEVELS_V[b]] for a in (0, 1) for b in (0, 1)])
XOR_TARGET = np.array([0, 1, 1, 0])


@dataclass(frozen=True)
class XorResult:
    gap_na: float
    controls_v: np.ndarray        # [5] on CONTROL_ELECTRODES
    currents_na: np.ndarray       # [4] clean currents for inputs 00, 01, 10, 11 (clipped to the TIA range)
    evaluations: int              # configurations solved

    @property
    def threshold_na(self) -> float:
        """Decision threshold halfway across the gap."""
        i = self.currents_na
        return 0.5 * (min(i[1], i[2]) + max(i[0], i[3]))


def xor_volts(controls: np.ndarray) -> np.ndarray:
    """[m, 5] control vectors -> [m * 4, 7] volts (inputs 00, 01, 10, 11 for each)."""
    c = np.atleast_2d(np.asarray(controls, dtype=np.float64))
    v = np.empty((c.shape[0], 4, N_ELECTRODES))
    v[:, :, list(CONTROL_ELECTRODES)] = c[:, None, :]
    v[:, :, INPUT_ELECTRODES[0]] = XOR_INPUTS[None, :, 0]
    v[:, :, INPUT_ELECTRODES[1]] = XOR_INPUTS[None, :, 1]
    return v.reshape(-1, N_ELECTRODES)


def _currents(device, controls: np.ndarray, tia_range: tuple[float, float]) -> np.ndarray:
    i = device.steady_state_na(xor_volts(controls)).reshape(-1, 4)
    return np.clip(i, tia_range[0], tia_range[1])


def gaps(currents: np.ndarray) -> np.ndarray:
    c = np.atleast_2d(currents)
    return np.minimum(c[:, 1], c[:, 2]) - np.maximum(c[:, 0], c[:, 3])


def xor_search(device, rng: np.random.Generator, n_random: int = 4000, n_starts: int = 8,
               n_local: int = 60, tia_range: tuple[float, float] = (-300.0, 100.0)) -> XorResult:
    """Random search over the 5 controls, then local search; returns the best gap found."""
    lo = WORKING_RANGES_V[list(CONTROL_ELECTRODES), 0]
    hi = WORKING_RANGES_V[list(CONTROL_ELECTRODES), 1]
    c = rng.uniform(lo, hi, size=(n_random, len(CONTROL_ELECTRODES)))
    g = gaps(_currents(device, c, tia_range))
    evals = 4 * n_random
    best_g, best_c = -np.inf, c[0]
    for s in np.argsort(g)[::-1][:n_starts]:
        cur, cg = c[s], g[s]
        step = 0.15 * (hi - lo)
        for _ in range(n_local):
            cand = np.clip(cur + step * rng.standard_normal((16, cur.size)), lo, hi)
            gc = gaps(_currents(device, cand, tia_range))
            evals += 4 * len(cand)
            k = int(np.argmax(gc))
            if gc[k] > cg:
                cg, cur = gc[k], cand[k]
                step = step * 1.2
            else:
                step = step * 0.8
            if np.max(step) < 1e-3:
                break
        if cg > best_g:
            best_g, best_c = cg, cur
    cur_na = _currents(device, best_c, tia_range)[0]
    return XorResult(gap_na=float(best_g), controls_v=np.asarray(best_c), currents_na=cur_na,
                     evaluations=evals)
