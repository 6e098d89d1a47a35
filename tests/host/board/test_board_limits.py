"""`check_volts`: the one check of voltages against a board's limits (host.board.limits)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from host.board import FLOAT32_SLACK_V, LimitError, check_volts

LIMITS = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)


def test_float32_rounding_at_a_limit_is_the_limit() -> None:
    # controls clipped to the limits and stored as float32: -1.2 becomes -1.2000000477
    raw = np.random.default_rng(0).uniform(-2.0, 2.0, (40, 7))
    v = np.clip(raw, LIMITS[:, 0], LIMITS[:, 1]).astype(np.float32)
    assert np.float64(v[:, 0].min()) < -1.2          # the case that used to be refused
    out = check_volts(v, LIMITS)
    assert out.dtype == np.float64 and out.shape == (40, 7)
    assert np.all(out >= LIMITS[:, 0]) and np.all(out <= LIMITS[:, 1])
    v64 = v.astype(np.float64)
    lo, hi = np.broadcast_to(LIMITS[:, 0], v.shape), np.broadcast_to(LIMITS[:, 1], v.shape)
    below, above = v64 < lo, v64 > hi
    assert below.any() and above.any()
    np.testing.assert_array_equal(out[below], lo[below])      # snapped onto the limit
    np.testing.assert_array_equal(out[above], hi[above])
    inside = ~below & ~above
    np.testing.assert_array_equal(out[inside], v64[inside])   # everything else untouched

def test_one_row_and_shape() -> None:
    assert check_volts([0.0] * 7, LIMITS).shape == (1, 7)
    with pytest.raises(LimitError, match=r"shape \[n, 7\]"):
        check_volts(np.zeros((2, 6)), LIMITS)
    with pytest.raises(LimitError, match="e3 sample 1: nan is not a finite"):
        check_volts([[0.0] * 7, [0, 0, 0, np.nan, 0, 0, 0]], LIMITS)
    with pytest.raises(ValueError, match="limits_v"):
        check_volts(np.zeros(7), LIMITS[:6])


def test_error_names_electrode_sample_and_distance() -> None:
    v = np.zeros((30, 7))
    v[28, 0] = -1.2 - 2 * FLOAT32_SLACK_V          # past the slack: a real violation
    v[29, 5] = 0.5
    with pytest.raises(LimitError) as e:
        check_volts(v, LIMITS, what="controls")
    msg = str(e.value)
    assert msg.startswith("controls: e0 sample 28: ") and "2 values out of range" in msg
    assert "below" in msg and "2e-06 V" in msg
    # the offending value and the limit never print alike
    shown = re.search(r"sample 28: (\S+) V", msg).group(1)
    assert float(shown) == v[28, 0] and shown != "-1.2"
    with pytest.raises(LimitError, match=r"e5 sample 0: 0.31 V is 0.01 V above its limits \[-0.7, 0.3\]"):
        check_volts([0, 0, 0, 0, 0, 0.31, 0], LIMITS)


def _numpy_codes(v: np.ndarray, v0: np.ndarray, per: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The definition of a DAC code, in numpy: the nearest code (ties to even), kept in range."""
    return np.minimum(np.maximum(np.rint((v - v0) / per), lo), hi).astype(np.uint16)


def test_the_cores_quantiser_gives_the_defined_codes_and_refuses_what_is_outside() -> None:
    from core._engine import volts_to_codes
    rng = np.random.default_rng(3)
    v0, per = np.full(7, -2.0), np.full(7, 4.0 / 65536)
    per[6] = 3.9 / 65536                                       # an odd step on one channel
    lo_c = np.rint((LIMITS[:, 0] - v0) / per) + 1             # a code range narrower than the volts
    hi_c = np.rint((LIMITS[:, 1] - v0) / per) - 1
    v = rng.uniform(LIMITS[:, 0], LIMITS[:, 1], (5000, 7))
    k = rng.integers(0, 65535, (5000, 7))
    v[:1000] = np.clip(v0 + (k[:1000] + 0.5) * per, LIMITS[:, 0], LIMITS[:, 1])   # ties
    v[1000:1010] = LIMITS[:, 0]
    v[1010:1020] = LIMITS[:, 1]                                # on the limits: clamped codes
    out = np.empty(v.shape, np.uint16)
    assert volts_to_codes(v, v0, per, LIMITS[:, 0].copy(), LIMITS[:, 1].copy(), lo_c, hi_c, out) == -1
    np.testing.assert_array_equal(out, _numpy_codes(v, v0, per, lo_c, hi_c))
    assert out[1000, 0] == lo_c[0] and out[1010, 6] == hi_c[6]
    for value, where in ((np.nan, (7, 3)), (0.6 + 1e-12, (9, 2)), (-0.7 - 1e-9, (11, 5))):
        bad = v.copy()
        bad[where] = value
        assert volts_to_codes(bad, v0, per, LIMITS[:, 0].copy(), LIMITS[:, 1].copy(), lo_c, hi_c, out) \
            == where[0] * 7 + where[1]
    with pytest.raises(ValueError, match="out has shape"):
        volts_to_codes(v, v0, per, LIMITS[:, 0].copy(), LIMITS[:, 1].copy(), lo_c, hi_c, out[:10])
    with pytest.raises(ValueError, match="v0 has 6 values"):
        volts_to_codes(v, v0[:6], per, LIMITS[:, 0].copy(), LIMITS[:, 1].copy(), lo_c, hi_c, out)
