"""The command line: python -m host.board --port URL identify|set|measure|iv."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from core.electrodes import N_ELECTRODES


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host.board", *args], capture_output=True,
                          text=True, timeout=60)


def test_help_lists_commands() -> None:
    r = _cli("--help")
    assert r.returncode == 0
    for word in ("identify", "set", "measure", "iv", "sim://"):
        assert word in r.stdout


def test_identify_prints_json(linear_url) -> None:
    r = _cli("--port", linear_url, "identify")
    assert r.returncode == 0, r.stderr
    ident = json.loads(r.stdout)
    assert ident["channels"] == N_ELECTRODES and ident["serial"].startswith("SIM-")


def test_measure_csv_and_npy(tmp_path, linear_url, random_volts) -> None:
    v = random_volts(50)
    np.savetxt(tmp_path / "v.csv", v, delimiter=",")
    r = _cli("--port", linear_url, "measure", "--volts", str(tmp_path / "v.csv"),
             "--out", str(tmp_path / "out.npy"))
    assert r.returncode == 0, r.stderr
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (50, N_ELECTRODES + 1)
    bad = v.copy()
    bad[3, 6] = 1.0
    np.save(tmp_path / "bad.npy", bad)
    r = _cli("--port", linear_url, "measure", "--volts", str(tmp_path / "bad.npy"),
             "--out", str(tmp_path / "o.csv"))
    assert r.returncode == 1 and "e6 sample 3" in r.stderr


def test_iv_json_and_plot(tmp_path, linear_url) -> None:
    png = tmp_path / "iv.png"
    r = _cli("--port", linear_url, "iv", "--electrode", "3", "--points", "11", "--json",
             "--plot", str(png))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["electrode"] == "e3" and len(d["nA"]) == 11
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_set_rejects_bad_input(linear_url) -> None:
    r = _cli("--port", linear_url, "set", "0,0,0")
    assert r.returncode == 2 and f"{N_ELECTRODES} comma-separated" in r.stderr
