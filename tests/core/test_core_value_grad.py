"""core.Surrogate.value_and_grad: output and input gradient of a ReLU chain (training through a
frozen surrogate), float32 on every instruction set and bfloat16 AMX tiles where the CPU has them."""
from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest
from core_testlib import random_chain

from core import Surrogate, _engine, supported_isas


def reference(Ws, bs, x):
    """float64 forward and backward by hand: y [n], dy/dx [n, k]."""
    h = x.astype(np.float64)
    acts = []
    for l, (W, b) in enumerate(zip(Ws, bs)):
        h = h @ W.T.astype(np.float64) + (0.0 if b is None else b)
        if l < len(Ws) - 1:
            h = np.maximum(h, 0.0)
            acts.append(h)
    g = np.repeat(Ws[-1].astype(np.float64), len(x), axis=0)       # [n, width of the last hidden layer]
    for l in range(len(Ws) - 2, -1, -1):
        g = (g * (acts[l] > 0)) @ Ws[l].astype(np.float64)
    return h[:, 0], g


SHAPES = [(7, 90, 90, 90, 90, 90, 1), (7, 20, 1), (3, 17, 33, 1), (1, 5, 1), (40, 130, 1), (5, 1)]


@pytest.mark.parametrize("dims", SHAPES, ids=lambda d: "x".join(map(str, d)))
@pytest.mark.parametrize("isa", supported_isas())
def test_fp32_matches_the_float64_reference(rng, dims, isa):
    Ws, bs = random_chain(rng, dims)
    s = Surrogate(Ws, bs)
    x = rng.uniform(-1, 1, (203, dims[0])).astype(np.float32)
    y, g = s.value_and_grad(x, isa=isa)
    yr, gr = reference(Ws, bs, x)
    assert y.shape == (203,) and g.shape == (203, dims[0]) and y.dtype == g.dtype == np.float32
    np.testing.assert_allclose(y, yr, rtol=1e-4, atol=1e-4 * np.abs(yr).max())
    np.testing.assert_allclose(g, gr, rtol=1e-4, atol=1e-4 * np.abs(gr).max())
    np.testing.assert_array_equal(y, s.evaluate(x, isa=isa))   # the forward is the evaluation


