"""Networks across chips: MNIST rf7 on a simulated board of three different chips (0, 5, 7 in turn
on ten devices), side by side in one run:

    per chip     models/chips/mnist.onnx (`make mnist-chips`): node k trained through the surrogate
                 of device k's chip, placed by deploy on a device of that chip
    one chip     models/mnist.onnx (trained for chip 0 only) forced onto the same ten devices by an
                 explicit device map: what a network that ignores which chip it runs on gets
    own chip     models/mnist.onnx on ten copies of chip 0 (the reference)

Each row gives the C core's prediction from the network's own surrogates, the accuracy measured
on the board and their difference, on the same test images.

    .venv/bin/python bench/chips_bench.py                     # table
    .venv/bin/python bench/chips_bench.py --images 2000 --json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from devices_bench import run_on_board

from core.io import load_network, read_network
from host.deploy import load_data
from host.metrics import n_classes, summarise

ROOT = Path(__file__).resolve().parents[1]
PER_CHIP = ROOT / "models" / "chips" / "mnist.onnx"
ONE_CHIP = ROOT / "models" / "mnist.onnx"
CHIPS = "0,5,7,0,5,7,0,5,7,0"


def _row(name: str, path: Path, url: str, x, labels, a, device_map: list[int] | None) -> dict:
    nf = read_network(path)
    predicted = summarise(load_network(path).evaluate(x, threads=1), labels)["accuracy"]
    r = run_on_board(nf, x, labels, url, a.latency_images, a.ramp, device_map)
    r.update({"name": name, "model": str(path), "predicted": predicted,
              "difference_points": (r["accuracy"] - predicted) * 100,
              "placement": [{"node": p.node, "device": p.device, "how": p.how} for p in r.pop("placements", [])]})
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-chip", type=Path, default=PER_CHIP, help="network trained one surrogate per device")
    p.add_argument("--one-chip", type=Path, default=ONE_CHIP, help="network trained for chip 0 only")
    p.add_argument("--chips", default=CHIPS, help="the mixed board's chips, one per device")
    p.add_argument("--images", type=int, default=10_000, help="test images (default: all)")
    p.add_argument("--latency-images", type=int, default=1, help="single images timed on each board")
    p.add_argument("--ramp", type=float, default=1.0, help="host ramp rate between points, V/s (deploy's default)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if not a.per_chip.is_file():
        raise SystemExit(f"{a.per_chip}: no such file (make mnist-chips trains it)")
    nf = read_network(a.one_chip)
    data = load_data("test", nf.metadata, nf.n_inputs, n_classes(10))
    x, labels = data.x[:a.images], data.labels[:a.images]
    n = len(a.chips.split(","))
    mixed, own = f"sim://?chips={a.chips}", "sim://?chips=" + ",".join(["0"] * n)
    rows = [_row("per chip", a.per_chip, mixed, x, labels, a, None),
            _row("one chip, forced", a.one_chip, mixed, x, labels, a, list(range(10))),
            _row("one chip, own chip", a.one_chip, own, x, labels, a, None)]
    if a.json:
        print(json.dumps({"images": len(x), "rows": rows}))
        return 0
    print(f"MNIST rf7 on {len(x)} test images; mixed board {mixed}")
    print(f"{'network':<20} {'board':<32} {'predicted':>9} {'board':>8} {'diff':>7} {'latency':>8}")
    for r in rows:
        url = r["url"] if len(r["url"]) <= 32 else r["url"][:29] + "..."
        print(f"{r['name']:<20} {url:<32} {r['predicted'] * 100:>8.2f}% {r['accuracy'] * 100:>7.2f}% "
              f"{r['difference_points']:>+6.2f} {r['latency_s_median']:>7.2f}s")
    gain = (rows[0]["accuracy"] - rows[1]["accuracy"]) * 100
    print(f"per-chip training on the mixed board: {gain:+.2f} points over the chip-0 network forced onto it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
