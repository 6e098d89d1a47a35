"""Boards carrying several DNPUs (protocol 1.2): K x 7 DAC channels, K readouts, one sweep row
setting every device at once; `devices=K` and `chips=` on the simulated board, served by every
firmware (the Python simulator, the C firmware's native port and its qemu image)."""
from __future__ import annotations

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim.__main__ import build_parser, configure
from firmware_sim.devices import DeviceArray, make_device
from firmware_sim.physics import VirtualDNPU
from host.board import Board, LimitError, RemoteLimitError

SEED = 3
#: three deterministic linear devices, chips 3, 4 and 5, no DAC errors
LINEAR3 = f"sim://?seed={SEED}&devices=3&device=linear&dac_gain_error=0&dac_offset_error_mv=0"


@pytest.fixture(scope="module")
def board3(served_by):
    with Board.open(served_by(LINEAR3)) as b:
        yield b


def _configure(query: str):
    return configure(build_parser().parse_args(["--pty", "--options", query]))


def test_identity_names_every_device_and_its_limits(board3: Board, linear_url: str) -> None:
    ident = board3.identity
    assert ident["n_devices"] == 3 and ident["channels"] == 3 * N_ELECTRODES
    assert [d["device"]["seed"] for d in ident["devices"]] == [3, 4, 5]
    assert ident["device"] == ident["devices"][0]["device"]      # identity["device"] keeps its meaning
    assert board3.n_devices == 3 and board3.device_limits_v.shape == (3, N_ELECTRODES, 2)
    np.testing.assert_array_equal(board3.limits_v, board3.device_limits_v[0])
    # a RESULT frame carries three codes per sample, so a block holds a third of the samples of
    # the same firmware's one-device board, and the sweep buffer a third of the rows
    with Board.open(linear_url) as one:
        assert one.n_devices == 1 and "devices" not in one.identity and "n_devices" not in one.identity
        assert ident["max_block_samples"] == one.identity["max_block_samples"] // 3
        assert ident["max_sweep_samples"] == one.identity["max_sweep_samples"] // 3
    assert 11 + 12 * ident["max_block_samples"] <= ident["max_payload"]


def test_one_row_drives_every_device(board3: Board, expected_linear, random_volts) -> None:
    v = np.stack([random_volts(1500, seed=s) for s in (1, 2, 3)], axis=1)       # [n, 3, 7]
    got = board3.measure_devices(v)
    assert got.shape == (1500, 3)
    for k in range(3):
        nominal = board3.codes_to_volts(board3.volts_to_codes(v[:, k], device=k), device=k)
        np.testing.assert_allclose(got[:, k], expected_linear(nominal, seed=SEED + k), atol=1e-9)
    # a subset, in any order: the same device gives the same current for the same volts
    sub = board3.measure_devices(v[:, [2, 0]], devices=[2, 0])
    np.testing.assert_allclose(sub, got[:, [2, 0]], atol=1e-9)


def test_measure_addresses_one_device_and_holds_the_others(board3: Board, expected_linear,
                                                           random_volts) -> None:
    board3.zero()
    board3.set([0.1, 0, 0, 0, 0, 0, -0.2], device=0, ramp=False)
    v = random_volts(400, seed=4)
    got = board3.measure(v, device=1)
    nominal = board3.codes_to_volts(board3.volts_to_codes(v, device=1), device=1)
    np.testing.assert_allclose(got, expected_linear(nominal, seed=SEED + 1), atol=1e-9)
    out = board3.outputs()
    assert out["target"].shape == (3 * N_ELECTRODES,)
    np.testing.assert_allclose(board3.outputs(device=0)["target"], [0.1, 0, 0, 0, 0, 0, -0.2], atol=1e-4)
    np.testing.assert_allclose(board3.outputs(device=1)["target"], nominal[-1], atol=1e-4)
    # device 0 was held where set() put it: measuring it alone gives what measure() gives
    np.testing.assert_allclose(board3.measure(v[:50]), expected_linear(
        board3.codes_to_volts(board3.volts_to_codes(v[:50]))), atol=1e-9)
    board3.zero()
    np.testing.assert_allclose(board3.outputs()["volts"], 0.0, atol=1e-4)


