"""Boards of several devices: the shipped MNIST network (models/mnist.onnx, rf7: ten DNPU nodes) on
one time-multiplexed device and on a simulated ten-device board of copies of its chip, side by
side in one run: per-image latency (single images through every node) and accuracy on the same
test images.

    .venv/bin/python bench/devices_bench.py                 # table
    .venv/bin/python bench/devices_bench.py --images 2000 --latency-images 3 --json
    .venv/bin/python bench/devices_bench.py --firmware native   # both boards on the C firmware

On one device the ten nodes run one after another, each behind a ramp from the previous node's
voltages; on ten devices the layer is one ramp and one sweep. Target (issue 14): per-image
latency at least 6x lower on the ten-device board, accuracy within 0.3 points of one device.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from core.io import read_network
from host.deploy import evaluate_board, load_data
from host.metrics import n_classes, summarise

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "mnist.onnx"
ONE = "sim://?seed=0"
TARGET_LATENCY_RATIO = 6.0
TARGET_ACCURACY_POINTS = 0.3


def run_on_board(nf, x, labels, url: str, latency_images: int, ramp: float,
                 device_map: list[int] | None = None) -> dict:
    """One network on one board: accuracy on x, median single-image latency, which devices ran it."""
    t0 = time.perf_counter()
    run = evaluate_board(nf, x, url, latency_samples=latency_images, board_options={"ramp_v_per_s": ramp},
                         progress=False, device_map=device_map)
    if run.error is not None:
        raise SystemExit(f"{url}: {run.error}")
    acc = summarise(run.logits, labels)["accuracy"]
    lat = np.asarray(run.latency_us) / 1e6
    return {"url": url, "n_devices": run.board["n_devices"], "rounds_per_pass": run.rounds,
            "accuracy": acc, "images": len(x), "latency_s_median": float(np.median(lat)),
            "latency_s": lat.tolist(), "batch_wall_s": run.wall_s, "total_s": time.perf_counter() - t0,
            "devices_used": sorted({p.device for p in run.placements})}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--images", type=int, default=10_000, help="test images for the accuracy (default: all)")
    p.add_argument("--latency-images", type=int, default=3, help="single images timed on each board")
    p.add_argument("--devices", type=int, default=10, help="devices of the parallel board (copies of chip 0)")
    p.add_argument("--ramp", type=float, default=1.0, help="host ramp rate between points, V/s (deploy's default)")
    p.add_argument("--firmware", choices=("python", "native", "qemu"), default="python",
                   help="which firmware serves both boards (default: the Python simulator)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    nf = read_network(a.model)
    n_out = len([n for l in nf.layers if hasattr(l, "nodes") for n in l.nodes])
    data = load_data("test", nf.metadata, nf.n_inputs, n_classes(n_out))
    x, labels = data.x[:a.images], data.labels[:a.images]
    fw = "" if a.firmware == "python" else f"&firmware={a.firmware}"
    many = "sim://?chips=" + ",".join(["0"] * a.devices) + fw
    one = run_on_board(nf, x, labels, ONE + fw, a.latency_images, a.ramp)
    par = run_on_board(nf, x, labels, many, a.latency_images, a.ramp)
    ratio = one["latency_s_median"] / par["latency_s_median"]
    diff = (par["accuracy"] - one["accuracy"]) * 100
    rep = {"model": str(a.model), "firmware": a.firmware, "one_device": one, "many_devices": par, "latency_ratio": ratio,
           "accuracy_difference_points": diff,
           "targets": {"latency_ratio": TARGET_LATENCY_RATIO, "accuracy_points": TARGET_ACCURACY_POINTS},
           "met": {"latency": ratio >= TARGET_LATENCY_RATIO, "accuracy": abs(diff) <= TARGET_ACCURACY_POINTS}}
    if a.json:
        print(json.dumps(rep))
        return 0
    print(f"{a.model.name}: {len(x)} test images, {a.latency_images} single images timed per board "
          f"(firmware={a.firmware})")
    print(f"{'board':<34} {'devices':>7} {'rounds':>6} {'accuracy':>9} {'latency/image':>14} {'batch':>8}")
    for r in (one, par):
        url = r["url"] if len(r["url"]) <= 34 else r["url"][:31] + "..."
        print(f"{url:<34} {r['n_devices']:>7} {r['rounds_per_pass']:>6} {r['accuracy'] * 100:>8.2f}% "
              f"{r['latency_s_median']:>13.2f}s {r['batch_wall_s']:>7.1f}s")
    print(f"latency ratio one / {a.devices} devices: {ratio:.2f}x (target >= {TARGET_LATENCY_RATIO:g}x: "
          f"{'met' if rep['met']['latency'] else 'MISSED'})")
    print(f"accuracy difference: {diff:+.2f} points (target within {TARGET_ACCURACY_POINTS:g}: "
          f"{'met' if rep['met']['accuracy'] else 'MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
