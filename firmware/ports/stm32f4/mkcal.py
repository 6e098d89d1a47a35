"""Pack the stm32f4 board's calibration block (calib.h) from bench measurements.

    python firmware/ports/stm32f4/mkcal.py --out cal.bin \\
        --dac 0 -1.0 -1.00052 0.5 0.50011 ...   (channel, asked V, DMM V, asked V, DMM V; per channel)
        --tia -200 -199.1 200 201.3             (true nA, board's reading nA, true nA, reading nA)
        [--settle-ns 50000] [--serial BENCH-07]
    st-flash write cal.bin 0x08010000

Measure with the calibration sector erased (the board then runs on nominal values; docs/board.md,
"Calibration"). Channels not given keep gain 1, offset 0. The firmware rejects a block whose
values are implausible (gain outside 0.9..1.1, offset over 50 mV, ...) and runs on nominal
values, so a typo cannot turn into a large voltage error. Stdlib only."""
from __future__ import annotations

import argparse
import struct
import sys
import zlib

MAGIC, VERSION = 0x43504E44, 1
LAYOUT = "<3I7f7f2fI32s"                     # + crc32 (I): 116 bytes, as calib.h asserts
TIA_OHM_NOMINAL = 7.87e6
CHANNELS = 7


def pack(gain, offset_v, tia_ohm, adc_offset_na, settle_ns, serial: str) -> bytes:
    size = struct.calcsize(LAYOUT) + 4
    body = struct.pack(LAYOUT, MAGIC, VERSION, size, *gain, *offset_v, tia_ohm, adc_offset_na,
                       settle_ns, serial.encode("ascii"))
    return body + struct.pack("<I", zlib.crc32(body))


def two_point(a0: float, m0: float, a1: float, m1: float) -> tuple[float, float]:
    """(slope, intercept) of measured against asked."""
    if a1 == a0:
        raise SystemExit("the two points must differ")
    g = (m1 - m0) / (a1 - a0)
    return g, m0 - g * a0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dac", nargs=5, action="append", default=[], metavar=("CH", "V0", "M0", "V1", "M1"))
    ap.add_argument("--tia", nargs=4, type=float, metavar=("I0", "R0", "I1", "R1"),
                    help="two injected currents (nA, true) and the uncalibrated board's readings (nA)")
    ap.add_argument("--settle-ns", type=int, default=0, help="0: the firmware's default")
    ap.add_argument("--serial", default="", help="board name for the identity (default: the MCU's UID)")
    a = ap.parse_args(argv)
    gain, offset = [1.0] * CHANNELS, [0.0] * CHANNELS
    for ch, *vals in a.dac:
        c = int(ch)
        if not 0 <= c < CHANNELS:
            raise SystemExit(f"--dac channel {c}: not in 0..{CHANNELS - 1}")
        gain[c], offset[c] = two_point(*(float(v) for v in vals))
    tia_ohm, adc_offset_na = TIA_OHM_NOMINAL, 0.0
    if a.tia:
        s, r0 = two_point(*a.tia)             # reading = s * true + r0 (nominal scale)
        tia_ohm, adc_offset_na = s * TIA_OHM_NOMINAL, r0 / s
    problems = [f"e{c}: gain {g:.4f} outside 0.9..1.1" for c, g in enumerate(gain) if not 0.9 < g < 1.1]
    problems += [f"e{c}: offset {o * 1e3:.1f} mV over 50 mV" for c, o in enumerate(offset) if abs(o) >= 0.05]
    if not 1e5 < tia_ohm < 1e9 or abs(adc_offset_na) >= 50:
        problems.append(f"TIA {tia_ohm:.4g} ohm / offset {adc_offset_na:.2f} nA implausible")
    if not 0 <= a.settle_ns <= 700_000 or len(a.serial) > 31 or not a.serial.isascii():
        problems.append("settle_ns must be 0..700000, serial at most 31 ASCII characters")
    if problems:
        raise SystemExit("the firmware would reject this block: " + "; ".join(problems))
    blob = pack(gain, offset, tia_ohm, adc_offset_na, a.settle_ns, a.serial)
    with open(a.out, "wb") as f:
        f.write(blob)
    print(f"{a.out}: {len(blob)} bytes; TIA {tia_ohm / 1e6:.4f} MOhm, ADC offset {adc_offset_na:+.3f} nA; "
          "flash with: st-flash write " + a.out + " 0x08010000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
