"""The gates trained on the board itself (``gates --train-on board``), four ways, measured alike.

For every gate (a labelling of its four input pairs) four sets of control voltages:

  off_chip   the surrogate-trained controls of ``gates`` (no board work in training; the host's
             training time of all the gates, shared evenly by them);
  gradient   those controls fine-tuned in the loop, forward on the board and backward through the
             surrogate's Jacobian (host.experiments.capacity_loop.fine_tune_labellings, which also
             chooses each gate's state on fresh sweeps). All gates are trials of ONE sweep,
             ``loop_starts`` copies each (the off-chip controls and jittered ones); a gate and its
             complement are distinct gates here and both are trained. The loop's loss is the
             capacity check's BCE through a logistic fitted to the standardised currents: scale-free,
             so on a gate already far above the noise it trades nanoamperes of margin for a
             tighter spread (on the shipped chip, from briefly trained off-chip controls, NAND fell
             from 79 to 21-40 nA and NOR from 46 to 21; with the default off-chip training the
             loop's result measured worse than its start on AND, OR, NAND and NOR, and the same
             within the noise on XOR and XNOR). Hence one more
             sweep measures each gate's loop result and its off-chip start ``compare_repeats``
             times and keeps the one of larger worst-case margin (``kept_off_chip``; as the ring's
             loop keeps an off-chip network it did not improve). Every gate has the same number of
             trials in each sweep, so the loop's board points and seconds (that sweep's included)
             are split evenly over the gates;
  ga, spsa   found on the board from scratch (host.experiments.gates_on_board), one gate at a time;
             no surrogate, only the electrode ranges (inside the board's limits: the box of the
             controls) and the amplifier's output range (the fitness ignores rail readings) come
             from the surrogate file.

Every method's final controls are checked the same way on fresh measurements: ``verify_gate``
(``verify_repeats`` readings of every pair: hard worst-case margin, noise RMS, their ratio) and
the held-out accuracy of ``gates.board_gate`` (threshold re-fitted on 80 % of ``--repeats``
readings per pair). GA and SPSA verify inside optimise_gate_on_board, in that one call of the
board; the off-chip and gradient controls are verified here with the same function.

The training curves (gates_board_time.png) plot ONE quantity for all methods against the board
seconds spent training: the worst-case margin (GateFitness with no softness: the hard margin,
rail readings clamped) of ``search_repeats`` readings per pair, of the best candidate of each
sweep (GA: each generation's; SPSA: the best of each step's iterate and perturbed pair; gradient:
each epoch's best copy), beside each method's checked margin (``verify_repeats`` readings) and 5x
the noise. Not the soft fitness GA and SPSA climb (tau = 10 nA): it lies up to tau ln(pairs)
below the hard margin, 28 nA for XOR's 16 pairs of 2 readings, which would put a gate well clear
of 5x the noise below that line; the records keep it (``fitness``, ``best_so_far``). A margin
over more readings is lower for that reason alone, so where a sweep has more readings per pair
(the gradient loop's) the curve shows the mean over disjoint groups of ``search_repeats`` of them
(``grouped_fitness``).

A board that fails (or Ctrl-C) stops the run where it is: the record keeps every method measured
so far, and the interrupted method's best controls so far (GA/SPSA: the best candidate measured;
gradient: each gate's state of lowest training loss, on a board failure) with its error; the
caller saves it and the board session has taken the board to 0 V.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.electrodes import N_ELECTRODES, control_electrodes, place_volts
from host.experiments.board_session import BoardSession
from host.experiments.capacity_loop import CapacityLoopConfig, fine_tune_labellings
from host.experiments.errors import ExperimentError
from host.experiments.gates import GATES, board_gate
from host.experiments.gates_on_board import (DEFAULT_GA, DEFAULT_SPSA, GateFitness, GateSearchInterrupted,
                                             optimise_gate_on_board, verify_gate)
from host.experiments.surrogates import SurrogateInfo
from host.networks.model_free import GAConfig, SPSAConfig

OPTIMISERS = ("gradient", "ga", "spsa")
METHODS = ("off_chip",) + OPTIMISERS
LABELS = {"off_chip": "off-chip", "gradient": "gradient in the loop", "ga": "GA on the board",
          "spsa": "SPSA on the board"}


@dataclass(frozen=True)
class GatesLoopConfig:
    """What ``--train-on board`` runs, and with which budgets."""

    optimisers: tuple[str, ...] = OPTIMISERS
    loop_epochs: int = 40                      # gradient: optimiser steps on the board
    loop_starts: int = 8                       # gradient: copies per gate (off-chip controls + jittered ones)
    loop_jitter_v: float = CapacityLoopConfig.jitter_v   # gradient: std of the copies' jitter (0: all start alike)
    loop_repeats: int = 4                      # gradient: readings of every pair per sweep
    loop_lr: float = 0.02                      # gradient: Adam (volts); capacity's 0.005 moved too little here
    ga_generations: int = DEFAULT_GA.generations
    spsa_iterations: int = DEFAULT_SPSA.iterations
    compare_repeats: int = 10                  # gradient: readings of every pair of its result and its start
    search_repeats: int = 2                    # GA/SPSA: readings of every pair per candidate (and the curves')
    verify_repeats: int = 20                   # every method's final controls: readings of every pair
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.optimisers or len(set(self.optimisers)) != len(self.optimisers) \
                or any(o not in OPTIMISERS for o in self.optimisers):
            raise ValueError(f"optimisers: choose from {', '.join(OPTIMISERS)}, got {list(self.optimisers)}")
        if self.search_repeats < 1 or self.verify_repeats < 2:
            raise ValueError("search_repeats >= 1 and verify_repeats >= 2 are needed")
        if min(self.loop_repeats, self.compare_repeats) < self.search_repeats:
            raise ValueError(f"the loop's repeats ({self.loop_repeats}) and compare_repeats ({self.compare_repeats}) "
                             f"must be >= search_repeats ({self.search_repeats}): their fitness groups them")
        self.loop(), self.ga(), self.spsa()       # their own checks (ValueError naming the field)

    def loop(self) -> CapacityLoopConfig:
        return CapacityLoopConfig(epochs=self.loop_epochs, lr=self.loop_lr, repeats=self.loop_repeats,
                                  starts=self.loop_starts, jitter_v=self.loop_jitter_v, seed=self.seed)

    def ga(self) -> GAConfig:
        return dataclasses.replace(DEFAULT_GA, generations=self.ga_generations, seed=self.seed)

    def spsa(self) -> SPSAConfig:
        return dataclasses.replace(DEFAULT_SPSA, iterations=self.spsa_iterations, seed=self.seed)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "loop": self.loop().to_json(), "ga": dataclasses.asdict(self.ga()),
                "spsa": dataclasses.asdict(self.spsa())}


def parse_optimisers(text: str) -> tuple[str, ...]:
    """--optimisers: a comma list of gradient, ga, spsa (ExperimentError otherwise)."""
    out = tuple(dict.fromkeys(o.strip().lower() for o in text.split(",") if o.strip()))
    if not out or any(o not in OPTIMISERS for o in out):
        raise ExperimentError(f"--optimisers: choose from {', '.join(OPTIMISERS)}, got {text!r}")
    return out


@dataclass(frozen=True)
class GateTask:
    """What every method of every gate shares: the input pairs, the electrodes, the controls' box,
    the fitness, and how the final controls are checked."""

    points_v: np.ndarray                   # [4, 2] volts on the data electrodes
    electrodes: tuple[int, ...]
    control_lo: np.ndarray                 # [5] the electrodes' ranges inside the board's limits
    control_hi: np.ndarray
    fitness: GateFitness                   # GA's and SPSA's objective
    heldout_repeats: int                   # board_gate's readings per pair (--repeats)
    rng: np.random.Generator               # board_gate's 80/20 split

    @property
    def margin(self) -> GateFitness:
        """The hard worst-case margin, rail readings clamped like the fitness's: curves and comparisons."""
        return dataclasses.replace(self.fitness, softness_na=0.0)


