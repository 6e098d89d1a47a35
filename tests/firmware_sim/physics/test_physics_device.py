"""VirtualDNPU / NullDevice: the AnalogDevice contract, device variation, the checks of the design
note (non-monotonic, XOR, noise, clipping) and refusal of bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.electrodes import N_ELECTRODES
from firmware_sim.analog import TIA_RANGE_NA
from firmware_sim.physics import WORKING_RANGES_V, NullDevice, VirtualDNPU
from firmware_sim.physics.xor import XOR_TARGET, xor_search, xor_volts

LO, HI = WORKING_RANGES_V.T


def random_volts(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(LO, HI, size=(n, N_ELECTRODES))


@pytest.fixture(scope="module")
def clean():
    return VirtualDNPU.from_seed(3, noise_level=0.0)


def test_same_seed_same_device_different_seeds_differ():
    v = random_volts(200, 1)
    a, b, c = (VirtualDNPU.from_seed(s, noise_level=0.0) for s in (7, 7, 8))
    assert np.array_equal(a.geometry.psi, b.geometry.psi)
    assert np.array_equal(a.steady_state_na(v), b.steady_state_na(v))
    assert a.describe == b.describe
    assert not np.allclose(a.steady_state_na(v), c.steady_state_na(v), atol=1.0)
    assert not np.allclose(a.geometry.sites_nm, c.geometry.sites_nm)
    # noise is seeded as well: same seeds, same noisy record
    n1, n2 = VirtualDNPU.from_seed(7), VirtualDNPU.from_seed(7)
    assert np.array_equal(n1.convert(v, 1e-4, 2), n2.convert(v, 1e-4, 2))
    assert not np.array_equal(n1.convert(v, 1e-4, 2), VirtualDNPU.from_seed(7, noise_seed=99).convert(v, 1e-4, 2))


def test_current_distribution_calibrated(clean):
    i = clean.steady_state_na(random_volts(4000, 2))
    p05 = np.percentile(i, 0.5)
    assert -310 < p05 < -250
    assert np.median(i) < 0 < np.percentile(i, 99.5)


def test_sweeps_are_often_non_monotonic(clean):
    rng = np.random.default_rng(4)
    n_set, n_pts = 60, 61
    non_mono = 0
    for s in range(n_set):
        base = rng.uniform(LO, HI)
        k = int(rng.integers(N_ELECTRODES))
        v = np.repeat(base[None], n_pts, axis=0)
        v[:, k] = np.linspace(LO[k], HI[k], n_pts)
        d = np.diff(clean.steady_state_na(v))
        tol = 0.05  # nA: ignore numerically flat stretches
        if np.any(d > tol) and np.any(d < -tol):
            non_mono += 1
    assert non_mono / n_set >= 0.2


@pytest.mark.parametrize("seed", [0, 3])
def test_xor_found_and_gate_classifies_noisy_quantised_repeats(seed):
    clean = VirtualDNPU.from_seed(seed, noise_level=0.0)
    res = xor_search(clean, np.random.default_rng(seed), n_random=2000, n_starts=4, n_local=40)
    assert res.gap_na >= 14.0, res   # 10x the 1.4 nA white-noise RMS
    noisy = VirtualDNPU.from_seed(seed)
    # quantised as a 16-bit DAC over +-2.5 V and a 16-bit ADC over the TIA range would do
    dac_lsb = 5.0 / 65535
    v = np.round(xor_volts(res.controls_v) / dac_lsb) * dac_lsb
    reps = np.tile(v, (100, 1))
    y = noisy.convert(reps, 1e-4, 1)
    adc_lsb = 400.0 / 65535
    y = np.round((y - TIA_RANGE_NA[0]) / adc_lsb) * adc_lsb + TIA_RANGE_NA[0]
    labels = (y > res.threshold_na).astype(int)
    assert np.array_equal(labels, np.tile(XOR_TARGET, 100))


def test_convert_clean_equals_steady_state_when_settled(clean):
    v = random_volts(300, 5)
    dev = VirtualDNPU.from_seed(3, noise_level=0.0)
    y = dev.convert(v, 1e-3, 3)
    assert y.shape == (300,) and y.dtype == np.float64
    expect = np.clip(clean.steady_state_na(v), *TIA_RANGE_NA)
    assert np.max(np.abs(y - expect)) < 1e-6


def test_tia_clipping():
    dev = VirtualDNPU.from_seed(3, noise_level=0.0)
    v = random_volts(3000, 6)
    clean_i = dev.steady_state_na(v)
    assert clean_i.min() < TIA_RANGE_NA[0] and clean_i.max() > TIA_RANGE_NA[1]
    y = VirtualDNPU.from_seed(3).convert(v, 1e-4, 4)
    assert y.min() >= TIA_RANGE_NA[0] and y.max() <= TIA_RANGE_NA[1]
    y0 = dev.convert(v, 1e-3)
    assert np.all(y0[clean_i < TIA_RANGE_NA[0] - 10] == TIA_RANGE_NA[0])
    assert np.all(y0[clean_i > TIA_RANGE_NA[1] + 10] == TIA_RANGE_NA[1])


def test_white_noise_rms_and_oversampling():
    quiet = dict(flicker_rel=0.0, drift_rel=0.0, temperature_rms_k=0.0)
    dev = VirtualDNPU.from_seed(3, **quiet)
    v = np.tile(np.array([[-0.3, 0.1, -0.2, 0.0, -0.5, -0.1, 0.0]]), (20000, 1))
    base = dev.steady_state_na(v[:1])[0]
    y = dev.convert(v, 1e-4)
    assert abs(np.mean(y) - base) < 0.1
    assert 1.33 < np.std(y) < 1.47
    y4 = dev.convert(v, 1e-4, oversample=4)
    assert 0.66 < np.std(y4) < 0.74
    # with all noise sources on, the RMS around the clean value is still about the white floor
    full = VirtualDNPU.from_seed(3).convert(v[:5000], 1e-4)
    assert 1.3 < np.std(full) < 1.8


def test_flicker_noise_is_correlated_and_relative():
    dev = VirtualDNPU.from_seed(3, white_noise_na=0.0, drift_rel=0.0, temperature_rms_k=0.0,
                                flicker_rel=0.005)
    v = np.tile(np.array([[-1.0, -1.0, -1.0, -1.0, -1.0, -0.5, -0.5]]), (20000, 1))
    base = dev.steady_state_na(v[:1])[0]
    y = dev.convert(v, 1e-3)
    rel = y / base - 1.0
    assert 0.0005 < np.std(rel) < 0.02
    # low-frequency dominated: neighbouring samples strongly correlated
    assert np.corrcoef(rel[:-1], rel[1:])[0, 1] > 0.5


def test_settling_and_tia_smear_fast_steps_and_reset():
    dev = VirtualDNPU.from_seed(3, noise_level=0.0)
    a = np.array([[-1.0, -1.0, -1.0, -1.0, -1.0, -0.5, -0.5]])
    b = np.zeros((1, N_ELECTRODES))
    ia = dev.steady_state_na(a)[0]
    seq = np.concatenate([np.repeat(a, 5, 0), np.repeat(b, 5, 0)])
    slow = dev.convert(seq, 1e-3)
    assert abs(slow[4] - np.clip(ia, *TIA_RANGE_NA)) < 1e-6 and abs(slow[9]) < 1e-6
    dev.reset()
    fast = dev.convert(seq, 1e-6)   # 1 us rows: line RC, slew and TIA pole all visible
    assert abs(fast[0] - np.clip(ia, *TIA_RANGE_NA)) > 1.0
    assert abs(fast[5]) > 1.0
    dev.reset()
    assert np.array_equal(dev.convert(seq, 1e-6), fast)


def test_describe_is_json_and_interface_complete():
    for dev in (VirtualDNPU.from_seed(1), NullDevice()):
        json.dumps(dev.describe)
        assert "model" in dev.describe
        out = dev.convert(random_volts(5), 1e-4, 2)
        assert out.shape == (5,) and out.dtype == np.float64
        dev.reset()
    d = VirtualDNPU.from_seed(1).describe
    assert d["seed"] == 1 and d["n_sites"] == 30


def test_null_device_is_deterministic_and_clipped():
    dev = NullDevice()
    v = random_volts(1000, N_ELECTRODES)
    y = dev.convert(v, 1e-5, 3)
    assert np.array_equal(y, dev.convert(v, 1e-3))
    assert y.min() >= TIA_RANGE_NA[0] and y.max() <= TIA_RANGE_NA[1]
    assert np.allclose(dev.convert(np.zeros((1, N_ELECTRODES)), 1e-3), -50.0)


@pytest.mark.parametrize("dev_factory", [lambda: VirtualDNPU.from_seed(1), NullDevice])
@pytest.mark.parametrize("volts,period,os_,msg", [
    (np.zeros((3, 6)), 1e-4, 1, "shape"),
    (np.zeros((3, N_ELECTRODES, 1)), 1e-4, 1, "shape"),
    (np.full((3, N_ELECTRODES), np.nan), 1e-4, 1, "NaN"),
    (np.full((3, N_ELECTRODES), 9.0), 1e-4, 1, "limit"),
    (np.zeros((3, N_ELECTRODES)), 0.0, 1, "sample_period"),
    (np.zeros((3, N_ELECTRODES)), float("nan"), 1, "sample_period"),
    (np.zeros((3, N_ELECTRODES)), 1e-4, 0, "oversample"),
    (np.zeros((3, N_ELECTRODES)), 1e-4, 2.5, "oversample"),
    (np.array([["a"] * N_ELECTRODES]), 1e-4, 1, "real"),
])
def test_bad_input_refused(dev_factory, volts, period, os_, msg):
    with pytest.raises(ValueError, match=msg):
        dev_factory().convert(volts, period, os_)


def test_bad_construction_refused():
    with pytest.raises(ValueError, match="seed"):
        VirtualDNPU.from_seed(-1)
    with pytest.raises(ValueError, match="n_sites"):
        VirtualDNPU.from_seed(1, n_sites=1)
    with pytest.raises(ValueError, match="noise_level"):
        VirtualDNPU.from_seed(1, noise_level=-1.0)
    with pytest.raises(TypeError):
        VirtualDNPU.from_seed(1, no_such_option=3)


def test_convert_independent_of_thread_count():
    v = random_volts(500, 9)
    outs = [VirtualDNPU.from_seed(5, nthreads=t).convert(v, 1e-4, 2) for t in (1, 2, 3)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_warm_start_option_matches_cold():
    t = np.linspace(0, 1, 300)[:, None]
    v = np.clip(0.4 * np.sin(2 * np.pi * (t + np.arange(N_ELECTRODES) / N_ELECTRODES)) - 0.3, LO, HI)
    cold = VirtualDNPU.from_seed(5, noise_level=0.0).convert(v, 1e-4)
    warm = VirtualDNPU.from_seed(5, noise_level=0.0, warm_start=True).convert(v, 1e-4)
    assert np.max(np.abs(warm - cold)) < 1e-7


def test_unsolved_rows_fall_back_to_reference(monkeypatch):
    dev = VirtualDNPU.from_seed(2, noise_level=0.0)
    v = random_volts(6, 10)
    expect = np.clip(dev.steady_state_na(v), *TIA_RANGE_NA)
    real = dev._kernel

    class Flaky:
        def solve(self, volts, **kw):
            out = real.solve(volts, **kw)
            out[::2] = np.nan          # pretend the kernel failed on every other row
            return out

    monkeypatch.setattr(dev, "_kernel", Flaky())
    y = dev.convert(v, 1e-3)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y - expect)) < 1e-6
