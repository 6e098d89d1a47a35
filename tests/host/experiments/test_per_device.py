"""Gates and capacity on every device of a board of several chips: one surrogate per device, each
device's experiment trained through its own chip's surrogate and validated on that device only;
the chips are checked against the board before anything is trained."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.experiments.__main__ import main

CHIP0 = "models/surrogate.onnx"
CHIP5 = "models/chips/virtual-dnpu-meanfield-seed5.onnx"
GATES = ["gates", "--gates", "NAND", "--trials", "4", "--epochs", "200", "--repeats", "6", "--quiet",
         "--threads", "1"]

pytestmark = pytest.mark.usefixtures("keep_threads")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_gates_run_on_each_device_through_its_own_chips_surrogate(tmp_path: Path) -> None:
    out = tmp_path / "gates"
    rc = main([*GATES, "--board", "sim://?chips=0,5", "--surrogate", f"{CHIP0},{CHIP5}", "--out", str(out)])
    assert rc == 0
    summary = _json(out / "results.json")
    assert [c["checked"] for c in summary["chips"]] == [True, True]
    assert [r["device"] for r in summary["devices"]] == [0, 1]
    for d, path in enumerate((CHIP0, CHIP5)):
        res = _json(out / f"device-{d}" / "results.json")
        cfg = _json(out / f"device-{d}" / "config.json")
        assert cfg["surrogate"]["path"] == path                      # trained through its own chip's file
        assert res["chip"] == {**res["chip"], "device": d, "same": True}   # validated on its own device
        row = summary["devices"][d]
        nand = res["gates"]["NAND"]
        assert row["gates"]["NAND"]["board_worst_margin_na"] == nand["board_worst_margin_na"]
        assert row["board_gates_ok"] == int(nand["board_ok"])
    # the chips differ, so do their trained controls and measured currents
    c0, c1 = (_json(out / f"device-{d}" / "results.json")["gates"]["NAND"] for d in (0, 1))
    assert c0["control_voltages"] != c1["control_voltages"]
    assert (out / "gates_devices.png").stat().st_size > 0


def test_surrogates_in_the_wrong_order_are_refused_before_training(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gates"
    rc = main([*GATES, "--board", "sim://?chips=0,5", "--surrogate", f"{CHIP5},{CHIP0}", "--out", str(out)])
    assert rc == 2
    assert "was measured on virtual-dnpu-meanfield seed 5" in capsys.readouterr().err
    assert not (out / "device-0").exists()


def test_a_surrogate_count_other_than_the_boards_devices_is_refused(tmp_path: Path, capsys) -> None:
    rc = main([*GATES, "--board", "sim://?chips=0,5,0", "--surrogate", f"{CHIP0},{CHIP5}", "--out", str(tmp_path)])
    assert rc == 2
    assert "2 surrogates (one per device) for a board of 3 devices" in capsys.readouterr().err
    rc = main([*GATES, "--board", "sim://?chips=0,5", "--board-device", "1", "--surrogate", f"{CHIP0},{CHIP5}",
               "--out", str(tmp_path)])
    assert rc == 2
    assert "--board-device runs on one device" in capsys.readouterr().err


def test_gates_per_device_without_a_board_report_the_surrogates_margins(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gates"
    rc = main([*GATES, "--no-board", "--surrogate", f"{CHIP0},{CHIP5}", "--out", str(out)])
    assert rc == 0
    rows = _json(out / "results.json")["devices"]
    assert [r["chip"] for r in rows] == ["virtual-dnpu-meanfield seed 0 (30 sites)",
                                         "virtual-dnpu-meanfield seed 5 (30 sites)"]
    for d, r in enumerate(rows):
        want = _json(out / f"device-{d}" / "results.json")["gates"]["NAND"]["surrogate_margin_na"]
        assert r["gates"]["NAND"] == {"surrogate_margin_na": want}
    assert "surrogate margin / surrogate noise floor" in capsys.readouterr().out


def test_capacity_per_device_trains_the_nn_baselines_once(tmp_path: Path) -> None:
    out = tmp_path / "capacity"
    rc = main(["capacity", "--n-min", "4", "--n-max", "4", "--attempts", "2", "--epochs", "200", "--repeats", "6",
               "--board", "sim://?chips=0,5", "--surrogate", f"{CHIP0},{CHIP5}", "--out", str(out), "--quiet",
               "--threads", "1"])
    assert rc == 0
    tables = [_json(out / f"device-{d}" / "results.json")["table"] for d in (0, 1)]
    assert {"nn2", "nn3", "device"} <= set(tables[0]) and "nn2" not in tables[1] and "device" in tables[1]
    rows = _json(out / "results.json")["devices"]
    for d, r in enumerate(rows):
        dev = tables[d]["device"][0]
        assert r["capacity"]["device"] == {"4": dev["capacity"]}
        assert _json(out / f"device-{d}" / "results.json")["board"]["chip"]["device"] == d
