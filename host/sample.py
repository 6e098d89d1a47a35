"""Measure a DNPU through a bench board into a dataset folder.

    python -m host.sample --board sim://?seed=0 --n 200000 --out data/train
    python -m host.sample --board sim://?seed=0 --n 100000 --seed 1 --out data/test
    python -m host.sample --board /dev/ttyACM0 --n 1000000 --out data/train --resume

Samples are written chunk by chunk (see `host.dataset`); Ctrl-C, a crash or a lost cable keeps
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from host import dataset
from host.sampling_plans import STRATEGIES, WORKING_RANGES_V, Plan, PlanConfig, reference_points


@dataclass(frozen=True)
class SamplingConfig:
    """How a run is measured (beyond the plan itself)."""

    chunk: int = 8192            # plan samples per chunk file
    n_refs: int = 4              # reference points
    ref_repeats: int = 4         # consecutive repeats of each reference point per visit
    block: int = 0               # samples per board.measure call (0: the whole chunk)


class ResumeMismatch(RuntimeError):
    """A resumed run whose settings, board or device differ from the stored ones."""


def board_fingerprint(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a board's identity that must not change within one dataset."""
    keys = ("serial", "firmware_version", "protocol_version", "device")
    return {k: identity.get(k) for k in keys if k in identity}


