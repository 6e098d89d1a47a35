"""python -m host.experiments gates: the six two-input Boolean gates on one DNPU.

The inputs (0/1) are voltages on two data electrodes (``--data-electrodes``, the paper's e1, e2 by
default; ``auto`` screens all 21 pairs by the smallest margin over the gates in a short batched
run and takes the best), at ``--low``/``--high`` (the paper's volts where they fit the electrodes'
ranges, mapped into them where they do not: host.experiments.data_electrodes); the other five carry
control voltages learned through the surrogate (BCE through the decision node, L1 range penalty,
output noise of the surrogate's test RMSE), ``--trials`` random starts per gate trained together
as one batched program. The start with the largest noise-free class margin is kept. On the board
each gate's four input pairs are measured ``--repeats`` times; the decision threshold (logistic
on the current) is re-fitted on a random 80 % of those currents and scored on the other 20 %,
and the worst-case margin over all repeats is reported.

``--train-on board`` then trains every gate on the board itself (host.experiments.gates_loop) with
each of ``--optimisers``: ``gradient`` fine-tunes the off-chip controls in the loop (forward on the
board, backward through the surrogate's Jacobian; all gates in one sweep, ``--loop-starts`` copies
each, ``--loop-epochs`` steps), ``ga`` and ``spsa`` search from scratch with no surrogate
(``--ga-generations``, ``--spsa-iterations``). Every method's final controls, the off-chip ones
included, are checked the same way on fresh readings (worst margin, noise, their ratio; the
held-out accuracy above), with the board points and seconds each spent training: results.json's
``in_loop``, a table on stdout and gates_board_time.png (fitness against board seconds). A board
that fails mid-run ends the run with exit status 2 (as in every experiment) and everything measured so far (the
interrupted method's best controls included) in results.json, the board at 0 V; Ctrl-C keeps the
results likewise.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import N_ELECTRODES, place_volts
from host.experiments.board_session import BoardSession
from host.experiments.data_electrodes import (PAPER_DATA_ELECTRODES, PlacedPoints, Screening, choose_electrodes,
                                              parse_data_electrodes, place_paper_points, screen_pairs)
from host.experiments.errors import ExperimentError, fail
from host.experiments.options import add_common_arguments, add_train_on, run_info, set_threads, trains_on_board
from host.experiments.results import out_folder, timer, write_json
from host.experiments.surrogates import load_surrogate

DESCRIPTION = "AND, OR, NAND, NOR, XOR, XNOR on one DNPU, through the surrogate and on a board"

#: truth tables over the inputs (0,0), (0,1), (1,0), (1,1)
GATES: dict[str, tuple[int, int, int, int]] = {
    "AND": (0, 0, 0, 1), "OR": (0, 1, 1, 1), "NAND": (1, 1, 1, 0),
    "NOR": (1, 0, 0, 0), "XOR": (0, 1, 1, 0), "XNOR": (1, 0, 0, 1),
}


@dataclass(frozen=True)
class GatesConfig:
    low_v: float = -0.7
    high_v: float = 0.5
    trials: int = 20
    epochs: int = 1500
    lr: float = 0.03
    repeats: int = 20
    seed: int = 0
    # screening for --data-electrodes auto: a short run of every pair (at most the run's own)
    screen_trials: int = 4
    screen_epochs: int = 300

    def __post_init__(self) -> None:
        if not self.low_v < self.high_v:
            raise ValueError(f"--low must be below --high, got {self.low_v} >= {self.high_v}")
        if self.trials < 1 or self.epochs < 1 or self.repeats < 5:
            raise ValueError("trials and epochs >= 1, repeats >= 5 are needed")


def gate_points(cfg: GatesConfig) -> np.ndarray:
    lo, hi = cfg.low_v, cfg.high_v
    return np.array([(lo, lo), (lo, hi), (hi, lo), (hi, hi)], dtype=np.float64)


def placed_points(sur: Any, cfg: GatesConfig, electrodes: tuple[int, ...]) -> PlacedPoints:
    """The four input pairs as volts on `electrodes` of this chip (the paper's levels where they fit)."""
    return place_paper_points(gate_points(cfg), sur.ranges_v, electrodes)


def train_gates(sur: Any, cfg: GatesConfig, gates: list[str], electrodes: tuple[int, ...] = PAPER_DATA_ELECTRODES,
                trials: int | None = None, epochs: int | None = None) -> dict[str, dict[str, Any]]:
    """Best control voltages per gate (largest noise-free margin among the trials' starts), with
    the inputs on `electrodes`."""
    import torch

    from host.experiments.capacity import CapacityConfig, train_labellings
    from host.networks.classifiers import TrialDNPUClassifier

    trials = cfg.trials if trials is None else trials
    epochs = cfg.epochs if epochs is None else epochs
    pts = placed_points(sur, cfg, electrodes).volts
    for d, e in enumerate(electrodes):
        lo, hi = sur.ranges_v[e]
        if pts[:, d].min() < lo or pts[:, d].max() > hi:
            raise ExperimentError(f"gate input voltages {pts[:, d].min():g}, {pts[:, d].max():g} V outside "
                                  f"e{e}'s range [{lo}, {hi}] V")
    labels = torch.tensor([GATES[g] for g in gates for _ in range(trials)], dtype=torch.float32)
    ccfg = CapacityConfig(n_min=4, n_max=4, attempts=1, epochs=epochs, lr=cfg.lr, noise_std0=sur.test_rmse_na,
                          noise_rms=sur.noise_floor_na, margin_goal=1e9, patience=epochs, check_every=25,
                          seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    r = train_labellings(lambda t, g: TrialDNPUClassifier(sur.model, sur.ranges_v, t,
                                                          data_electrodes=electrodes, generator=g),
                         torch.as_tensor(pts, dtype=torch.float32), labels, ccfg, sur.test_rmse_na, gen)
    out: dict[str, dict[str, Any]] = {}
    check = TrialDNPUClassifier(sur.model, sur.ranges_v, 1, data_electrodes=electrodes)
    ctrl = [e for e in range(N_ELECTRODES) if e not in electrodes]
    for i, g in enumerate(gates):
        sl = slice(i * trials, (i + 1) * trials)
        j = int(torch.argmax(r.margin[sl]))
        sol = r.solution[sl][j]
        with torch.no_grad():
            check.dnpu.control.copy_(torch.as_tensor(sol, dtype=torch.float32).reshape(1, 1, -1))
            check.eval()
            cur = check(torch.as_tensor(pts, dtype=torch.float32))[0].numpy()
        out[g] = {"truth_table": list(GATES[g]), "control_voltages": sol.astype(float).tolist(),
                  "control_electrodes": ctrl, "surrogate_currents_na": cur.astype(float).tolist(),
                  "surrogate_margin_na": float(r.margin[sl][j]),
                  "surrogate_ok": bool(float(r.margin[sl][j]) > 0),
                  "trials_separable": int((r.margin[sl] > 0).sum())}
    return out


def screen_gates(sur: Any, cfg: GatesConfig, gates: list[str], quiet: bool = True) -> Screening:
    """--data-electrodes auto: every pair trained briefly on all the gates; a pair scores the
    smallest margin over the gates (a pair is only as good as its hardest gate), and works when
    that clears the noise floor."""
    def score(pair: tuple[int, int]) -> dict[str, Any]:
        r = train_gates(sur, cfg, gates, pair, trials=min(cfg.screen_trials, cfg.trials),
                        epochs=min(cfg.screen_epochs, cfg.epochs))
        m = {g: r[g]["surrogate_margin_na"] for g in gates}
        worst = min(m, key=m.get)
        return {"score": m[worst], "hardest_gate": worst,
                "scaled_inputs": placed_points(sur, cfg, pair).scaled}
    return screen_pairs(score, "the smallest surrogate margin over the gates (nA)", sur.noise_floor_na,
                        quiet=quiet)


def board_gate(session: BoardSession, pts: np.ndarray, truth: tuple[int, ...], controls: np.ndarray,
               repeats: int, rng: np.random.Generator,
               electrodes: tuple[int, ...] = PAPER_DATA_ELECTRODES) -> dict[str, Any]:
    """Measure one gate on the board; threshold re-fitted on 80 % of the currents, scored on 20 %."""
    import torch

    from host.experiments.gates_on_board import worst_margin
    from host.networks.logistic import fitted_correct

    v = place_volts(np.broadcast_to(pts[None], (repeats,) + pts.shape), np.asarray(controls)[None, None, :],
                    electrodes)
    cur = session.measure(v.reshape(-1, N_ELECTRODES), what="gate control voltages").reshape(repeats, 4)
    y = np.broadcast_to(np.asarray(truth, dtype=np.float64), cur.shape).reshape(-1)
    c = cur.reshape(-1)
    perm = rng.permutation(c.size)
    hold, fit = perm[: max(1, c.size // 5)], perm[max(1, c.size // 5):]
    acc = float(fitted_correct(torch.as_tensor(c[fit])[None], torch.as_tensor(y[fit])[None],
                               torch.as_tensor(c[hold])[None], torch.as_tensor(y[hold])[None]).mean())
    margin = worst_margin(cur, truth)
    return {"board_currents_mean_na": cur.mean(axis=0).tolist(), "board_currents_std_na": cur.std(axis=0).tolist(),
            "board_heldout_accuracy": acc, "board_worst_margin_na": float(margin), "board_ok": bool(acc == 1.0)}


def _board_noise(results: dict[str, Any], res: dict[str, dict[str, Any]], gates: list[str]) -> None:
    """The board's noise floor (rms of the repeats' spread at every input pair of every gate) and
    each gate's worst margin over it."""
    stds = np.concatenate([np.asarray(res[g]["board_currents_std_na"]) for g in gates])
    floor = float(np.sqrt(np.mean(stds ** 2)))
    results["board_noise_floor_na"] = floor
    for g in gates:
        res[g]["board_margin_over_noise"] = float(res[g]["board_worst_margin_na"] / floor) if floor > 0 else float("inf")


def _plot(path: Path, res: dict[str, dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, len(res), figsize=(2.4 * len(res), 3), squeeze=False)
    for a, (g, r) in zip(axs[0], res.items()):
        x = np.arange(4)
        a.bar(x - 0.2, r["surrogate_currents_na"], 0.4, label="surrogate")
        if "board_currents_mean_na" in r:
            a.bar(x + 0.2, r["board_currents_mean_na"], 0.4, yerr=r["board_currents_std_na"], label="board")
        a.set_xticks(x, ["00", "01", "10", "11"])
        a.set_title(g)
    axs[0][0].set_ylabel("output current (nA)")
    axs[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, "results/gates")
    d = GatesConfig()
    p.add_argument("--gates", default=",".join(GATES), help="comma-separated subset of " + ",".join(GATES))
    p.add_argument("--data-electrodes", default=",".join(map(str, PAPER_DATA_ELECTRODES)),
                   help="the two input electrodes, like 1,2 (the paper's), or auto: screen all pairs briefly "
                        "and take the one whose hardest gate has the largest margin")
    p.add_argument("--low", type=float, default=d.low_v,
                   help="input 0 in volts on the paper's chip (kept where it fits the data electrodes' ranges, "
                        "mapped into them where it does not)")
    p.add_argument("--high", type=float, default=d.high_v, help="input 1, likewise")
    p.add_argument("--trials", type=int, default=d.trials, help="random starts per gate")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--repeats", type=int, default=d.repeats, help="board measurements of each input pair")
    from host.experiments.gates_loop import OPTIMISERS, GatesLoopConfig   # it imports this module

    lc = GatesLoopConfig()
    add_train_on(p, "after the off-chip training and its validation, train every gate on the board with "
                        "each of --optimisers (gradient: the off-chip controls fine-tuned in the loop, forward on "
                        "the board and backward through the surrogate; ga, spsa: from scratch, no surrogate) and "
                        "check every method's controls the same way on fresh measurements")
    p.add_argument("--optimisers", default=",".join(lc.optimisers),
                   help=f"with --train-on board: comma-separated subset of {','.join(OPTIMISERS)}")
    p.add_argument("--loop-epochs", type=int, default=lc.loop_epochs, help="gradient: optimiser steps on the board")
    p.add_argument("--loop-lr", type=float, default=lc.loop_lr, help="gradient: Adam learning rate in the loop (volts)")
    p.add_argument("--loop-starts", type=int, default=lc.loop_starts,
                   help="gradient: copies of each gate trained together: its off-chip controls and jittered ones")
    p.add_argument("--ga-generations", type=int, default=lc.ga_generations,
                   help="ga: generations on the board (population 25, 2 readings per input pair and candidate)")
    p.add_argument("--spsa-iterations", type=int, default=lc.spsa_iterations,
                   help="spsa: steps on the board (after the best of 300 random starts)")


def _loop_config(args: argparse.Namespace) -> Any:
    """--train-on board's GatesLoopConfig from the options; None when training on the surrogate."""
    if not trains_on_board(args):
        return None
    from host.experiments.gates_loop import GatesLoopConfig, parse_optimisers

    return GatesLoopConfig(optimisers=parse_optimisers(args.optimisers), loop_epochs=args.loop_epochs,
                           loop_starts=args.loop_starts, loop_lr=args.loop_lr,
                           ga_generations=args.ga_generations,
                           spsa_iterations=args.spsa_iterations, seed=args.seed)


def summarise_device(results: dict[str, Any]) -> dict[str, Any]:
    """A device's row in a run over every device of a board (host.experiments.per_device)."""
    keys = ("surrogate_margin_na", "board_worst_margin_na", "board_margin_over_noise", "board_heldout_accuracy",
            "board_ok")
    gates = {g: {k: r[k] for k in keys if k in r} for g, r in results.get("gates", {}).items()}
    row: dict[str, Any] = {"data_electrodes": results.get("data_electrodes"), "gates": gates,
                           "noise_floor_na": results.get("board_noise_floor_na", results.get("noise_floor_na"))}
    if gates and all("board_ok" in r for r in gates.values()):
        row["board_gates_ok"] = sum(bool(r["board_ok"]) for r in gates.values())
        row["worst_margin_over_noise"] = min(r["board_margin_over_noise"] for r in gates.values())
    return row


def _margin_over_noise(row: dict[str, Any], gate: str) -> float:
    """The board's worst margin over its noise, or (no board) the surrogate's margin over its floor."""
    r = row["gates"].get(gate, {})
    if "board_margin_over_noise" in r:
        return float(r["board_margin_over_noise"])
    floor = row.get("noise_floor_na") or float("nan")
    return float(r.get("surrogate_margin_na", float("nan"))) / floor


def devices_table(rows: list[dict[str, Any]]) -> str:
    """Per device: its data electrodes and every gate's worst margin in units of the noise."""
    gates = list(dict.fromkeys(g for r in rows for g in r.get("gates", {})))
    on_board = all("board_gates_ok" in r for r in rows)
    what = "board worst margin / board noise" if on_board else "surrogate margin / surrogate noise floor"
    lines = [f"gates per device ({what}; ok: held-out accuracy 100 % on the board)",
             f"{'device':<7}{'electrodes':<11}" + "".join(f"{g:>10}" for g in gates) + "  chip"]
    for r in rows:
        pair = ",".join(f"e{e}" for e in r.get("data_electrodes") or [])
        cells = ""
        for g in gates:
            x = _margin_over_noise(r, g) if g in r.get("gates", {}) else float("nan")
            ok = r["gates"].get(g, {}).get("board_ok")
            cells += f"{x:>7.1f}x{'  ' if ok is None else (' +' if ok else ' !')}"
        lines.append(f"{r['device']:<7}{pair:<11}{cells}  {r['chip']}")
    return "\n".join(lines) + "\n"


def plot_devices(path: Path, rows: list[dict[str, Any]]) -> None:
    """Grouped bars: every gate's worst margin over the noise, one bar per device."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gates = list(dict.fromkeys(g for r in rows for g in r.get("gates", {})))
    if not gates:
        return
    fig, ax = plt.subplots(figsize=(2.5 + 1.1 * len(gates), 3.4 + 0.25 * len(rows)))
    width = 0.8 / len(rows)
    x = np.arange(len(gates))
    for i, r in enumerate(rows):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [_margin_over_noise(r, g) for g in gates], width,
               label=f"device {r['device']}: {r['chip']}")
    ax.axhline(10, color="k", lw=0.8, ls="--")       # the margin a gate should clear: 10x the noise
    ax.set_xticks(x, gates)
    if all(_margin_over_noise(r, g) > 0 for r in rows for g in gates):
        ax.set_yscale("log")
    on_board = all("board_gates_ok" in r for r in rows)
    ax.set_ylabel("worst margin / noise" + (" (board)" if on_board else " (surrogate)"))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """The gates on one DNPU; with one surrogate per device, on every device of the board."""
    from host.experiments.per_device import PerDeviceExperiment, run_on_devices

    return run_on_devices(args, PerDeviceExperiment("gates", run_one_device, summarise_device, devices_table,
                                                    plot_devices))


def run_one_device(args: argparse.Namespace) -> int:
    """The gates on one DNPU: one surrogate, the board's device --board-device."""
    clock = timer()
    try:
        set_threads(args.threads, args.engine)
        gates = [g.strip().upper() for g in args.gates.split(",") if g.strip()]
        if not gates or any(g not in GATES for g in gates):
            raise ExperimentError(f"--gates: choose from {', '.join(GATES)}, got {args.gates!r}")
        cfg = GatesConfig(low_v=args.low, high_v=args.high, trials=args.trials, epochs=args.epochs,
                          repeats=args.repeats, seed=args.seed)
        loop_cfg = _loop_config(args)
        sur = load_surrogate(args.surrogate, engine=args.engine, threads=args.threads)
        choice = parse_data_electrodes(args.data_electrodes)
        out = out_folder(args.out)
        write_json(out / "config.json", {"run": run_info(args), "gates": dataclasses.asdict(cfg),
                                         "in_loop": None if loop_cfg is None else loop_cfg.to_json(),
                                         "surrogate": {"path": sur.path, "test_rmse_na": sur.test_rmse_na}})
        chosen = choose_electrodes(choice, lambda: screen_gates(sur, cfg, gates, args.quiet))
        electrodes = chosen.electrodes
        placed = placed_points(sur, cfg, electrodes)
        train_clock = timer()
        res = train_gates(sur, cfg, gates, electrodes)
        off_chip_s = train_clock()
    except (ExperimentError, ValueError) as e:
        return fail(str(e))
    results: dict[str, Any] = {
        "gates": res, "data_electrodes": list(electrodes), "input_points_v": placed.volts,
        "input_levels": {"paper_v": [cfg.low_v, cfg.high_v], "mapping": placed.mapping, "note": placed.note()},
        "data_electrodes_choice": chosen.to_json(), "noise_floor_na": sur.noise_floor_na,
        "off_chip_train_s": off_chip_s}
    notes = chosen.warnings()
    results["warnings"] = list(notes)
    if placed.scaled:
        print(placed.note())
    write_json(out / "results.json", results)
    status = 0
    if not args.no_board:
        rng = np.random.default_rng(cfg.seed)
        try:
            with BoardSession(args.board, args.limit_policy, args.board_device) as session:
                results["chip"] = session.check_chip(sur)

                def save() -> None:
                    results["warnings"] = notes + session.warnings
                    results["board_samples"] = session.samples
                    write_json(out / "results.json", results)

                results["board_url"] = args.board
                for g in gates:
                    res[g].update(board_gate(session, placed.volts, GATES[g], np.asarray(res[g]["control_voltages"]),
                                             cfg.repeats, rng, electrodes))
                    save()
                _board_noise(results, res, gates)
                if loop_cfg is not None:
                    from host.experiments.gates_loop import train_on_board

                    results["in_loop"] = {}
                    train_on_board(session, sur, placed.volts, gates, res, electrodes, loop_cfg, cfg.repeats,
                                   off_chip_s, rng, results["in_loop"], save, args.quiet)
                    save()
        except ExperimentError as e:
            results["error"] = str(e)
            status = fail(f"{e}; results so far are in {out / 'results.json'}")
        except KeyboardInterrupt:
            results["error"] = "interrupted (Ctrl-C)"
            results["wall_s"] = clock()
            write_json(out / "results.json", results)
            raise
    results["wall_s"] = clock()
    write_json(out / "results.json", results)
    _plot(out / "gates.png", res)
    if results.get("in_loop"):
        from host.experiments.gates_loop import plot_board_time

        plot_board_time(out / "gates_board_time.png", results["in_loop"],
                        results.get("board_noise_floor_na", sur.noise_floor_na))
    for g in gates:
        r = res[g]
        line = f"{g:5s} surrogate margin {r['surrogate_margin_na']:7.2f} nA ({'ok' if r['surrogate_ok'] else 'FAIL'})"
        if "board_ok" in r:
            line += (f"   board held-out accuracy {100 * r['board_heldout_accuracy']:.0f} %, worst margin "
                     f"{r['board_worst_margin_na']:6.2f} nA = {r.get('board_margin_over_noise', float('nan')):.0f}x "
                     f"the noise ({'ok' if r['board_ok'] else 'FAIL'})")
        print(line)
    if results.get("in_loop"):
        from host.experiments.gates_loop import format_table

        print(format_table(results["in_loop"]), end="")
    print(f"results in {out}")
    return status
