"""DNPU modules against hand-computed references."""
from __future__ import annotations

import numpy as np
import pytest

import torch
from torch import nn  # noqa: E402

from host.networks.normalisation import DecisionNode, RunningStandardisation
from host.networks.dnpu_nodes import DNPUNodes, InputTransform
from host.networks.losses import bce_per_trial, neg_fisher_per_trial

RANGES = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)


def linear_surrogate(w=(1, 2, 3, 4, 5, 6, 7), b=0.5):
    lin = nn.Linear(7, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w], dtype=torch.float32))
        lin.bias.fill_(b)
    return lin


def test_layer_places_data_and_controls_on_the_right_electrodes():
    layer = DNPUNodes(linear_surrogate(), RANGES, n_nodes=2, data_electrodes=[1, 2], trials=3)
    with torch.no_grad():
        layer.control.copy_(torch.arange(3 * 2 * 5, dtype=torch.float32).reshape(3, 2, 5) / 100)
    x = torch.tensor([[[-1.0, 1.0], [0.0, 0.5]]])  # B=1, K=2, D=2 in [-1, 1]
    v = layer.electrode_volts(x)
    assert v.shape == (3, 1, 2, 7)
    # data in [-1, 1] maps onto [-1.2, 0.6]: -1 -> -1.2, 1 -> 0.6, 0 -> -0.3, 0.5 -> 0.15
    np.testing.assert_allclose(v[:, 0, 0, [1, 2]].detach().numpy(), [[-1.2, 0.6]] * 3, atol=1e-6)
    np.testing.assert_allclose(v[:, 0, 1, [1, 2]].detach().numpy(), [[-0.3, 0.15]] * 3, atol=1e-6)
    # controls fill electrodes 0, 3, 4, 5, 6 in order
    np.testing.assert_allclose(v[2, 0, 1, [0, 3, 4, 5, 6]].detach().numpy(), (np.arange(25, 30)) / 100, atol=1e-6)
    out = layer(x)
    expect = v.detach().numpy() @ np.arange(1, 8) + 0.5
    np.testing.assert_allclose(out.detach().numpy(), expect, rtol=1e-5)


def test_clipping_and_out_of_range_penalty():
    layer = DNPUNodes(linear_surrogate(), RANGES, 1, [0, 4], transform=InputTransform(-1, 1, clip=True))
    v = layer.data_volts(torch.tensor([[-3.0, 3.0]]))
    np.testing.assert_allclose(v.numpy().ravel(), [-1.2, 0.6], atol=1e-6)
    with torch.no_grad():
        layer.control.copy_(torch.tensor([[[0.7, -1.3, 0.0, 0.5, -0.9]]]))
    # controls e1, e2, e3, e5, e6: e1 0.1 above 0.6; e2 0.1 below -1.2; e3 inside; e5 0.2 above 0.3; e6 0.2 below -0.7
    np.testing.assert_allclose(layer.out_of_range_penalty().detach().numpy(), [0.6], atol=1e-6)
    layer.clip_controls()
    np.testing.assert_allclose(layer.control.detach().numpy().ravel(), [0.6, -1.2, 0.0, 0.3, -0.7], atol=1e-6)
    assert layer.out_of_range_penalty().item() == 0.0


def test_per_node_surrogates_and_noise_only_in_training():
    s = [linear_surrogate(b=0.0), linear_surrogate(b=100.0)]
    layer = DNPUNodes(s, RANGES, 2, [0, 1], noise_std_na=5.0)
    with torch.no_grad():
        layer.control[:, 1] = layer.control[:, 0]
    x = torch.zeros(4, 2, 2)
    layer.eval()
    out = layer(x)
    np.testing.assert_allclose((out[..., 1] - out[..., 0]).detach().numpy(), 100.0 * np.ones((1, 4)), rtol=1e-5)
    layer.train()
    torch.manual_seed(0)
    noisy = layer(torch.zeros(2000, 2, 2))
    assert 4.5 < (noisy - layer.eval()(torch.zeros(2000, 2, 2))).std().item() < 5.5
    with pytest.raises(ValueError, match="2 surrogates for 3 nodes"):
        DNPUNodes(s, RANGES, 3, [0])


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="data_electrodes"):
        DNPUNodes(linear_surrogate(), RANGES, 1, [0, 0])
    with pytest.raises(ValueError, match="data_electrodes"):
        DNPUNodes(linear_surrogate(), RANGES, 1, [7])
    with pytest.raises(ValueError, match="ranges_v"):
        DNPUNodes(linear_surrogate(), RANGES[::-1, ::-1], 1, [0])
    layer = DNPUNodes(linear_surrogate(), RANGES, 2, [0, 1])
    with pytest.raises(ValueError, match="expected data"):
        layer(torch.zeros(3, 2, 3))


