"""In-the-loop training: the board's forward pass with the surrogate's backward pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from host.board import Board
from host.experiments.board_session import BoardSession
from host.experiments.errors import ExperimentError
from host.experiments.ring_loop import LoopConfig, fine_tune_on_board
from host.experiments.surrogates import load_surrogate
from host.networks.classifiers import DNPUNet
from host.networks.in_loop import BoardLoop, clip_to_limits, fine_tune_twin, on_board

SURROGATE = "models/surrogate.onnx"
#: the shipped surrogate as a noise-free board: what it measures is what the surrogate says
#: (to the ADC's resolution), so the loop's gradient can be checked against finite differences
CLEAN_TWIN = f"sim://?device=surrogate&model={SURROGATE}&noise=0"


@pytest.fixture(scope="module")
def sur():
    return load_surrogate(SURROGATE, engine="core", threads=1)


def _net(sur, trials: int = 2, seed: int = 0, nodes: tuple[int, ...] = (2, 2, 1)) -> DNPUNet:
    net = DNPUNet(sur.model, sur.ranges_v, trials, nodes=nodes, data_electrodes=(2, 4),
                  generator=torch.Generator().manual_seed(seed))
    net.calibrate(torch.as_tensor(np.random.default_rng(seed).uniform(-1, 1, (64, 2)), dtype=torch.float32))
    return net


def test_gradient_through_the_board_matches_finite_differences_of_the_measured_loss(sur):
    """d loss / d controls from the loop equals the slope of the loss measured on a clean twin.

    One DNPU (a deeper network's loss folds at the millivolt scale, below what a DAC step resolves)."""
    net = DNPUNet(sur.model, sur.ranges_v, 1, nodes=(1,), data_electrodes=(2, 4),
                  generator=torch.Generator().manual_seed(0))
    net.eval()
    x = torch.as_tensor(np.random.default_rng(1).uniform(-1, 1, (48, 2)), dtype=torch.float32)
    w = torch.as_tensor(np.random.default_rng(2).normal(size=48), dtype=torch.float32)
    with Board.open(CLEAN_TWIN) as board:
        loop = BoardLoop(lambda v: board.measure(v), sur.model,
                         applied=lambda v: board.codes_to_volts(board.volts_to_codes(v)))

        def loss() -> torch.Tensor:
            with on_board(net, loop):
                return (net(x)[0] * w).mean()

        net.zero_grad()
        loss().backward()
        grad = torch.cat([layer.control.grad.reshape(-1) for layer in net.layers]).numpy()
        assert np.abs(grad).max() > 0.1, "a degenerate network would make the check vacuous"
        params = [(layer, k) for layer in net.layers for k in range(layer.control.numel())]
        rng = np.random.default_rng(3)
        picked = rng.permutation(len(params))
        h = 0.005
        fd, an = [], []
        for i in picked:
            layer, k = params[i]
            flat = layer.control.data.view(-1)
            base = float(flat[k])
            with torch.no_grad():
                flat[k] = base + h
                up = float(loss())
                flat[k] = base - h
                down = float(loss())
                flat[k] = base
            fd.append((up - down) / (2 * h))
            an.append(grad[i])
    fd, an = np.array(fd), np.array(an)
    scale = np.abs(an).max()
    np.testing.assert_allclose(an, fd, rtol=0.2, atol=0.05 * scale)   # kinks of the ReLU surrogate within +-h
    assert np.corrcoef(an, fd)[0, 1] > 0.98
    assert loop.account.points > 0 and loop.account.board_s > 0


def test_on_board_swaps_the_surrogate_and_restores_it(sur):
    net = _net(sur)
    for layer in net.layers:
        layer.noise_std_na = 1.5
    calls = []

    def measure(v: np.ndarray) -> np.ndarray:
        calls.append(len(v))
        return np.full(len(v), 2.0)

    loop = BoardLoop(measure, sur.model)
    x = torch.zeros(5, 2)
    with on_board(net, loop):
        net.train()
        out = net(x)
        assert all(layer.noise_std_na == 0.0 for layer in net.layers)   # the board brings its own noise
    assert torch.all(out == 2.0)
    assert calls == [2 * 5 * 2, 2 * 5 * 2, 2 * 5 * 1]      # one sweep per layer, all trials at once
    assert loop.account.points == sum(calls) and loop.account.calls == 3
    assert all(layer.noise_std_na == 1.5 for layer in net.layers)
    assert not torch.allclose(net(x), out)                     # the surrogate again


def test_steps_outside_the_limits_are_clipped_and_counted(sur):
    net = _net(sur, trials=1)
    limits = sur.ranges_v.copy()
    limits[:, 1] -= 0.1                                        # a board with tighter limits
    with torch.no_grad():
        net.layers[0].control += 5.0
    n = clip_to_limits(net, limits)
    assert n == net.layers[0].control.numel()
    ctrl = net.layers[0].control.detach().numpy()[0]
    hi = limits[list(net.layers[0].control_electrodes), 1]
    np.testing.assert_allclose(ctrl, np.broadcast_to(hi, ctrl.shape), atol=1e-6)
    assert clip_to_limits(net, limits) == 0


def test_small_ring_fine_tuning_improves_its_measured_training_loss(sur):
    """Weak off-chip starts, fine-tuned on the virtual device: the measured loss falls, every
    state sent is inside the limits, and the chosen network is calibrated on the board."""
    from host.experiments.ring import ring_data

    rng = np.random.default_rng(0)
    x, y = ring_data(60, 0.1, rng)
    data = {"x_train": x, "y_train": y}
    cands = [_net(sur, trials=1, seed=s) for s in range(3)]
    with BoardSession("sim://?seed=0", limit_policy="refuse") as session:
        out = fine_tune_on_board(session, sur, cands, data, alpha=1.0,
                                 cfg=LoopConfig(candidates=3, epochs=25, lr=0.01, select_passes=3))
        assert not [w for w in session.warnings if "outside the board limits" in w]
    assert out.error is None and len(out.history) == 26
    first, last = out.history[0], out.history[-1]
    assert last["loss"] < first["loss"] - 0.05 * abs(first["loss"])
    best_start = max(first["train_accuracy"])
    assert out.selection["round2"]["winner_train_accuracy"] >= out.selection["round2"]["off_chip_train_accuracy"] - 0.05 or out.kept_off_chip
    assert out.best.trials == 1 and 0 <= out.chosen_candidate < 3
    a = out.account
    assert a["points"] == session.samples and a["board_s"] > 0 and a["host_s"] > 0
    # the stored statistics are the measured ones (the surrogate's differ from the device's)
    assert float(out.best.norms[0].var.sum()) > 0


def test_a_board_that_drops_mid_epoch_keeps_the_history_and_ends_at_zero_volts(sur, monkeypatch):
    from host.board.errors import BoardDisconnected
    from host.experiments.ring import ring_data

    x, y = ring_data(20, 0.1, np.random.default_rng(0))
    cands = [_net(sur, trials=1, seed=s) for s in range(2)]
    start = [c.controls(0) for c in cands]
    real = Board.measure
    calls = {"n": 0}

    def flaky(self, volts, **kw):
        calls["n"] += 1
        if calls["n"] > 3 * 4 + 1:        # four epochs of three layers, then the cable goes mid-epoch
            raise BoardDisconnected("cable pulled (test)")
        return real(self, volts, **kw)

    with BoardSession("sim://?seed=0") as session:
        monkeypatch.setattr(Board, "measure", flaky)
        out = fine_tune_on_board(session, sur, cands, {"x_train": x, "y_train": y}, 1.0,
                                 LoopConfig(candidates=2, epochs=20, lr=0.01))
        monkeypatch.setattr(Board, "measure", real)
        np.testing.assert_allclose(session.board.outputs()["target"], 0.0, atol=1e-3)
    assert out.error is not None and "cable pulled" in out.error
    assert len(out.history) == 4 and out.best is not None and out.best.trials == 1
    # the best controls so far: one of the states the loop measured, inside the ranges
    ctrl = out.best.controls(0)
    assert any(np.all(np.isfinite(c)) for c in ctrl) and len(ctrl) == len(start[0])


def test_the_twin_learns_from_the_states_the_loop_measured(sur):
    """Fine-tuning the surrogate on measured pairs lowers its error on held-out measured pairs."""
    rng = np.random.default_rng(0)
    centre = sur.ranges_v.mean(axis=1)
    half = (sur.ranges_v[:, 1] - sur.ranges_v[:, 0]) / 2
    v = centre + 0.3 * half * rng.uniform(-1, 1, (3000, 7))     # where a network operates
    with Board.open("sim://?seed=0") as board:
        cur = board.measure(v)
    model, rep = fine_tune_twin(sur.model.torch_model, v, cur)
    assert rep["held_out_rmse_na_after"] < rep["held_out_rmse_na_before"]
    assert model is not sur.model.torch_model
    with pytest.raises(ValueError, match="at least 10"):
        fine_tune_twin(sur.model.torch_model, v[:5], cur[:5])


def test_loop_config_is_validated():
    with pytest.raises(ValueError):
        LoopConfig(candidates=0)
    with pytest.raises(ValueError):
        LoopConfig(lr=0)
    with pytest.raises(ValueError, match="population"):
        LoopConfig(candidates=8, ga_generations=5, ga_population=4)
    assert LoopConfig(candidates=8, ga_generations=0, ga_population=4).ga_population == 4
    with pytest.raises(ValueError, match="significance"):
        LoopConfig(significance=-1)
    with pytest.raises(ValueError, match="claim passes"):
        LoopConfig(claim_passes=0)
    assert LoopConfig(select_passes=3).claim_train_passes == 3 and LoopConfig(claim_passes=40).claim_train_passes == 40


def test_the_loops_ga_runs_by_default_on_a_single_dnpu_only():
    from host.experiments.ring_loop import SINGLE_NODE_GA

    auto = LoopConfig()
    assert SINGLE_NODE_GA > 0 and auto.ga_for(1) == SINGLE_NODE_GA and auto.ga_for(3) == auto.ga_for(5) == 0
    assert LoopConfig(ga_generations=0).ga_for(1) == 0 and LoopConfig(ga_generations=7).ga_for(5) == 7
    with pytest.raises(ValueError, match="population"):     # the default GA needs room for the candidates
        LoopConfig(candidates=8, ga_population=4)


def test_the_sessions_loop_reports_the_volts_the_dacs_apply():
    with BoardSession("sim://?seed=0") as session:
        loop = session.in_loop(None)
        v = np.full((2, 7), 0.1234567)
        a = loop.applied(v)
        assert a.shape == v.shape and np.abs(a - v).max() < 1e-3 and not np.array_equal(a, v)
        assert loop.measure(v).shape == (2,)
    with pytest.raises(ExperimentError):
        with BoardSession("sim://?seed=0", limit_policy="refuse") as session:
            session.in_loop(None).measure(np.full((1, 7), 5.0))


def test_the_loops_ga_refines_the_candidates_on_the_board(sur):
    """The GA stage starts from the candidates' measured states, stays inside the limits (the
    session refuses anything outside), is counted, and its fittest join the selection."""
    from host.experiments.ring import ring_data

    x, y = ring_data(60, 0.1, np.random.default_rng(0))
    cands = [_net(sur, trials=1, seed=s, nodes=(1,)) for s in range(3)]
    cfg = LoopConfig(candidates=3, epochs=2, lr=0.01, select_passes=3, ga_generations=12, ga_population=16)
    with BoardSession("sim://?seed=0", limit_policy="refuse") as session:
        out = fine_tune_on_board(session, sur, cands, {"x_train": x, "y_train": y}, 1.0, cfg)
        assert not [w for w in session.warnings if "outside the board limits" in w]
    assert out.error is None and out.ga is not None
    ga = out.ga
    assert ga["generations"] == 12 and ga["seeded"] == 9 and ga["evaluations"] == 12 * 16
    assert ga["points"] == 12 * 16 * 120
    assert out.account["points"] >= ga["points"] + 3 * 120 * 3
    # the GA's fittest of its last generation beat the best start it was seeded with
    start_best = max(out.history[0]["train_accuracy"])
    assert ga["last_generation_best"][0] >= start_best
    assert [c for c in out.selection["contenders"] if c.startswith("GA of")] == [f"GA of candidate {i}" for i in range(3)]
    assert out.best.trials == 1


def test_a_board_that_drops_during_the_ga_keeps_the_best_state_and_ends_at_zero_volts(sur, monkeypatch):
    from host.board.errors import BoardDisconnected
    from host.experiments.ring import ring_data

    x, y = ring_data(30, 0.1, np.random.default_rng(0))
    cands = [_net(sur, trials=1, seed=s, nodes=(1,)) for s in range(2)]
    real = Board.measure
    calls = {"n": 0}

    def flaky(self, volts, **kw):
        calls["n"] += 1
        if calls["n"] > 3 + 4:            # three gradient epochs (one layer), four GA generations
            raise BoardDisconnected("cable pulled (test)")
        return real(self, volts, **kw)

    with BoardSession("sim://?seed=0") as session:
        monkeypatch.setattr(Board, "measure", flaky)
        out = fine_tune_on_board(session, sur, cands, {"x_train": x, "y_train": y}, 1.0,
                                 LoopConfig(candidates=2, epochs=2, lr=0.01, ga_generations=20, ga_population=8))
        monkeypatch.setattr(Board, "measure", real)
        np.testing.assert_allclose(session.board.outputs()["target"], 0.0, atol=1e-3)
    assert out.error is not None and "cable pulled" in out.error
    assert out.ga is not None and out.ga["generations"] == 4 and out.ga["error"]
    assert out.best is not None and out.best.trials == 1 and out.chosen_state in ("best epoch", "GA")
