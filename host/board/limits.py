"""The board's electrode limits, checked in one place.

Every voltage the host sends passes `check_volts` against the limits the board declared in its
identity (`Board.limits_v`); deploy and the experiments check their voltages with the same
function before they open a board.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from core.electrodes import ELECTRODE_NAMES, N_ELECTRODES
from host.board.errors import LimitError

#: float32 rounding of a voltage trained or clipped to a limit, or of a limit itself (-1.2 is
#: stored as -1.2000000477): a value past a limit by no more than this IS the limit.
FLOAT32_SLACK_V = 1e-6


def _all_inside(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, step: int = 1 << 14) -> bool:
    """lo <= v <= hi everywhere ([n, 7] against [7]). In chunks of `step` rows against tiled
    bounds: flat, contiguous loops whose temporaries stay in cache (several times faster than
    broadcasting a [7] over [n, 7])."""
    rows = min(step, len(v))
    if rows == 0:
        return True
    if not v.flags.c_contiguous:
        v = np.ascontiguousarray(v)
    flat, m = v.reshape(-1), rows * v.shape[1]
    lo_t, hi_t = np.tile(lo, rows), np.tile(hi, rows)
    a, b = np.empty(m, bool), np.empty(m, bool)
    for i in range(0, len(flat), m):
        c = flat[i:i + m]
        n = len(c)
        x, y = a[:n], b[:n]
        np.greater_equal(c, lo_t[:n], out=x)
        np.less_equal(c, hi_t[:n], out=y)
        x &= y
        if not x.all():
            return False
    return True


def check_volts(volts: Any, limits_v: Any, what: str = "volts") -> np.ndarray:
    """`volts` as float64 [n, 7] inside `limits_v` ([7, 2] of [lo, hi] in V), or LimitError.

    A 1-D input is one row. A value past a limit by at most FLOAT32_SLACK_V is returned as the
    limit itself (so it never maps past the limit's DAC code). The error names `what`, the
    electrode and the sample, and says by how much the first bad value is outside."""
    lim = np.asarray(limits_v, dtype=np.float64)
    if lim.shape != (N_ELECTRODES, 2) or not np.all(np.isfinite(lim)) or np.any(lim[:, 0] > lim[:, 1]):
        raise ValueError(f"limits_v must be {N_ELECTRODES} finite [lo, hi] pairs with lo <= hi, "
                         f"got {np.asarray(limits_v).tolist()!r}")
    try:
        v = np.asarray(volts, dtype=np.float64)
    except (TypeError, ValueError):
        raise LimitError(f"{what} must be numbers, got {type(volts).__name__}") from None
    if v.ndim == 1:
        v = v.reshape(1, -1)
    if v.ndim != 2 or v.shape[1] != N_ELECTRODES:
        raise LimitError(f"{what} must have shape [n, {N_ELECTRODES}], got {np.shape(volts)}")
    lo, hi = lim[:, 0], lim[:, 1]
    if _all_inside(v, lo, hi):               # the common case (NaN fails both comparisons)
        return v
    if not np.all(np.isfinite(v)):
        i, c = np.argwhere(~np.isfinite(v))[0]
        raise LimitError(f"{what}: {ELECTRODE_NAMES[c]} sample {i}: {float(v[i, c])!r} is not a finite voltage")
    v = np.where((v < lo) & (v >= lo - FLOAT32_SLACK_V), lo, v)
    v = np.where((v > hi) & (v <= hi + FLOAT32_SLACK_V), hi, v)
    bad = (v < lo) | (v > hi)
    if bad.any():
        i, c = np.argwhere(bad)[0]
        x = float(v[i, c])
        side, by = ("below", lo[c] - x) if x < lo[c] else ("above", x - hi[c])
        raise LimitError(f"{what}: {ELECTRODE_NAMES[c]} sample {i}: {x!r} V is {by:.3g} V {side} its "
                         f"limits [{float(lo[c])!r}, {float(hi[c])!r}] V "
                         f"({int(bad.sum())} values out of range)")
    return v
