"""Train, export and check DNPU surrogate models.

    python -m host.surrogate train data/train --test data/test --out models/surrogate.onnx
    python -m host.surrogate check models/surrogate.onnx --data data/test
    python -m host.surrogate info models/surrogate.onnx
    python -m host.surrogate import-brainspy lab/model.pt --out models/lab.onnx   (and export-brainspy)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES
from host.sample import store as ds
from host.surrogate import onnx_file


def _train(args: argparse.Namespace) -> int:
    from host.surrogate import report
    from host.surrogate.artefacts import check_same_device, write_trained
    from host.surrogate.config import recipe_from_args
    from host.surrogate.train import fit

    train = ds.load(args.data)
    test = ds.load(args.test) if args.test else None
    if test is not None:
        check_same_device(train, test)
    cfg = recipe_from_args(args)
    n = len(train.samples) if args.limit is None else min(args.limit, len(train.samples))
    res = fit(train.samples.volts[:n].astype(np.float64), train.samples.current_na[:n].astype(np.float64),
              train.ranges, cfg, progress=not args.no_progress)
    rep = write_trained(res, cfg, train, test, args.out, n=n, plots=not args.no_plots)
    print(json.dumps(rep) if args.json else report.summary(rep))
    return 0


def _curve(args: argparse.Namespace) -> int:
    """Test RMSE against the number of training samples: how much to measure."""
    from host.surrogate.artefacts import check_same_device, rmse as _rmse
    from host.surrogate.torch_model import predict
    from host.surrogate.train import TrainConfig, fit

    train, test = ds.load(args.data), ds.load(args.test)
    check_same_device(train, test)
    noise = train.references.noise_floor_na()
    rows = []
    for n in sorted(int(x) for x in args.sizes.split(",")):
        if n > len(train.samples):
            print(f"skipping {n}: the dataset has only {len(train.samples)} samples", file=sys.stderr)
            continue
        cfg = TrainConfig(batch=args.batch, lr=args.lr, max_epochs=args.epochs, seed=args.seed, device=args.device,
                          max_wall_s=args.max_minutes * 60 if args.max_minutes else math.inf)
        res = fit(train.samples.volts[:n].astype(np.float64), train.samples.current_na[:n].astype(np.float64),
                  train.ranges, cfg, progress=not args.no_progress)
        rmse = _rmse(predict(res.model, test.samples.volts), test.samples.current_na)
        rows.append({"train_samples": n, "test_rmse_na": rmse, "test_rmse_over_noise": rmse / noise,
                     "epochs": len(res.history), "wall_s": round(res.wall_s, 1)})
        print(f"{n:>9d} samples: test RMSE {rmse:.3f} nA ({rmse / noise:.2f} x noise floor), "
              f"{len(res.history)} epochs, {res.wall_s:.0f} s", file=sys.stderr)
    result = {"noise_floor_na": noise, "test_samples": len(test.samples), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        if not args.no_plots:
            from host.surrogate import report
            report.curve_plot(args.out.with_suffix(".png"), result)
    print(json.dumps(result))
    return 0


def _check(args: argparse.Namespace) -> int:
    """Agreement of torch, onnxruntime and the core on a dataset or random volts."""
    sf = onnx_file.read(args.model)
    if args.data:
        volts = ds.load(args.data).samples.volts[: args.n]
    else:
        r = sf.ranges_v
        u = np.random.default_rng(0).uniform(size=(args.n, N_ELECTRODES))
        volts = (r[:, 0] + u * (r[:, 1] - r[:, 0])).astype(np.float32)
    ref = sf.evaluate_numpy(volts)
    out: dict[str, float] = {}
    import onnxruntime as ort
    sess = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    raw = sess.run(None, {onnx_file.INPUT_NAME: volts})[0][:, 0]     # the chain's output; nA = output x amplification
    out["onnxruntime"] = float(np.max(np.abs(raw * sf.amplification - ref)))
    try:
        import core
        out["core"] = float(np.max(np.abs(core.load_surrogate(args.model).evaluate(volts) - ref)))
    except ImportError:
        pass
    try:
        from host.surrogate.torch_model import load_torch, predict
        out["torch"] = float(np.max(np.abs(predict(load_torch(args.model), volts) - ref)))
    except ImportError:
        pass
    span = float(np.ptp(ref)) or 1.0
    res = {"model": str(args.model), "samples": int(len(volts)),
           "max_abs_err_na": out, "max_rel_err": {k: v / span for k, v in out.items()}}
    print(json.dumps(res, indent=None if args.json else 2))
    return 0 if all(v / span < 1e-5 for v in out.values()) else 1


def _report(args: argparse.Namespace) -> int:
    from host.board import survey as sv
    from host.surrogate.device_report import surrogate_report, xor_text

    rep = surrogate_report(args.model, sv.SurveyConfig(points=args.points), xor=not args.no_xor,
                           xor_trials=args.xor_trials, xor_epochs=args.xor_epochs,
                           quiet=args.no_progress or args.json)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(sv.json_ready(rep), indent=2))
        sv.plot(rep, args.out.with_suffix(".png"), f"{args.model.name}: amplification {rep['amplification']:g}",
                rep.get("xor", {}).get("table"))
    if args.json:
        print(json.dumps(sv.json_ready(rep), indent=2))
        return 0
    print(f"{args.model}: amplification {rep['amplification']:g}, test RMSE {rep['test_rmse_na']:.3f} nA")
    print(sv.text(rep))
    if "xor" in rep:
        print(xor_text(rep["xor"]))
    if args.out is not None:
        print(f"report in {args.out} and {args.out.with_suffix('.png')}")
    return 0


def _variant(args: argparse.Namespace) -> int:
    from host.surrogate.variant import make_variant

    meta = make_variant(args.model, args.out, args.widen, args.amplification)
    print(f"variant written to {args.out}: ranges {meta['electrode_ranges_v']}, amplification {meta['amplification']}")
    return 0


def _info(args: argparse.Namespace) -> int:
    sf = onnx_file.read(args.model)
    shapes = [list(w.shape) for w in sf.weights]
    print(json.dumps({"layers": shapes, **sf.metadata}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m host.surrogate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fit a surrogate to a dataset and export it as ONNX + JSON report + plots")
    t.add_argument("data", type=Path, help="training dataset folder (from python -m host.sample)")
    t.add_argument("--test", type=Path, help="independent test dataset folder")
    t.add_argument("--out", type=Path, default=Path("models/surrogate.onnx"), help="ONNX file to write (report: same name .json)")
    from host.surrogate.config import add_recipe_arguments
    add_recipe_arguments(t)
    t.add_argument("--limit", type=int, default=None, help="use only the first N training samples")
    t.add_argument("--device", default="auto", help="torch device: auto (cuda if present), cpu, cuda")
    t.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    t.add_argument("--no-plots", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--json", action="store_true", help="print the report as one JSON object")
    t.set_defaults(func=_train)
    cv = sub.add_parser("curve", help="test RMSE against training-set size (how much to measure)")
    cv.add_argument("data", type=Path)
    cv.add_argument("--test", type=Path, required=True)
    cv.add_argument("--sizes", default="3000,10000,30000,100000,300000", help="comma-separated training sizes")
    cv.add_argument("--out", type=Path, help="JSON file to write (and a .png plot beside it)")
    cv.add_argument("--lr", type=float, default=1e-3)
    cv.add_argument("--batch", type=int, default=256)
    cv.add_argument("--epochs", type=int, default=100)
    cv.add_argument("--max-minutes", type=float, default=None, help="per size")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--device", default="auto")
    cv.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    cv.add_argument("--no-plots", action="store_true")
    cv.add_argument("--no-progress", action="store_true")
    cv.set_defaults(func=_curve)
    c = sub.add_parser("check", help="check that torch, onnxruntime and the core agree on a surrogate")
    c.add_argument("model", type=Path)
    c.add_argument("--data", type=Path, help="dataset whose volts to use (default: random in the ranges)")
    c.add_argument("--n", type=int, default=10000)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_check)
    i = sub.add_parser("info", help="print a surrogate's layers and metadata")
    i.add_argument("model", type=Path)
    i.set_defaults(func=_info)
    from host.surrogate import brainspy  # import-brainspy, export-brainspy (docs/brainspy.md)
    brainspy.add_parsers(sub)
    v = sub.add_parser("variant", help="another chip from a surrogate: ranges widened about their centres and "
                                       "another amplification, the same currents at corresponding points")
    v.add_argument("model", type=Path)
    v.add_argument("--out", type=Path, required=True, help="surrogate ONNX file to write")
    v.add_argument("--widen", type=float, default=1.0, help="range width factor for every electrode (default 1)")
    v.add_argument("--amplification", type=float, default=None,
                   help="the variant's amplification (nA per unit of network output; default: the input's)")
    v.set_defaults(func=_variant)
    r = sub.add_parser("report", help="a chip at a glance: sensitivity per electrode, output range, noise "
                                      "against signal, and which electrode pairs realise XOR")
    r.add_argument("model", type=Path)
    r.add_argument("--out", type=Path, default=None,
                   help="write the report here as JSON, with a PNG of the same name (default: print only)")
    r.add_argument("--points", type=int, default=200, help="base points of the sensitivity estimate")
    r.add_argument("--no-xor", action="store_true", help="skip the XOR search over electrode pairs")
    r.add_argument("--xor-trials", type=int, default=4, help="random starts per pair")
    r.add_argument("--xor-epochs", type=int, default=300, help="training epochs per pair")
    r.add_argument("--json", action="store_true", help="print the report as one JSON object")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ds.DatasetError, onnx_file.SurrogateFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
