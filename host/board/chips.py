"""Which chip is which: the identity of a device, read off a board's identity and off a surrogate
file's provenance, so that a network node runs on the chip it was trained for.

A board's identity describes each device it carries (`device`, and per device under `devices`
on a board of several); a surrogate file records, in `dnpu.source`, the identity of the board it
was measured on (for a board of several devices, the identity as seen through that device: see
`Board.device_view`). `chip_of` keeps the entries of a description that name the chip itself
(not its noise, drift or settings), so two descriptions of one chip compare equal.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: entries of a device description that name the chip (a virtual DNPU: model, version, seed,
#: dopant sites; a real chip: its serial)
CHIP_KEYS = ("model", "model_version", "seed", "n_sites", "serial", "chip")
#: a digital twin is the chip of its file: its seed draws only its noise
TWIN_KEYS = ("model", "sha256")


def chip_of(describe: Any) -> dict[str, Any] | None:
    """The chip a device description names, or None when it names none."""
    if not isinstance(describe, dict):
        return None
    keys = TWIN_KEYS if "sha256" in describe else CHIP_KEYS
    chip = {k: describe[k] for k in keys if k in describe}
    return chip if chip.get("model") is not None and len(chip) > 1 else None


def board_chips(identity: dict[str, Any]) -> list[dict[str, Any] | None]:
    """The chip of every device of a board (one entry per device), from its identity."""
    devices = identity.get("devices")
    if isinstance(devices, list) and devices:
        return [chip_of(d.get("device") if isinstance(d, dict) else None) for d in devices]
    return [chip_of(identity.get("device"))]


def surrogate_chip(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The chip a surrogate file was measured on, from its `dnpu.source` (a variant's: from the
    file it was derived from), or None when the file does not say (an imported model)."""
    raw = metadata.get("dnpu.source", metadata.get("source"))
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    return _source_chip(raw)


def _source_chip(source: Any) -> dict[str, Any] | None:
    if not isinstance(source, dict):
        return None
    board = source.get("board")
    if isinstance(board, dict):
        chips = board_chips(board)
        return chips[0] if len(chips) == 1 else None
    variant = source.get("variant_of")
    if isinstance(variant, dict):
        return _source_chip(variant.get("source"))
    return None


def is_twin_of(chip: dict[str, Any] | None, surrogate_path: str | Path) -> bool:
    """Whether `chip` (a device's, from `board_chips`) is a digital twin running the very file at
    `surrogate_path`: then the file's predictions are the twin's, whatever chip the file itself
    was measured on."""
    if chip is None or "sha256" not in chip:
        return False
    try:
        return hashlib.sha256(Path(surrogate_path).read_bytes()).hexdigest() == chip["sha256"]
    except OSError:
        return False


def describe_chip(chip: dict[str, Any] | None) -> str:
    """A chip in words: 'virtual-dnpu-meanfield seed 0 (30 sites)', 'surrogate-twin 3f2a9c1e'."""
    if chip is None:
        return "an unknown chip"
    if "sha256" in chip:
        return f"{chip['model']} {str(chip['sha256'])[:8]}"
    parts = [str(chip["model"])]
    for key, fmt in (("seed", "seed {}"), ("serial", "serial {}"), ("chip", "chip {}"), ("n_sites", "({} sites)")):
        if key in chip:
            parts.append(fmt.format(chip[key]))
    return " ".join(parts)
