"""Which device of a board runs which node of a network.

Each node names its surrogate, and each surrogate file records the chip it was measured on
(`host.board.chips.surrogate_chip`); a board names the chip of each of its devices
(`board_chips`). A node runs only on a device carrying its own chip: within a layer its nodes
are spread over those devices (the least loaded first), and the nodes of a layer that landed
on distinct devices run together, in one ramp and one sweep (a *round*). A node whose chip
cannot be matched is refused, unless the user maps nodes to devices explicitly (`device_map`:
one device per node, in the network's order), which the placement then reports as such. A
surrogate that names no chip (an imported model) may run on any device, reported as unchecked.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from core.io import NetworkFile
from core.network import DnpuLayer
from host.board.chips import describe_chip, surrogate_chip
from host.deploy.errors import DeployError

#: how a node came to its device
OWN_CHIP, MAPPED, UNCHECKED = "own chip", "mapped by the user", "chip unknown"


@dataclass(frozen=True)
class Placement:
    """Node `node` of layer `layer` runs on device `device` of the board."""

    layer: int
    node: int
    device: int
    how: str
    chip: str            # the chip the node was trained for, in words
    device_chip: str     # the chip of the device it runs on, in words

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_device_map(text: str | None) -> list[int] | None:
    """'auto' or None -> None; '0,1,1,2' -> [0, 1, 1, 2] (one device per node, network order)."""
    if text is None or text.strip().lower() in ("", "auto"):
        return None
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise DeployError(f"--device-map {text!r}: expected 'auto' or one device index per node, e.g. 0,1,2") from None
    if any(d < 0 for d in out):
        raise DeployError(f"--device-map {text!r}: device indices are >= 0")
    return out


def place_nodes(nf: NetworkFile, chips: Sequence[dict[str, Any] | None],
                device_map: Sequence[int] | None = None) -> list[Placement]:
    """One Placement per DNPU node of `nf` (network order) on a board whose devices carry `chips`;
    DeployError for a node that no device can run (or a bad map), before anything is sent."""
    nodes = [(li, k, node) for li, layer in enumerate(nf.layers) if isinstance(layer, DnpuLayer)
             for k, node in enumerate(layer.nodes)]
    trained = [surrogate_chip(s.metadata) for s in nf.surrogates]
    if device_map is not None:
        if len(device_map) != len(nodes):
            raise DeployError(f"--device-map names {len(device_map)} devices for {len(nodes)} nodes")
        bad = [d for d in device_map if d >= len(chips)]
        if bad:
            raise DeployError(f"--device-map: device {bad[0]} does not exist; the board carries devices "
                              f"0..{len(chips) - 1}")
        return [Placement(li, k, d, MAPPED, describe_chip(trained[node.surrogate]), describe_chip(chips[d]))
                for (li, k, node), d in zip(nodes, device_map)]
    out: list[Placement] = []
    load: dict[tuple[int, int], int] = {}
    for li, k, node in nodes:
        want = trained[node.surrogate]
        if want is None or all(c is None for c in chips):
            candidates, how = list(range(len(chips))), UNCHECKED
        else:
            candidates, how = [d for d, c in enumerate(chips) if c == want], OWN_CHIP
        if not candidates:
            have = ", ".join(f"{d}: {describe_chip(c)}" for d, c in enumerate(chips))
            raise DeployError(f"layers[{li}].nodes[{k}] was trained for {describe_chip(want)}, which no device of "
                              f"the board carries ({have}); map nodes to devices explicitly with --device-map "
                              f"to run it on another chip")
        d = min(candidates, key=lambda c: (load.get((li, c), 0), c))
        load[(li, d)] = load.get((li, d), 0) + 1
        out.append(Placement(li, k, d, how, describe_chip(want), describe_chip(chips[d])))
    return out


def rounds(placements: Sequence[Placement], layer: int) -> list[list[Placement]]:
    """The nodes of `layer` in rounds: each round holds nodes on distinct devices (they run
    together); a device's second node goes in the second round, and so on."""
    out: list[list[Placement]] = []
    seen: dict[int, int] = {}
    for p in placements:
        if p.layer != layer:
            continue
        r = seen.get(p.device, 0)
        seen[p.device] = r + 1
        while len(out) <= r:
            out.append([])
        out[r].append(p)
    return out
