"""The stm32f4 port: the firmware for the Nucleo-144 STM32F429ZI bench board (docs/board.md). No
board is attached here, so these check what can be checked without one: the image `make
firmware-stm32f4` built fits the 64 KB flash / 32 KB RAM budget (arm-none-eabi-size) and the
linker script enforces it, the vector table holds the interrupts the port relies on, the build is
hard-float and -Werror, and (compiled natively with the core) the port's configuration turns a
calibration block packed by mkcal.py into the identity the host reads, within its buffer.

Needs arm-none-eabi-gcc (`make firmware-stm32f4`, which `make build` runs when it is installed;
.ci/run installs it). Without it these tests skip, naming the tool: the one allowed skip, an
external toolchain."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORT = ROOT / "firmware/ports/stm32f4"
CORE = ROOT / "firmware/core"
BUILD = ROOT / "build/firmware-stm32f4"
ELF = BUILD / "dnpu-board-stm32f4.elf"
BIN = BUILD / "dnpu-board-stm32f4.bin"
MAP = BUILD / "dnpu-board-stm32f4.map"
FLASH_BUDGET, RAM_BUDGET, STACK = 64 * 1024, 32 * 1024, 4096
TIM3_IRQ, OTG_FS_IRQ = 29, 67

_missing = [t for t in ("arm-none-eabi-gcc",) if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"{' and '.join(_missing)} not installed "
                                "(apt-get install gcc-arm-none-eabi picolibc-arm-none-eabi)")


def _run(*args: str, **kw) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout}{r.stderr}"
    return r.stdout


def _symbols() -> dict[str, int]:
    out = _run("arm-none-eabi-nm", str(ELF))
    return {name: int(addr, 16) for addr, _, name in (ln.split() for ln in out.splitlines() if len(ln.split()) == 3)}


def _port_sizes() -> dict[str, str]:
    text = re.sub(r"#.*", "", (PORT / "CMakeLists.txt").read_text())
    block = re.search(r"set\(DNPU_STM32F4_SIZES(.*?)\)", text, re.S).group(1)
    return dict(re.findall(r"(DNPU_\w+)=(\w+)", block))


@pytest.fixture(scope="module")
def image() -> Path:
    assert ELF.exists() and BIN.exists(), "run `make firmware-stm32f4`"
    return ELF


def test_the_image_fits_64k_flash_and_32k_ram(image: Path) -> None:
    text, data, bss = (int(x) for x in _run("arm-none-eabi-size", str(image)).splitlines()[1].split()[:3])
    assert text + data <= FLASH_BUDGET, f"flash {text + data} B > {FLASH_BUDGET}"
    assert data + bss <= RAM_BUDGET, f"RAM {data + bss} B > {RAM_BUDGET}"
    sections = {ln.split()[0]: int(ln.split()[1]) for ln in _run("arm-none-eabi-size", "-A", str(image)).splitlines()
                if ln.startswith(".")}
    assert sections.get(".stack", 0) >= STACK, "the stack is reserved inside the 32 KB"
    assert BIN.stat().st_size == text + data, "the .bin is the flash image (text + data)"


def test_the_link_itself_enforces_the_budget(image: Path) -> None:
    """The linker script's regions are the budget, so an image that outgrows it does not link."""
    mem = MAP.read_text().split("Memory Configuration", 1)[1].split("Linker script and memory map", 1)[0]
    regions = {m[0]: (int(m[1], 16), int(m[2], 16)) for m in re.findall(r"^(\w+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", mem, re.M)}
    assert regions["FLASH"] == (0x08000000, FLASH_BUDGET)
    assert regions["RAM"] == (0x20000000, RAM_BUDGET)
    assert regions["CAL"][0] == 0x08010000, "the calibration sector follows the 64 KB image"


def test_the_vector_table_holds_the_interrupts_the_port_relies_on(image: Path) -> None:
    sym = _symbols()
    words = struct.unpack_from("<108I", BIN.read_bytes())
    assert words[0] == 0x20000000 + RAM_BUDGET, "initial stack pointer at the top of the 32 KB"
    expected = {1: "reset_handler", 15: "systick_handler", 16 + TIM3_IRQ: "tim3_irq_handler",
                16 + OTG_FS_IRQ: "otg_fs_irq_handler"}
    for slot, name in expected.items():
        assert words[slot] == sym[name] | 1, f"vector {slot} is not {name} (Thumb)"


def test_hard_float_cortex_m4(image: Path) -> None:
    attrs = _run("arm-none-eabi-readelf", "-A", str(image))
    assert "Tag_CPU_arch: v7E-M" in attrs
    assert "Tag_ABI_VFP_args: VFP registers" in attrs
    assert "Tag_FP_arch: VFPv4-D16" in attrs


