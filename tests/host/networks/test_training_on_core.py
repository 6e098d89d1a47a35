"""host.networks.core_surrogate: training through the core's fused value-and-gradient gives torch's numbers."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

import torch

from core import _engine  # noqa: E402
from host.networks.core_surrogate import CoreSurrogate  # noqa: E402
from host.surrogate.torch_model import build_mlp  # noqa: E402
from host.networks.classifiers import DNPUNet

RANGES = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)


def random_surrogate(seed: int = 0, hidden: int = 90, layers: int = 4) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    m = build_mlp(7, hidden, layers)
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


def grads(net: DNPUNet, x: torch.Tensor, y: torch.Tensor, bf16: bool = False):
    from host.networks.losses import neg_fisher_per_trial

    net.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = net(x)
    loss = neg_fisher_per_trial(out.float(), y).sum()
    loss.backward()
    return out.detach().float(), [p.grad.clone() for p in net.parameters() if p.requires_grad]


def test_outputs_and_gradients_equal_the_torch_modules():
    m = random_surrogate()
    core_sur = CoreSurrogate.from_torch(m, threads=2)
    v = torch.rand(500, 7, dtype=torch.float32) * 1.6 - 1.0
    v1, v2 = v.clone().requires_grad_(True), v.clone().requires_grad_(True)
    y_t, y_c = m(v1), core_sur(v2)
    torch.testing.assert_close(y_c, y_t, rtol=1e-5, atol=1e-4)
    w = torch.randn(500, 1)
    (y_t * w).sum().backward()
    (y_c * w).sum().backward()
    torch.testing.assert_close(v2.grad, v1.grad, rtol=1e-4, atol=1e-5)
    v64 = v.double().requires_grad_(True)               # other input dtypes: float32 inside, same grads
    (core_sur(v64) * w).sum().backward()
    assert v64.grad.dtype == torch.float64
    torch.testing.assert_close(v64.grad.float(), v1.grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():                              # no gradient wanted: the plain evaluation
        torch.testing.assert_close(core_sur(v), y_t.detach(), rtol=1e-5, atol=1e-4)


def test_a_221_network_trains_with_the_same_gradients_on_either_engine():
    m = random_surrogate(1)
    x = torch.rand(64, 2) * 2 - 1
    y = (x.norm(dim=1) > 0.6).float()
    nets = []
    for sur in (m, CoreSurrogate.from_torch(m)):
        gen = torch.Generator().manual_seed(3)
        net = DNPUNet(sur, RANGES, trials=4, nodes=(2, 1), data_electrodes=(1, 2), generator=gen)
        net.train()
        nets.append(net)
    (o_t, g_t), (o_c, g_c) = grads(nets[0], x, y), grads(nets[1], x, y)
    torch.testing.assert_close(o_c, o_t, rtol=1e-4, atol=1e-3)
    for a, b in zip(g_c, g_t):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not _engine.bf16_supported(), reason="no bf16 unit (AMX-BF16 or AVX512-BF16) on this CPU, or DNPU_CORE_BF16=0")
def test_bf16_autocast_uses_the_tiles_and_stays_close():
    m = random_surrogate(2)
    sur = CoreSurrogate.from_torch(m)
    assert sur.precision() == "fp32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sur.precision() == "bf16"
    x = torch.rand(200, 2) * 2 - 1
    y = (x.norm(dim=1) > 0.6).float()
    gen = torch.Generator().manual_seed(3)
    net = DNPUNet(sur, RANGES, trials=8, nodes=(1,), data_electrodes=(1, 2), generator=gen)
    o32, g32 = grads(net, x, y)
    o16, g16 = grads(net, x, y, bf16=True)
    assert (o16 - o32).abs().max() < 0.03 * o32.abs().max()
    cos = torch.nn.functional.cosine_similarity(g16[0].flatten(), g32[0].flatten(), dim=0)
    assert cos > 0.98


def test_copies_share_the_frozen_surrogate_and_gpu_tensors_take_the_torch_copy():
    m = random_surrogate(3)
    sur = CoreSurrogate.from_torch(m)
    net = DNPUNet(sur, RANGES, trials=2, nodes=(1,), data_electrodes=(1, 2))
    twin = copy.deepcopy(net)                 # the ring experiment copies stopped groups of trials
    assert twin.layers[0].surrogates[0] is sur
    twin.layers[0].control.data += 0.1
    assert not torch.equal(twin.layers[0].control, net.layers[0].control)
    assert sur.torch_model is m


def test_non_surrogates_are_refused():
    with pytest.raises(ValueError, match="Linear"):
        CoreSurrogate.from_torch(torch.nn.Sequential(torch.nn.Linear(7, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1),
                                                     torch.nn.ReLU()))
    with pytest.raises(ValueError, match="Tanh"):                  # same length, another activation
        CoreSurrogate.from_torch(torch.nn.Sequential(torch.nn.Linear(7, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)))
    two_out = torch.nn.Sequential(torch.nn.Linear(7, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="7 volts to 1"):
        CoreSurrogate.from_torch(two_out)


def _ring_problem(n_per_class: int = 40):
    from host.experiments.ring import RingConfig, normalised_gap, ring_data
    from host.experiments.surrogates import load_surrogate

    sur_t = load_surrogate("models/surrogate.onnx", engine="torch")
    sur_c = load_surrogate("models/surrogate.onnx", engine="core", threads=2)
    cfg = RingConfig(epochs=30, noise_std_na=0.0, n_per_class=n_per_class, train_noise_factor=0.0)
    x, y = ring_data(cfg.n_per_class, normalised_gap(cfg.gap_mv, sur_t.ranges_v, cfg.data_electrodes),
                     np.random.default_rng(0))
    return sur_t, sur_c, cfg, torch.as_tensor(x), torch.as_tensor(y)


def test_one_ring_training_step_has_the_same_loss_and_gradients_on_either_engine():
    """Deterministic: the same start, the same data, one forward and backward pass."""
    from host.experiments.ring import ARCHS
    from host.networks.losses import neg_fisher_per_trial

    sur_t, sur_c, cfg, x, y = _ring_problem()
    losses, grads = [], []
    for sur in (sur_t, sur_c):
        net = DNPUNet(sur.model, sur.ranges_v, 6, nodes=ARCHS["2-2-1"], data_electrodes=cfg.data_electrodes,
                      span_sigmas=cfg.span_sigmas, generator=torch.Generator().manual_seed(5))
        net.train()
        per_trial = neg_fisher_per_trial(net(x), y)
        (per_trial.sum() + cfg.alpha * net.penalty().sum()).backward()
        losses.append(per_trial.detach())
        grads.append(torch.cat([layer.control.grad.flatten() for layer in net.layers]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4 * float(grads[0].abs().max()))


def test_ring_training_on_either_engine_ends_within_the_spread_of_its_trials():
    """Not deterministic: summation order differs between the engines (and between CPUs), and a
    training run amplifies it. Both engines must train (raise the Fisher criterion) and end with
    mean Fisher values that differ by less than the spread over random starts."""
    from host.experiments.ring import ARCHS, train_chunk
    from host.networks.losses import neg_fisher_per_trial

    sur_t, sur_c, cfg, x, y = _ring_problem()
    trials = 12
    final = []
    for sur in (sur_t, sur_c):
        start = DNPUNet(sur.model, sur.ranges_v, trials, nodes=ARCHS["2-2-1"], data_electrodes=cfg.data_electrodes,
                        span_sigmas=cfg.span_sigmas, generator=torch.Generator().manual_seed(5))
        start.calibrate(x)
        start.eval()
        net = train_chunk(sur, ARCHS["2-2-1"], cfg, trials, x, y, 0.0, torch.Generator().manual_seed(5))
        net.eval()
        with torch.no_grad():
            f0 = -neg_fisher_per_trial(start(x), y).numpy()
            f = -neg_fisher_per_trial(net(x), y).numpy()
        assert np.median(f) > 1.5 * np.median(f0), (f0, f)
        final.append(f)
    f_t, f_c = final
    assert abs(f_c.mean() - f_t.mean()) < f_t.std(), (f_t, f_c)
