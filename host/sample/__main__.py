"""Measure a DNPU through a bench board into a dataset folder.

    python -m host.sample --board sim://?seed=0 --n 200000 --out data/train
    python -m host.sample --board sim://?seed=0 --n 100000 --seed 1 --out data/test
    python -m host.sample --board /dev/ttyACM0 --n 1000000 --out data/train --resume
    python -m host.sample import-brainspy lab/postprocessed_data.npz --out data/lab   (host.sample.brainspy)

Samples are written chunk by chunk (see `host.sample.store`); Ctrl-C, a crash or a lost cable keeps
every chunk measured so far and ``--resume`` continues from there (with the same settings: a
resumed run with other settings, or on another board or device, is refused). Before each chunk
the same few reference points are measured a few times in a row, so the noise floor and the drift
of the run can be estimated from the data alone. The board is ramped from 0 V to the first point
and back to 0 V at the end, on errors and on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.electrodes import N_ELECTRODES
from host.sample import store
from host.sample.measure import ResumeMismatch, SamplingConfig, run
from host.sample.plans import STRATEGIES, Plan, PlanConfig, Ranges, ranges_within_limits


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m host.sample", description=__doc__.split("\n\n")[0],
        epilog="Measure the test set as a separate run with another --seed and --out.\n"
               "Import brains-py data instead: python -m host.sample import-brainspy --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", default="sim://?seed=0", help="board URL: /dev/tty*, socket://HOST:PORT or sim://?seed=N (default %(default)s)")
    p.add_argument("--device", type=int, default=0,
                   help="which device of a board carrying several (0..K-1); the data records its chip")
    p.add_argument("--n", type=int, required=True, help="number of plan samples to measure")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create (or continue with --resume)")
    p.add_argument("--strategy", choices=STRATEGIES, default="uniform", help="sampling strategy (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="plan seed: use another one for an independent test set")
    p.add_argument("--wave-period", type=float, default=2000.0, help="sine/sawtooth: period of the slowest electrode, in samples")
    p.add_argument("--grid-points", type=int, default=0,
                   help=f"grid: points per electrode (n must be this to the power {N_ELECTRODES})")
    p.add_argument("--ranges", type=str, default=None,
                   help=f"electrode ranges as JSON [[lo,hi] x {N_ELECTRODES}] in V, within the board's electrode "
                        "limits (default: the board's limits)")
    d = SamplingConfig()
    p.add_argument("--chunk", type=int, default=d.chunk, help="samples per chunk file (default %(default)s)")
    p.add_argument("--refs", type=int, default=d.n_refs, help="reference points measured before every chunk")
    p.add_argument("--ref-repeats", type=int, default=d.ref_repeats, help="repeats of each reference point per visit")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    return p


def plan_for(limits_v: Any, args: argparse.Namespace, ranges: Ranges | None) -> Plan:
    """The plan the command line asks for on a board with electrode limits `limits_v`."""
    return Plan(PlanConfig(strategy=args.strategy, n=args.n, seed=args.seed,
                           ranges_v=ranges_within_limits(limits_v, ranges),
                           wave_period=args.wave_period, grid_points=args.grid_points))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["import-brainspy"]:  # its own parser and --help (host.sample.brainspy)
        from host.sample.brainspy import main as import_brainspy
        return import_brainspy(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        ranges = _parse_ranges(args.ranges) if args.ranges else None
        cfg = SamplingConfig(chunk=args.chunk, n_refs=args.refs, ref_repeats=args.ref_repeats)
        if cfg.chunk <= 0 or cfg.n_refs < 0 or cfg.ref_repeats < 1:
            raise ValueError("--chunk must be positive, --refs >= 0, --ref-repeats >= 1")
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from host.board import Board  # the driver is the only way to the device
    t = time.monotonic()
    try:
        with Board.open(args.board) as whole:
            try:
                board = whole.device_view(args.device)
                plan = plan_for(board.limits_v, args, ranges)
            except ValueError as e:  # settings that do not fit this board: nothing is measured
                print(f"error: {e}", file=sys.stderr)
                return 2
            meta = run(board, plan, args.out, cfg, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        n = _count(args.out)
        print(f"\ninterrupted: {n} samples are safe in {args.out}; continue with --resume", file=sys.stderr)
        return 130
    except (FileExistsError, ResumeMismatch, store.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # board errors: keep what is on disk, say how to continue
        n = _count(args.out)
        print(f"error: {type(e).__name__}: {e}\n{n} samples are safe in {args.out}; continue with --resume",
              file=sys.stderr)
        return 1
    wall = time.monotonic() - t
    summary = {"out": str(args.out), "samples": args.n, "wall_s": round(wall, 3),
               "rate_sps": round(args.n / wall, 1), "board": meta.get("board", {}).get("serial")}
    print(json.dumps(summary) if args.json else
          f"measured {args.n} samples in {wall:.1f} s ({args.n / wall:.0f}/s) into {args.out}")
    return 0


def _parse_ranges(text: str) -> Ranges:
    """--ranges as (lo, hi) pairs, well-formed before the board is opened (within its limits once it is)."""
    try:
        ranges = tuple(tuple(float(x) for x in p) for p in json.loads(text))
        PlanConfig(n=1, ranges_v=ranges)
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"--ranges: {e}") from None
    return ranges


def _count(folder: Path) -> int:
    try:
        return sum(int((a["ref_id"] < 0).sum()) for _, a in store.iter_chunks(folder))
    except (OSError, store.DatasetError):
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