def test_the_build_fails_on_a_warning(tmp_path: Path) -> None:
    """-Werror: a warning injected into every translation unit stops the build."""
    inject = tmp_path / "inject.h"
    inject.write_text("static int dnpu_injected_unused(void) { return 0; }\n")
    env = dict(os.environ, CFLAGS=f"-include {inject}")
    cmake = shutil.which("cmake", path=str(ROOT / ".venv/bin")) or shutil.which("cmake")
    _run(cmake, "-S", str(PORT), "-B", str(tmp_path / "b"), f"-DCMAKE_TOOLCHAIN_FILE={PORT.parent / 'arm-none-eabi.cmake'}",
         f"-DPython3_EXECUTABLE={sys.executable}", env=env)
    r = subprocess.run([cmake, "--build", str(tmp_path / "b"), "-j2"], capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert "-Werror=unused-function" in r.stdout + r.stderr


# ---- the configuration, natively -----------------------------------------------------------------

HARNESS = r"""
#include <stdio.h>
#include "port_config.h"
static size_t rd(void *c, uint8_t *b, size_t m) { (void)c; (void)b; (void)m; return 0; }
static size_t wr(void *c, const uint8_t *b, size_t n) { (void)c; (void)b; return n; }
static bool op(void *c) { (void)c; return true; }
static uint64_t tk(void *c) { (void)c; return 0; }
static void st(void *c, unsigned ch, uint16_t x) { (void)c; (void)ch; (void)x; }
static void nop(void *c) { (void)c; }
static bool ad(void *c, int32_t *x) { (void)c; *x = 0; return true; }
static dnpu_board board;
int main(int argc, char **argv)
{
    static cal_block blk;
    const cal_block *cal = NULL;
    if (argc > 1) {
        FILE *f = fopen(argv[1], "rb");
        if (f == NULL || fread(&blk, 1, sizeof blk, f) != sizeof blk)
            return 4;
        fclose(f);
        if (!calib_valid(&blk))
            return 3;
        cal = &blk;
    }
    static char serial[PORT_SERIAL_CAP] = "0123456789ABCDEF01234567";   /* a UID: 24 hex digits */
    static char json[PORT_DEVICE_JSON_CAP];
    dnpu_config cfg;
    analog_cal ac;
    analog_info info = {65535u, 65535u};                                 /* the longest read-backs */
    port_configure(&cfg, &ac, cal, serial);
    port_describe(json, &ac, &info, cal, false, true);
    cfg.device_json[0] = json;
    dnpu_hal hal = {.link_read = rd, .link_write = wr, .link_is_open = op, .clock_ticks = tk,
                    .ticks_per_s = 84000000u, .dac_stage = st, .dac_latch = nop, .dac_force_zero = nop,
                    .adc_read = ad, .watchdog_kick = nop};
    if (dnpu_board_init(&board, &cfg, &hal) < 0)
        return 2;
    printf("%.*s\n", (int)board.identity_len, board.identity);
    fprintf(stderr, "{\"identity_len\":%zu,\"cap\":%u,\"gain_q14\":[", board.identity_len, (unsigned)DNPU_IDENTITY_CAP);
    for (unsigned c = 0; c < ANALOG_CHANNELS; c++)
        fprintf(stderr, "%s%d", c ? "," : "", (int)ac.dac_gain_q14[c]);
    fprintf(stderr, "],\"offset_q14\":[");
    for (unsigned c = 0; c < ANALOG_CHANNELS; c++)
        fprintf(stderr, "%s%d", c ? "," : "", (int)ac.dac_offset_q14[c]);
    fprintf(stderr, "],\"adc_offset\":%d,\"settle_ns\":%u}\n", (int)ac.adc_offset, (unsigned)ac.settle_ns);
    return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no host C compiler (the project assumes one)")
    d = tmp_path_factory.mktemp("stm32f4-config")
    gen = d / "gen"
    gen.mkdir()
    _run(sys.executable, str(ROOT / "firmware/protocol/generate.py"), "c-header", str(gen / "dnpu_protocol.h"))
    (d / "harness.c").write_text(HARNESS)
    defs = [f"-D{k}={v}" for k, v in _port_sizes().items()]
    sources = [d / "harness.c", PORT / "port_config.c", PORT / "calib.c"] + [CORE / f for f in
               ("board.c", "crc.c", "frame.c", "identity.c", "text.c")]
    exe = d / "harness"
    _run(cc, "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{PORT}", f"-I{CORE}",
         f"-I{gen}", *defs, *map(str, sources), "-lm", "-o", str(exe))
    return exe


def _mkcal():
    spec = importlib.util.spec_from_file_location("mkcal", PORT / "mkcal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _identity(harness: Path, cal: Path | None = None) -> tuple[dict, dict]:
    r = subprocess.run([str(harness)] + ([str(cal)] if cal else []), capture_output=True, text=True)
    assert r.returncode == 0, f"harness exit {r.returncode} (2: identity over its buffer, 3: block rejected)"
    return json.loads(r.stdout), json.loads(r.stderr)


def test_the_uncalibrated_identity(harness: Path) -> None:
    ident, port = _identity(harness)
    assert port["identity_len"] <= port["cap"]
    assert ident["firmware"].startswith("dnpu-bench-stm32f4") and ident["serial"] == "0123456789ABCDEF01234567"
    sizes = {k: int(v.rstrip("u")) for k, v in _port_sizes().items()}
    assert ident["max_payload"] == sizes["DNPU_BOARD_MAX_PAYLOAD"] == sizes["DNPU_RX_MAX_PAYLOAD"]
    assert ident["max_sweep_samples"] == sizes["DNPU_MAX_SWEEP_SAMPLES"]
    assert ident["max_block_samples"] == sizes["DNPU_MAX_BLOCK_SAMPLES"]
    assert ident["fifo_blocks"] == sizes["DNPU_MAX_FIFO_BLOCKS"]
    assert ident["dac"][0] == {"volts_at_code0": -2.5, "volts_per_code": 5.0 / 65536}
    assert ident["zero_code"] == 32768
    fs = 2.56 / 7.87e6 * 1e9                       # +-2.56 V ADC range through the 7.87 MOhm TIA
    assert ident["adc"]["full_scale_na"] == pytest.approx([-fs, fs], rel=1e-12)
    assert fs >= 300.0, "the TIA and ADC range must cover +-300 nA"
    assert ident["device"]["front_end"]["calibrated"] is False
    assert all(lo >= -2.5 and hi <= 2.5 for lo, hi in ident["limits_v"])


def test_a_calibration_block_from_mkcal(harness: Path, tmp_path: Path) -> None:
    mk = _mkcal()
    cal = tmp_path / "cal.bin"
    dac = {0: (-1.0, -1.00131, 0.5, 0.50082), 5: (-0.6, -0.5992, 0.3, 0.3011)}
    args = ["--out", str(cal), "--tia", "-200", "-199.1", "200", "201.3", "--settle-ns", "700000",
            "--serial", "B" * 31]
    for ch, pts in dac.items():
        args += ["--dac", str(ch), *map(str, pts)]
    assert mk.main(args) == 0
    ident, port = _identity(harness, cal)
    assert port["identity_len"] <= port["cap"], "the longest calibrated strings still fit"
    assert ident["serial"] == "B" * 31 and ident["device"]["front_end"]["calibrated"] is True
    assert port["settle_ns"] == 700000
    s = (201.3 + 199.1) / 400.0                    # reading per true nA
    fs = 2.56 / (s * 7.87e6) * 1e9
    assert ident["adc"]["full_scale_na"] == pytest.approx([-fs, fs], rel=1e-6)
    # the DAC correction: the codes the port writes give the asked volts within one LSB
    lsb = 5.0 / 65536
    for ch, (a0, m0, a1, m1) in dac.items():
        g = (m1 - m0) / (a1 - a0)
        o = m0 - g * a0
        for volts in (-1.2, -0.5, 0.0, 0.3):
            code = 32768 + round(volts / lsb)
            raw = 32768 + (((code - 32768) * port["gain_q14"][ch] + port["offset_q14"][ch] + 8192) >> 14)
            out = g * (raw - 32768) * lsb + o
            assert abs(out - volts) <= lsb, f"e{ch} at {volts} V: {out} V"
    # the ADC offset: 0 A reads 0 (in the calibrated codes)
    r0_codes = (201.3 - 200.0 * s) / (2 * 2.56 / 7.87e6 * 1e9 / 65536)
    assert port["adc_offset"] == pytest.approx(r0_codes, abs=1.0)


def test_a_damaged_or_implausible_block_is_refused(harness: Path, tmp_path: Path) -> None:
    mk = _mkcal()
    cal = tmp_path / "cal.bin"
    assert mk.main(["--out", str(cal)]) == 0
    blob = bytearray(cal.read_bytes())
    blob[20] ^= 0x01                               # one bit in e1's gain: the CRC no longer matches
    cal.write_bytes(bytes(blob))
    assert subprocess.run([str(harness), str(cal)]).returncode == 3
    with pytest.raises(SystemExit, match="reject"):
        mk.main(["--out", str(cal), "--dac", "2", "-1", "-1.2", "0.5", "0.6"])   # gain 1.2
    blob = mk.pack([1.2] + [1.0] * 6, [0.0] * 7, 7.87e6, 0.0, 0, "")             # packed past the check
    cal.write_bytes(blob)
    assert subprocess.run([str(harness), str(cal)]).returncode == 3
