"""Measuring a sampling plan on a board into a dataset folder, chunk by chunk, resumably.

Before each chunk the same few reference points are measured a few times in a row, so the noise
floor and the drift of the run can be estimated from the data alone (`store.References`). A run
continues an interrupted one only with the same settings on the same board and device
(`board_fingerprint`); the board is zeroed at the end, on errors and on Ctrl-C.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from host.sample import store
from host.sample.plans import Plan, reference_points


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
    keys = ("serial", "firmware", "protocol", "device", "device_index")
    return {k: identity.get(k) for k in keys if k in identity}


def run(board: Any, plan: Plan, out: Path, cfg: SamplingConfig, *, resume: bool = False,
        progress: bool = True, on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Measure `plan` on an open board into the dataset folder `out`; returns the metadata.

    `board` needs `identity` (dict), `measure(volts [n, N_ELECTRODES]) -> nA [n]` and `zero()`.
    """
    out = Path(out)
    meta_new = dataset_meta(plan, cfg, dict(board.identity))
    done: set[int] = set()
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise FileExistsError(f"{out} already holds data; pass --resume to continue it or choose another --out")
        meta = store.read_meta(out)
        _check_resume(meta, meta_new)
        done = set(store.chunk_indices(out))
    else:
        out.mkdir(parents=True, exist_ok=True)
        meta = meta_new
        store.write_meta(out, meta)

    n_chunks = (len(plan) + cfg.chunk - 1) // cfg.chunk
    ref_rows, ref_ids = reference_rows(plan, cfg)
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
            store.write_chunk(out, k, {
                "volts": volts,
                "current_na": current,
                "index": np.concatenate([np.full(len(ref_rows), -1, np.int64), np.arange(i0, i1)]),
                "ref_id": np.concatenate([ref_ids, np.full(i1 - i0, -1, np.int16)]),
                "time_s": np.linspace(t_start, t_end, len(volts)),
            })
            meta["elapsed_s"] = t_end
            store.write_meta(out, meta)
            bar.update(i1 - i0)
            if on_chunk is not None:
                on_chunk(k)
        meta["complete"] = True
        meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        store.write_meta(out, meta)
    finally:
        bar.close()
        board.zero()
    return meta


def _measure_blocks(board: Any, volts: np.ndarray, block: int) -> np.ndarray:
    if block <= 0 or block >= len(volts):
        return np.asarray(board.measure(volts), dtype=np.float32)
    return np.concatenate([np.asarray(board.measure(volts[a:a + block]), dtype=np.float32)
                           for a in range(0, len(volts), block)])


def dataset_meta(plan: Plan, cfg: SamplingConfig, identity: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a new dataset of `plan` measured with `cfg` on the board of `identity`."""
    return {
        "format": store.FORMAT,
        "units": {"voltage": "V", "current": "nA"},
        "plan": plan.config.to_json(),
        "ranges_v": [list(p) for p in plan.config.ranges_v],
        "sampling": {"chunk": cfg.chunk, "n_refs": cfg.n_refs, "ref_repeats": cfg.ref_repeats},
        "board": identity,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": False,
    }


def reference_rows(plan: Plan, cfg: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """The reference rows measured before every chunk (volts [n_refs x ref_repeats, 7], each point
    repeated back to back) and their reference ids."""
    refs = reference_points(np.asarray(plan.config.ranges_v), cfg.n_refs, plan.config.seed)
    return (np.repeat(refs, cfg.ref_repeats, axis=0),
            np.repeat(np.arange(cfg.n_refs, dtype=np.int16), cfg.ref_repeats))


def check_same_settings(meta: dict[str, Any], new: dict[str, Any]) -> None:
    """ResumeMismatch unless a stored dataset's plan and sampling settings are the new run's."""
    for key in ("plan", "sampling"):
        if meta.get(key) != new[key]:
            raise ResumeMismatch(f"cannot resume: {key} settings differ from the stored run "
                                 f"(stored {json.dumps(meta.get(key))}, now {json.dumps(new[key])})")


def _check_resume(meta: dict[str, Any], new: dict[str, Any]) -> None:
    check_same_settings(meta, new)
    old_b, new_b = board_fingerprint(meta.get("board", {})), board_fingerprint(new["board"])
    if old_b != new_b:
        raise ResumeMismatch(f"cannot resume: the board or device differs from the stored run "
                             f"(stored {json.dumps(old_b)}, now {json.dumps(new_b)})")


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="sample", unit_scale=True, disable=not enabled,
                dynamic_ncols=True, desc="measuring")
