"""The capacity, ring and gates experiments: small runs end to end (simulated board), bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import torch

from host.experiments.__main__ import main  # noqa: E402
from host.experiments.board_session import BoardSession, check_controls
from host.experiments.errors import ExperimentError
from host.experiments.surrogates import load_surrogate
from host.experiments.ring import RingConfig, normalised_gap, ring_data, ring_radii  # noqa: E402

SURROGATE = "models/surrogate.onnx"
BOARD = "sim://?seed=0"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_small_capacity_run_on_surrogate_nn_and_board(tmp_path, capsys):
    out = tmp_path / "cap"
    rc = main(["capacity", "--n-min", "4", "--n-max", "5", "--attempts", "3", "--epochs", "300",
               "--systems", "surrogate,nn3,device", "--repeats", "5", "--out", str(out), "--quiet",
               "--threads", "1", "--board", BOARD])
    assert rc == 0
    res = _results(out)
    t = res["table"]
    assert [r["n"] for r in t["surrogate"]] == [4, 5]
    assert t["surrogate"][0]["capacity"] == 1.0          # 4 points: every labelling, easily
    assert t["nn3"][0]["capacity"] == 1.0
    assert t["device"][0]["labellings"] == 16 and t["device"][0]["capacity"] >= 0.75
    assert res["vc"]["surrogate"] >= 4
    assert (out / "capacity.png").stat().st_size > 0
    text = (out / "capacity_table.txt").read_text()
    assert "surrogate" in text and "device" in text and "VC" in text
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["capacity"]["attempts"] == 3 and cfg["run"]["args"]["board"] == BOARD


def test_ring_data_geometry():
    r0, r1 = ring_radii(0.1)
    assert r0 ** 2 == pytest.approx(1 - r1 ** 2) and r1 - r0 == pytest.approx(0.1)
    x, y = ring_data(200, 0.1, np.random.default_rng(1))
    r = np.hypot(x[:, 0], x[:, 1])
    assert (y == 0).sum() == (y == 1).sum() == 200
    assert r[y == 0].max() <= r0 + 1e-6 and r[y == 1].min() >= r1 - 1e-6 and r.max() <= 1 + 1e-6
    x2, _ = ring_data(200, 0.1, np.random.default_rng(1))
    np.testing.assert_array_equal(x, x2)                 # seedable
    # 6.25 mV on electrodes spanning 1.8 V: a gap of 6.25e-3 / 0.9 in normalised units
    ranges = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)
    assert normalised_gap(6.25, ranges, (1, 2)) == pytest.approx(6.25e-3 / 0.9)
    with pytest.raises(ValueError, match="gap"):
        RingConfig(gap_mv=-1)


def test_ring_validation_split_is_drawn_last_and_disjoint():
    from host.experiments.ring import ring_splits

    with_val = ring_splits(RingConfig(n_per_class=30, val_per_class=40, seed=3), 0.1)
    without = ring_splits(RingConfig(n_per_class=30, val_per_class=0, seed=3), 0.1)
    assert "x_val" not in without and with_val["x_val"].shape == (80, 2) and with_val["y_val"].sum() == 40
    for k in ("x_train", "y_train", "x_test", "y_test"):       # a seed's train and test sets stay the same
        np.testing.assert_array_equal(with_val[k], without[k])
    rows = {tuple(r) for r in with_val["x_train"]} | {tuple(r) for r in with_val["x_test"]}
    assert not rows & {tuple(r) for r in with_val["x_val"]}
    with pytest.raises(ValueError, match="val_per_class"):
        RingConfig(val_per_class=2)


def test_ring_confirmation_split_comes_after_the_validation_split_and_is_disjoint():
    from host.experiments.ring import ring_splits

    both = ring_splits(RingConfig(n_per_class=30, val_per_class=40, confirm_per_class=50, seed=3), 0.1)
    no_confirm = ring_splits(RingConfig(n_per_class=30, val_per_class=40, confirm_per_class=0, seed=3), 0.1)
    assert "x_confirm" not in no_confirm and both["x_confirm"].shape == (100, 2) and both["y_confirm"].sum() == 50
    for k in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val"):   # earlier splits do not move
        np.testing.assert_array_equal(both[k], no_confirm[k])
    seen = {tuple(r) for k in ("x_train", "x_test", "x_val") for r in both[k]}
    assert not seen & {tuple(r) for r in both["x_confirm"]}
    with pytest.raises(ValueError, match="confirm_per_class"):
        RingConfig(confirm_per_class=3)


def test_one_logistic_neuron_fitted_on_pooled_passes_scores_each():
    import torch

    from host.networks.logistic import fitted_correct

    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    clean = torch.tensor([[1.0, 2.0, 8.0, 9.0]])
    noisy = torch.tensor([[1.0, 6.0, 4.0, 9.0]])        # the middle two swapped sides of the threshold
    passes = torch.cat([clean, clean, clean, noisy], dim=1)
    right = fitted_correct(passes, y.repeat(4)[None], passes, y.repeat(4)[None]).reshape(4, 4)
    assert right[:3].sum() == 12 and right[3].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_small_ring_run_validates_on_the_board_and_exports(tmp_path):
    out = tmp_path / "ring"
    rc = main(["ring", "--trials", "4", "--chunk", "2", "--epochs", "40", "--n-per-class", "12",
               "--noise-draws", "2", "--board-runs", "2", "--out", str(out), "--quiet", "--threads", "1"])
    assert rc == 0
    res = _results(out)
    for name in ("single", "2-2-1"):
        a = res["archs"][name]
        assert len(a["fisher"]) == 4 and "predicted_board_accuracy" in a["best"]
        b = res["board"][name]
        assert len(b["runs"]) == 2 and b["accuracy_mean"] == pytest.approx(np.mean(b["runs"]))
        # each board run scores 2 x 12 test points: the accuracy is a multiple of 1/24
        assert all(abs(r * 24 - round(r * 24)) < 1e-9 for r in b["runs"])
    assert (out / "ring_histograms.png").exists() and (out / "ring_violins.png").exists()
    for key in ("nn2", "nn3"):
        nb = res["nn_baselines"][key]
        assert nb["trials"] == 4 and nb["test_accuracy"] <= nb["max_test_accuracy"]
    exp = res["export"]
    assert exp["format"] == "network-onnx" and Path(exp["path"]).exists(), exp
    from core.io import load_network
    net = load_network(exp["path"])
    assert net.n_inputs == 2 and net.n_outputs == 2


def test_ring_nn_baseline_with_three_hidden_units_learns_the_ring():
    from host.experiments.ring import nn_baseline

    cfg = RingConfig()
    rng = np.random.default_rng(3)
    gap = normalised_gap(cfg.gap_mv, np.array([[-1.2, 0.6]] * 7), cfg.data_electrodes)
    x_tr, y_tr = ring_data(100, gap, rng)
    x_te, y_te = ring_data(100, gap, rng)
    r = nn_baseline(3, cfg, {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}, trials=40)
    assert r["trials"] == 40 and r["train_accuracy"] >= r["test_accuracy"] - 0.05
    assert r["test_accuracy"] > 0.93        # three logistic units can enclose the disc


def test_exported_221_matches_the_torch_network(tmp_path):
    from core.io import load_network, write_network

    from host.networks.classifiers import DNPUNet

    sur = load_surrogate(SURROGATE)
    net = DNPUNet(sur.model, sur.ranges_v, trials=3, nodes=(2, 1), generator=torch.Generator().manual_seed(0))
    x = torch.as_tensor(ring_data(20, 0.05, np.random.default_rng(0))[0])
    net.calibrate(x)
    net.eval()
    with torch.no_grad():
        z = net.standardised(net(x))[1].numpy()
    path = write_network(tmp_path / "n.onnx", 2, net.to_core_layers(1, (1.5, -0.2)), SURROGATE, {})
    got = load_network(path).evaluate(x.numpy())[:, 0]
    np.testing.assert_allclose(got, 1.5 * z - 0.2, atol=2e-3)


def test_a_gate_on_the_simulated_board(tmp_path):
    out = tmp_path / "gates"
    rc = main(["gates", "--gates", "NAND,XOR", "--trials", "6", "--epochs", "400", "--repeats", "10",
               "--out", str(out), "--quiet", "--threads", "1"])
    assert rc == 0
    res = _results(out)["gates"]
    for g in ("NAND", "XOR"):
        assert res[g]["surrogate_ok"], res[g]
        cur, truth = np.array(res[g]["surrogate_currents_na"]), np.array(res[g]["truth_table"])
        m = max(cur[truth == 1].min() - cur[truth == 0].max(), cur[truth == 0].min() - cur[truth == 1].max())
        assert m == pytest.approx(res[g]["surrogate_margin_na"], abs=1e-3)   # the kept solution is the scored one
        assert len(res[g]["board_currents_mean_na"]) == 4
    assert res["NAND"]["board_ok"], res["NAND"]
    assert (out / "gates.png").exists()


# ---- bad inputs ---------------------------------------------------------------------------------

def test_wrong_surrogate_files_give_clear_errors(tmp_path, capsys):
    assert main(["gates", "--surrogate", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "o"), "--no-board"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    assert main(["ring", "--surrogate", str(bad), "--out", str(tmp_path / "o"), "--no-board"]) == 2
    assert "not a usable DNPU surrogate" in capsys.readouterr().err
    with pytest.raises(ExperimentError, match="does not exist"):
        load_surrogate(tmp_path / "missing.onnx")


def test_bad_configs_are_refused(tmp_path, capsys):
    assert main(["capacity", "--systems", "surrogate,quantum", "--out", str(tmp_path / "o")]) == 2
    assert "--systems" in capsys.readouterr().err
    assert main(["ring", "--gap-mv", "-3", "--out", str(tmp_path / "o"), "--no-board"]) == 2
    assert "gap_mv" in capsys.readouterr().err
    assert main(["ring", "--nn-baselines", "2,x", "--out", str(tmp_path / "o"), "--no-board"]) == 2
    assert "--nn-baselines" in capsys.readouterr().err
    assert main(["gates", "--gates", "AND,MAYBE", "--out", str(tmp_path / "o"), "--no-board"]) == 2
    assert "--gates" in capsys.readouterr().err
    assert main(["gates", "--low", "0.5", "--high", "-0.5", "--out", str(tmp_path / "o"), "--no-board"]) == 2
    assert "--low" in capsys.readouterr().err
    assert main(["capacity", "--n-min", "8", "--n-max", "4", "--out", str(tmp_path / "o")]) == 2


def test_out_of_range_controls_are_clipped_with_a_warning_or_refused():
    limits = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)
    v = np.array([[0.0, 0.0, 0.0, 0.7, 0.0, 0.0, -0.75]])
    warn: list[str] = []
    with pytest.warns(UserWarning, match="clipped"):
        c = check_controls(v, limits, "clip", "test", warn)
    np.testing.assert_allclose(c, [[0, 0, 0, 0.6, 0, 0, -0.7]])
    assert warn and "2 voltages outside" in warn[0]
    with pytest.raises(ExperimentError, match="refused"):
        check_controls(v, limits, "refuse", "test", [])
    with pytest.raises(ExperimentError, match="non-finite"):
        check_controls(np.full((1, 7), np.nan), limits, "clip", "test", [])


def test_board_refuses_before_sending_and_disconnect_leaves_it_at_zero_volts():
    from host.board.errors import BoardDisconnected

    with BoardSession(BOARD, limit_policy="refuse") as s:
        with pytest.raises(ExperimentError, match="refused"):
            s.measure(np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9]]))
        assert s.samples == 0
        cur = s.measure(np.full((3, 7), 0.1))
        assert cur.shape == (3,) and s.samples == 3
        s.board.set(np.full(7, 0.2), ramp=False)
        real = s.board.measure

        def dropped(v, **kw):
            raise BoardDisconnected("cable pulled (test)")

        s.board.measure = dropped
        with pytest.raises(ExperimentError, match="failed during validation after 3 samples"):
            s.measure(np.zeros((2, 7)))
        s.board.measure = real
        np.testing.assert_allclose(s.board.outputs()["target"], 0.0, atol=1e-3)


def test_disconnect_mid_ring_validation_keeps_the_runs_so_far(tmp_path, monkeypatch, capsys):
    from host.board.errors import BoardDisconnected
    from host.board import Board

    from host.experiments.ring import ARCHS

    calls = {"n": 0}
    real = Board.measure
    layers = len(ARCHS["2-2-1"])          # one board pass per layer

    def flaky(self, volts, **kw):
        calls["n"] += 1
        if calls["n"] > 2 * layers:       # the train pass + one test run, then the link drops
            raise BoardDisconnected("port went away (test)")
        return real(self, volts, **kw)

    monkeypatch.setattr(Board, "measure", flaky)
    out = tmp_path / "ring"
    rc = main(["ring", "--archs", "2-2-1", "--trials", "2", "--chunk", "2", "--epochs", "10", "--n-per-class", "8",
               "--noise-draws", "2", "--board-runs", "5", "--board-train-runs", "1", "--out", str(out), "--quiet",
               "--threads", "1"])
    assert rc == 2
    assert "failed during validation" in capsys.readouterr().err
    res = _results(out)
    assert "error" in res and len(res["board"]["2-2-1"]["runs"]) == 1
    assert "predicted_board_accuracy" in res["archs"]["2-2-1"]["best"]


def test_float32_rounding_at_a_limit_is_not_a_violation():
    limits = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)
    v = np.array([[np.float32(0.6), 0.0, 0.0, 0.0, np.float32(-1.2), 0.0, np.float32(0.3)]], dtype=np.float64)
    warn: list[str] = []
    out = check_controls(v, limits, "refuse", "test", warn)
    assert not warn and np.all(out <= limits[:, 1]) and np.all(out >= limits[:, 0])


def test_board_noise_adds_the_model_error_to_the_averaged_floor():
    from host.experiments.ring import board_noise_std

    sur = load_surrogate(SURROGATE)
    assert board_noise_std(sur, 1) == pytest.approx(sur.test_rmse_na)
    err2 = sur.test_rmse_na ** 2 - sur.noise_floor_na ** 2
    assert board_noise_std(sur, 4) == pytest.approx(np.sqrt(err2 + sur.noise_floor_na ** 2 / 4))


def test_ring_trained_on_the_board_reports_the_loop_and_its_accounting(tmp_path, capsys):
    out = tmp_path / "ring"
    rc = main(["ring", "--archs", "2-2-1", "--trials", "4", "--chunk", "4", "--epochs", "20", "--n-per-class", "20",
               "--noise-draws", "2", "--board-runs", "3", "--nn-baselines", "", "--prune-at", "",
               "--train-on", "board", "--loop-candidates", "2", "--loop-epochs", "4", "--learn-twin",
               "--loop-ga", "3", "--loop-ga-population", "8", "--val-per-class", "20", "--confirm-per-class", "30",
               "--out", str(out), "--quiet", "--threads", "1"])
    assert rc == 0
    res = _results(out)
    loop = res["in_loop"]["2-2-1"]
    twin = loop["twin"]                  # the surrogate fine-tuned on the loop's states, as a file of its own
    assert twin["states"] > 0 and load_surrogate(twin["path"]).metadata["fine_tuned_from"] == SURROGATE
    assert len(loop["history"]) == 5 and loop["candidates"] and len(loop["candidates"]) == 2
    a = loop["account"]
    assert a["points"] > 0 and a["board_s"] > 0 and a["host_s"] >= 0
    # every epoch measured the two candidates' five nodes on all 40 training points
    assert loop["history"][1]["points"] - loop["history"][0]["points"] == 2 * 40 * 5
    ga = loop["ga"]                       # the GA after the epochs: 8 candidates x 5 nodes x 40 points a generation
    assert ga["generations"] == 3 and ga["seeded"] == 6 and ga["points"] == 3 * 8 * 40 * 5
    assert sum(c.startswith("GA of") for c in loop["selection"]["contenders"]) == 2
    assert "accuracy_mean" in loop["board"] and loop["off_chip_board_accuracy"] == res["board"]["2-2-1"]["accuracy_mean"]
    assert loop["selection"]["round2"]["required_sigmas"] > 0 and loop["selection"]["split"] == "validation"
    # the winner is confirmed against the off-chip network on the fourth split's 60 points
    assert loop["selection"]["confirmation_split"] == "confirmation"
    assert loop["selection"]["round2"]["confirmation_points"] == 60 and loop["loop_claim"]["selection_split"] == "confirmation"
    assert loop["selection"]["round2"]["train_passes"] == 40       # the claim is fitted as the validation fits
    claim = loop["loop_claim"]            # what the loop measured for its network, and the validation's figure
    assert 0 <= claim["train_accuracy_in_loop"] <= 1 and 0 <= claim["validation_accuracy_in_loop"] <= 1
    assert claim["difference_points"] == pytest.approx(100 * (claim["train_accuracy_validated"]
                                                              - claim["train_accuracy_in_loop"]))
    assert res["board"]["2-2-1"]["train_runs"] == 40
    assert (out / "ring_board_time.png").is_file() and (out / "ring_2-2-1.onnx").is_file()
    assert "in the loop: board" in capsys.readouterr().out


def test_a_twin_written_from_the_loop_keeps_the_amplified_currents(tmp_path):
    from host.experiments.ring import write_twin
    from host.surrogate.torch_model import predict

    sur = load_surrogate("models/twins/seed7_wide.onnx", engine="torch")     # amplification 28.5
    path = write_twin(tmp_path / "t.onnx", sur.model, sur, {"states": 0})
    again = load_surrogate(path, engine="torch")
    v = np.random.default_rng(0).uniform(sur.ranges_v[:, 0], sur.ranges_v[:, 1], (64, 7)).astype(np.float32)
    np.testing.assert_allclose(predict(again.model, v), predict(sur.model, v), rtol=1e-5, atol=1e-3)
    assert again.metadata["amplification"] == 1.0 and again.metadata["fine_tuned_from"].endswith("seed7_wide.onnx")
    np.testing.assert_array_equal(again.ranges_v, sur.ranges_v)


def test_ring_on_the_board_needs_a_board(tmp_path, capsys):
    rc = main(["ring", "--train-on", "board", "--no-board", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 2 and "needs the board" in capsys.readouterr().err


def test_the_rings_test_gain_is_paired_over_the_test_points():
    from host.experiments.ring import paired_test_gain

    y = np.array([0, 1, 0, 1])
    right = np.where(y > 0.5, 1.0, -1.0)                        # logits that classify every point right
    old = {"test_logits": np.stack([right * [1, 1, -1, -1]] * 3)}  # the last two points wrong in every run
    new = {"test_logits": np.stack([right, right * [1, 1, 1, -1], right])}  # the last point wrong in one run
    gain, se = paired_test_gain(new, old, y)
    per_point = np.array([0.0, 0.0, 1.0, 2 / 3])
    assert gain == pytest.approx(per_point.mean()) and se == pytest.approx(per_point.std(ddof=1) / 2)
