"""`python -m firmware_sim --pty | --tcp PORT [options]`: a simulated bench board.

The first line on stdout is the port to open (a /dev/pts/N path or socket://127.0.0.1:PORT).
Options can be given as flags or as one URL-style query, `--options 'seed=3&noise=0'` (what the
host's sim:// URL carries); unknown options are refused (exit status 2) with the known ones.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from firmware_sim.board import BoardConfig, Firmware
from firmware_sim.devices import DeviceOptions, make_device
from firmware_sim.native import FirmwareChoice, exec_native, native_argv
from firmware_sim.options import OptionSpec, add_arguments, build, from_arguments, option_specs, parse_query
from firmware_sim.qemu import serve_qemu
from firmware_sim.server import PtyLink, TcpLink, serve, stop_event

#: every simulator option, from the config classes that declare them
OPTIONS: dict[str, OptionSpec] = option_specs((BoardConfig, DeviceOptions, FirmwareChoice))
BAD_OPTIONS_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m firmware_sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT (0: any free port)")
    p.add_argument("--options", metavar="QUERY", default="",
                   help="options as name=value&name=value (flags below win over it)")
    p.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="exit when stdin closes (used by the host's sim:// URL)")
    add_arguments(p.add_argument_group("simulator options (sim://?name=value&...)"), OPTIONS)
    return p


def _values(a: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = parse_query(a.options, OPTIONS)
    values.update(from_arguments(a, OPTIONS))
    return values


def configure(a: argparse.Namespace) -> tuple[BoardConfig, DeviceOptions]:
    """The board and device configs of parsed arguments (ValueError naming what is wrong)."""
    values = _values(a)
    return build(BoardConfig, OPTIONS, values), build(DeviceOptions, OPTIONS, values)


def firmware_choice(a: argparse.Namespace) -> FirmwareChoice:
    return build(FirmwareChoice, OPTIONS, _values(a))


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        cfg, dev_opts = configure(a)
        if firmware_choice(a).firmware == "native":
            if not a.pty:
                raise ValueError("firmware=native serves a pty only (--pty)")
            argv = native_argv(cfg, dev_opts, a.exit_on_stdin_eof)
            sys.stdout.flush()
            exec_native(argv)
        if firmware_choice(a).firmware == "qemu":          # ValueErrors come before QEMU starts
            return serve_qemu(cfg, dev_opts, a.pty, a.exit_on_stdin_eof)
        device = make_device(dev_opts, cfg.seed)
    except (ValueError, TypeError) as e:
        print(f"firmware_sim: {e}", file=sys.stderr)
        return BAD_OPTIONS_EXIT
    fw = Firmware(cfg, device)
    link = PtyLink() if a.pty else TcpLink(a.tcp)
    print(link.path, flush=True)
    stop = stop_event(a.exit_on_stdin_eof)
    try:
        serve(fw, link, stop)
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
