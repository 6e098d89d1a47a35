"""python -m host.experiments capacity: empirical VC dimension of the surrogate, NNs and the device.

Systems: the surrogate (one DNPU trained through it), neural networks with 2 and 3 logistic
hidden units trained the same way, and the device on a board: every labelling found through the
surrogate is measured on the board (each point `--repeats` times); the decision node (logistic
on the standardised current) is re-trained on 80 % of the measured currents and the labelling
counts as realised when it classifies the held-out 20 % with accuracy >= 1 - 0.5/N. Labellings
that fail get a second search through the surrogate (more noise, larger margin goal) and are
measured again. With ``--train-on board`` the labellings still failing after that are fine-tuned
in the loop on the board (host.experiments.capacity_loop) and checked again with the same rule on
fresh measurements: the device_loop row. Writes results.json, capacity_table.txt, capacity.png and
config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES, place_volts
from host.experiments.board_session import BoardSession
from host.experiments.capacity_config import add_search_arguments
from host.experiments.capacity_loop import CapacityLoopConfig, complement_representatives, fine_tune_labellings
from host.experiments.data_electrodes import (PAPER_DATA_ELECTRODES, Screening, choose_electrodes,
                                              parse_data_electrodes, place_paper_points, screen_pairs)
from host.experiments.errors import ExperimentError, fail
from host.experiments.options import add_common_arguments, add_train_on, run_info, set_threads, trains_on_board
from host.experiments.results import out_folder, progress_bar, timer, write_json
from host.experiments.surrogates import load_surrogate

DESCRIPTION = "capacity (empirical VC dimension) of a DNPU through the surrogate, of small NNs, and on a board"

SYSTEMS = ("surrogate", "nn2", "nn3", "device")
#: --data-electrodes auto: each pair's short search, on the first SCREEN_N points (attempts and
#: epochs at most the run's own)
SCREEN_N, SCREEN_ATTEMPTS, SCREEN_EPOCHS = 5, 2, 400
#: a pair works when its short search finds this share (a full search then finds the rest)
SCREEN_BAR = 0.9


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, "results/capacity")
    add_search_arguments(p)
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)} (device implies surrogate)")
    p.add_argument("--repeats", type=int, default=10, help="board measurements of every point per labelling")
    p.add_argument("--second-attempts", type=int, default=15,
                   help="attempts of the second surrogate search for labellings that failed on the board")
    p.add_argument("--data-electrodes", default=",".join(map(str, PAPER_DATA_ELECTRODES)),
                   help="the two electrodes the points go on, like 1,2 (the paper's), or auto: screen all pairs "
                        f"briefly by the labellings of the first {SCREEN_N} points found clear of the noise")
    lc = CapacityLoopConfig()
    add_train_on(p, "after the device check of each N, fine-tune the labellings that failed on the board "
                        "in the loop (forward on the board, backward through the surrogate), all at once, and check "
                        "them again on fresh measurements (implies the device system)")
    p.add_argument("--loop-epochs", type=int, default=lc.epochs, help="optimiser steps on the board per N")
    p.add_argument("--loop-lr", type=float, default=lc.lr, help="Adam learning rate in the loop (volts)")
    p.add_argument("--loop-starts", type=int, default=lc.starts,
                   help=f"copies of each failed labelling trained together: its off-chip controls and jittered ones "
                        f"(at most {lc.max_trials} trials per sweep in all)")


def _systems(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if s not in SYSTEMS]
    if bad or not out:
        raise ExperimentError(f"--systems: unknown {bad or text!r}; choose from {', '.join(SYSTEMS)}")
    return out


def _device_volts(points: np.ndarray, labels_sol: np.ndarray, repeats: int,
                  electrodes: tuple[int, ...] = PAPER_DATA_ELECTRODES) -> np.ndarray:
    """[L, R, N, 7]: the points on the data electrodes, each labelling's controls on the others."""
    L, n = labels_sol.shape[0], points.shape[0]
    data = np.broadcast_to(points[None, None], (L, repeats, n, points.shape[1]))
    return place_volts(data, labels_sol[:, None, None, :], electrodes)