@pytest.mark.parametrize("n", [0, 1, 7, 31, 32, 33, 1000])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batch_sizes_and_threads_give_the_same_rows(rng, n, threads):
    Ws, bs = random_chain(rng, (7, 90, 90, 1))
    s = Surrogate(Ws, bs)
    x = rng.uniform(-1, 1, (n, 7)).astype(np.float32)
    y, g = s.value_and_grad(x, threads=threads)
    assert y.shape == (n,) and g.shape == (n, 7)
    for i in range(0, n, max(1, n // 5)):
        y1, g1 = s.value_and_grad(x[i:i + 1])
        np.testing.assert_array_equal(y1, y[i:i + 1])
        np.testing.assert_array_equal(g1, g[i:i + 1])


def test_inputs_are_converted_or_refused(rng):
    Ws, bs = random_chain(rng, (7, 30, 1))
    s = Surrogate(Ws, bs)
    x = rng.uniform(-1, 1, (10, 7))
    y64, g64 = s.value_and_grad(x)                                 # float64 in: converted
    y32, g32 = s.value_and_grad(x.astype(np.float32))
    np.testing.assert_array_equal(y64, y32)
    np.testing.assert_array_equal(g64, g32)
    with pytest.raises(ValueError, match=r"\(n, 7\)"):
        s.value_and_grad(x[:, :6])
    with pytest.raises(TypeError):
        s.value_and_grad(np.ones((3, 7), dtype=np.int64))
    with pytest.raises(ValueError, match="precision"):
        s.value_and_grad(x, precision="fp16")
    with pytest.raises(ValueError, match="threads"):
        s.value_and_grad(x, threads=0)


def test_models_without_a_scalar_relu_chain_are_refused(rng):
    Ws, bs = random_chain(rng, (7, 30, 2))
    with pytest.raises(ValueError, match="one output"):
        Surrogate(Ws, bs).value_and_grad(np.zeros((2, 7), np.float32))
    Ws, bs = random_chain(rng, (7, 30, 1))
    with pytest.raises(ValueError, match="ReLU"):
        Surrogate(Ws, bs, relu=[False, False]).value_and_grad(np.zeros((2, 7), np.float32))


needs_bf16 = pytest.mark.skipif(not _engine.bf16_supported(), reason="no bf16 unit (AMX-BF16 or AVX512-BF16) on this CPU, or DNPU_CORE_BF16=0")


@needs_bf16
@pytest.mark.parametrize("dims", [(7, 90, 90, 90, 90, 90, 1), (7, 20, 1), (3, 17, 33, 1), (40, 96, 1)],
                         ids=lambda d: "x".join(map(str, d)))
def test_bf16_tracks_fp32_to_bf16_accuracy(rng, dims):
    n = 2000
    Ws, bs = random_chain(rng, dims)
    s = Surrogate(Ws, bs)
    assert s.bf16_ready
    x = rng.uniform(-1, 1, (n, dims[0])).astype(np.float32)
    y, g = s.value_and_grad(x)
    y16, g16 = s.value_and_grad(x, precision="bf16", threads=2)
    scale_y = max(np.abs(y).max(), 1e-3)
    assert np.abs(y16 - y).max() < 0.03 * scale_y
    # row by row the gradient can flip where a unit sits at the ReLU's edge: most rows are close
    rel = np.linalg.norm(g16 - g, axis=1) / np.maximum(np.linalg.norm(g, axis=1), 1e-6)
    assert np.median(rel) < 0.02
    assert np.mean(rel < 0.1) > 0.8


@needs_bf16
def test_bf16_gives_the_same_rows_in_any_batch(rng):
    Ws, bs = random_chain(rng, (7, 90, 90, 1))
    s = Surrogate(Ws, bs)
    x = rng.uniform(-1, 1, (150, 7)).astype(np.float32)
    y, g = s.value_and_grad(x, precision="bf16", threads=2)
    for i in (0, 15, 16, 17, 63, 64, 65, 149):
        y1, g1 = s.value_and_grad(x[i:i + 1], precision="bf16")
        np.testing.assert_array_equal(y1, y[i:i + 1])
        np.testing.assert_array_equal(g1, g[i:i + 1])


def test_bf16_is_refused_where_it_cannot_run(rng):
    Ws, bs = random_chain(rng, (7, 130, 20, 1))                     # a product wider than 96 columns
    s = Surrogate(Ws, bs)
    assert not s.bf16_ready
    with pytest.raises(ValueError, match="bf16"):
        s.value_and_grad(np.zeros((2, 7), np.float32), precision="bf16")
    if not _engine.bf16_supported():
        Ws, bs = random_chain(rng, (7, 20, 1))
        assert not Surrogate(Ws, bs).bf16_ready


@pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"), reason="Linux x86-64 only")
def test_only_a_bf16_request_asks_the_os_for_the_amx_tile_state():
    # inference processes never take the (large) AMX signal-frame state: it is requested when bf16
    # is first wanted (bf16_ready or precision="bf16"), never by evaluate or float32 gradients
    code = """
import ctypes, numpy as np
from core import Surrogate
libc = ctypes.CDLL(None)
def tile_state_granted():
    v = ctypes.c_ulong(0)
    libc.syscall(158, 0x1022, ctypes.byref(v))     # arch_prctl(ARCH_GET_XCOMP_PERM)
    return bool(v.value & (1 << 18))                # XFEATURE_XTILEDATA
s = Surrogate([np.ones((8, 7), np.float32), np.ones((1, 8), np.float32)])
s.evaluate(np.zeros((4, 7), np.float32)); s.value_and_grad(np.zeros((4, 7), np.float32))
from core import _engine
print(tile_state_granted(), s.bf16_ready, tile_state_granted(), _engine.bf16_unit())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    granted_before, ready, granted_after, unit = out
    assert granted_before == "False"
    if ready == "True" and unit == "amx":           # AMX here: asking for bf16 took the tile state
        assert granted_after == "True"
    if unit == "avx512bf16":                        # dot products need no tile state
        assert granted_after == "False"
