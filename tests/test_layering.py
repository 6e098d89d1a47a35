"""The one-way arrows of docs/architecture.md, read from the source's import statements."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    """{file: modules it imports} for every .py/.pyx file under `package`, relative imports resolved."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        here = list(rel.with_suffix("").parts)
        tree = ast.parse(path.read_text(), str(rel))
        mods: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level]        # 'pkg/mod' or 'pkg/__init__' -> 'pkg'
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                mods.add(mod)
                mods.update(f"{mod}.{a.name}" for a in node.names)
        out[str(rel)] = mods
    assert out, f"no sources under {package}"
    return out


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for f, mods in imported_modules(package).items():
        for m in sorted(mods):
            if any(m == x or m.startswith(x + ".") for x in forbidden):
                bad.append(f"{f} imports {m}")
    return bad


@pytest.mark.parametrize("package, forbidden", [
    ("core", ("host", "firmware_sim", "torch", "serial")),
    ("firmware_sim", ("host", "torch")),
    ("host/deploy", ("host.experiments", "host.networks", "host.sample", "host.surrogate.train", "torch")),
    ("host/experiments", ("host.deploy", "core._onnx")),
    ("host/networks", ("host.experiments", "host.deploy", "host.board")),
    ("host/board", ("firmware_sim", "host.experiments", "host.networks", "host.deploy", "torch")),
    ("host/sample", ("firmware_sim", "host.experiments", "host.networks", "host.deploy", "torch")),
])
def test_imports_follow_the_arrows(package: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(package, forbidden) == []


ELECTRODE_DECLARATION = {"core.electrodes"} | {f"core.electrodes.{n}" for n in
                                                ("N_ELECTRODES", "ELECTRODE_NAMES", "check_electrodes",
                                                 "parse_electrodes", "control_electrodes")}
#: the digital twin's device evaluates a surrogate file through the core: its reader and evaluator
SURROGATE_EVALUATOR = {"core.io", "core.io.load_surrogate", "core.surrogate", "core.surrogate.Surrogate",
                       "core.surrogate_format", "core.surrogate_format.check"}


def test_firmware_sim_uses_only_the_electrode_declaration_and_the_twin_the_surrogate_evaluator() -> None:
    for path, mods in imported_modules("firmware_sim").items():
        used = {m for m in mods if m == "core" or m.startswith("core.")}
        allowed = ELECTRODE_DECLARATION | (SURROGATE_EVALUATOR if path.endswith("firmware_sim/twin.py") else set())
        assert used <= allowed, (path, used - allowed)


def test_nothing_outside_core_reaches_its_private_modules() -> None:
    for package in ("host", "firmware_sim", "bench"):
        assert offenders(package, ("core._onnx", "core.network_onnx")) == []


def test_the_network_evaluator_knows_nothing_of_files() -> None:
    mods = imported_modules("core")["core/network.py"]
    assert not {m for m in mods if m.startswith(("core.io", "onnx"))}, mods
