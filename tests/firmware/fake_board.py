"""The C firmware core in-process (build/firmware/fake/libdnpu_fake.so, built by `make firmware`)
with a fake HAL: the test steps the clock, feeds the link and reads what the board sent."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from host.board import protocol as H

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "build" / "firmware" / "fake" / "libdnpu_fake.so"
NATIVE_BINARY = ROOT / "build" / "firmware" / "native" / "dnpu-board"
TICKS_PER_S = 1_000_000          # a 1 MHz counter: 1 tick = 1 us
#: the devices the Linux-side builds carry (DNPU_MAX_DEVICES in firmware/CMakeLists.txt)
MAX_DEVICES = 16


def _load() -> ctypes.CDLL:
    if not LIBRARY.exists():
        raise RuntimeError(f"{LIBRARY} is missing: run `make firmware`")
    lib = ctypes.CDLL(str(LIBRARY))
    u64, sz = ctypes.c_uint64, ctypes.c_size_t
    lib.fake_init.argtypes = [u64, ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
    lib.fake_advance.argtypes = [u64]
    lib.fake_ticks.restype = u64
    lib.fake_feed.argtypes = [ctypes.c_char_p, sz]
    lib.fake_feed.restype = sz
    lib.fake_take_tx.argtypes = [ctypes.c_void_p, sz]
    lib.fake_take_tx.restype = sz
    lib.fake_set_write_limit.argtypes = [sz]
    lib.fake_fail_after_reads.argtypes = [ctypes.c_longlong]
    lib.fake_dac.argtypes = [ctypes.c_void_p]
    for name in ("fake_latches", "fake_adc_reads", "fake_kicks"):
        getattr(lib, name).restype = u64
    lib.fake_latch_tick.argtypes = [u64]
    lib.fake_latch_tick.restype = u64
    lib.fake_rx_pending.restype = sz
    lib.fake_counter_names.argtypes = [ctypes.c_char_p, sz]
    lib.fake_counter_names.restype = sz
    return lib


class FakeBoard:
    """One core on a stepped clock (the library holds one board; a new FakeBoard re-inits it)."""

    lib: ctypes.CDLL | None = None

    def __init__(self, watchdog_s: float = 0.5, max_slew: float = 10.0, realtime: bool = False,
                 fifo_blocks: int = 64, devices: int = 1) -> None:
        """`devices`: K devices side by side (K x 7 channels); the fake ADC reads device k's e0
        code above 0 V."""
        if FakeBoard.lib is None:
            FakeBoard.lib = _load()
        self.lib = FakeBoard.lib
        self.devices = devices
        assert self.lib.fake_init(TICKS_PER_S, watchdog_s, max_slew, int(realtime), fifo_blocks, devices) == 0
        self.decoder = H.FrameDecoder()

    # time and link
    def advance(self, seconds: float) -> None:
        self.lib.fake_advance(int(round(seconds * TICKS_PER_S)))

    def step(self, n: int = 1) -> int:
        busy = 0
        for _ in range(n):
            busy = self.lib.fake_step()
        return busy

    def feed(self, data: bytes) -> None:
        assert self.lib.fake_feed(data, len(data)) == len(data)

    def sent_bytes(self) -> bytes:
        buf = ctypes.create_string_buffer(1 << 22)
        n = self.lib.fake_take_tx(buf, len(buf))
        return buf.raw[:n]

    def frames(self) -> list[H.Frame]:
        return self.decoder.feed(self.sent_bytes())

    def ask(self, name: str, seq: int, tail=b"", flags: int = 0, **fields) -> H.Frame:
        self.feed(H.build(name, seq, tail, flags, **fields))
        self.step()
        got = self.frames()
        assert len(got) == 1 and got[0].seq == seq, got
        return got[0]

    def connect(self) -> None:
        assert self.ask("HELLO", 1, major=H.PROTOCOL_MAJOR, minor=0, schema=H.SCHEMA_HASH).fields()["status"] == 0
        assert self.ask("ARM", 2).name == "ACK"

    # the fake hardware
    def dac(self) -> np.ndarray:
        """The latched codes of every channel (7 per device)."""
        out = (ctypes.c_uint16 * (7 * MAX_DEVICES))()
        self.lib.fake_dac(out)
        return np.array(out[:7 * self.devices], dtype=np.int64)

    def dac_volts(self) -> np.ndarray:
        return -2.0 + self.dac() * (4.0 / 65536)

    @property
    def armed(self) -> bool:
        return bool(self.lib.fake_armed())

    def counters(self) -> dict[str, int]:
        r = self.ask("GET_COUNTERS", 60000)
        assert r.name == "COUNTERS", r.fields()
        f = r.fields()
        names = self.counter_names()
        return dict(zip(names, (int(x) for x in f["tail"])))

    def counter_names(self) -> list[str]:
        buf = ctypes.create_string_buffer(4096)
        n = self.lib.fake_counter_names(buf, len(buf))
        return buf.raw[:n].decode().split()


def codes_of(volts) -> np.ndarray:
    """Nominal DAC codes (16 bits over -2..2 V) of volts."""
    return np.rint((np.asarray(volts, dtype=np.float64) + 2.0) / (4.0 / 65536)).astype(np.uint16)
