"""The native port as a process: how sim://?firmware=native starts it, what it refuses, and that it
never outlives its host. (The host driver's conformance tests run against it in tests/host/board,
parametrised over firmware=python|native.)"""
from __future__ import annotations

import subprocess
import sys

import pytest

from host.board import Board, BoardError

from fake_board import NATIVE_BINARY


def test_the_native_binary_is_built() -> None:
    assert NATIVE_BINARY.exists(), "run `make firmware`"


def test_native_serves_the_same_seeded_board_identity() -> None:
    q = "seed=4&device=linear"
    with Board.open(f"sim://?{q}") as py, Board.open(f"sim://?{q}&firmware=native") as c:
        a, b = py.identity, c.identity
    assert b["firmware"].startswith("dnpu-bench-native") and a["serial"] == b["serial"]
    for k in set(a) - {"firmware", "model"}:
        assert a[k] == b[k], k


def test_native_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(BoardError, match=r"firmware=native needs fifo_blocks in 1\.\.512"):
        Board.open("sim://?firmware=native&device=null&fifo_blocks=600")
    with pytest.raises(BoardError, match="firmware='rust' is not one of python, native"):
        Board.open("sim://?firmware=rust")


def test_native_exits_when_its_stdin_closes() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--pty", "--exit-on-stdin-eof",
                             "--options", "firmware=native&device=null"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().decode().startswith("/dev/")
    proc.stdin.close()
    assert proc.wait(timeout=5) == 0
    proc.stdout.close()
