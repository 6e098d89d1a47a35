"""The surrogate file's metadata contract (format ``dnpu-surrogate/1``), declared once.

A surrogate file is a plain Gemm/Relu chain: input ``volts`` float32 [n, N_ELECTRODES] in
electrode order, output ``current_na`` float32 [n, 1], weights inline. Its ``metadata_props``
hold JSON strings:

    dnpu.format             "dnpu-surrogate/1"
    dnpu.electrode_ranges_v [[lo, hi] x N_ELECTRODES]: the ranges it was trained on
    dnpu.output_range_na    [lo, hi]: range of the measured currents it was trained on
    dnpu.amplification      factor from the model's output to nA (1.0: the output is nA)
    dnpu.noise_floor_na     noise floor estimated from repeated reference points
    dnpu.test_rmse_na       RMSE on the independent test set
    dnpu.source             {board identity, firmware version, device seed/serial, datasets}
    dnpu.architecture       {"hidden": 90, "layers": 5, "activation": "relu"}

The amplification rule: every reader of a surrogate file returns nA, that is the chain's output
times ``amplification(metadata_props)``. core.Surrogate applies it (to ``evaluate``, to
``value_and_grad`` and inside networks), and so do host.surrogate.onnx_file and its torch
loader. This module needs neither onnx nor torch: it works on the metadata_props as a mapping
of str to str.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .electrodes import N_ELECTRODES

__all__ = ["FORMAT", "INPUT_NAME", "OUTPUT_NAME", "PREFIX", "AMPLIFICATION_KEY", "REQUIRED_KEYS",
           "SurrogateFormatError", "amplification", "decode", "check"]

FORMAT = "dnpu-surrogate/1"
INPUT_NAME = "volts"
OUTPUT_NAME = "current_na"
PREFIX = "dnpu."
AMPLIFICATION_KEY = "dnpu.amplification"
REQUIRED_KEYS = ("dnpu.format", "dnpu.electrode_ranges_v", "dnpu.output_range_na", AMPLIFICATION_KEY,
                 "dnpu.noise_floor_na", "dnpu.test_rmse_na", "dnpu.source")


class SurrogateFormatError(ValueError):
    """Metadata that breaks the surrogate contract; the message names the file and the key."""


def amplification(props: Mapping[str, str], source: str = "surrogate") -> float:
    """The factor from the chain's output to nA: nA = output * amplification.

    ``dnpu.amplification`` of the metadata_props, a JSON number; 1.0 when the key is absent (a
    chain without surrogate metadata, e.g. one exported straight from torch, returns its output
    as is). Anything but a finite number raises SurrogateFormatError."""
    raw = props.get(AMPLIFICATION_KEY)
    if raw is None:
        return 1.0
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SurrogateFormatError(f"{source}: {AMPLIFICATION_KEY} must be a finite number, got {raw!r}")
    return float(value)


def decode(props: Mapping[str, str]) -> dict[str, Any]:
    """The ``dnpu.*`` entries with the prefix dropped and their JSON values decoded (a value that
    is not JSON is kept as its string)."""
    out: dict[str, Any] = {}
    for k, v in props.items():
        if k.startswith(PREFIX):
            try:
                out[k[len(PREFIX):]] = json.loads(v)
            except json.JSONDecodeError:
                out[k[len(PREFIX):]] = v
    return out


def check(props: Mapping[str, str], source: str = "surrogate") -> dict[str, Any]:
    """Validates a surrogate file's metadata_props against the contract and returns them decoded
    (as ``decode``); SurrogateFormatError names what is wrong: another format, a missing key,
    electrode ranges that are not N_ELECTRODES [lo, hi] pairs, a bad amplification."""
    if props.get("dnpu.format") != FORMAT:
        raise SurrogateFormatError(f"{source}: not a DNPU surrogate (metadata dnpu.format is "
                                   f"{props.get('dnpu.format')!r}, expected {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in props]
    if missing:
        raise SurrogateFormatError(f"{source}: surrogate metadata lacks {missing}")
    amplification(props, source)
    meta = decode(props)
    ranges = meta["electrode_ranges_v"]
    if (not isinstance(ranges, list) or len(ranges) != N_ELECTRODES
            or not all(isinstance(r, list) and len(r) == 2
                       and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in r)
                       for r in ranges)):
        raise SurrogateFormatError(f"{source}: dnpu.electrode_ranges_v must be {N_ELECTRODES} [lo, hi] pairs")
    return meta