def run(board: Any, plan: Plan, out: Path, cfg: SamplingConfig, *, resume: bool = False,
        progress: bool = True, on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Measure `plan` on an open board into the dataset folder `out`; returns the metadata.

    `board` needs `identity` (dict), `measure(volts [n,7]) -> nA [n]` and `zero()`.
    """
    out = Path(out)
    ident = dict(board.identity)
    meta_new = {
        "format": dataset.FORMAT,
        "units": {"voltage": "V", "current": "nA"},
        "plan": plan.config.to_json(),
        "ranges_v": [list(p) for p in plan.config.ranges_v],
        "sampling": {"chunk": cfg.chunk, "n_refs": cfg.n_refs, "ref_repeats": cfg.ref_repeats},
        "board": ident,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": False,
    }
    done: set[int] = set()
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise FileExistsError(f"{out} already holds data; pass --resume to continue it or choose another --out")
        meta = dataset.read_meta(out)
        _check_resume(meta, meta_new)
        done = set(dataset.chunk_indices(out))
    else:
        out.mkdir(parents=True, exist_ok=True)
        meta = meta_new
        dataset.write_meta(out, meta)

    n_chunks = (len(plan) + cfg.chunk - 1) // cfg.chunk
    refs = reference_points(np.asarray(plan.config.ranges_v), cfg.n_refs, plan.config.seed)
    ref_rows = np.repeat(refs, cfg.ref_repeats, axis=0)
    ref_ids = np.repeat(np.arange(cfg.n_refs, dtype=np.int16), cfg.ref_repeats)
    todo = [k for k in range(n_chunks) if k not in done]
    n_done = sum(min(cfg.chunk, len(plan) - k * cfg.chunk) for k in done)
    t0 = time.monotonic() - float(meta.get("elapsed_s", 0.0))

    bar = _progress(total=len(plan), initial=n_done, enabled=progress)
    try:
        for k in todo:
            i0, i1 = k * cfg.chunk, min(len(plan), (k + 1) * cfg.chunk)
            volts = np.concatenate([ref_rows, plan.rows(i0, i1)])
            t_start = time.monotonic() - t0
            current = _measure_blocks(board, volts, cfg.block)
            t_end = time.monotonic() - t0
            dataset.write_chunk(out, k, {
                "volts": volts,
                "current_na": current,
                "index": np.concatenate([np.full(len(ref_rows), -1, np.int64), np.arange(i0, i1)]),
                "ref_id": np.concatenate([ref_ids, np.full(i1 - i0, -1, np.int16)]),
                "time_s": np.linspace(t_start, t_end, len(volts)),
            })
            meta["elapsed_s"] = t_end
            dataset.write_meta(out, meta)
            bar.update(i1 - i0)
            if on_chunk is not None:
                on_chunk(k)
        meta["complete"] = True
        meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        dataset.write_meta(out, meta)
    finally:
        bar.close()
        board.zero()
    return meta


def _measure_blocks(board: Any, volts: np.ndarray, block: int) -> np.ndarray:
    if block <= 0 or block >= len(volts):
        return np.asarray(board.measure(volts), dtype=np.float32)
    return np.concatenate([np.asarray(board.measure(volts[a:a + block]), dtype=np.float32)
                           for a in range(0, len(volts), block)])


def _check_resume(meta: dict[str, Any], new: dict[str, Any]) -> None:
    for key in ("plan", "sampling"):
        if meta.get(key) != new[key]:
            raise ResumeMismatch(f"cannot resume: {key} settings differ from the stored run "
                                 f"(stored {json.dumps(meta.get(key))}, now {json.dumps(new[key])})")
    old_b, new_b = board_fingerprint(meta.get("board", {})), board_fingerprint(new["board"])
    if old_b != new_b:
        raise ResumeMismatch(f"cannot resume: the board or device differs from the stored run "
                             f"(stored {json.dumps(old_b)}, now {json.dumps(new_b)})")


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="sample", unit_scale=True, disable=not enabled,
                dynamic_ncols=True, desc="measuring")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m host.sample", description=__doc__.split("\n\n")[0],
        epilog="Measure the test set as a separate run with another --seed and --out.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", default="sim://?seed=0", help="board URL: /dev/tty*, socket://HOST:PORT or sim://?seed=N (default %(default)s)")
    p.add_argument("--n", type=int, required=True, help="number of plan samples to measure")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create (or continue with --resume)")
    p.add_argument("--strategy", choices=STRATEGIES, default="uniform", help="sampling strategy (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="plan seed: use another one for an independent test set")
    p.add_argument("--wave-period", type=float, default=2000.0, help="sine/sawtooth: period of the slowest electrode, in samples")
    p.add_argument("--grid-points", type=int, default=0, help="grid: points per electrode (n must be this to the 7th power)")
    p.add_argument("--ranges", type=str, default=None,
                   help="electrode ranges as JSON [[lo,hi] x 7] in V (default: the DNPU working ranges)")
    p.add_argument("--chunk", type=int, default=8192, help="samples per chunk file (default %(default)s)")
    p.add_argument("--refs", type=int, default=4, help="reference points measured before every chunk")
    p.add_argument("--ref-repeats", type=int, default=4, help="repeats of each reference point per visit")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ranges = tuple(tuple(float(x) for x in p) for p in json.loads(args.ranges)) if args.ranges else WORKING_RANGES_V
        plan = Plan(PlanConfig(strategy=args.strategy, n=args.n, seed=args.seed, ranges_v=ranges,
                               wave_period=args.wave_period, grid_points=args.grid_points))
        cfg = SamplingConfig(chunk=args.chunk, n_refs=args.refs, ref_repeats=args.ref_repeats)
        if cfg.chunk <= 0 or cfg.n_refs < 0 or cfg.ref_repeats < 1:
            raise ValueError("--chunk must be positive, --refs >= 0, --ref-repeats >= 1")
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from host.board import Board  # the driver is the only way to the device
    t = time.monotonic()
    try:
        with Board.open(args.board) as board:
            meta = run(board, plan, args.out, cfg, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        n = _count(args.out)
        print(f"\ninterrupted: {n} samples are safe in {args.out}; continue with --resume", file=sys.stderr)
        return 130
    except (FileExistsError, ResumeMismatch, dataset.DatasetError) as e:
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


def _count(folder: Path) -> int:
    try:
        return sum(int((a["ref_id"] < 0).sum()) for _, a in dataset.iter_chunks(folder))
    except (OSError, dataset.DatasetError):
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