def make_task(session: BoardSession, sur: SurrogateInfo, points_v: np.ndarray, electrodes: tuple[int, ...],
              heldout_repeats: int, rng: np.random.Generator) -> GateTask:
    """The shared task on this board: controls boxed by the surrogate's ranges and the board's
    limits; rail readings (the surrogate file's output range) do not count in the fitness."""
    ce = list(control_electrodes(electrodes))
    lim = session.limits_v[ce]
    lo, hi = np.maximum(sur.ranges_v[ce, 0], lim[:, 0]), np.minimum(sur.ranges_v[ce, 1], lim[:, 1])
    if np.any(lo >= hi):
        raise ExperimentError(f"the board's limits and the surrogate's ranges do not overlap on control electrodes "
                              f"{[e for e, a, b in zip(ce, lo, hi) if a >= b]}")
    rng_out = sur.metadata.get("output_range_na")
    fitness = GateFitness(output_range_na=None if rng_out is None else (float(rng_out[0]), float(rng_out[1])))
    return GateTask(np.asarray(points_v, dtype=np.float64), tuple(electrodes), lo, hi, fitness, heldout_repeats, rng)


def grouped_fitness(fitness: GateFitness, currents: np.ndarray, truth: Sequence[int], group: int) -> np.ndarray:
    """`fitness` of currents [P, R, n] in groups of `group` readings per pair: the mean over the
    R // group disjoint groups (what GA/SPSA see of a candidate with `group` repeats), [P]."""
    c = np.asarray(currents, dtype=np.float64)
    p, r, n = c.shape
    g = max(1, r // group)
    f = fitness(c[:, :g * group].reshape(p * g, group, n), truth)
    return f.reshape(p, g).mean(axis=1)


@dataclass
class _CallLog:
    """session.measure, with the board points and seconds of every call and the last call's
    readings (a verification is one call: verify_gate)."""

    session: BoardSession
    what: str
    calls: list[tuple[int, float]] = field(default_factory=list)
    last: np.ndarray | None = None

    def __call__(self, volts: np.ndarray) -> np.ndarray:
        n0, s0 = self.session.samples, self.session.board_s
        try:
            out = self.session.measure(volts, what=self.what)
        finally:
            if self.session.samples > n0 or self.session.board_s > s0:
                self.calls.append((self.session.samples - n0, self.session.board_s - s0))
        self.last = np.asarray(out, dtype=np.float64)
        return out

    def account(self, calls: Sequence[tuple[int, float]] | None = None) -> dict[str, Any]:
        c = self.calls if calls is None else calls
        return {"board_points": int(sum(p for p, _ in c)), "board_s": float(sum(s for _, s in c))}


def _method_record(controls: Any = None, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """A method's record before its checks: controls, training cost, curve, no verification yet."""
    return {"control_voltages": None if controls is None else np.asarray(controls, dtype=np.float64).tolist(),
            "training": {} if training is None else training, "curve": [], "verification": None, "error": None}


def _check(session: BoardSession, task: GateTask, truth: Sequence[int], cfg: GatesLoopConfig, rec: dict[str, Any],
           verification: dict[str, Any] | None = None, log: _CallLog | None = None) -> None:
    """Fill `rec` with the final controls' checks: verify_gate (measured here unless the search
    did it, in `log`'s last call) and board_gate's held-out accuracy, both on fresh readings."""
    controls = np.asarray(rec["control_voltages"], dtype=np.float64)
    if verification is None:
        log = _CallLog(session, "gate verification")
        verification = verify_gate(log, task.points_v, truth, task.electrodes, controls, cfg.verify_repeats,
                                   task.fitness)
    if log is None or log.last is None:
        raise RuntimeError("a verification needs the board call that measured it")
    cur = log.last.reshape(verification["repeats"], len(task.points_v))
    rec["verification"] = verification
    rec["verification_account"] = log.account(log.calls[-1:])
    rec["verification_margin_grouped_na"] = float(grouped_fitness(task.margin, cur[None], truth,
                                                                  cfg.search_repeats)[0])
    n0, s0 = session.samples, session.board_s
    held = board_gate(session, task.points_v, tuple(truth), controls, task.heldout_repeats, task.rng,
                      task.electrodes)
    rec["heldout"] = {"accuracy": held["board_heldout_accuracy"], "ok": held["board_ok"],
                      "worst_margin_na": held["board_worst_margin_na"], "repeats": task.heldout_repeats,
                      "board_points": session.samples - n0, "board_s": session.board_s - s0}


def run_off_chip(session: BoardSession, task: GateTask, truth: Sequence[int], controls: Any, host_s: float,
                 cfg: GatesLoopConfig, rec: dict[str, Any]) -> None:
    """The off-chip controls, checked: no board work in training, `host_s` of the host's."""
    rec.update(_method_record(controls, {"board_points": 0, "board_s": 0.0, "host_s": host_s}))
    _check(session, task, truth, cfg, rec)


def run_search(session: BoardSession, task: GateTask, truth: Sequence[int], method: str, cfg: GatesLoopConfig,
               rec: dict[str, Any], save: Callable[[], None]) -> None:
    """GA or SPSA from scratch on the board for one gate; `rec` filled as it goes (its curve after
    every generation/step). A board failure or Ctrl-C keeps the best controls so far and re-raises
    (ExperimentError / KeyboardInterrupt)."""
    log = _CallLog(session, f"{method} candidates")
    rec.update(_method_record())
    n = len(task.points_v)

    def step(h: dict[str, Any]) -> None:            # right after a generation's/step's sweep (log.last)
        assert log.last is not None
        m = task.margin(log.last.reshape(-1, cfg.search_repeats, n), truth)
        rec["curve"].append({**log.account(), "margin_na": float(m.max()), "fitness": h["step_best"],
                             "best_so_far": h["best_fitness"],
                             **({"iterate_fitness": h["iterate_fitness"]} if "iterate_fitness" in h else {})})

    t0 = time.perf_counter()
    try:
        report = optimise_gate_on_board(log, task.points_v, truth, task.electrodes, task.control_lo, task.control_hi,
                                        method=method, cfg=cfg.ga() if method == "ga" else cfg.spsa(),
                                        repeats=cfg.search_repeats, verify_repeats=cfg.verify_repeats,
                                        fitness=task.fitness, on_step=step)
    except GateSearchInterrupted as e:
        rep = e.report
        rec.update(control_voltages=rep.get("control_voltages"), error=rep.get("error"),
                   search={k: v for k, v in rep.items() if k not in ("history",)},
                   training={**log.account(), "host_s": rep["accounting"]["host_s"]})
        save()
        cause = e.__cause__
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise ExperimentError(f"{method} for {rec['gate']}: {rep.get('error')} (the best controls so far are in "
                              "results.json)") from None
    wall = time.perf_counter() - t0
    training = log.account(log.calls[:-1])
    ver_pts = cfg.verify_repeats * n
    if not log.calls or log.calls[-1][0] != ver_pts:
        raise RuntimeError(f"expected the search's last board call to be its verification ({ver_pts} points)")
    training["host_s"] = max(0.0, wall - log.account()["board_s"])
    rec.update(control_voltages=report["control_voltages"], training=training,
               search={k: v for k, v in report.items() if k not in ("history", "verification")})
    _check(session, task, truth, cfg, rec, report["verification"], log)
    save()


def run_gradient(session: BoardSession, sur: SurrogateInfo, task: GateTask, gates: list[str],
                 starts: dict[str, Any], cfg: GatesLoopConfig, recs: dict[str, dict[str, Any]],
                 shared: dict[str, Any], save: Callable[[], None], quiet: bool = True) -> None:
    """All gates fine-tuned in the loop in one run from their off-chip controls `starts`; each
    gate's record `recs[g]` gets its share of the loop's cost, its curve (margin of its best copy
    per epoch) and its chosen state (or its start: keep_better), checked; `shared` gets the
    loop's own report. A board failure keeps each gate's lowest-loss state so far and raises
    ExperimentError; Ctrl-C keeps the curves and re-raises."""
    lab = np.array([GATES[g] for g in gates], dtype=np.int64)
    sol = np.array([starts[g] for g in gates], dtype=np.float64)
    t, n = lab.shape
    lcfg = cfg.loop()
    k = lcfg.copies(t)
    for g in gates:
        recs[g].update(_method_record())
    n0, s0 = session.samples, session.board_s

    def on_epoch(ep: int, currents: np.ndarray) -> None:
        cur = currents.reshape(k, t, lcfg.repeats, n)
        pts, secs = (session.samples - n0) / t, (session.board_s - s0) / t
        for i, g in enumerate(gates):
            m = grouped_fitness(task.margin, cur[:, i], GATES[g], cfg.search_repeats)
            f = grouped_fitness(task.fitness, cur[:, i], GATES[g], cfg.search_repeats)
            recs[g]["curve"].append({"epoch": ep, "board_points": pts, "board_s": secs, "margin_na": float(m.max()),
                                     "best_copy": int(m.argmax()), "fitness": float(f.max())})

    try:
        outcome = fine_tune_labellings(session, sur, task.points_v, lab, sol.astype(np.float32), lcfg,
                                       task.electrodes, quiet, "gates in the loop", on_epoch=on_epoch)
    except KeyboardInterrupt:
        shared.update(error="interrupted (Ctrl-C): the curves so far are kept, the loop's states are not",
                      account={"points": session.samples - n0, "board_s": session.board_s - s0})
        for g in gates:
            recs[g]["error"] = shared["error"]
        save()
        raise
    rep = outcome.to_json()
    shared.update({k_: v for k_, v in rep.items() if k_ != "history"}, history=rep["history"], gates=list(gates))
    acc = outcome.account
    for i, g in enumerate(gates):
        recs[g].update(control_voltages=outcome.solution[i].astype(np.float64).tolist(),
                       training={"board_points": acc["points"] / t, "board_s": acc["board_s"] / t,
                                 "host_s": acc["host_s"] / t},
                       chosen_epoch=int(outcome.chosen_epoch[i]), chosen_copy=int(outcome.chosen_copy[i]),
                       error=outcome.error)
    save()
    if outcome.error is not None:
        raise ExperimentError(f"in-the-loop training of the gates: {outcome.error} (each gate's best state so far "
                              "is in results.json)")
    t0 = time.perf_counter()
    n1, s1 = session.samples, session.board_s
    keep = keep_better(session, task, lab, outcome.solution.astype(np.float64), sol, cfg.compare_repeats)
    cost = {"board_points": (session.samples - n1) / t, "board_s": (session.board_s - s1) / t,
            "host_s": max(0.0, time.perf_counter() - t0 - (session.board_s - s1)) / t}
    shared["compare"] = {"repeats": cfg.compare_repeats, "board_points": session.samples - n1,
                         "board_s": session.board_s - s1}
    for i, g in enumerate(gates):
        r = recs[g]
        r["training"] = {k_: r["training"][k_] + cost[k_] for k_ in cost}
        r.update(kept_off_chip=bool(keep["kept_start"][i]), compare_margin_na={
            "loop": float(keep["margin_na"][i, 0]), "off_chip": float(keep["margin_na"][i, 1])})
        if keep["kept_start"][i]:
            r["control_voltages"] = sol[i].tolist()
    save()
    for g in gates:
        _check(session, task, GATES[g], cfg, recs[g])
        save()


def keep_better(session: BoardSession, task: GateTask, labels: np.ndarray, result: np.ndarray, start: np.ndarray,
                repeats: int) -> dict[str, np.ndarray]:
    """Each gate's loop result [T, C] and its start [T, C] measured `repeats` times at every pair in
    one sweep: their worst-case margins [T, 2] over those readings and which gates keep the start
    [T] (the result wins ties)."""
    t, n = labels.shape
    ctrl = np.stack([result, start], axis=1)                                       # [T, 2, C]
    v = place_volts(task.points_v[None, None, None], ctrl[:, :, None, None, :], task.electrodes)   # [T, 2, 1, n, 7]
    v = np.broadcast_to(v, (t, 2, repeats, n, N_ELECTRODES))
    cur = session.measure(v.reshape(-1, N_ELECTRODES), what="gradient result against its start")
    cur = cur.reshape(t, 2, repeats, n)
    m = np.stack([task.margin(cur[i], labels[i]) for i in range(t)])
    return {"margin_na": m, "kept_start": m[:, 1] > m[:, 0]}


def train_on_board(session: BoardSession, sur: SurrogateInfo, points_v: np.ndarray, gates: list[str],
                   off_chip: dict[str, dict[str, Any]], electrodes: tuple[int, ...], cfg: GatesLoopConfig,
                   heldout_repeats: int, off_chip_host_s: float, rng: np.random.Generator, record: dict[str, Any],
                   save: Callable[[], None], quiet: bool = True) -> None:
    """Every method of every gate (module doc) into `record` (results.json's ``in_loop``), saved as
    it goes: the off-chip controls checked, the gradient loop for all gates, then GA and SPSA per
    gate. Raises ExperimentError when the board fails (KeyboardInterrupt on Ctrl-C) after saving."""
    task = make_task(session, sur, points_v, electrodes, heldout_repeats, rng)
    record.update(config=cfg.to_json(), fitness=dataclasses.asdict(task.fitness),
                  control_box_v={"lo": task.control_lo, "hi": task.control_hi},
                  gates={g: {} for g in gates}, error=None)
    recs = record["gates"]
    for g in gates:
        recs[g]["off_chip"] = {"gate": g}
        run_off_chip(session, task, GATES[g], off_chip[g]["control_voltages"], off_chip_host_s / len(gates), cfg,
                     recs[g]["off_chip"])
        save()
    if "gradient" in cfg.optimisers:
        record["gradient"] = {}
        per = {g: recs[g].setdefault("gradient", {"gate": g}) for g in gates}
        run_gradient(session, sur, task, gates, {g: off_chip[g]["control_voltages"] for g in gates}, cfg, per,
                     record["gradient"], save, quiet)
    for g in gates:
        for method in ("ga", "spsa"):
            if method in cfg.optimisers:
                recs[g][method] = {"gate": g}
                run_search(session, task, GATES[g], method, cfg, recs[g][method], save)


# ---- the report -----------------------------------------------------------------------------------

def table_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per gate and method that has been checked (or stopped), plain numbers."""
    rows = []
    for g, methods in record.get("gates", {}).items():
        for m in METHODS:
            r = methods.get(m)
            if not r or "training" not in r:
                continue
            v, h, tr = r.get("verification") or {}, r.get("heldout") or {}, r.get("training") or {}
            rows.append({"gate": g, "method": m, "worst_margin_na": v.get("worst_margin_na"),
                         "margin_over_noise": v.get("margin_over_noise"), "noise_rms_na": v.get("noise_rms_na"),
                         "heldout_accuracy": h.get("accuracy"), "board_points": tr.get("board_points"),
                         "board_s": tr.get("board_s"), "host_s": tr.get("host_s"), "error": r.get("error"),
                         "kept_off_chip": r.get("kept_off_chip")})
    return rows


def _cell(v: Any, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}{fmt}}"


def format_table(record: dict[str, Any]) -> str:
    """The table printed at the end of a run (and pasted into the docs)."""
    vr = record.get("config", {}).get("verify_repeats", "?")
    lines = [f"trained on the board: every method checked on fresh readings ({vr} per input pair); board points "
             "and seconds of training (the gradient loop's split evenly over the gates)",
             f"{'gate':5s} {'method':9s} {'margin nA':>9s} {'/noise':>7s} {'held-out':>8s} {'board pts':>10s} "
             f"{'board s':>8s} {'host s':>7s}"]
    for r in table_rows(record):
        acc = None if r["heldout_accuracy"] is None else 100 * r["heldout_accuracy"]
        line = (f"{r['gate']:5s} {r['method']:9s} {_cell(r['worst_margin_na'], '.2f', 9)} "
                f"{_cell(r['margin_over_noise'], '.1f', 7)} {_cell(acc, '.0f', 6)} % "
                f"{_cell(r['board_points'], ',.0f', 10)} {_cell(r['board_s'], '.2f', 8)} "
                f"{_cell(r['host_s'], '.2f', 7)}")
        if r["kept_off_chip"]:
            line += "  (kept its off-chip start: the loop's result measured worse)"
        if r["error"]:
            line += "  (stopped: its error and best controls so far are in results.json)"
        lines.append(line)
    return "\n".join(lines) + "\n"


def gate_noise(record: dict[str, Any], gate: str, default: float) -> float:
    """A gate's noise RMS on this board: the median over its methods' checks (`default` if none)."""
    v = [r["verification"]["noise_rms_na"] for r in record["gates"][gate].values()
         if isinstance(r, dict) and r.get("verification")]
    return float(np.median(v)) if v else default


def plot_board_time(path: Path, record: dict[str, Any], noise_na: float) -> None:
    """One subplot per gate: the worst-case margin of each sweep's best candidate against the board
    seconds spent training, for every method (module doc), each method's checked margin as a star
    (off-chip: a dot at 0 s), and 5x the gate's noise (gate_noise; `noise_na` where nothing was
    checked) dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gates = list(record.get("gates", {}))
    if not gates:
        return
    cols = min(3, len(gates))
    rows = -(-len(gates) // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colour = {m: f"C{i}" for i, m in enumerate(METHODS)}
    group = record.get("config", {}).get("search_repeats", 2)
    vr = record.get("config", {}).get("verify_repeats", 20)
    for a, g in zip(axs.flat, gates):
        for m in METHODS:
            r = record["gates"][g].get(m)
            if not r:
                continue
            curve = r.get("curve") or []
            if curve:
                a.plot([c["board_s"] for c in curve], [c["margin_na"] for c in curve], "-", color=colour[m],
                       lw=1.2, alpha=0.8, label=LABELS[m])
            if r.get("verification"):
                x = (r.get("training") or {}).get("board_s", 0.0)
                a.plot([x], [r["verification"]["worst_margin_na"]], "o" if m == "off_chip" else "*",
                       ms=8 if m == "off_chip" else 11, color=colour[m], label=f"{LABELS[m]}: checked")
        noise = gate_noise(record, g, noise_na)
        a.axhline(5 * noise, ls="--", color="grey", lw=1, label=f"5 x noise ({5 * noise:.1f} nA)")
        a.set_title(g)
        a.set_xlabel("board seconds spent training")
        a.set_ylabel("worst-case margin (nA)")
        a.grid(alpha=0.3)
    for a in list(axs.flat)[len(gates):]:
        a.axis("off")
    handles, labels = axs.flat[0].get_legend_handles_labels()
    fig.legend(handles[:-1], labels[:-1], loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"gates trained on the board: worst-case margin of each sweep's best candidate ({group} readings "
                 f"per input pair; checked: {vr} fresh readings) against board time; dashed: 5 x the noise",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
