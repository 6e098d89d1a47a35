"""The DNPU's electrode layout, declared once for the whole toolkit.

A DNPU has seven activation electrodes, e0..e6, and one readout. Every module that counts,
names or checks electrodes (the board driver, the simulator, the torch modules, the network
files, the CLIs) imports these; nothing else writes the number 7 for them. Electrode *ranges*
are not here: they belong to a device (its surrogate file, its board's identity).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

N_ELECTRODES = 7
ELECTRODE_NAMES: tuple[str, ...] = tuple(f"e{i}" for i in range(N_ELECTRODES))


def check_electrodes(indices: Iterable[int], what: str = "data_electrodes",
                     count: int | None = None) -> tuple[int, ...]:
    """Distinct electrode indices in 0..N_ELECTRODES-1 as a tuple, or ValueError naming `what`.

    `count`, if given, is how many there must be."""
    try:
        out = tuple(int(e) for e in indices)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be electrode indices, got {indices!r}") from None
    if (not out or len(set(out)) != len(out) or any(not 0 <= e < N_ELECTRODES for e in out)
            or (count is not None and len(out) != count)):
        n = f"{count} " if count is not None else ""
        raise ValueError(f"{what} must be {n}distinct indices in 0..{N_ELECTRODES - 1}, got {list(out)}")
    return out


def parse_electrodes(text: str, what: str = "electrodes", count: int | None = None) -> tuple[int, ...]:
    """'1,2' or 'e1,e2' -> (1, 2), checked by `check_electrodes`."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    try:
        idx = [int(s[1:]) if s[:1] in ("e", "E") else int(s) for s in items]
    except ValueError:
        raise ValueError(f"{what} must be a comma-separated list such as 1,2 or e1,e2, got {text!r}") from None
    return check_electrodes(idx, what, count)


def control_electrodes(data: Iterable[int]) -> tuple[int, ...]:
    """The electrodes that are not data electrodes, in order (they carry control voltages)."""
    d = set(check_electrodes(data))
    return tuple(e for e in range(N_ELECTRODES) if e not in d)


def place_volts(data: np.ndarray, controls: np.ndarray, data_electrodes: Iterable[int]) -> np.ndarray:
    """Electrode voltages float64 [..., N_ELECTRODES]: `data` [..., D] on the data electrodes and
    `controls` [..., N_ELECTRODES - D] on the others, in electrode order (leading axes broadcast)."""
    de = check_electrodes(data_electrodes)
    ce = control_electrodes(de)
    d = np.asarray(data, dtype=np.float64)
    c = np.asarray(controls, dtype=np.float64)
    if d.shape[-1:] != (len(de),) or c.shape[-1:] != (len(ce),):
        raise ValueError(f"data [..., {len(de)}] and controls [..., {len(ce)}] expected for data electrodes "
                         f"{list(de)}, got {d.shape} and {c.shape}")
    v = np.empty(np.broadcast_shapes(d.shape[:-1], c.shape[:-1]) + (N_ELECTRODES,))
    v[..., list(de)] = d
    v[..., list(ce)] = c
    return v
