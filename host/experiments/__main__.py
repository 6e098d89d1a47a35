"""python -m host.experiments {capacity,ring,gates,mnist} [options]

Each experiment lives in its own module of this package, which provides

    DESCRIPTION: str                                   one line for --help
    add_arguments(p: argparse.ArgumentParser) -> None  its options
    run(args: argparse.Namespace) -> int               the experiment; returns the exit status

Modules are imported only when their sub-command runs, so one experiment's optional needs
(a data package, a board) never break another.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command -> (module under host.experiments, one line for the top-level --help; the
#: modules are not imported for it)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "capacity": ("capacity_cli", "empirical VC dimension of a DNPU (surrogate, board) and of small NNs"),
    "ring": ("ring", "ring classification: best single DNPU vs best 2-2-1 network, validated on a board"),
    "gates": ("gates", "the six two-input Boolean gates on one DNPU, in simulation and on a board"),
    "mnist": ("mnist", "MNIST with 10 DNPUs behind a linear layer, NN baselines, network ONNX export"),
}


def _module(name: str):
    return importlib.import_module(f"host.experiments.{EXPERIMENTS[name][0]}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m host.experiments",
        description="Off-chip training of DNPU networks through a surrogate, and the paper's experiments. "
                    "Each experiment writes its results, plots and exact configuration into --out.")
    sub = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    # Only the chosen experiment's module is imported (its options are needed); the others are
    # listed with a short help so `--help` still shows every experiment.
    chosen = next((a for a in argv if a in EXPERIMENTS), None)
    for name in EXPERIMENTS:
        if name == chosen:
            mod = _module(name)
            sp = sub.add_parser(name, help=getattr(mod, "DESCRIPTION", name), description=getattr(mod, "DESCRIPTION", None),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
            mod.add_arguments(sp)
        else:
            sub.add_parser(name, help=EXPERIMENTS[name][1], add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(_module(args.experiment).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: results written so far are kept in the output folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
