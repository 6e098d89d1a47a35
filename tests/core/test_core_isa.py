"""Every instruction-set path this machine has is offered, and each agrees with the generic path
(evaluate is compared in test_core_surrogate.py; here value_and_grad and networks)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from core_testlib import random_chain

import core
from core import DnpuLayer, DnpuNode, Linear, Network, Standardize, _engine

ISAS = core.supported_isas()
linux_x86 = pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                               reason="reads /proc/cpuinfo (Linux x86-64)")


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("no flags line in /proc/cpuinfo")


def _python(code: str, **env: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@linux_x86
def test_every_instruction_set_of_this_cpu_is_offered():
    """A path the CPU has but supported_isas() leaves out would go untested: the list must be
    exactly what /proc/cpuinfo says (the OS also has to save the AVX state; Linux does)."""
    f = cpu_flags()
    want = ["generic"]
    if {"avx2", "fma"} <= f:
        want.append("avx2")
        if "avx512f" in f:
            want.append("avx512")
    assert ISAS == want


@linux_x86
def test_bf16_runs_on_amx_or_avx512_bf16_as_the_cpu_has_them_and_not_when_turned_off():
    f = cpu_flags()
    unit = "from core import _engine; print(_engine.bf16_supported(), _engine.bf16_unit())"
    has_dot = {"avx512f", "avx512_bf16"} <= f
    chosen = _python(unit, DNPU_CORE_BF16="").split()[1]          # the default choice
    if not has_dot:
        assert chosen == "none"
    elif {"amx_tile", "amx_bf16"} <= f:
        assert chosen in ("amx", "avx512bf16")                  # the OS may refuse the tile state
    else:
        assert chosen == "avx512bf16"
    assert _python(unit, DNPU_CORE_BF16="0") == "False none"
    assert _python(unit, DNPU_CORE_BF16="avx512") == ("True avx512bf16" if has_dot else "False none")


@pytest.mark.parametrize("isa", ISAS)
def test_env_var_forces_each_path(isa):
    assert _python("import core; print(core.default_isa())", DNPU_CORE_ISA=isa) == isa


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dims", [(7, 90, 90, 90, 90, 90, 1), (7, 33, 17, 1), (5, 1)],
                         ids=lambda d: "x".join(map(str, d)))
def test_value_and_grad_agrees_with_generic(rng, isa, dims):
    s = core.Surrogate(*random_chain(rng, dims))
    x = rng.uniform(-1.2, 0.6, (517, dims[0])).astype(np.float32)
    y0, g0 = s.value_and_grad(x, isa="generic")
    for threads in (1, 2):
        y, g = s.value_and_grad(x, isa=isa, threads=threads)
        np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-5 * np.abs(y0).max())
        np.testing.assert_allclose(g, g0, rtol=1e-5, atol=1e-5 * np.abs(g0).max())


@pytest.mark.parametrize("isa", ISAS)
def test_network_agrees_with_generic(rng, isa):
    s = core.Surrogate(*random_chain(rng, (7, 90, 90, 90, 1)))
    nodes = [DnpuNode((0, 3, 4), control_voltages=rng.uniform(-0.5, 0.2, 4), input_low=-1.2, input_high=0.6)
             for _ in range(6)]
    net = Network(50, [Standardize(0.1, 0.9), Linear(rng.standard_normal((18, 50)) * 0.2, rng.standard_normal(18)),
                       DnpuLayer(nodes)], s)
    x = rng.standard_normal((1003, 50)).astype(np.float32)
    x[rng.uniform(size=x.shape) < 0.5] = 0.0
    y0 = net.evaluate(x, isa="generic")
    for threads in (1, 2):
        np.testing.assert_allclose(net.evaluate(x, isa=isa, threads=threads), y0, rtol=1e-5,
                                   atol=1e-5 * np.abs(y0).max())
