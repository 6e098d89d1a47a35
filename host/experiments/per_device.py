"""Single-DNPU experiments (gates, capacity) on every device of a board of several chips.

Given one surrogate per device (``--surrogate A,B,C``, in the board's device order, as for the
ring and MNIST), the experiment of one DNPU runs once per device, each on its own chip: trained
through that device's surrogate, its data electrodes chosen for that chip (``auto`` screens per
chip), its input levels placed in that chip's ranges, validated on that device alone (the other
devices hold their voltages), everything written to ``OUT/device-K/`` exactly as a one-device run
with ``--surrogate FILE --board-device K`` would write it. Before anything is trained the chips
the surrogates were measured on are checked against the board's devices (a surrogate is never
validated on a chip other than its own; a mismatch or a count that differs is refused). Then
``OUT/results.json`` compares the chips (one row per device), with a table on stdout and a plot.

A device whose run fails (a board lost mid-run, bad input) ends the sweep over devices with its
exit status; the devices done so far keep their folders and rows. Ctrl-C likewise keeps both.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from host.experiments.board_session import BoardSession, check_chips
from host.experiments.errors import ExperimentError, fail
from host.experiments.results import out_folder, timer, write_json
from host.experiments.surrogates import load_surrogate, surrogate_paths


@dataclass(frozen=True)
class PerDeviceExperiment:
    """What the sweep needs of an experiment: its one-device run and how to compare devices."""

    name: str
    run_one: Callable[[argparse.Namespace], int]           # the one-device experiment (exit status)
    summarise: Callable[[dict[str, Any]], dict[str, Any]]  # a device's results.json -> its row's figures
    table: Callable[[list[dict[str, Any]]], str]           # the rows -> a text table
    plot: Callable[[Path, list[dict[str, Any]]], None]     # the rows -> a comparison plot
    #: the options of device K's run, changed in place (e.g. what does not depend on the chip runs once)
    adjust: Callable[[argparse.Namespace, int], None] | None = None


def device_folder(out: Path, device: int) -> Path:
    return out / f"device-{device}"


def _chips(args: argparse.Namespace, paths: Sequence[str]) -> list[dict[str, Any]]:
    """The surrogates' chips checked against the board's devices (ExperimentError on a mismatch);
    with --no-board, what each file says it was measured on."""
    from host.board.chips import describe_chip, surrogate_chip

    loaded = {p: load_surrogate(p, engine="torch") for p in dict.fromkeys(paths)}   # copies of a chip load once
    ordered = [loaded[p] for p in paths]
    if args.no_board:
        return [{"device": d, "surrogate": s.path, "chip": describe_chip(surrogate_chip(s.metadata)), "checked": False}
                for d, s in enumerate(ordered)]
    with BoardSession(args.board, args.limit_policy) as session:
        return check_chips(session, ordered)


def _read_results(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def run_on_devices(args: argparse.Namespace, exp: PerDeviceExperiment) -> int:
    """`exp` on one device (one --surrogate file), or on every device of the board (one file each)."""
    try:
        several = len(surrogate_paths(args.surrogate)) > 1
    except ExperimentError as e:
        return fail(str(e))
    return run_per_device(args, exp) if several else exp.run_one(args)


def run_per_device(args: argparse.Namespace, exp: PerDeviceExperiment) -> int:
    """Run `exp` on every device of the board, one surrogate each (see the module's docstring)."""
    clock = timer()
    paths = surrogate_paths(args.surrogate)
    try:
        if args.board_device != 0:
            raise ExperimentError("--board-device runs on one device; with one surrogate per device the experiment "
                                  "runs on every device of the board in turn (give one file to run on one device)")
        out = out_folder(args.out)
        chips = _chips(args, paths)
    except ExperimentError as e:
        return fail(str(e))
    summary: dict[str, Any] = {"experiment": exp.name, "surrogates": list(paths), "chips": chips,
                               "board_url": None if args.no_board else args.board, "devices": [], "wall_s": {}}

    def save() -> None:
        summary["wall_s"]["total"] = clock()
        write_json(out / "results.json", summary)

    save()
    status = 0
    try:
        for d, path in enumerate(paths):
            folder = device_folder(out, d)
            print(f"device {d} ({chips[d]['chip']}): {exp.name} through {path} -> {folder}")
            sub = argparse.Namespace(**vars(args))
            sub.surrogate, sub.board_device, sub.out = path, d, str(folder)
            if exp.adjust is not None:
                exp.adjust(sub, d)
            t = timer()
            try:
                status = exp.run_one(sub)
            finally:
                res = _read_results(folder)
                row = {"device": d, "surrogate": path, "chip": chips[d]["chip"], "out": str(folder),
                       "wall_s": t(), **(exp.summarise(res) if res else {})}
                if res.get("error"):
                    row["error"] = res["error"]
                summary["devices"].append(row)
                save()
            if status != 0:
                summary["error"] = f"device {d} ended with exit status {status}; devices after it were not run"
                save()
                break
    except KeyboardInterrupt:
        summary["error"] = "interrupted (Ctrl-C)"
        save()
        raise
    rows = summary["devices"]
    if rows:
        print(exp.table(rows), end="")
        exp.plot(out / f"{exp.name}_devices.png", rows)
    if summary.get("error"):
        print(f"error: {summary['error']}")
    print(f"results in {out} (each device's in {out}/device-K)")
    return status
