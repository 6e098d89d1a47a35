"""Firmware image benchmark: the sizes of the qemu and stm32f4 images (arm-none-eabi-size) against
the stm32f4 board's budget, and the worst-case time of the stm32f4 sample interrupt (the
"DAC-update interrupt": TIM3's update, which closes every sample by clocking the ADS8681's result
out over SPI2), computed from its disassembly with Cortex-M4 cycle counts.

    .venv/bin/python bench/firmware_bench.py            # table
    .venv/bin/python bench/firmware_bench.py --json     # one JSON document on stdout

Build the images first: `make firmware-qemu firmware-stm32f4`.

Target: the stm32f4 image fits 64 KB of flash (text + data) and 32 KB of RAM (data + bss, the
reserved 4 KB stack included, which the linker script places as a .stack section).

The interrupt's cycle model (ARM Cortex-M4 TRM r0p1, DDI 0439, section 3.3 table 3-1), stated so
the figure can be checked by hand:
  * exception entry 12 cycles, exit (the final `bx lr` / `pop {.., pc}`) 10 cycles; lazy FP
    stacking (the reset default) adds nothing because the handler uses no FP registers;
  * data processing 1; LDR/STR/LDRH/STRH 2 (no credit taken for pipelined neighbours);
    PUSH/POP 1 + registers; a taken branch 1 + 3 (worst pipeline refill), not taken 1;
  * every access to an APB1 peripheral (TIM3, SPI2) +4 bus cycles (AHB/APB1 = 168/42 MHz, one
    APB1 clock per transfer through the bridge), SRAM 0 wait states;
  * the ART accelerator cold (worst case): +5 wait states per flash literal load and per 16-byte
    flash line of code fetched, +5 for the vector fetch; warm (the steady state of a sweep): +0;
  * the one loop, the RXNE poll, waits for the 16-bit SPI2 frame started just before it: at most
    16 SCLK periods at PCLK1/2 = 21 MHz (128 core cycles) plus one final pass through the loop.
Nothing preempts it (NVIC priority 0, the only one; the USB driver masks with BASEPRI, which
leaves priority 0 open); the only PRIMASK section is the main loop's check before WFI (a call to
usb_cdc_rx_pending and the WFI, about ten instructions)."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {
    "qemu": ROOT / "build/firmware-qemu/dnpu-board-qemu.elf",
    "stm32f4": ROOT / "build/firmware-stm32f4/dnpu-board-stm32f4.elf",
}
PORT = ROOT / "firmware/ports/stm32f4"
FLASH_BUDGET = 64 * 1024
RAM_BUDGET = 32 * 1024
ISR_SYMBOL = "tim3_irq_handler"

ENTRY_CYCLES, EXIT_CYCLES = 12, 10
BRANCH_TAKEN, BRANCH_NOT_TAKEN = 4, 1
APB_EXTRA = 4
FLASH_WS = 5
APB_RANGES = [(0x40000000, 0x40008000)]            # APB1
SRAM_RANGES = [(0x20000000, 0x20030000)]
FLASH_RANGES = [(0x08000000, 0x08200000)]


def _port_constant(header: str, name: str) -> int:
    text = (PORT / header).read_text()
    m = re.search(rf"#define\s+{name}\s+(\d+)u", text)
    if m is None:
        raise SystemExit(f"{header}: no #define {name}")
    return int(m.group(1))


@dataclass
class ImageSize:
    port: str
    path: str
    text: int
    data: int
    bss: int
    stack_reserved: int
    flash: int
    ram: int
    flash_pct_of_budget: float
    ram_pct_of_budget: float
    fits_budget: bool | None              # the budget binds the stm32f4 image only


def image_size(port: str, elf: Path) -> ImageSize:
    out = subprocess.run(["arm-none-eabi-size", str(elf)], check=True, capture_output=True, text=True).stdout
    text, data, bss = (int(x) for x in out.splitlines()[1].split()[:3])
    sysv = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], check=True, capture_output=True, text=True).stdout
    stack = sum(int(line.split()[1]) for line in sysv.splitlines() if line.startswith(".stack "))
    flash, ram = text + data, data + bss
    fits = flash <= FLASH_BUDGET and ram <= RAM_BUDGET if port == "stm32f4" else None   # qemu: 1 MB / 128 KB
    return ImageSize(port, str(elf.relative_to(ROOT) if elf.is_relative_to(ROOT) else elf), text, data, bss,
                     stack, flash, ram, round(100.0 * flash / FLASH_BUDGET, 1), round(100.0 * ram / RAM_BUDGET, 1),
                     fits)


@dataclass
class Insn:
    addr: int
    mnemonic: str
    operands: str
    size: int


@dataclass
class IsrTiming:
    symbol: str
    instructions: int
    loop_instructions: int
    spi_frame_cycles: int
    cycles_warm: int
    cycles_cold: int
    core_hz: int
    us_warm: float
    us_cold: float
    path: list = field(default_factory=list)


def _in(ranges, a: int) -> bool:
    return any(lo <= a < hi for lo, hi in ranges)


def disassemble(elf: Path, symbol: str) -> tuple[list[Insn], dict[int, int]]:
    out = subprocess.run(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn", str(elf)], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(rf"^[0-9a-f]+ <{re.escape(symbol)}>:\n(.*?)(?:\n\n|\Z)", out, re.S | re.M)
    if m is None:
        raise SystemExit(f"{elf}: no symbol {symbol}")
    insns, words = [], {}
    lines = [ln for ln in m.group(1).splitlines() if ln.strip()]
    addrs = [int(ln.split(":")[0], 16) for ln in lines]
    for i, ln in enumerate(lines):
        a = addrs[i]
        body = ln.split(":", 1)[1].strip()
        mnem, _, ops = body.partition("\t")
        if mnem == ".word":
            words[a] = int(ops.split()[0], 16)
            continue
        size = (addrs[i + 1] - a) if i + 1 < len(lines) else 2
        insns.append(Insn(a, mnem, ops.strip(), size))
    return insns, words


def _base_offset(ops: str) -> tuple[str, int] | None:
    m = re.search(r"\[(r\d+|ip|sp)(?:,\s*#(-?\d+))?\]", ops)
    return (m.group(1), int(m.group(2) or 0)) if m else None


def _cost(insn: Insn, regs: dict[str, int], words: dict[int, int]) -> tuple[int, int, str]:
    """(warm cycles, extra cold cycles, note) for one instruction, updating the known registers."""
    mn, ops = insn.mnemonic.split(".")[0], insn.operands
    dest = ops.split(",")[0].strip()
    if mn in ("ldr", "ldrh", "ldrb", "str", "strh", "strb"):
        lit = re.search(r"@\s*\(([0-9a-f]+)", ops)
        if mn == "ldr" and lit:                                   # literal pool (flash)
            regs[dest] = words.get(int(lit.group(1), 16), -1)
            return 2, FLASH_WS, "literal"
        bo = _base_offset(ops)
        if mn.startswith("ldr"):
            regs.pop(dest, None)
        if bo and bo[0] in regs and regs[bo[0]] >= 0:
            a = regs[bo[0]] + bo[1]
            if _in(APB_RANGES, a):
                return 2 + APB_EXTRA, 0, f"APB1 {a:#010x}"
            if _in(SRAM_RANGES, a):
                return 2, 0, f"SRAM {a:#010x}"
            if _in(FLASH_RANGES, a):
                return 2, FLASH_WS, f"flash {a:#010x}"
        return 2 + APB_EXTRA, FLASH_WS, "unknown address (worst)"
    if mn in ("push", "pop", "stmdb", "ldmia", "ldm", "stm"):
        n = len(re.findall(r"r\d+|lr|pc|ip|sl|fp", ops))
        return 1 + n, 0, ""
    if mn in ("b", "bx", "bl", "blx") or re.fullmatch(r"b(eq|ne|cs|cc|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|hs|lo)", mn):
        return 0, 0, "branch"                                     # costed by the walker
    if mn.startswith("v"):
        raise SystemExit(f"{insn.addr:#x}: FP instruction {mn}: the model assumes an integer handler")
    regs.pop(dest, None)
    return 1, 0, ""


def isr_timing(elf: Path) -> IsrTiming:
    insns, words = disassemble(elf, ISR_SYMBOL)
    core_hz = _port_constant("clock.h", "CLOCK_SYSCLK_HZ")
    sck_hz = _port_constant("analog.h", "ANALOG_SPI2_HZ")
    frame_cycles = 16 * core_hz // sck_hz
    by_addr = {x.addr: i for i, x in enumerate(insns)}
    regs: dict[str, int] = {}
    warm = cold = 0
    path, loop_n = [], 0
    i = 0
    lines_fetched = {x.addr // 16 for x in insns}
    while i < len(insns):
        x = insns[i]
        w, c, note = _cost(x, regs, words)
        mn = x.mnemonic.split(".")[0]
        if note == "branch":
            if mn == "bx" or (mn == "pop" and "pc" in x.operands):
                path.append((hex(x.addr), x.mnemonic, x.operands, EXIT_CYCLES, "exception return"))
                warm += EXIT_CYCLES
                break
            target = int(x.operands.split()[0], 16)
            if target <= x.addr and target in by_addr:             # a backward branch: the poll loop
                body = insns[by_addr[target]:i + 1]
                per = sum(_cost(b, dict(regs), words)[0] for b in body[:-1]) + BRANCH_TAKEN
                loop_n = len(body)
                extra = frame_cycles + per                         # wait for the frame, then one last pass
                path.append((hex(x.addr), x.mnemonic, x.operands, extra,
                             f"loop of {loop_n}: {per} cycles/pass, bounded by the 16-bit frame ({frame_cycles})"))
                warm += extra - BRANCH_TAKEN + BRANCH_NOT_TAKEN    # the exit pass falls through
                i += 1
                continue
            if mn == "b":
                warm += BRANCH_TAKEN
                i = by_addr[target]
                continue
            warm += BRANCH_TAKEN                                   # forward conditional: assume taken
            i = by_addr.get(target, i + 1)
            continue
        if mn in ("pop",) and "pc" in x.operands:
            warm += EXIT_CYCLES
            path.append((hex(x.addr), x.mnemonic, x.operands, EXIT_CYCLES, "exception return"))
            break
        warm += w
        cold += c
        path.append((hex(x.addr), x.mnemonic, x.operands, w, note))
        i += 1
    warm += ENTRY_CYCLES
    cold_total = warm + cold + FLASH_WS * (len(lines_fetched) + 1)  # + code lines + vector fetch
    return IsrTiming(ISR_SYMBOL, len(path), loop_n, frame_cycles, warm, cold_total, core_hz,
                     round(warm / core_hz * 1e6, 3), round(cold_total / core_hz * 1e6, 3), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--path", action="store_true", help="also list the interrupt's costed instructions")
    args = ap.parse_args(argv)
    for tool in ("arm-none-eabi-size", "arm-none-eabi-objdump"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not installed (apt-get install gcc-arm-none-eabi binutils-arm-none-eabi)")
    sizes, missing = [], []
    for port, elf in IMAGES.items():
        if elf.exists():
            sizes.append(image_size(port, elf))
        else:
            missing.append(f"{port}: {elf.relative_to(ROOT)} (make firmware-{port})")
    isr = isr_timing(IMAGES["stm32f4"]) if IMAGES["stm32f4"].exists() else None
    if args.json:
        print(json.dumps({"budget": {"flash": FLASH_BUDGET, "ram": RAM_BUDGET},
                          "images": [asdict(s) for s in sizes], "missing": missing,
                          "isr": asdict(isr) if isr else None}, indent=2))
        return 0 if all(s.fits_budget for s in sizes if s.port == "stm32f4") else 1
    print(f"budget: flash {FLASH_BUDGET} B (text + data), RAM {RAM_BUDGET} B (data + bss, stack included)")
    print(f"{'port':8} {'text':>7} {'data':>6} {'bss':>7} {'stack':>6} {'flash':>7} {'flash%':>7} "
          f"{'RAM':>7} {'RAM%':>6}  fits")
    for s in sizes:
        print(f"{s.port:8} {s.text:7d} {s.data:6d} {s.bss:7d} {s.stack_reserved:6d} {s.flash:7d} "
              f"{s.flash_pct_of_budget:6.1f}% {s.ram:7d} {s.ram_pct_of_budget:5.1f}%  "
              f"{'-' if s.fits_budget is None else ('yes' if s.fits_budget else 'NO')}")
    for m in missing:
        print(f"missing  {m}")
    if isr:
        print(f"\nDAC-update (sample) interrupt {isr.symbol}: {isr.instructions} instructions on its path, "
              f"one bounded loop of {isr.loop_instructions} (16-bit SPI2 frame = {isr.spi_frame_cycles} cycles)")
        print(f"  worst case, ART warm: {isr.cycles_warm} cycles = {isr.us_warm} us at {isr.core_hz / 1e6:g} MHz")
        print(f"  worst case, ART cold: {isr.cycles_cold} cycles = {isr.us_cold} us (entry and exit included)")
        if args.path:
            for a, mn, ops, cyc, note in isr.path:
                print(f"    {a} {mn:8} {ops.split(chr(9))[0]:24} {cyc:4}  {note}")
    stm = [s for s in sizes if s.port == "stm32f4"]
    return 0 if all(s.fits_budget for s in stm) else 1


if __name__ == "__main__":
    sys.exit(main())