def test_set_devices_is_one_ramp(board3: Board) -> None:
    board3.zero()
    v = np.zeros((3, N_ELECTRODES))
    v[:, 0] = [0.1, 0.2, -0.3]
    t = board3.set_devices(v)
    assert 0.29 < t < 0.35              # the largest step (0.3 V) at the host ramp of 1 V/s
    np.testing.assert_allclose(board3.outputs()["volts"].reshape(3, N_ELECTRODES), v, atol=1e-4)
    board3.zero()


def test_bad_device_and_out_of_range_volts_are_refused(board3: Board, random_volts) -> None:
    v = random_volts(10, seed=5)
    with pytest.raises(ValueError, match="devices 0..2"):
        board3.measure(v, device=3)
    with pytest.raises(ValueError, match="distinct"):
        board3.measure_devices(np.stack([v, v], axis=1), devices=[1, 1])
    bad = np.stack([v, v, v], axis=1)
    bad[4, 2, 1] = 5.0
    with pytest.raises(LimitError, match="device 2"):
        board3.measure_devices(bad)
    with pytest.raises(LimitError, match=r"\[n, 3, 7\]"):
        board3.measure_devices(v)
    assert board3.status()["armed"]


def test_board_rejects_out_of_limit_codes_of_any_device(board3: Board) -> None:
    codes = np.full((1, 3 * N_ELECTRODES), board3.identity["zero_code"], np.uint16)
    codes[0, 2 * N_ELECTRODES + 1] = 65535          # device 2, e1: far past its limit
    with pytest.raises(RemoteLimitError, match="device 2 e1"):
        board3.sweeps.run(codes, 1, 10_000)
    assert board3.status()["armed"]


def test_chips_names_each_device_and_copies_have_their_own_noise() -> None:
    cfg, dev = _configure("seed=9&chips=0,0,2&n_sites=12")
    assert dev.chip_seeds(cfg.seed) == (0, 0, 2)
    arr = make_device(dev, cfg.seed)
    assert isinstance(arr, DeviceArray) and arr.n_devices == 3
    seeds = [m.describe["seed"] for m in arr.members]
    assert seeds == [0, 0, 2]
    single = VirtualDNPU.from_seed(0, 12)
    v = np.random.default_rng(0).uniform(-0.5, 0.3, (300, N_ELECTRODES))
    np.testing.assert_allclose(arr.members[0].steady_state_na(v), single.steady_state_na(v))  # chip 0 itself
    np.testing.assert_allclose(arr.members[1].steady_state_na(v), single.steady_state_na(v))  # its copy
    # device 0 is the board of seed 0 (same noise too); its copy draws other noise
    both = arr.convert(np.tile(v, (1, 3)), 1e-5)
    alone = single.convert(v, 1e-5)
    np.testing.assert_allclose(both[:, 0], alone)
    assert not np.allclose(both[:, 1], both[:, 0])
    _, dev5 = _configure("seed=5&devices=2&n_sites=12")
    assert dev5.chip_seeds(5) == (5, 6)


@pytest.mark.parametrize("query, words", [
    ("devices=0", "devices must be 1..16"), ("devices=17", "devices must be 1..16"),
    ("devices=2&chips=1,2,3", "chips= names 3"), ("chips=1,x", "cannot parse")])
def test_bad_device_options_are_refused_in_words(query: str, words: str) -> None:
    from host.board import BoardError
    with pytest.raises((ValueError, BoardError), match=words):
        Board.open(f"sim://?{query}")


def test_the_board_cli_addresses_one_device(capsys, expected_linear) -> None:
    import json

    from host.board.__main__ import main
    assert main(["--port", LINEAR3, "--device", "2", "iv", "--electrode", "0", "--points", "3", "--oversample", "1",
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    v = np.zeros((3, N_ELECTRODES))
    v[:, 0] = rep["volts"]
    np.testing.assert_allclose(rep["nA"], expected_linear(v, seed=SEED + 2), atol=0.02)
    assert main(["--port", LINEAR3, "--device", "3", "identify"]) == 2
    assert "devices 0..2" in capsys.readouterr().err