def screen_capacity(sur: Any, cfg: Any, quiet: bool) -> Screening:
    """--data-electrodes auto: a short search of the labellings of the first SCREEN_N points on
    every pair; a pair scores the share found with a margin above the noise floor."""
    import torch

    from host.experiments.capacity import CAPACITY_POINTS_V, capacity_runs
    from host.networks.classifiers import TrialDNPUClassifier

    epochs = min(SCREEN_EPOCHS, cfg.epochs)
    short = dataclasses.replace(cfg, n_min=SCREEN_N, n_max=SCREEN_N, attempts=min(SCREEN_ATTEMPTS, cfg.attempts),
                                epochs=epochs, patience=max(cfg.check_every, min(cfg.patience, epochs)))

    def score(pair: tuple[int, int]) -> dict[str, Any]:
        placed = place_paper_points(CAPACITY_POINTS_V, sur.ranges_v, pair)
        def make(t: int, g: torch.Generator) -> TrialDNPUClassifier:
            return TrialDNPUClassifier(sur.model, sur.ranges_v, t, data_electrodes=pair, generator=g)
        row = capacity_runs(make, short, points=placed.volts)[0].row()
        return {"score": row["robust_capacity"], "tie": row["median_margin"], "found": row["found"], "median_margin_na": row["median_margin"],
                "scaled_points": placed.scaled}
    return screen_pairs(score, f"the share of labellings of {SCREEN_N} points found with a margin above the noise",
                        SCREEN_BAR, quiet=quiet)


def device_check(session: BoardSession, points: np.ndarray, labels: np.ndarray, solutions: np.ndarray,
                 repeats: int, rng: np.random.Generator, chunk: int = 64,
                 electrodes: tuple[int, ...] = PAPER_DATA_ELECTRODES) -> tuple[np.ndarray, np.ndarray]:
    """Measure each labelling's solution on the board; (passed [L], held-out accuracy [L]).

    The logistic decision node is re-fitted per labelling on a random 80 % of the R x N measured
    currents; it must reach accuracy >= 1 - 0.5/N on the other 20 %."""
    import torch

    from host.networks.logistic import fit_logistic, logistic_logits

    L, n = labels.shape
    if L == 0:
        return np.zeros(0, bool), np.zeros(0)
    cur = np.empty((L, repeats, n))
    for a in range(0, L, chunk):
        b = min(L, a + chunk)
        v = _device_volts(points, solutions[a:b], repeats, electrodes)
        cur[a:b] = session.measure(v.reshape(-1, N_ELECTRODES), what="capacity solutions").reshape(b - a, repeats, n)
    y = np.broadcast_to(labels[:, None, :], cur.shape).reshape(L, -1)
    c = cur.reshape(L, -1)
    perm = rng.permutation(c.shape[1])
    n_hold = max(1, int(round(0.2 * c.shape[1])))
    hold, fit = perm[:n_hold], perm[n_hold:]
    xf, yf = torch.as_tensor(c[:, fit]), torch.as_tensor(y[:, fit].astype(np.float64))
    w, b = fit_logistic(xf, yf)
    lg = logistic_logits(torch.as_tensor(c[:, hold]), xf, w, b).numpy()
    acc = ((lg > 0) == (y[:, hold] > 0.5)).mean(axis=1)
    return acc >= 1 - 0.5 / n - 1e-9, acc


