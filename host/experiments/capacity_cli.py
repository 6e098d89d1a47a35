"""python -m host.experiments capacity: empirical VC dimension of the surrogate, NNs and the device.

Systems: the surrogate (one DNPU trained through it), neural networks with 2 and 3 logistic
hidden units trained the same way, and the device on a board: every labelling found through the
surrogate is measured on the board (each point `--repeats` times); the decision node (logistic
on the standardised current) is re-trained on 80 % of the measured currents and the labelling
counts as realised when it classifies the held-out 20 % with accuracy >= 1 - 0.5/N. Labellings
that fail get a second search through the surrogate (more noise, larger margin goal) and are
measured again. Writes results.json, capacity_table.txt, capacity.png and config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES, place_volts
from host.experiments.board_session import BoardSession
from host.experiments.data_electrodes import (PAPER_DATA_ELECTRODES, Screening, choose_electrodes,
                                              parse_data_electrodes, place_paper_points, screen_pairs)
from host.experiments.errors import ExperimentError, fail
from host.experiments.options import add_common_arguments, run_info, set_threads
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
    p.add_argument("--n-min", type=int, default=4)
    p.add_argument("--n-max", type=int, default=10)
    p.add_argument("--attempts", type=int, default=15, help="attempts per labelling (shrinking noise)")
    p.add_argument("--epochs", type=int, default=1500, help="full-batch epochs per attempt (at most)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)} (device implies surrogate)")
    p.add_argument("--repeats", type=int, default=10, help="board measurements of every point per labelling")
    p.add_argument("--second-attempts", type=int, default=15,
                   help="attempts of the second surrogate search for labellings that failed on the board")
    p.add_argument("--bf16", action="store_true", help="train in bfloat16 autocast (faster, checks stay float32)")
    p.add_argument("--data-electrodes", default=",".join(map(str, PAPER_DATA_ELECTRODES)),
                   help="the two electrodes the points go on, like 1,2 (the paper's), or auto: screen all pairs "
                        f"briefly by the labellings of the first {SCREEN_N} points found clear of the noise")


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


def _plot(path: Path, table: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    style = {"surrogate": ("o-", "DNPU surrogate"), "surrogate_robust": ("o--", "surrogate, margin > noise"),
             "device": ("s-", "DNPU device (board)"), "nn2": ("^-", "NN, 2 hidden"), "nn3": ("v-", "NN, 3 hidden")}
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


def run(args: argparse.Namespace) -> int:
    import torch

    from host.experiments.capacity import CAPACITY_POINTS_V, CapacityConfig, capacity_runs, search, vc_estimate
    from host.networks.classifiers import TrialDNPUClassifier, TrialNNClassifier

    clock = timer()
    try:
        systems = _systems(args.systems)
        if args.no_board and "device" in systems:
            systems.remove("device")
        set_threads(args.threads, args.engine)
        if args.repeats < 5:
            raise ExperimentError("--repeats must be >= 5 (20 % of the measurements are held out)")
        sur = load_surrogate(args.surrogate, engine=args.engine, threads=args.threads)
        cfg = CapacityConfig(n_min=args.n_min, n_max=args.n_max, attempts=args.attempts, epochs=args.epochs,
                             noise_std0=sur.test_rmse_na, noise_rms=sur.noise_floor_na,
                             margin_goal=2 * sur.noise_floor_na, seed=args.seed, bf16=args.bf16)
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
        try:
            with BoardSession(args.board, args.limit_policy) as board, \
                    progress_bar(n_count, "device", args.quiet) as bar:
                results["board"] = {"url": args.board, "identity": {k: board.identity.get(k) for k in
                                                                    ("model", "serial", "firmware")}}
                for r in sur_runs:
                    pts = points[:r.n]
                    sol = r.solution
                    ok = np.zeros(len(r.labels), bool)
                    acc = np.zeros(len(r.labels))
                    idx = np.nonzero(r.found)[0]
                    ok[idx], acc[idx] = device_check(board, pts, r.labels[idx], sol[idx], args.repeats, rng,
                                                     electrodes=electrodes)
                    first_pass = int(ok.sum())
                    redo = np.nonzero(~ok)[0]
                    if redo.size:
                        gen = torch.Generator().manual_seed(second.seed * 1000 + r.n)
                        r2 = search(make_dnpu, r.n, torch.as_tensor(r.labels[redo], dtype=torch.float32), second, gen,
                                    points=points)
                        got = np.nonzero(r2.found)[0]
                        ok2, acc2 = device_check(board, pts, r.labels[redo[got]], r2.solution[got], args.repeats, rng,
                                                 electrodes=electrodes)
                        ok[redo[got]] = ok2
                        acc[redo[got]] = np.maximum(acc[redo[got]], acc2)
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
                    bar.update(1)
        except ExperimentError as e:
            results["error"] = str(e)
            results["wall_s"]["device"] = t()
            save()
            return fail(f"{e}; results so far are in {out / 'results.json'}")
        results["wall_s"]["device"] = t()
    results["wall_s"]["total"] = clock()
    save()
    print(_text_table(table, results["vc"]), end="")
    for w in results["warnings"]:
        print(f"warning: {w}")
    print(f"results in {out}")
    return 0
