"""python -m host.deploy --model FILE [--backend core|onnxruntime|board] [--board URL] [--data test|PATH]
[--batch N] [--json]

Runs a trained DNPU network file (dnpu-network/1 ONNX, e.g. models/mnist.onnx) on a data set and
prints accuracy, the confusion matrix, per-sample latency at batch 1 (p50, p99) and throughput
at --batch. --data test (the default) is the test split of the data set the model's metadata
names (the MNIST test set for the shipped models); a PATH is an .npz with `x` float32
[n, n_inputs] (or `images` uint8 [n, 28, 28]) and `labels` int [n].

The board backend runs the host layers in numpy and each DNPU node on the board, for all samples
at once: each node on a device carrying the chip its surrogate was measured on, and the nodes of
a layer on distinct devices of a board of several together (one ramp, one sweep); a one-device
board runs them one after another. It reports its accuracy beside the simulated (core) one,
which device ran which node and, per node, the error between the surrogate's predicted currents
and the measured ones. Its latency is that of single images (each through every node) over
--latency-samples images.

A network with one output is a binary classifier: class 1 where the output (a logit) is > 0;
otherwise the class is the argmax of the outputs.

Exit status: 0 success, 2 bad model/data/arguments (or voltages refused), 3 board failure
(partial results printed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from host.deploy.board_backend import DEFAULT_BOARD_URL, evaluate_board
from host.deploy.data import load_data
from host.deploy.engines import (BACKENDS, make_backend, measure_latency, measure_throughput,
                                 surrogate_logits)
from host.deploy.errors import DeployError
from host.deploy.placement import parse_device_map
from host.metrics import format_confusion, n_classes, summarise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m host.deploy", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="network ONNX file (dnpu-network/1)")
    p.add_argument("--backend", choices=BACKENDS, default="core")
    p.add_argument("--board", default=DEFAULT_BOARD_URL, help="board URL for --backend board")
    p.add_argument("--data", default="test", help="'test' (the model's data set) or an .npz path")
    p.add_argument("--batch", type=int, default=1000, help="batch size for the throughput run")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (core and onnxruntime)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    p.add_argument("--latency-samples", type=int, default=None,
                   help="images timed one by one (default 1000; board: 3)")
    p.add_argument("--ramp", type=float, default=1.0, help="board: ramp rate between nodes, V/s")
    p.add_argument("--device-map", default="auto",
                   help="board: 'auto' (each node on a device of its own chip) or one device index per "
                        "node in the network's order, e.g. 0,1,2 (runs nodes on the chips named, whatever "
                        "they were trained for)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true")
    return p


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from core.io import read_network

    if args.batch < 1:
        raise DeployError(f"--batch must be >= 1, got {args.batch}")
    if args.threads < 1 or args.threads > 256:
        raise DeployError(f"--threads must be in 1..256, got {args.threads}")
    if args.limit is not None and args.limit < 1:
        raise DeployError(f"--limit must be >= 1, got {args.limit}")
    if not args.ramp > 0:
        raise DeployError(f"--ramp must be > 0, got {args.ramp}")
    model = Path(args.model)
    try:
        nf = read_network(model)
    except FileNotFoundError:
        raise DeployError(f"--model {model}: no such file") from None
    except ValueError as e:
        raise DeployError(f"--model {model}: {e}") from None
    data = load_data(args.data, nf.metadata, nf.n_inputs, n_classes(_n_outputs(nf)))
    x, labels = data.x, data.labels
    if args.limit is not None:
        x, labels = x[:args.limit], labels[:args.limit]
    rep: dict[str, Any] = {"backend": args.backend, "model": str(model), "data": data.name,
                           "task": nf.metadata.get("task"), "batch": args.batch, "threads": args.threads}
    status = 0
    if args.backend in ("core", "onnxruntime"):
        fn = make_backend(args.backend, model, args.threads)
        lat = measure_latency(fn, x, n=args.latency_samples or 1000)
        logits, wall = measure_throughput(fn, x, args.batch)
        rep.update(summarise(logits, labels))
        rep.update({"latency_p50_us": _pct(lat, 50), "latency_p99_us": _pct(lat, 99), "latency_samples": len(lat),
                    "throughput_sps": len(x) / wall, "wall_s": wall})
    else:
        sim_logits = surrogate_logits(nf, x)
        n_lat = args.latency_samples if args.latency_samples is not None else 3
        br = evaluate_board(nf, x, args.board, progress=not (args.no_progress or args.json),
                            board_options={"ramp_v_per_s": args.ramp}, latency_samples=n_lat,
                            device_map=parse_device_map(args.device_map))
        rep.update({"board": br.board, "nodes_done": br.nodes_done, "nodes_total": br.nodes_total,
                    "placement": [p.as_dict() for p in br.placements], "rounds_per_pass": br.rounds,
                    "node_errors": br.node_errors, "simulated": summarise(sim_logits, labels)})
        lat_a = np.asarray(br.latency_us)
        rep.update({"latency_p50_us": _pct(lat_a, 50) if len(lat_a) else None,
                    "latency_p99_us": _pct(lat_a, 99) if len(lat_a) else None, "latency_samples": len(lat_a)})
        if br.error is not None:
            rep.update({"error": br.error, "partial": True, "throughput_sps": None,
                        "accuracy": None if br.logits is None else summarise(br.logits, labels)["accuracy"]})
            status = 3
        else:
            rep.update(summarise(br.logits, labels))
            rep.update({"throughput_sps": len(x) / br.wall_s, "wall_s": br.wall_s, "measure_s": br.measure_s,
                        "accuracy_minus_simulated": rep["accuracy"] - rep["simulated"]["accuracy"]})
    return rep, status


def _n_outputs(nf) -> int:
    from core import Network
    return Network(nf.n_inputs, nf.layers, nf.surrogates).n_outputs


def print_text(rep: dict[str, Any]) -> None:
    print(f"model {rep['model']}  backend {rep['backend']}  data {rep['data']}")
    if rep.get("error"):
        print(f"ERROR: {rep['error']}")
    if rep.get("accuracy") is not None:
        print(f"accuracy        {rep['accuracy'] * 100:.2f} % ({rep['n_samples']} samples)")
    if "simulated" in rep:
        print(f"simulated       {rep['simulated']['accuracy'] * 100:.2f} % (core, surrogate)")
    if rep.get("latency_p50_us") is not None:
        print(f"latency batch 1 p50 {rep['latency_p50_us']:.1f} us, p99 {rep['latency_p99_us']:.1f} us "
              f"({rep['latency_samples']} samples)")
    if rep.get("throughput_sps") is not None:
        print(f"throughput      {rep['throughput_sps']:,.0f} samples/s at batch {rep['batch']} "
              f"({rep['wall_s']:.3f} s)")
    if rep.get("placement"):
        print(f"nodes on devices ({rep['board'].get('n_devices', 1)} on the board, {rep['rounds_per_pass']} "
              f"ramp+sweep rounds per pass):")
        for li in sorted({p["layer"] for p in rep["placement"]}):
            ps = [p for p in rep["placement"] if p["layer"] == li]
            print(f"  layer {li}: " + "  ".join(f"n{p['node']}->d{p['device']}" for p in ps))
        for p in rep["placement"]:
            if p["how"] != "own chip":
                print(f"  layer {p['layer']} node {p['node']}: {p['how']}: trained for {p['chip']}, "
                      f"runs on {p['device_chip']}")
    if rep.get("node_errors"):
        print(f"surrogate vs measured, per node ({rep['nodes_done']}/{rep['nodes_total']} nodes):")
        print("  layer node  rmse_nA  mean_nA  max|err|  rmse_near_edge  near_edge")
        for e in rep["node_errors"]:
            ne = "-" if e["rmse_near_edge_na"] is None else f"{e['rmse_near_edge_na']:.2f}"
            print(f"  {e['layer']:>5} {e['node']:>4} {e['rmse_na']:8.2f} {e['mean_error_na']:8.2f} "
                  f"{e['max_abs_error_na']:9.2f} {ne:>15} {e['fraction_near_edge'] * 100:8.1f} %")
    if "confusion_matrix" in rep:
        print("confusion matrix:")
        print(format_confusion(rep["confusion_matrix"]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rep, status = run(args)
    except DeployError as e:
        if args.json:
            print(json.dumps({"error": str(e), "backend": args.backend}))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        if args.json:
            print(json.dumps(rep))
        else:
            print_text(rep)
        sys.stdout.flush()
    except BrokenPipeError:            # `... | head`: the reader left, that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if status:
        print(f"error: {rep['error']}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
