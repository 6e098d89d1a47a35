"""The farm without a cluster: Ray is never imported, and addresses are checked before it would be."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from host.farm.boards import BoardSpec, device_key, name_from_url, parse_board, parse_boards
from host.farm.cluster import ClusterConfig, connect, parse_address
from host.farm.errors import FarmError

ROOT = Path(__file__).resolve().parents[3]
PY = sys.executable


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_importing_the_farm_and_its_cli_does_not_import_ray() -> None:
    r = _python("import sys, host.farm, host.farm.__main__ as m, host.farm.boards, host.farm.sampling, "
                "host.farm.tasks, host.farm.ring, host.farm.capacity, host.farm.cluster, host.farm.training, "
                "host.farm.validation\n"
                "m.build_parser()\n"
                "assert 'ray' not in sys.modules, 'ray imported'\nprint('ok')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_cli_without_cluster_measures_one_board_here_without_ray(tmp_path: Path) -> None:
    out = tmp_path / "data"
    r = _python("import sys\nfrom host.farm.__main__ import main\n"
                f"rc = main(['sample', '--board', 'sim://?seed=0&device=linear', '--n', '3000', '--chunk', '1000', "
                f"'--out', {str(out)!r}, '--no-progress', '--json'])\n"
                "assert 'ray' not in sys.modules, 'ray imported'\nprint('rc', rc)")
    assert r.returncode == 0, r.stderr
    assert "rc 0" in r.stdout
    from host.sample import store
    ds = store.load(out)
    assert sorted(ds.samples.index.tolist()) == list(range(3000))


def test_other_clis_do_not_import_ray() -> None:
    r = _python("import sys\nimport host.sample.__main__ as s, host.experiments.__main__ as e\n"
                "s.build_parser(); e.build_parser(['ring'])\n"
                "assert 'ray' not in sys.modules\nprint('ok')")
    assert r.returncode == 0, r.stderr


def test_cli_several_boards_without_cluster_is_one_clear_line(tmp_path: Path) -> None:
    r = subprocess.run([PY, "-m", "host.farm", "sample", "--board", "sim://?seed=1", "--board", "sim://?seed=2",
                        "--n", "10", "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--cluster local" in r.stderr


@pytest.mark.parametrize("text", ["", "ray://", "ray://host", "http://host:10001", "ray://host:99999", "localhost"])
def test_bad_addresses_are_refused_with_one_line(text: str) -> None:
    with pytest.raises(FarmError) as e:
        parse_address(text)
    assert "\n" not in str(e.value)


def test_address_forms() -> None:
    assert parse_address("local") == ("local", None, None)
    assert parse_address("auto") == ("auto", None, None)
    assert parse_address("ray://10.0.0.5:10001") == ("ray", "10.0.0.5", 10001)
    assert parse_address("ray://[::1]:10001") == ("ray", "::1", 10001)


def _closed_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_cluster_fails_fast_with_one_line() -> None:
    t = time.monotonic()
    with pytest.raises(FarmError) as e:
        connect(ClusterConfig(f"ray://127.0.0.1:{_closed_port()}", connect_timeout_s=2.0))
    assert "\n" not in str(e.value) and "cannot join" in str(e.value)
    with pytest.raises(FarmError, match="unknown host"):
        connect(ClusterConfig("ray://no-such-host.invalid:10001", connect_timeout_s=2.0))
    assert time.monotonic() - t < 30          # a bound against a hang, not a speed test


def test_cli_bad_cluster_address_exit_2_one_line() -> None:
    r = subprocess.run([PY, "-m", "host.farm", "info", "--cluster", f"ray://127.0.0.1:{_closed_port()}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot join the Ray cluster"), r.stderr


def test_board_names() -> None:
    assert parse_board("lab3=/dev/ttyACM0") == BoardSpec("lab3", "/dev/ttyACM0")
    assert parse_board("/dev/ttyACM0") == BoardSpec("ttyACM0", "/dev/ttyACM0")
    assert parse_board("sim://?seed=3&realtime").name == "sim-seed-3-realtime"
    assert parse_board("x=sim://?seed=3").url == "sim://?seed=3"
    assert parse_board("sim://?seed=3").resource == "board:sim-seed-3"
    assert name_from_url("socket://127.0.0.1:5000") == "socket-127.0.0.1-5000"
    with pytest.raises(FarmError, match="one actor per port"):
        parse_boards(["sim://?seed=1", "sim://?seed=1"])


def test_device_key_ignores_the_serial() -> None:
    a = {"serial": "A", "device": {"model": "m", "seed": 0}, "limits_v": [[0, 1]]}
    b = {"serial": "B", "device": {"seed": 0, "model": "m"}, "limits_v": [[0, 1]]}
    c = {"serial": "A", "device": {"model": "m", "seed": 1}, "limits_v": [[0, 1]]}
    assert device_key(a) == device_key(b) != device_key(c)


def test_map_chunks_here_and_chunk_store_resume(tmp_path: Path) -> None:
    import numpy as np

    from host.farm.tasks import ChunkStore, map_chunks

    seen: list[int] = []
    store = ChunkStore(tmp_path / "c", {"job": 1}, resume=False)
    r = map_chunks(_square, [1, 2, 3], None, store=store, on_result=lambda i, _: seen.append(i))
    assert [int(x["y"]) for x in r] == [1, 4, 9] and seen == [0, 1, 2]
    with pytest.raises(FarmError, match="--resume"):
        ChunkStore(tmp_path / "c", {"job": 1}, resume=False)
    with pytest.raises(FarmError, match="differ"):
        ChunkStore(tmp_path / "c", {"job": 2}, resume=True)
    again = map_chunks(_fail, [1, 2, 3], None, store=ChunkStore(tmp_path / "c", {"job": 1}, resume=True))
    assert [int(x["y"]) for x in again] == [1, 4, 9]           # nothing ran again
    assert isinstance(again[0]["y"], np.ndarray)


def _square(x: int) -> dict:
    import numpy as np
    return {"y": np.array(x * x)}


def _fail(x: int) -> dict:
    raise AssertionError("a stored chunk ran again")


def test_capacity_cli_here_gives_each_chip_its_own_search_and_resumes(tmp_path: Path) -> None:
    """Copies of one chip get the same search (a chunk's seed is its N and first labelling, not its
    device); another chip gets another; a resumed run reads its chunks and changes nothing."""
    import json

    from host.farm.__main__ import main

    chip0, chip5 = "models/surrogate.onnx", "models/chips/virtual-dnpu-meanfield-seed5.onnx"
    small = ["capacity", "--n-min", "4", "--n-max", "5", "--attempts", "2", "--epochs", "150", "--chunk", "4",
             "--engine", "torch", "--quiet", "--json", "--surrogate", f"{chip0},{chip5},{chip0}"]
    out = tmp_path / "cap"
    assert main([*small, "--data-electrodes", "1,2", "--out", str(out)]) == 0
    first = json.loads((out / "results.json").read_text())
    rows = first["devices"]
    assert [r["chip"] for r in rows] == ["virtual-dnpu-meanfield seed 0 (30 sites)",
                                         "virtual-dnpu-meanfield seed 5 (30 sites)",
                                         "virtual-dnpu-meanfield seed 0 (30 sites)"]
    strip = [{k: v for k, v in r.items() if k not in ("device", "solutions", "table")} for r in rows]
    assert strip[0] == strip[2] and strip[0] != strip[1]
    import numpy as np
    sol = [np.load(out / f"device-{d}" / "solutions.npz") for d in range(3)]
    assert np.array_equal(sol[0]["controls_5"], sol[2]["controls_5"])
    assert sol[0]["labels_5"].shape == (30, 5) and sol[0]["controls_5"].shape == (30, 5)
    assert main([*small, "--data-electrodes", "1,2", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["capacity"] for r in again["devices"]] == [r["capacity"] for r in rows]
    assert main([*small, "--data-electrodes", "1,2", "--out", str(out)]) == 2     # a second job: --resume asked


def test_capacity_cli_bad_electrodes_are_one_line(tmp_path: Path, capsys) -> None:
    from host.farm.__main__ import main

    base = ["capacity", "--surrogate", "models/surrogate.onnx,models/surrogate.onnx", "--out", str(tmp_path)]
    assert main([*base, "--data-electrodes", "1,2/0,3/1,4"]) == 2
    assert "3 data-electrode pairs for 2 surrogates" in capsys.readouterr().err
    assert main([*base, "--data-electrodes", "auto"]) == 2
    assert "screen with python -m host.experiments capacity --data-electrodes auto" in capsys.readouterr().err
