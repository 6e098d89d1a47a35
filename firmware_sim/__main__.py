"""`python -m firmware_sim --pty | --tcp PORT [options]`: a simulated bench board.

The first line on stdout is the port to open (a /dev/pts/N path or socket://127.0.0.1:PORT).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from firmware_sim.analog import N_ACTIVATION, AnalogDevice
from firmware_sim.board import DEFAULT_LIMITS_V, BoardConfig, Firmware
from firmware_sim.devices import LinearDevice
from firmware_sim.server import PtyLink, TcpLink, serve


def parse_limits(text: str) -> tuple[tuple[float, float], ...]:
    """'lo:hi' for every channel, or seven comma-separated 'lo:hi' pairs."""
    try:
        pairs = [tuple(float(x) for x in p.split(":")) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limits: cannot parse {text!r}; use lo:hi[,lo:hi...]")
    if any(len(p) != 2 for p in pairs) or len(pairs) not in (1, N_ACTIVATION):
        raise argparse.ArgumentTypeError(f"--limits: need 1 or {N_ACTIVATION} lo:hi pairs")
    return tuple(pairs * N_ACTIVATION if len(pairs) == 1 else pairs)  # type: ignore[arg-type]


def make_device(kind: str, seed: int, noise: float | None, n_sites: int,
                fail_after_rows: int | None = None) -> AnalogDevice:
    if kind == "linear":
        return LinearDevice(seed, fail_after_rows)
    from firmware_sim import physics     # the C kernel is only needed for the real devices
    if kind == "null":
        return physics.NullDevice()
    kwargs = {} if noise is None else {"noise_level": noise}
    return physics.VirtualDNPU.from_seed(seed, n_sites, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m firmware_sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT (0: any free port)")
    p.add_argument("--seed", type=int, default=0, help="device seed (which virtual chip; default 0)")
    p.add_argument("--device", choices=("dnpu", "null", "linear"), default="dnpu",
                   help="analog side: the virtual DNPU, a null device, or a linear test device")
    p.add_argument("--null-device", action="store_true", help="same as --device null")
    p.add_argument("--noise", type=float, default=None,
                   help="noise and drift level of the virtual DNPU (1 = nominal, 0 = clean)")
    p.add_argument("--n-sites", type=int, default=30, help="dopant sites of the virtual DNPU")
    p.add_argument("--dac-bits", type=int, default=16)
    p.add_argument("--adc-bits", type=int, default=16)
    p.add_argument("--limits", type=parse_limits, default=DEFAULT_LIMITS_V,
                   help="hard limits in volts: lo:hi for all channels or 7 comma-separated pairs")
    p.add_argument("--max-slew", type=float, default=10.0, help="slew limit, V/s (default 10)")
    p.add_argument("--watchdog-ms", type=float, default=500.0, help="host-silence timeout (default 500)")
    p.add_argument("--sample-period-us", type=float, default=10.0, help="default sample period (default 10)")
    p.add_argument("--dac-gain-error", type=float, default=1e-3, help="RMS relative DAC gain error")
    p.add_argument("--dac-offset-error-mv", type=float, default=1.0, help="RMS DAC offset, mV")
    p.add_argument("--fifo-blocks", type=int, default=64, help="result FIFO depth in blocks")
    p.add_argument("--realtime", action="store_true",
                   help="pace sweeps by the sample clock; a slow host overflows the FIFO")
    p.add_argument("--fail-after-rows", type=int, default=None,
                   help="fault injection (linear device): the analog side raises after N rows")
    p.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="exit when stdin closes (used by the host's sim:// URL)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        cfg = BoardConfig(seed=a.seed, dac_bits=a.dac_bits, adc_bits=a.adc_bits, limits_v=a.limits,
                          max_slew_v_per_s=a.max_slew, watchdog_s=a.watchdog_ms / 1000.0,
                          sample_period_s=a.sample_period_us * 1e-6,
                          dac_gain_error=a.dac_gain_error,
                          dac_offset_error_v=a.dac_offset_error_mv * 1e-3,
                          fifo_blocks=a.fifo_blocks, realtime=a.realtime)
    except ValueError as e:
        print(f"firmware_sim: {e}", file=sys.stderr)
        return 2
    try:
        device = make_device("null" if a.null_device else a.device, a.seed, a.noise, a.n_sites,
                             a.fail_after_rows)
    except (ValueError, TypeError) as e:
        print(f"firmware_sim: bad device option: {e}", file=sys.stderr)
        return 2
    fw = Firmware(cfg, device)
    link = PtyLink() if a.pty else TcpLink(a.tcp)
    print(link.path, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if a.exit_on_stdin_eof:
        def watch() -> None:
            while os.read(0, 1024):
                pass
            stop.set()
        threading.Thread(target=watch, daemon=True).start()
    try:
        serve(fw, link, stop)
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
