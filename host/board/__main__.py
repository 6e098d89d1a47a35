"""python -m host.board --port URL identify|set|measure|iv|survey

URL: /dev/ttyACM0 (a real board), socket://127.0.0.1:PORT, or sim://?seed=N[&noise=..]
(starts a simulated board for the duration of the command).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from core.electrodes import ELECTRODE_NAMES, N_ELECTRODES
from host.board import Board, BoardError


def _load_volts(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        v = np.load(path, allow_pickle=False)
    elif path.suffix == ".csv":
        v = np.loadtxt(path, delimiter=",", ndmin=2, comments="#")
    else:
        raise SystemExit(f"--volts {path}: expected a .npy or .csv file")
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != N_ELECTRODES:
        raise SystemExit(f"--volts {path}: need shape [n, {N_ELECTRODES}], got {v.shape}")
    return v


def _save(path: Path, volts: np.ndarray, na: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, np.column_stack([volts, na]), allow_pickle=False)
    elif path.suffix == ".csv":
        np.savetxt(path, np.column_stack([volts, na]), delimiter=",", fmt="%.9g",
                   header=",".join(ELECTRODE_NAMES) + ",i_out_nA", comments="")
    else:
        raise SystemExit(f"--out {path}: expected a .npy or .csv file")


def _volts_arg(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {N_ELECTRODES} comma-separated volts, got {text!r}")
    if len(vals) != N_ELECTRODES:
        raise argparse.ArgumentTypeError(f"expected {N_ELECTRODES} comma-separated volts, got {len(vals)}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m host.board", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, metavar="URL", help="board URL (see above)")
    p.add_argument("--timeout", type=float, default=0.3, help="per-attempt reply timeout, s")
    p.add_argument("--device", type=int, default=0,
                   help="which device of a board carrying several (0..K-1; identify shows them all); "
                        "the others hold their voltages")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("identify", help="print the board's identity (JSON)")

    s = sub.add_parser("set", help=f"set the {N_ELECTRODES} electrodes (ramped), print the outputs, hold, then "
                                   "ramp back to 0 V (a board never stays biased without its host)")
    s.add_argument("volts", type=_volts_arg, help="e0,...,e6 in volts")
    s.add_argument("--fast", action="store_true", help="ramp at the board's max slew")
    s.add_argument("--hold", type=float, default=0.0, help="seconds to hold before zeroing on exit")

    m = sub.add_parser("measure", help="measure the readout current for every row of a volts file")
    m.add_argument("--volts", type=Path, required=True, help=f".npy or .csv, shape [n, {N_ELECTRODES}]")
    m.add_argument("--out", type=Path, required=True, help=f".npy or .csv: the {N_ELECTRODES} volts and nA per row")
    m.add_argument("--oversample", type=int, default=1)
    m.add_argument("--period-us", type=float, default=None, help="sample period (board default if unset)")

    iv = sub.add_parser("iv", help="sweep one electrode, the others fixed; print or save the curve")
    iv.add_argument("--electrode", type=int, default=0, choices=range(N_ELECTRODES), help=f"0..{N_ELECTRODES - 1}")
    iv.add_argument("--start", type=float, default=None, help="V (default: the electrode's lower limit)")
    iv.add_argument("--stop", type=float, default=None, help="V (default: the upper limit)")
    iv.add_argument("--points", type=int, default=101)
    iv.add_argument("--bias", type=_volts_arg, default=None, help="the other electrodes, e0..e6 (default 0 V)")
    iv.add_argument("--oversample", type=int, default=16)
    iv.add_argument("--json", action="store_true", help="print JSON instead of a table")
    iv.add_argument("--plot", type=Path, default=None, help="save a PNG plot here")
    sv = sub.add_parser("survey", help="a chip at a glance: sensitivity per electrode, output range and the "
                                       "noise floor against the signal, measured within the board's limits")
    sv.add_argument("--points", type=int, default=200, help="base points of the sensitivity estimate")
    sv.add_argument("--samples", type=int, default=5000, help="uniform samples for the output range")
    sv.add_argument("--repeats", type=int, default=40, help="repeats of each noise reference point")
    sv.add_argument("--oversample", type=int, default=8,
                    help="readings averaged per point of the sensitivity and range measurements (the noise floor "
                         "is of single readings)")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--json", action="store_true", help="print the survey as one JSON object")
    sv.add_argument("--plot", type=Path, default=None, help="save a PNG plot here")
    return p


def _survey(board: Any, a: argparse.Namespace) -> int:
    from host.board import survey as sv

    try:
        cfg = sv.SurveyConfig(points=a.points, samples=a.samples, repeats=a.repeats, seed=a.seed)
    except ValueError as e:
        raise SystemExit(f"survey: {e}")
    rep = sv.survey(lambda v: board.measure(v, oversample=a.oversample), np.asarray(board.limits_v), cfg,
                    measure_raw=board.measure, averaged=a.oversample)
    rep["board"] = {k: board.identity.get(k) for k in ("model", "serial", "firmware")}
    if a.plot:
        sv.plot(rep, a.plot, f"{board.identity.get('serial')}: survey within the board's limits")
    if a.json:
        print(json.dumps(sv.json_ready(rep), indent=2))
    else:
        print(f"board {board.identity.get('serial')} ({board.identity.get('model')}), "
              f"{rep['measurements']} measurements")
        print(sv.text(rep))
    return 0


def _iv(board: Any, a: argparse.Namespace) -> int:
    lo, hi = board.limits_v[a.electrode]
    start = lo if a.start is None else a.start
    stop = hi if a.stop is None else a.stop
    if a.points < 2:
        raise SystemExit("--points must be >= 2")
    v = np.tile(np.asarray(a.bias if a.bias else [0.0] * N_ELECTRODES), (a.points, 1))
    v[:, a.electrode] = np.linspace(start, stop, a.points)
    na = board.measure(v, oversample=a.oversample)
    name = ELECTRODE_NAMES[a.electrode]
    if a.json:
        print(json.dumps({"electrode": name, "volts": v[:, a.electrode].tolist(), "nA": na.tolist(),
                          "bias": v[0].tolist(), "serial": board.identity["serial"]}))
    else:
        print(f"# {name}_V\ti_out_nA")
        for x, y in zip(v[:, a.electrode], na):
            print(f"{x:.6f}\t{y:.4f}")
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(v[:, a.electrode], na, ".-")
        ax.set_xlabel(f"{name} (V)")
        ax.set_ylabel("I_out (nA)")
        ax.set_title(f"{board.identity['serial']}: I-V of {name}")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
        plt.close(fig)
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        with Board.open(a.port, timeout_s=a.timeout) as whole:
            try:
                board = whole.device_view(a.device)
            except ValueError as e:
                print(f"error: --device: {e}", file=sys.stderr)
                return 2
            if a.cmd == "identify":
                print(json.dumps(whole.identity, indent=2, sort_keys=True))
            elif a.cmd == "set":
                board.set(a.volts, ramp=not a.fast)
                print(json.dumps({"volts": whole.outputs(device=a.device)["volts"].tolist()}))
                if a.hold > 0:
                    import time
                    time.sleep(a.hold)
            elif a.cmd == "measure":
                v = _load_volts(a.volts)
                period = None if a.period_us is None else a.period_us * 1e-6
                na = board.measure(v, oversample=a.oversample, sample_period_s=period)
                _save(a.out, v, na)
                print(json.dumps({"rows": len(v), "out": str(a.out)}))
            elif a.cmd == "iv":
                return _iv(board, a)
            elif a.cmd == "survey":
                return _survey(board, a)
    except BoardError as e:
        print(f"board error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; outputs ramped to 0 V", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
