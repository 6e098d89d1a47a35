"""Soak test (not in CI): stream sweeps through a fault-injecting link for N minutes and count
what went in, what came out, what was retried, and what was corrupted but delivered (must be 0).

    .venv/bin/python bench/soak.py                    # 10 minutes, default fault rates
    .venv/bin/python bench/soak.py --minutes 1 --json

The board is the simulator's deterministic linear device (no noise), so every delivered sample
is checked exactly against what the board must have measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

import numpy as np

from core.electrodes import N_ELECTRODES
from firmware_sim.devices import LinearDevice
from host.board import Board, BoardError
from host.board.faults import FaultPlan, FaultyPort

SEED = 5
URL = f"sim://?seed={SEED}&device=linear&dac_gain_error=0&dac_offset_error_mv=0"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sweep", type=int, default=20_000, help="samples per measure() call")
    ap.add_argument("--rx-rate", type=float, default=2e-5, help="rx faults per byte, each kind")
    ap.add_argument("--tx-rate", type=float, default=0.02, help="tx faults per frame, each kind")
    ap.add_argument("--tx-byte-rate", type=float, default=2e-5,
                    help="tx faults per byte written, each kind (bit flips, dropped spans, garbage)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    dev = LinearDevice(SEED)
    rng = np.random.default_rng(a.seed)
    stats = {"samples_sent": 0, "samples_received": 0, "corrupted_but_delivered": 0,
             "sweeps": 0, "sweeps_failed_with_error": 0, "reopens": 0,
             "host_retries": 0, "host_rewinds": 0, "board_blocks_resent": 0,
             "board_cached_replies": 0, "board_crc_errors": 0, "host_crc_errors": 0,
             "board_frame_timeouts": 0, "host_frame_timeouts": 0, "host_keepalives": 0}
    faults: dict[str, int] = {}
    t_end = time.monotonic() + a.minutes * 60
    session = 0
    while time.monotonic() < t_end:
        plan = FaultPlan(seed=a.seed * 1000 + session, rx_flip=a.rx_rate, rx_drop_span=a.rx_rate,
                         rx_drop_frame=a.rx_rate, rx_garbage=a.rx_rate, tx_drop=a.tx_rate,
                         tx_flip=a.tx_rate, tx_truncate=a.tx_rate, tx_byte_flip=a.tx_byte_rate,
                         tx_byte_drop_span=a.tx_byte_rate, tx_byte_garbage=a.tx_byte_rate)
        port_box: list[FaultyPort] = []

        def wrap(p):
            port_box.append(FaultyPort(p, plan))
            return port_box[-1]

        session += 1
        try:
            board = Board.open(URL, wrap=wrap, timeout_s=0.1, retries=10)
        except BoardError as e:
            print(f"open failed ({e}); retrying", file=sys.stderr)
            stats["reopens"] += 1
            continue
        with board:
            lo, hi = board.limits_v.T          # as the board declares them
            try:
                while time.monotonic() < t_end:
                    v = rng.uniform(lo, hi, (a.sweep, N_ELECTRODES))
                    stats["samples_sent"] += len(v)
                    stats["sweeps"] += 1
                    try:
                        got = board.measure(v)
                    except BoardError as e:
                        stats["sweeps_failed_with_error"] += 1
                        print(f"sweep failed cleanly: {type(e).__name__}: {e}", file=sys.stderr)
                        break
                    stats["samples_received"] += len(got)
                    nominal = board.codes_to_volts(board.volts_to_codes(v))
                    want = np.clip(np.rint(dev.convert(nominal, 1e-5) / 0.01), -32768, 32767) * 0.01
                    stats["corrupted_but_delivered"] += int(np.count_nonzero(np.abs(got - want) > 1e-9))
                c = board.counters()
                stats["host_retries"] += c["host"]["retries"]
                stats["host_rewinds"] += c["host"]["rewinds"]
                stats["host_crc_errors"] += c["host"]["crc_errors"]
                stats["board_blocks_resent"] += c["board"]["blocks_resent"]
                stats["board_cached_replies"] += c["board"]["cached_replies"]
                stats["board_crc_errors"] += c["board"]["crc_errors"]
                stats["board_frame_timeouts"] += c["board"].get("frame_timeouts", 0)
                stats["host_frame_timeouts"] += c["host"]["frame_timeouts"]
                stats["host_keepalives"] += c["host"]["keepalives"]
            except BoardError as e:
                print(f"session ended: {type(e).__name__}: {e}", file=sys.stderr)
                stats["reopens"] += 1
        for k, n in asdict(port_box[-1].counts).items() if port_box else ():
            faults[k] = faults.get(k, 0) + n
    report = {"minutes": a.minutes, **stats, "faults_injected": faults,
              "ok": stats["corrupted_but_delivered"] == 0}
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        for k, val in report.items():
            print(f"{k:28} {val}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