def rescue_in_loop(session: BoardSession, sur: Any, points: np.ndarray, labels: np.ndarray, ok: np.ndarray,
                   start: np.ndarray, repeats: int, rng: np.random.Generator, loop_cfg: CapacityLoopConfig,
                   electrodes: tuple[int, ...] = PAPER_DATA_ELECTRODES, quiet: bool = True,
                   desc: str = "in the loop", rec: dict[str, Any] | None = None) -> dict[str, Any]:
    """--train-on board for one N: its device_loop row; `rec` (its in_loop record) is filled as it goes.

    The labellings [L, n] that failed the device check (~ok) are fine-tuned together in the loop
    from their off-chip controls `start` [L, C] (a complement pair once), then checked again with
    device_check on fresh measurements; a labelling is rescued when that check passes. As a control
    (how many would pass by re-measuring alone) the unchanged off-chip controls of the failed
    labellings are re-checked first. A board failure inside the loop raises ExperimentError after
    the record has its history (the caller saves it)."""
    n = labels.shape[1]
    failed = np.nonzero(~ok)[0]
    rec = {} if rec is None else rec
    loop_cfg = dataclasses.replace(loop_cfg, seed=loop_cfg.seed * 1000 + n)      # the jitter of this N
    rec.update({"failed_off_chip": int(failed.size), "config": loop_cfg.to_json()})
    checks = {"points": 0, "board_s": 0.0}          # the two checks' cost (the loop counts its own)

    def check(sol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        samples0, board_s0 = session.samples, session.board_s
        try:
            return device_check(session, points, labels[failed], sol, repeats, rng, electrodes=electrodes)
        finally:
            checks["points"] += session.samples - samples0
            checks["board_s"] += session.board_s - board_s0
            rec["check_account"] = dict(checks)

    start_ok, _ = check(start[failed])
    rec["start_recheck_passed"] = int(start_ok.sum())
    reps, where = complement_representatives(labels[failed])
    outcome = fine_tune_labellings(session, sur, points, labels[failed][reps], start[failed][reps], loop_cfg,
                                   electrodes, quiet, desc)
    rec.update(outcome.to_json())
    rec["trained_labellings"] = [int(i) + 1 for i in failed[reps]]
    if outcome.error is not None:
        raise ExperimentError(f"in-the-loop training of N={n}: {outcome.error}")
    tuned = outcome.solution[where]                      # every failed labelling with its trained controls
    passed, acc = check(tuned)
    rescued = failed[passed]
    now_ok = ok.copy()
    now_ok[rescued] = True
    rec["heldout_accuracy"] = acc
    total = 2 ** n
    row = {"n": n, "labellings": total, "found": int(now_ok.sum()) + 2, "capacity": (int(now_ok.sum()) + 2) / total,
           "off_chip_capacity": (int(ok.sum()) + 2) / total, "failed_off_chip": int(failed.size),
           "trained": int(len(reps)), "copies": outcome.copies, "rescued": int(rescued.size),
           "rescued_labellings": [int(i) + 1 for i in rescued],
           "start_recheck_passed": rec["start_recheck_passed"],
           "failed_labellings": [int(i) + 1 for i in np.nonzero(~now_ok)[0]],
           "loop_points": outcome.account["points"], "loop_board_s": outcome.account["board_s"],
           "loop_host_s": outcome.account["host_s"], "clipped_control_values": outcome.clipped_values}
    return row


def _plot(path: Path, table: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    style = {"surrogate": ("o-", "DNPU surrogate"), "surrogate_robust": ("o--", "surrogate, margin > noise"),
             "device": ("s-", "DNPU device (board)"),
             "device_loop": ("D-", "DNPU device, failed ones fine-tuned in the loop"),
             "nn2": ("^-", "NN, 2 hidden"), "nn3": ("v-", "NN, 3 hidden")}
    for key, rows in table.items():
        if not rows:
            continue
        mk, label = style[key]
        col = "robust_capacity" if key == "surrogate_robust" else "capacity"
        ax.plot([r["n"] for r in rows], [r[col] for r in rows], mk, label=label)
    ax.set_xlabel("N (points)")
    ax.set_ylabel("capacity C_N")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _text_table(table: dict[str, list[dict[str, Any]]], vc: dict[str, int]) -> str:
    ns = sorted({r["n"] for rows in table.values() for r in rows})
    lines = ["system            " + " ".join(f"N={n:<5d}" for n in ns) + "  VC estimate"]
    for key, rows in table.items():
        if not rows:
            continue
        col = "robust_capacity" if key == "surrogate_robust" else "capacity"
        by_n = {r["n"]: r[col] for r in rows}
        cells = " ".join(f"{by_n[n]:<7.3f}" if n in by_n else "   -   " for n in ns)
        lines.append(f"{key:<18}{cells}  {vc.get(key, 0)}")
    return "\n".join(lines) + "\n"


#: the systems of one DNPU compared across the devices of a board (the NNs do not depend on the
#: chip), with their short names in the comparison table
DEVICE_SYSTEMS = {"surrogate": "surrogate", "surrogate_robust": "robust", "device": "board", "device_loop": "loop"}


def summarise_device(results: dict[str, Any]) -> dict[str, Any]:
    """A device's row in a run over every device of a board (host.experiments.per_device): its VC
    estimates and C_N per system."""
    table = results.get("table", {})
    caps = {k: {str(r["n"]): r["robust_capacity" if k == "surrogate_robust" else "capacity"] for r in table[k]}
            for k in DEVICE_SYSTEMS if table.get(k)}
    return {"data_electrodes": results.get("data_electrodes"),
            "vc": {k: v for k, v in results.get("vc", {}).items() if k in DEVICE_SYSTEMS}, "capacity": caps}


def devices_table(rows: list[dict[str, Any]]) -> str:
    """Per device: the VC estimates of its systems, then its C_N on the board (or through the surrogate)."""
    systems = [k for k in DEVICE_SYSTEMS if any(k in r.get("vc", {}) for r in rows)]
    shown = "device" if "device" in systems else "surrogate"
    ns = sorted({int(n) for r in rows for n in r.get("capacity", {}).get(shown, {})})
    lines = [f"capacity per device (VC estimates: surrogate, its margin > noise, board, board after the loop; "
             f"C_N: {'board' if shown == 'device' else shown})",
             f"{'device':<7}{'electrodes':<11}" + "".join(f"{'VC ' + DEVICE_SYSTEMS[k]:>13}" for k in systems)
             + "".join(f"{'N=' + str(n):>7}" for n in ns) + "  chip"]
    for r in rows:
        pair = ",".join(f"e{e}" for e in r.get("data_electrodes") or [])
        vc = "".join(f"{r.get('vc', {}).get(k, '-'):>13}" for k in systems)
        c = r.get("capacity", {}).get(shown, {})
        cells = "".join(f"{c[str(n)]:>7.3f}" if str(n) in c else f"{'-':>7}" for n in ns)
        lines.append(f"{r['device']:<7}{pair:<11}{vc}{cells}  {r['chip']}")
    return "\n".join(lines) + "\n"


def plot_devices(path: Path, rows: list[dict[str, Any]]) -> None:
    """C_N against N for every device: on the board (solid) and through its surrogate (dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4 + 0.3 * len(rows)))
    for i, r in enumerate(rows):
        colour = f"C{i % 10}"
        for key, style in (("device", "s-"), ("surrogate", "o--")):
            c = r.get("capacity", {}).get(key)
            if c:
                ns = sorted(int(n) for n in c)
                ax.plot(ns, [c[str(n)] for n in ns], style, color=colour,
                        label=f"device {r['device']} ({key}): {r['chip']}")
    ax.set_xlabel("N (points)")
    ax.set_ylabel("capacity C_N")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _chip_systems_only(args: argparse.Namespace, device: int) -> None:
    """The NN baselines do not depend on the chip: device 0's run trains them, the others skip them."""
    if device > 0:
        kept = [s for s in _systems(args.systems) if s not in ("nn2", "nn3")]
        args.systems = ",".join(kept) if kept else "surrogate"


def run(args: argparse.Namespace) -> int:
    """The capacity of one DNPU; with one surrogate per device, of every device of the board."""
    from host.experiments.per_device import PerDeviceExperiment, run_on_devices

    return run_on_devices(args, PerDeviceExperiment("capacity", run_one_device, summarise_device, devices_table,
                                                    plot_devices, _chip_systems_only))


def run_one_device(args: argparse.Namespace) -> int:
    """The capacity of one DNPU: one surrogate, the board's device --board-device."""
    import torch

    from host.experiments.capacity import CAPACITY_POINTS_V, capacity_runs, config_for, search, vc_estimate
    from host.networks.classifiers import TrialDNPUClassifier, TrialNNClassifier

    clock = timer()
    try:
        systems = _systems(args.systems)
        loop_cfg = (CapacityLoopConfig(epochs=args.loop_epochs, lr=args.loop_lr, repeats=args.repeats,
                                       starts=args.loop_starts, seed=args.seed)
                    if trains_on_board(args) else None)
        if loop_cfg is not None and "device" not in systems:
            systems.append("device")             # the loop fine-tunes what failed the device check
        if args.no_board and "device" in systems:
            systems.remove("device")
        set_threads(args.threads, args.engine)
        if args.repeats < 5:
            raise ExperimentError("--repeats must be >= 5 (20 % of the measurements are held out)")
        sur = load_surrogate(args.surrogate, engine=args.engine, threads=args.threads)
        cfg = config_for(sur, n_min=args.n_min, n_max=args.n_max, attempts=args.attempts, epochs=args.epochs,
                         seed=args.seed, bf16=args.bf16)
        choice = parse_data_electrodes(args.data_electrodes)
        out = out_folder(args.out)
        chosen = choose_electrodes(choice, lambda: screen_capacity(sur, cfg, args.quiet))
        electrodes = chosen.electrodes
        placed = place_paper_points(CAPACITY_POINTS_V, sur.ranges_v, electrodes)
        if placed.scaled:
            print(placed.note())
    except (ExperimentError, ValueError) as e:
        return fail(str(e))
    points = placed.volts
    nn_cfg = dataclasses.replace(cfg, noise_std0=0.0, noise_rms=0.0, margin_goal=0.05, min_delta=1e-3, bf16=False)
    write_json(out / "config.json", {"run": run_info(args), "capacity": cfg.to_json(), "nn": nn_cfg.to_json(),
                                     "in_loop": None if loop_cfg is None else loop_cfg.to_json(),
                                     "surrogate": {"path": sur.path, "test_rmse_na": sur.test_rmse_na,
                                                   "noise_floor_na": sur.noise_floor_na},
                                     "points_v": points})
    table: dict[str, list[dict[str, Any]]] = {}
    results: dict[str, Any] = {
        "table": table, "vc": {}, "warnings": chosen.warnings(),
        "wall_s": {}, "data_electrodes": list(electrodes), "points_v": points,
        "points_mapping": {"mapping": placed.mapping, "note": placed.note()},
        "data_electrodes_choice": chosen.to_json()}
    notes = list(results["warnings"])

    def save() -> None:
        results["vc"] = {k: vc_estimate(v, "robust_capacity" if k == "surrogate_robust" else "capacity")
                         for k, v in table.items() if v}
        write_json(out / "results.json", results)
        (out / "capacity_table.txt").write_text(_text_table(table, results["vc"]))
        _plot(out / "capacity.png", table)

    def make_dnpu(t: int, g: torch.Generator) -> TrialDNPUClassifier:
        return TrialDNPUClassifier(sur.model, sur.ranges_v, t, data_electrodes=electrodes, generator=g)

    sur_runs = []
    n_count = cfg.n_max - cfg.n_min + 1
    if "surrogate" in systems or "device" in systems:
        t = timer()
        with progress_bar(n_count, "surrogate", args.quiet) as bar:
            def prog(msg: str) -> None:
                bar.set_postfix_str(msg)
            for n in range(cfg.n_min, cfg.n_max + 1):
                sub = dataclasses.replace(cfg, n_min=n, n_max=n)
                sur_runs += capacity_runs(make_dnpu, sub, prog, points)
                bar.update(1)
        rows = [r.row() for r in sur_runs]
        table["surrogate"] = rows
        table["surrogate_robust"] = rows
        results["wall_s"]["surrogate"] = t()
        save()
    for key, hidden in (("nn2", 2), ("nn3", 3)):
        if key not in systems:
            continue
        t = timer()
        with progress_bar(n_count, key, args.quiet) as bar:
            runs = capacity_runs(lambda tr, g, h=hidden: TrialNNClassifier(h, tr, generator=g), nn_cfg,
                                 lambda m: bar.set_postfix_str(m))
            bar.update(n_count)
        table[key] = [r.row() for r in runs]
        results["wall_s"][key] = t()
        save()
    if "device" in systems:
        t = timer()
        rng = np.random.default_rng(args.seed)
        second = dataclasses.replace(cfg, attempts=args.second_attempts, noise_std0=2 * sur.test_rmse_na,
                                     margin_goal=6 * sur.noise_floor_na, seed=cfg.seed + 7919)
        table["device"] = []
        if loop_cfg is not None:
            table["device_loop"] = []
            results["in_loop"] = {}
        try:
            with BoardSession(args.board, args.limit_policy, args.board_device) as board, \
                    progress_bar(n_count, "device", args.quiet) as bar:
                results["board"] = {"url": args.board, "identity": {k: board.identity.get(k) for k in
                                                                    ("model", "serial", "firmware")},
                                    "chip": board.check_chip(sur)}
                off_chip = []                   # (run, passed [L], off-chip controls [L, C]) per N
                for r in sur_runs:
                    pts = points[:r.n]
                    sol = r.solution
                    start = sol.copy()          # the off-chip controls each labelling ends with
                    ok = np.zeros(len(r.labels), bool)
                    acc = np.zeros(len(r.labels))
                    idx = np.nonzero(r.found)[0]
                    ok[idx], acc[idx] = device_check(board, pts, r.labels[idx], sol[idx], args.repeats, rng,
                                                     electrodes=electrodes)
                    first_pass = int(ok.sum())
                    redo = np.nonzero(~ok)[0]
                    if redo.size:
                        gen = torch.Generator().manual_seed(second.seed * 1000 + r.n)
                        torch.manual_seed(second.seed * 1000 + r.n)     # its training noise: not the run order's
                        r2 = search(make_dnpu, r.n, torch.as_tensor(r.labels[redo], dtype=torch.float32), second, gen,
                                    points=points)
                        got = np.nonzero(r2.found)[0]
                        ok2, acc2 = device_check(board, pts, r.labels[redo[got]], r2.solution[got], args.repeats, rng,
                                                 electrodes=electrodes)
                        ok[redo[got]] = ok2
                        acc[redo[got]] = np.maximum(acc[redo[got]], acc2)
                        start[redo[got]] = r2.solution[got]
                    total = 2 ** r.n
                    table["device"].append({
                        "n": r.n, "labellings": total, "found": int(ok.sum()) + 2, "capacity": (int(ok.sum()) + 2) / total,
                        "found_first_pass": first_pass + 2, "second_search": int(redo.size),
                        "threshold": 1 - 0.5 / r.n, "median_heldout_accuracy": float(np.median(acc)),
                        "failed_labellings": [int(i) + 1 for i in np.nonzero(~ok)[0]],
                    })
                    results["board"]["samples"] = board.samples
                    results["warnings"] = notes + board.warnings
                    save()
                    off_chip.append((r, ok, start))
                    bar.update(1)
                results["wall_s"]["device"] = t()
                # the loop after every N's off-chip check: the off-chip figures are those of a run without it
                for r, ok, start in off_chip if loop_cfg is not None else []:
                    t_loop = timer()
                    rec: dict[str, Any] = {}
                    results["in_loop"][str(r.n)] = rec
                    try:
                        row = rescue_in_loop(board, sur, points[:r.n], r.labels, ok, start, args.repeats, rng,
                                             loop_cfg, electrodes, args.quiet, f"loop N={r.n}", rec)
                    finally:
                        notes += [f"N={r.n} in the loop: {w}" for w in rec.get("warnings", [])]
                        results["warnings"] = notes + board.warnings
                        rec["wall_s"] = t_loop()
                    table["device_loop"].append(row)
                    results["board"]["samples"] = board.samples
                    save()
        except ExperimentError as e:
            results["error"] = str(e)
            results["wall_s"].setdefault("device", t())
            save()
            return fail(f"{e}; results so far are in {out / 'results.json'}")
        if loop_cfg is not None:
            results["wall_s"]["device_loop"] = round(t() - results["wall_s"]["device"], 2)
    results["wall_s"]["total"] = clock()
    save()
    print(_text_table(table, results["vc"]), end="")
    for row in table.get("device_loop", []):
        print(f"N={row['n']} in the loop: {row['rescued']} of {row['failed_off_chip']} failed labellings rescued "
              f"({row['trained']} trained x {row['copies']} starts; {row['start_recheck_passed']} passed a re-check "
              "unchanged); "
              f"board {row['loop_points']} points, {row['loop_board_s']:.1f} s; host {row['loop_host_s']:.1f} s")
    for w in results["warnings"]:
        print(f"warning: {w}")
    print(f"results in {out}")
    return 0
