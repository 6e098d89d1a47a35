"""The C kernel against the NumPy reference, conservation laws, determinism, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim import _physics
from firmware_sim.physics import WORKING_RANGES_V, DeviceParams, SolverConfig, VirtualDNPU, make_geometry
from firmware_sim.physics import reference as ref
from firmware_sim.physics.geometry import READOUT

LO, HI = WORKING_RANGES_V.T


def random_volts(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(LO, HI, size=(n, N_ELECTRODES))


def kernel_for(geom, **kw) -> _physics.Kernel:
    s = SolverConfig()
    return _physics.Kernel(geom.psi, geom.e_static_ev, geom.coulomb_ev, geom.w_site, geom.w_elec,
                           np.full(geom.n_sites, 0.5), geom.beta, dt0=s.dt0, dt_max=s.dt_max,
                           tol_abs=s.tol_abs, tol_quad=s.tol_quad, max_iter=s.max_iter, **kw)


@pytest.fixture(scope="module")
def geom():
    return make_geometry(11)


@pytest.fixture(scope="module")
def kernel(geom):
    return kernel_for(geom)


def test_jacobian_matches_finite_differences(geom):
    rng = np.random.default_rng(1)
    v, p = random_volts(1, 1)[0], rng.uniform(0.05, 0.95, geom.n_sites)
    _, J = ref.residual_and_jacobian(geom, v, p, geom.beta)
    h = 1e-7
    Jn = np.empty_like(J)
    for m in range(geom.n_sites):
        q1, q2 = p.copy(), p.copy()
        q1[m] += h
        q2[m] -= h
        Jn[:, m] = (ref.residual_and_jacobian(geom, v, q1, geom.beta, False)[0]
                    - ref.residual_and_jacobian(geom, v, q2, geom.beta, False)[0]) / (2 * h)
    assert np.max(np.abs(J - Jn)) < 1e-6 * np.max(np.abs(J))


@pytest.mark.parametrize("seed,n_sites", [(11, 30), (3, 20), (5, 40)])
def test_c_kernel_matches_numpy_reference(seed, n_sites):
    g = make_geometry(seed, DeviceParams(n_sites=n_sites))
    v = random_volts(40, seed)
    i_ref, it_ref = ref.currents(g, v)
    i_c, it_c = kernel_for(g).solve(v, all_currents=True, return_iters=True)
    scale = np.max(np.abs(i_ref))
    assert np.max(np.abs(i_c - i_ref)) < 1e-8 * scale
    assert np.all(it_c > 0) and np.all(it_ref > 0)
    # per-temperature (beta) path too
    beta = g.beta * np.linspace(0.97, 1.03, len(v))
    i_c2 = kernel_for(g).solve(v, beta=beta)
    i_r2 = np.array([ref.electrode_currents(g, v[r], ref.solve(g, v[r], beta[r])[0], beta[r])[READOUT]
                     for r in range(len(v))])
    assert np.max(np.abs(i_c2 - i_r2)) < 1e-8 * scale


def test_kirchhoff(kernel):
    i = kernel.solve(random_volts(500, 2), all_currents=True, nthreads=2)
    assert np.max(np.abs(i.sum(axis=1))) < 1e-9 * np.max(np.abs(i))


def test_zero_current_at_equal_voltages(kernel, geom):
    # every electrode at the readout's 0 V: equilibrium, no current anywhere (before noise)
    i = kernel.solve(np.zeros((3, N_ELECTRODES)), all_currents=True)
    assert np.max(np.abs(i)) < 1e-13
    dev = VirtualDNPU.from_seed(11, noise_level=0.0)
    assert np.max(np.abs(dev.steady_state_na(np.zeros((1, N_ELECTRODES)), all_currents=True))) < 1e-9
    # the reference too; and the electrostatic basis is a partition of unity (psi = 1 when all arcs are at 1)
    p, _ = ref.solve(geom, np.zeros(N_ELECTRODES))
    assert np.max(np.abs(ref.electrode_currents(geom, np.zeros(N_ELECTRODES), p, geom.beta))) < 1e-13
    assert np.allclose(geom.psi.sum(axis=1), 1.0, atol=1e-12)


def test_all_random_configurations_converge(kernel):
    _, its = kernel.solve(random_volts(4000, 3), nthreads=2, return_iters=True)
    assert np.all(its > 0)
    assert its.mean() < 8


def test_extreme_voltages_converge(kernel):
    v = np.random.default_rng(8).uniform(-2.5, 2.5, size=(1000, N_ELECTRODES))
    i, its = kernel.solve(v, nthreads=2, return_iters=True, all_currents=True)
    assert np.all(its > 0) and np.all(np.isfinite(i))
    assert np.max(np.abs(i.sum(axis=1))) < 1e-9 * np.max(np.abs(i))


def test_independent_of_threads_and_batch_composition(kernel):
    v = random_volts(301, 4)
    a = kernel.solve(v, nthreads=1)
    b = kernel.solve(v, nthreads=2)
    c = kernel.solve(v, nthreads=7)
    d = np.concatenate([kernel.solve(v[150:], nthreads=2), kernel.solve(v[:150], nthreads=1)])
    d = np.concatenate([d[151:], d[:151]])
    e = kernel.solve(v[::-1], nthreads=3)[::-1]
    for x in (b, c, d, e):
        assert np.array_equal(a, x)


def test_warm_start_agrees_with_cold(kernel, geom):
    t = np.linspace(0, 1, 400)[:, None]
    v = np.clip(0.3 * np.sin(2 * np.pi * (t + np.arange(N_ELECTRODES) / N_ELECTRODES)) - 0.3, LO, HI)
    cold, it_cold = kernel.solve(v, return_iters=True)
    state = np.full(geom.n_sites, 0.5)
    warm, it_warm = kernel.solve(v, warm=True, p_state=state, return_iters=True)
    assert np.max(np.abs(warm - cold)) < 1e-8 * np.max(np.abs(cold))
    assert it_warm.mean() < it_cold.mean()
    assert not np.allclose(state, 0.5)
    # chaining calls continues from the returned state
    w1 = kernel.solve(v[:200], warm=True, p_state=(s := np.full(geom.n_sites, 0.5)))
    w2 = kernel.solve(v[200:], warm=True, p_state=s)
    assert np.max(np.abs(np.concatenate([w1, w2]) - cold)) < 1e-8 * np.max(np.abs(cold))


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((4, 6)), "shape"),
    (np.zeros(N_ELECTRODES), "shape"),
    (np.full((2, N_ELECTRODES), np.nan), "NaN"),
    (np.full((2, N_ELECTRODES), np.inf), "NaN"),
    (np.full((2, N_ELECTRODES), 3.0), "outside"),
])
def test_bad_volts_refused(kernel, bad, msg):
    with pytest.raises(ValueError, match=msg):
        kernel.solve(bad)


def test_bad_arguments_refused(kernel, geom):
    v = random_volts(3)
    with pytest.raises(ValueError, match="beta"):
        kernel.solve(v, beta=np.ones(2))
    with pytest.raises(ValueError, match="beta"):
        kernel.solve(v, beta=np.full(3, np.nan))
    with pytest.raises(ValueError, match="p_state"):
        kernel.solve(v, warm=True, p_state=np.zeros(geom.n_sites + 1))
    with pytest.raises(ValueError, match="nthreads"):
        kernel.solve(v, nthreads=0)
    with pytest.raises(ValueError, match="shape"):
        _physics.Kernel(geom.psi[:, :N_ELECTRODES], geom.e_static_ev, geom.coulomb_ev, geom.w_site,
                        geom.w_elec, np.full(geom.n_sites, 0.5), geom.beta)
    assert kernel.solve(np.zeros((0, N_ELECTRODES))).shape == (0,)