def test_controls_learn_through_the_frozen_surrogate():
    sur = linear_surrogate()
    layer = DNPUNodes(sur, RANGES, 1, [0, 4])
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(100):  # drive the output up: every control rises past its upper bound
        loss = -layer(torch.zeros(8, 1, 2)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.all(layer.control.detach().numpy().ravel() > [0.6, 0.6, 0.6, 0.3, 0.3])
    # the L1 penalty alone pulls them back towards the range
    before = layer.out_of_range_penalty().item()
    sgd = torch.optim.SGD(layer.parameters(), lr=0.01)
    sgd.zero_grad()
    layer.out_of_range_penalty().sum().backward()
    sgd.step()
    assert layer.out_of_range_penalty().item() < before
    layer.clip_controls()
    np.testing.assert_allclose(layer.control.detach().numpy().ravel(), [0.6, 0.6, 0.6, 0.3, 0.3], atol=0.02)
    assert all(not p.requires_grad for p in sur.parameters())


def test_standardise_uses_batch_stats_in_training_and_stored_ones_after():
    st = RunningStandardisation(trials=2, n_nodes=3, momentum=1.0)
    x = torch.randn(2, 50, 3) * 4 + 7
    z = st(x)
    np.testing.assert_allclose(z.mean(dim=1).detach().numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(dim=1, unbiased=False).detach().numpy(), 1.0, atol=1e-3)
    st.eval()
    z2 = st(x[:, :1])
    np.testing.assert_allclose(z2.detach().numpy(), z[:, :1].detach().numpy(), atol=1e-5)


def test_losses_match_hand_computed_values():
    out = torch.tensor([[1.0, 2.0, 3.0, 5.0]])
    y = torch.tensor([[0, 0, 1, 1]])
    # mu0 = 1.5, mu1 = 4, var0 = 0.25, var1 = 1 -> -(2.5^2)/1.25 = -5
    np.testing.assert_allclose(neg_fisher_per_trial(out, y).numpy(), [-5.0], rtol=1e-5)
    logits = torch.tensor([[0.0, 2.0]])
    expect = (np.log(2) + np.log(1 + np.exp(-2.0))) / 2
    np.testing.assert_allclose(bce_per_trial(logits, torch.tensor([[1, 1]])).numpy(), [expect], rtol=1e-5)
    with pytest.raises(ValueError, match="both classes"):
        neg_fisher_per_trial(out, torch.ones(1, 4))


def test_decision_node():
    d = DecisionNode(trials=2)
    p = d(torch.tensor([[1.0, 3.0], [10.0, 30.0]]))
    np.testing.assert_allclose(p.detach().numpy(), 1 / (1 + np.exp([[1.0, -1.0], [1.0, -1.0]])), rtol=1e-3)


def test_cross_entropy_matches_hand_computed_values():
    from host.networks.losses import cross_entropy_per_trial

    logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]],
                           [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])   # T=2, B=2, C=3
    y = torch.tensor([1, 2])
    lse = np.log(np.exp(1) + np.exp(2) + np.exp(3))
    t0 = (np.log(3) + (lse - 3)) / 2
    t1 = ((np.log(np.exp(2) + 2) - 0.0) + np.log(3)) / 2
    np.testing.assert_allclose(cross_entropy_per_trial(logits, y).numpy(), [t0, t1], rtol=1e-6)
    with pytest.raises(ValueError, match="class indices"):
        cross_entropy_per_trial(logits, torch.tensor([0, 3]))


def test_fit_logistic_reaches_the_stationary_point_of_the_regularised_loss():
    from host.networks.logistic import fit_logistic, logistic_logits

    x = torch.tensor([[-2.0, -1.0, 0.0, 1.0, 2.0, 0.5], [1.0, -1.0, 1.0, -1.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 0, 0, 1, 0]], dtype=torch.float64)
    w, b = fit_logistic(x, y, l2=1e-2)
    for t in range(2):  # gradient of mean BCE + l2/2 w^2 on the standardised feature is zero (numpy)
        xs = (x[t].numpy() - x[t].numpy().mean()) / x[t].numpy().std()
        p = 1 / (1 + np.exp(-(w[t].item() * xs + b[t].item())))
        assert abs(np.mean((p - y[t].numpy()) * xs) + 1e-2 * w[t].item()) < 1e-8
        assert abs(np.mean(p - y[t].numpy())) < 1e-8
    # symmetric data with no information: the neutral neuron (hand-computed optimum w = b = 0)
    w0, b0 = fit_logistic(torch.tensor([[-1.0, 1.0, -1.0, 1.0]]), torch.tensor([[0, 1, 1, 0]]))
    assert abs(w0.item()) < 1e-6 and abs(b0.item()) < 1e-6
    # logits of the fitting data: w * standardised x + b
    lg = logistic_logits(x, x, w, b)
    xs0 = (x[0] - x[0].mean()) / x[0].std(unbiased=False)
    np.testing.assert_allclose(lg[0].numpy(), (w[0] * xs0 + b[0]).numpy(), rtol=1e-6)


