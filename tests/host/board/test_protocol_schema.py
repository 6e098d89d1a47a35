"""The one protocol declaration (firmware/protocol/schema.toml) and what is generated from it:
the generated docs and vectors are up to date, the C header compiles and agrees with the Python
codecs, and a host facing a board built from another schema is told which messages differ."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim import protocol as F
from firmware_sim.board import BoardConfig, Firmware
from firmware_sim.devices import LinearDevice
from host.board import Board, BoardOptions, IncompatibleBoard
from host.board import protocol as H

ROOT = Path(__file__).resolve().parents[3]
GENERATE = ROOT / "firmware" / "protocol" / "generate.py"
SCHEMA = ROOT / "firmware" / "protocol" / "schema.toml"


def _generate(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GENERATE), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_generated_docs_and_vectors_are_up_to_date() -> None:
    r = _generate("check")
    assert r.returncode == 0, f"run `make protocol`:\n{r.stderr}"


def test_check_fails_when_the_schema_changes_without_regenerating(tmp_path: Path) -> None:
    changed = tmp_path / "schema.toml"
    changed.write_text(SCHEMA.read_text().replace('fields = ["sweep_id:u16"]\nreply = "ACK"',
                                                  'fields = ["sweep_id:u32"]\nreply = "ACK"', 1))
    assert changed.read_text() != SCHEMA.read_text()
    r = _generate("--schema", changed, "check")
    assert r.returncode == 1 and "protocol_vectors.json" in r.stderr and "protocol.md" in r.stderr


def test_minor_version_does_not_change_the_hash() -> None:
    raw = tomllib.loads(SCHEMA.read_text())
    assert raw["protocol"]["minor"] == 2           # 1.1: IDENTIFY before HELLO; 1.2: boards of several devices
    raw["protocol"]["minor"] = 0
    assert F.Schema.from_toml(raw).hash == F.SCHEMA_HASH == H.SCHEMA_HASH == 0x056EB0FB


C_CHECK = r"""
#include "dnpu_protocol.h"
#include <stdio.h>
#include <string.h>
static uint32_t crc32(const char *s) {
    uint32_t c = 0xFFFFFFFFu;
    for (; *s; s++) {
        c ^= (uint8_t)*s;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}
int main(void) {
    printf("hash %u %u\n", (unsigned)DNPU_SCHEMA_HASH, (unsigned)crc32(DNPU_SCHEMA_TEXT));
    printf("channels %d gap %d\n", DNPU_CHANNELS, (int)DNPU_FRAME_GAP_MS);
    printf("frame %d %d %d %d\n", DNPU_HEADER_SIZE, DNPU_CRC_SIZE, DNPU_MAX_PAYLOAD, DNPU_OFF_HCRC);
    for (int i = 0; i < DNPU_N_MESSAGES; i++) {
        const dnpu_msg_info *m = &DNPU_MESSAGES[i];
        printf("msg %s %d %d %d %d %d %d\n", m->name, m->id, m->kind, m->boot, m->reply,
               m->head_size, m->tail_size);
    }
    printf("off %d %d %d\n", DNPU_SWEEP_BEGIN_N_SAMPLES_OFF, DNPU_ERRORS_TAIL_ARG_OFF,
           DNPU_STATUS_REPLY_BLOCKS_TOTAL_OFF);
    printf("named %d %d %d %d\n", DNPU_ERR_LIMIT, DNPU_STATUS_ARMED, DNPU_FLAG_NOREPLY, DNPU_RESULT_ABORTED);
    return 0;
}
"""


def test_c_header_compiles_and_agrees_with_the_python_codecs(tmp_path: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is assumed (see the Makefile)"
    header = tmp_path / "dnpu_protocol.h"
    assert _generate("c-header", header).returncode == 0
    assert _generate("--check", "--header", header).returncode == 0
    (tmp_path / "check.c").write_text(C_CHECK)
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    subprocess.run([cc, *flags, "-fsyntax-only", "-x", "c", str(header)], check=True, timeout=60)
    exe = tmp_path / "check"
    subprocess.run([cc, *flags, "-o", str(exe), str(tmp_path / "check.c")], check=True, timeout=60)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == f"hash {H.SCHEMA_HASH} {H.SCHEMA_HASH}"
    assert out[1] == f"channels {N_ELECTRODES} gap {round(H.FRAME_GAP_S * 1000)}"
    assert out[2] == f"frame {H.HEADER_SIZE} {H.CRC_SIZE} {H.MAX_PAYLOAD} {H.OFF_HCRC}"
    kinds = {"cmd": 0, "reply": 1, "stream": 2}
    want = [f"msg {m.name} {m.id} {kinds[m.kind]} {int(m.boot)} "
            f"{H.SCHEMA[m.reply].id if m.reply else 0} {m.head.size} "
            f"{0 if not m.tail else 1 if m.tail == 'bytes' else m.tail_dtype.itemsize}"
            for m in H.SCHEMA.values()]
    assert out[3:3 + len(want)] == want
    assert out[-2] == "off 2 4 14"     # SWEEP_BEGIN.n_samples, ERRORS record .arg, STATUS_REPLY.blocks_total
    assert out[-1] == f"named {H.ERR_LIMIT} {H.STATUS_ARMED} {H.FLAG_NOREPLY} {H.RESULT_ABORTED}"


# ---- a board built from another schema ---------------------------------------------------------
def _other_schema() -> F.Schema:
    """The board's table with SWEEP_BEGIN changed, SWEEP_ABORT gone and a new command."""
    raw = tomllib.loads(SCHEMA.read_text())
    msgs = [m for m in raw["message"] if m["name"] != "SWEEP_ABORT"]
    for m in msgs:
        if m["name"] == "SWEEP_BEGIN":
            m["fields"] = m["fields"] + ["settle_ns:u32"]
    msgs.append({"id": 0x0F, "name": "SWEEP_PAUSE", "kind": "cmd", "fields": ["sweep_id:u16"],
                 "reply": "ACK"})
    raw["message"] = msgs
    return F.Schema.from_toml(raw)


class FirmwarePort:
    """A Port whose other end is a `Firmware` in this process."""

    def __init__(self, fw: Firmware) -> None:
        self.fw = fw
        self.timeout = 0
        self.inbox = bytearray()
        self.r, self.w = os.pipe()

    def fileno(self) -> int:
        return self.r

    def read(self, size: int = 1) -> bytes:
        data = bytes(self.inbox[:size])
        del self.inbox[:size]
        if data and not self.inbox:
            os.read(self.r, 1 << 16)
        return data

    def write(self, data: bytes) -> int:
        out = b"".join(self.fw.receive(data))
        if out:
            if not self.inbox:
                os.write(self.w, b"x")
            self.inbox += out
        return len(data)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def _open(fw: Firmware) -> Board:
    return Board(FirmwarePort(fw), BoardOptions(heartbeat=False, timeout_s=0.2, retries=1))


def test_identity_serves_the_schema_and_identify_works_before_hello() -> None:
    fw = Firmware(BoardConfig(), LinearDevice(0))
    port = FirmwarePort(fw)
    port.write(H.build("IDENTIFY", 1, page=0))
    (f,) = H.FrameDecoder().feed(bytes(port.inbox))
    assert f.name == "IDENTITY"
    port.close()
    with _open(Firmware(BoardConfig(), LinearDevice(0))) as board:
        assert board.identity["schema"] == H.SCHEMA_TEXT.split("\n")
        assert board.identity["protocol"] == {"major": 1, "minor": H.PROTOCOL_MINOR, "schema_hash": H.SCHEMA_HASH}


def test_a_board_with_another_schema_is_refused_naming_the_messages_that_differ() -> None:
    other = _other_schema()
    assert other.hash != H.SCHEMA_HASH
    fw = Firmware(BoardConfig(), LinearDevice(0), protocol=other)
    with pytest.raises(IncompatibleBoard) as e:
        _open(fw)
    text = str(e.value)
    assert f"schema 0x{other.hash:08x}" in text and f"schema 0x{H.SCHEMA_HASH:08x}" in text
    begin = H.SCHEMA["SWEEP_BEGIN"].canonical()
    assert (f"SWEEP_BEGIN: board [{other.by_name['SWEEP_BEGIN'].canonical()}] vs host [{begin}]"
            in text)
    assert "SWEEP_PAUSE: board only [0f SWEEP_PAUSE cmd [sweep_id:u16] [] 0]" in text
    assert f"SWEEP_ABORT: host only [{H.SCHEMA['SWEEP_ABORT'].canonical()}]" in text
    for same in ("HELLO", "SET", "RESULT", "IDENTITY"):
        assert f"{same}:" not in text
    assert not fw.connected


def test_schema_difference_lists_added_removed_and_changed() -> None:
    host = ["dnpu-bench-protocol 1", "01 A cmd [] [] 0", "02 B cmd [x:u8] [] 0", "03 C reply [] [] 0"]
    board = ["dnpu-bench-protocol 1", "01 A cmd [] [] 0", "02 B cmd [x:u16] [] 0", "04 D reply [] [] 0"]
    assert H.schema_difference(board, host) == [
        "B: board [02 B cmd [x:u16] [] 0] vs host [02 B cmd [x:u8] [] 0]",
        "C: host only [03 C reply [] [] 0]",
        "D: board only [04 D reply [] [] 0]"]
    assert H.schema_difference(host, host) == []
    assert H.schema_difference(["dnpu-bench-protocol 2"] + host[1:], host) == [
        "protocol: board ['dnpu-bench-protocol 2'] vs host ['dnpu-bench-protocol 1']"]
