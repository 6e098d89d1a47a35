"""Safe board access for an experiment's validation.

Every voltage that an experiment sends goes through ``BoardSession.measure``, which checks it
against the board's own limits first (``limit_policy``: "refuse" raises, "clip" clips and
records a warning that ends up in the results). A board error mid-run (disconnect, timeout,
safe state) becomes an ``ExperimentError`` after the board has been asked to go to 0 V; the
caller writes what it measured so far before reporting it.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from core.electrodes import N_ELECTRODES
from host.board import FLOAT32_SLACK_V, Board, BoardError, LimitError, check_volts
from host.experiments.errors import ExperimentError


def check_controls(volts: np.ndarray, limits_v: np.ndarray, policy: str, what: str,
                   warnings_out: list[str]) -> np.ndarray:
    """Voltages [..., 7] inside the board's limits (host.board.check_volts): clip them, with a
    stated warning, or refuse them."""
    v = np.asarray(volts, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ExperimentError(f"{what}: non-finite voltages")
    rows = v.reshape(-1, N_ELECTRODES)
    try:
        return check_volts(rows, limits_v, what).reshape(v.shape)
    except LimitError as e:
        if policy == "refuse":
            raise ExperimentError(f"{e}; refused (use --limit-policy clip to clip them)") from None
    lim = np.asarray(limits_v, dtype=np.float64)
    clipped = np.clip(rows, lim[:, 0], lim[:, 1])
    past = np.abs(clipped - rows)
    msg = (f"{what}: {int((past > FLOAT32_SLACK_V).sum())} voltages outside the board limits "
           f"(worst by {float(past.max()) * 1e3:.1f} mV); clipped to the limits")
    warnings_out.append(msg)
    warnings.warn(msg, stacklevel=2)
    return clipped.reshape(v.shape)


@dataclass
class BoardSession:
    """An open board for validation: limit checks before sending, 0 V on exit and on any error.

    device: the device of a board of several that ``measure`` drives (the others hold their
    targets); ``identity`` and ``limits_v`` are that device's (``Board.device_view``)."""

    url: str
    limit_policy: str = "clip"
    device: int = 0
    warnings: list[str] = field(default_factory=list)
    samples: int = 0
    board_s: float = 0.0        # seconds spent inside the board's measurements
    board: Any = None

    def __enter__(self) -> "BoardSession":
        try:
            self.board = Board.open(self.url)
        except (BoardError, OSError, ValueError) as e:
            raise ExperimentError(f"cannot open board {self.url!r}: {e}") from None
        try:
            self.board.device_index(self.device)
        except ValueError as e:
            self.board.close()
            self.board = None
            raise ExperimentError(f"--board-device: board {self.url!r}: {e}") from None
        return self

    @property
    def limits_v(self) -> np.ndarray:
        return np.asarray(self.board.device_limits_v[self.device], dtype=np.float64)

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.board.device_view(self.device).identity)

    def check_chip(self, sur: Any) -> dict[str, Any]:
        """The surrogate's chip against the chip of the session's device: a record for the results,
        and a warning (kept in ``warnings``) when they differ (the prediction is for another chip)."""
        from host.board.chips import board_chips, describe_chip, is_twin_of, surrogate_chip

        want, have = surrogate_chip(sur.metadata), board_chips(self.board.identity)[self.device]
        twin = is_twin_of(have, sur.path)
        rec = {"device": self.device, "surrogate": sur.path, "surrogate_chip": describe_chip(want),
               "device_chip": describe_chip(have) + (" (the twin of this surrogate file)" if twin else ""),
               "same": True if twin else None if want is None or have is None else want == have}
        if rec["same"] is False:
            msg = (f"surrogate {sur.path!r} was measured on {describe_chip(want)}, but device {self.device} of the "
                   f"board carries {describe_chip(have)}: the surrogate's predictions are for another chip")
            self.warnings.append(msg)
            warnings.warn(msg, stacklevel=2)
        return rec

    def device_limits_v(self, device: int | None = None) -> np.ndarray:
        """[7, 2] limits of `device` (None: the session's)."""
        d = self.device if device is None else device
        try:
            return np.asarray(self.board.device_limits_v[self.board.device_index(d)], dtype=np.float64)
        except ValueError as e:
            raise ExperimentError(f"board {self.url!r}: {e}") from None

    def measure(self, volts: np.ndarray, what: str = "volts", oversample: int = 1,
                device: int | None = None) -> np.ndarray:
        """nA [n] for volts [n, 7] on `device` (None: the session's); out-of-range values are
        refused or clipped, never sent."""
        d = self.device if device is None else device
        v = check_controls(np.asarray(volts, dtype=np.float64).reshape(-1, N_ELECTRODES), self.device_limits_v(d),
                           self.limit_policy, what, self.warnings)
        return self._timed(lambda: self.board.measure(v, oversample=oversample, device=d), len(v))

    def measure_devices(self, volts: np.ndarray, devices: list[int], what: str = "volts",
                        oversample: int = 1) -> np.ndarray:
        """nA [n, m] for volts [n, m, 7], row r of node j on device devices[j], all in one sweep
        (the devices compute in parallel); each device's values are checked against its limits."""
        v = np.asarray(volts, dtype=np.float64)
        try:
            lims = [self.board.device_limits_v[self.board.device_index(d)] for d in devices]
        except ValueError as e:
            raise ExperimentError(f"board {self.url!r}: {e}") from None
        v = np.stack([check_controls(v[:, j], lim, self.limit_policy, f"{what} (device {d})", self.warnings)
                      for j, (d, lim) in enumerate(zip(devices, lims))], axis=1)
        return self._timed(lambda: self.board.measure_devices(v, devices, oversample=oversample),
                           v.shape[0] * v.shape[1])

    def _timed(self, measure: Any, points: int) -> np.ndarray:
        """`measure()`, its seconds and `points` counted; a board error zeroes the board and
        becomes an ExperimentError."""
        t0 = time.perf_counter()
        try:
            out = measure()
        except BoardError as e:
            self.board_s += time.perf_counter() - t0
            self._zero_quietly()
            raise ExperimentError(f"board {self.url!r} failed during validation after {self.samples} samples: "
                                  f"{type(e).__name__}: {e}") from None
        self.board_s += time.perf_counter() - t0
        self.samples += points
        return out

    def applied_volts(self, volts: np.ndarray, device: int | None = None) -> np.ndarray:
        """The volts the DACs of `device` (None: the session's) really apply for `volts` [n, 7]:
        the limits' clip and the codes."""
        d = self.device if device is None else device
        lim = self.device_limits_v(d)
        codes = self.board.volts_to_codes(np.clip(volts, lim[:, 0], lim[:, 1]), d)
        return self.board.codes_to_volts(codes, d)

    def in_loop(self, gradient_model: Any, record: bool = False, what: str = "in-the-loop training",
                device: int | None = None, account: Any = None) -> Any:
        """A host.networks.in_loop.BoardLoop on this session's device (or `device`): its
        measurements go through ``measure`` (limit checks, 0 V on failure) and its gradients are
        taken at ``applied_volts``; `account`: a BoardAccount shared with other loops."""
        from host.networks.in_loop import BoardAccount, BoardLoop

        what = what if device is None else f"{what} (device {device})"
        return BoardLoop(lambda v: self.measure(v, what=what, device=device), gradient_model,
                         applied=lambda v: self.applied_volts(v, device), record=record,
                         account=BoardAccount() if account is None else account)

    def _zero_quietly(self) -> None:
        try:
            self.board.zero()
        except Exception:  # the link is gone; the board's watchdog takes it to 0 V by itself
            pass

    def __exit__(self, *exc: object) -> None:
        if self.board is not None:
            self.board.close()      # ramps every output to 0 V unless the link is broken
            self.board = None


def check_chips(session: BoardSession, surrogates: Sequence[Any]) -> list[dict[str, Any]]:
    """One surrogate per device of the session's board (``.path``, ``.metadata``, in the board's
    device order), each file's chip against its device's: an ExperimentError on a mismatch or a
    count that differs (a surrogate never stands for a chip other than its own); the pairs, for
    the results."""
    from host.board.chips import board_chips, describe_chip, is_twin_of, surrogate_chip

    chips = board_chips(session.board.identity)
    if len(chips) != len(surrogates):
        raise ExperimentError(f"{len(surrogates)} surrogates (one per device) for a board of {len(chips)} devices")
    out = []
    for d, (s, c) in enumerate(zip(surrogates, chips)):
        want = surrogate_chip(s.metadata)
        if is_twin_of(c, s.path):                    # the twin of this very file
            want = c
        if want is not None and c is not None and want != c:
            raise ExperimentError(f"surrogate {s.path!r} was measured on {describe_chip(want)}, but device {d} of "
                                  f"the board carries {describe_chip(c)}: give the surrogates in the board's device order")
        out.append({"device": d, "surrogate": s.path, "chip": describe_chip(c if c is not None else want),
                    "checked": want is not None and c is not None})
    return out