def test_noise_in_eval_and_exact_statistics():
    layer = DNPUNodes(linear_surrogate(), RANGES, 1, [0, 1], noise_std_na=3.0)
    layer.eval()
    x = torch.zeros(500, 1, 2)
    assert layer(x).std().item() < 1e-5
    layer.noise_in_eval = True
    assert 2.5 < layer(x).std().item() < 3.5
    st = RunningStandardisation(trials=1, n_nodes=2)
    data = torch.tensor([[[1.0, 10.0], [3.0, 30.0]]])          # mean (2, 20), var (1, 100)
    st.set_stats(data)
    np.testing.assert_allclose(st.mean.numpy().ravel(), [2.0, 20.0])
    np.testing.assert_allclose(st.std().numpy().ravel(), np.sqrt([1.0 + 1e-5, 100.0 + 1e-5]), rtol=1e-6)


def test_trial_adam_matches_torch_adam_and_dropping_trials_is_exact():
    from host.surrogate.torch_model import build_mlp
    from host.networks.classifiers import TrialDNPUClassifier
    from host.networks.trials import TrialAdam

    torch.manual_seed(0)
    sur = build_mlp(7, 16, 2).eval()        # non-linear: the controls matter after the batch norm
    x = torch.tensor([[-0.5, 0.2], [0.3, -0.1], [0.1, 0.4]])
    y = torch.tensor([[0.0, 1.0, 1.0]])

    def loss_of(m):
        from host.networks.losses import bce_per_trial
        return bce_per_trial(m.decision.logits(m(x)), y).sum() + m.penalty().sum()

    g = torch.Generator().manual_seed(3)
    a = TrialDNPUClassifier(sur, RANGES, trials=3, generator=g)
    b = TrialDNPUClassifier(sur, RANGES, trials=1)
    b.load_state_dict({k: v[2:3] if v.dim() and v.shape[0] == 3 else v for k, v in a.state_dict().items()})
    oa, ob = TrialAdam(a, 0.03, (0.995, 0.999)), torch.optim.Adam(b.parameters(), lr=0.03, betas=(0.995, 0.999))
    for step in range(30):
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            loss_of(m).backward()
            o.step()
        if step == 10:
            oa.keep(torch.tensor([2]))      # trial 2 goes on alone, exactly as if trained alone
    np.testing.assert_allclose(a.dnpu.control.detach().numpy(), b.dnpu.control.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(a.decision.gain.detach().numpy(), b.decision.gain.detach().numpy(), atol=1e-6)


def test_dnpu_net_221_by_hand_and_as_core_layers():
    from host.networks.classifiers import DNPUNet

    sur = linear_surrogate(w=(1, 0, 0, 0, 0, 0, 0), b=0.0)   # output = volts on e0 (a control)
    sur2 = linear_surrogate(w=(0, 1, 1, 0, 0, 0, 0), b=0.0)  # output = e1 + e2 (the data)
    net = DNPUNet(sur2, RANGES, trials=1, nodes=(2, 1), data_electrodes=(1, 2), span_sigmas=2.0)
    x = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [0.5, -0.5]])
    out = net.calibrate(x)
    # layer 1: e1 + e2 with data mapped from [-1, 1] onto [-1.2, 0.6]: 2 * (-0.3 + 0.9 x)
    h = 2 * (-0.3 + 0.9 * x.numpy())
    s1 = h.sum(axis=1) / 2                              # per node: e1 + e2 = both nodes equal
    z = (s1 - s1.mean()) / np.sqrt(s1.var() + 1e-5)     # standardised
    v2 = np.clip(-1.2 + (z + 2) * 1.8 / 4, -1.2, 0.6)   # mapped from [-2, 2] sigmas into the range
    np.testing.assert_allclose(out.numpy()[0], 2 * v2, atol=1e-5)
    assert isinstance(sur, torch.nn.Module)
    layers = net.to_core_layers(0, logistic=(2.0, -1.0))
    assert [type(l).__name__ for l in layers] == ["DnpuLayer", "Standardize", "DnpuLayer", "Standardize", "Affine"]
    node = layers[0].nodes[0]
    np.testing.assert_allclose(node.input_scale, [0.9, 0.9])
    np.testing.assert_allclose(node.input_offset, [-0.3, -0.3], atol=1e-7)
    np.testing.assert_allclose(layers[2].nodes[0].input_scale, [1.8 / 4] * 2)
