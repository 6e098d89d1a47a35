"""Capacity experiment building blocks and a small trial-batched run."""
from __future__ import annotations

import numpy as np
import pytest

import torch

from host.experiments.capacity import (CAPACITY_POINTS_V, CapacityConfig, capacity, labellings,  # noqa: E402
                                       margins, noise_schedule, vc_estimate)
from host.networks.classifiers import TrialDNPUClassifier, TrialNNClassifier


def test_labellings_are_all_non_constant_ones():
    lab = labellings(4)
    assert lab.shape == (14, 4)
    assert len({tuple(r) for r in lab}) == 14
    assert not any(r.min() == r.max() for r in lab)


def test_noise_schedule_follows_the_papers_recursion():
    s = noise_schedule(2.0, 15)
    assert s[0] == 2.0
    assert s[1] ** 2 == pytest.approx(4.0 * (1 - 1 / 15))
    assert s[2] ** 2 == pytest.approx(4.0 * (1 - 1 / 15) * (1 - 2 / 15))
    assert s[-1] > 0 and len(s) == 15


def test_margin_is_the_gap_between_class_ranges_either_way_round():
    out = torch.tensor([[1.0, 2.0, 5.0, 7.0], [5.0, 7.0, 1.0, 2.0], [1.0, 5.0, 2.0, 7.0]])
    y = torch.tensor([[0, 0, 1, 1]] * 3)
    np.testing.assert_allclose(margins(out, y).numpy(), [3.0, 3.0, -3.0])


def test_vc_estimate_stops_at_the_first_failure():
    rows = [{"n": 4, "capacity": 1.0}, {"n": 5, "capacity": 1.0}, {"n": 6, "capacity": 0.9}, {"n": 7, "capacity": 1.0}]
    assert vc_estimate(rows) == 5


def test_nn_with_three_hidden_units_shatters_four_points():
    cfg = CapacityConfig(n_min=4, n_max=4, epochs=400, attempts=3, noise_std0=0.0, seed=1)
    rows = capacity(lambda t, g: TrialNNClassifier(3, t, generator=g), cfg)
    assert rows[0]["labellings"] == 16
    assert rows[0]["capacity"] == 1.0


def test_dnpu_classifier_trains_all_labellings_at_once_through_a_surrogate():
    from host.surrogate.torch_model import build_mlp

    torch.manual_seed(0)
    sur = build_mlp(7, 32, 2).eval()
    ranges = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)
    model = TrialDNPUClassifier(sur, ranges, trials=14)
    x = torch.as_tensor(CAPACITY_POINTS_V[:4], dtype=torch.float32)
    assert model(x).shape == (14, 4)
    # the two data electrodes carry the points' volts unchanged
    v = model.dnpu.electrode_volts(x.unsqueeze(1))
    np.testing.assert_allclose(v[0, :, 0, 1:3].detach().numpy(), CAPACITY_POINTS_V[:4], atol=1e-6)
    rows = capacity(lambda t, g: TrialDNPUClassifier(sur, ranges, t, generator=g),
                    CapacityConfig(n_min=4, n_max=4, epochs=50, attempts=1))
    assert rows[0]["labellings"] == 2 ** 4 and rows[0]["found"] > 2        # more than the two constant ones
    assert rows[0]["capacity"] == rows[0]["found"] / rows[0]["labellings"]


def test_complements_share_one_result_and_trials_stop_early():
    from host.experiments.capacity import CapacityN, with_complements

    n = 3
    half = labellings(n)[:3]
    r = CapacityN(n, half.astype(np.int64), np.array([True, False, True]), np.array([2.0, -1.0, 0.5]),
                  np.array([1, 15, 2]), np.arange(3.0)[:, None], 1.0, 1.4)
    full = with_complements(r)
    assert full.labels.shape == (6, 3)
    # row i and row 2^n - 3 - i are complements and get the same result
    for i in range(3):
        np.testing.assert_array_equal(full.labels[i], 1 - full.labels[5 - i])
        assert full.found[i] == full.found[5 - i] and full.margin[i] == full.margin[5 - i]
    row = full.row()
    assert row["found"] == 4 + 2 and row["robust_found"] == 2 + 2 and row["failed_labellings"] == [2, 5]


def test_solved_labellings_leave_the_batch():
    from host.experiments.capacity import train_labellings

    torch.manual_seed(0)
    cfg = CapacityConfig(n_min=4, n_max=4, epochs=1500, attempts=1, noise_std0=0.0, margin_goal=0.05,
                         check_every=10, patience=100, min_delta=1e-3, seed=2)
    x = torch.as_tensor(CAPACITY_POINTS_V[:4], dtype=torch.float32)
    r = train_labellings(lambda t, g: TrialNNClassifier(3, t, generator=g), x, torch.as_tensor(labellings(4)), cfg, 0.0,
                         torch.Generator().manual_seed(0))
    assert int(r.found.sum()) >= 12
    assert int(r.epochs.min()) < 1500          # solved labellings stopped early
    assert bool(torch.all(r.margin[r.found] > 0))
