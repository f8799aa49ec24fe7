"""The package's shape: imports only point down the flow, and read-only commands import no torch.

Layers, top to bottom: cli -> api -> flow (sweep, then report and trackers) -> sweep ->
training -> nn, data -> base (config, errors, io, stats, results: the results folder's owner);
bench (`bnexp bench bn`) sits under cli and needs nn only. report and track are side branches
that read files: they may import the base only. Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bnexp"
BASE = {"config", "errors", "io", "stats", "results"}

# area -> the areas it may import (besides itself)
ALLOWED = {
    "base": {"base"},
    "nn": {"base"},
    "data": {"base"},
    "training": {"nn", "data", "base"},
    "report": {"base"},
    "track": {"base"},
    "sweep": {"training", "nn", "data", "track", "base"},
    "bench": {"nn", "base"},  # `bnexp bench bn`: our BN against torch's, nothing of a run
    "flow": {"sweep", "training", "nn", "data", "report", "track", "base"},
    "api": {"flow", "sweep", "training", "nn", "data", "report", "track", "base"},
    "cli": {"api", "flow", "bench", "sweep", "training", "nn", "data", "report", "track", "base"},
    "main": {"cli"},
}


def area_of(module: str) -> str:
    """bnexp.sweep.store -> sweep; bnexp.config -> base; bnexp.__main__ -> main."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"  # bnexp/__init__.py: the public Python API
    top = parts[1]
    if top in BASE:
        return "base"
    return {"__main__": "main"}.get(top, top)


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports_of(path: Path, module: str, prefix: str = "bnexp") -> list[tuple[str, int]]:
    """Every module under `prefix` that `path` imports (at any depth), with the line."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith(prefix)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith(prefix):
                found.append((name, node.lineno))
                # `from bnexp.nn import norm`: the submodule is what is imported
                found += [(f"{name}.{a.name}", node.lineno) for a in node.names]
    return found


def test_every_import_points_down_the_flow():
    mods = modules()
    bad = []
    for module, path in mods.items():
        src = area_of(module)
        for target, line in imports_of(path, module):
            if target not in mods:
                continue  # a name imported from a module, not a module
            dst = area_of(target)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {src} imports {dst} ({target})"
                )
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_the_package_never_imports_the_benchmarks():
    """benchmarks/ (`make bench`) sits outside the package and imports bnexp, never the reverse:
    an installed bnexp has no benchmarks folder."""
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}"
        for module, path in modules().items()
        for name, line in imports_of(path, module, prefix="benchmarks")
    ]
    assert not bad, "\n".join(bad)


def test_the_shipped_benchmark_stays_small():
    """bnexp/bench holds what a user runs to check a machine (`bnexp bench bn`), <= 400 lines;
    the goal tables live in benchmarks/."""
    lines = sum(len(p.read_text().splitlines()) for p in (PACKAGE / "bench").rglob("*.py"))
    assert lines <= 400, f"bnexp/bench is {lines} lines"


def test_no_import_cycles():
    mods = modules()
    graph = {m: {t for t, _ in imports_of(p, m) if t in mods and t != m} for m, p in mods.items()}
    # a package's __init__ importing its own submodules is not a cycle of the flow
    for m in graph:
        graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(
                    " -> ".join(stack[stack.index(t) :] + [t]) if t in stack else f"{m} -> {t}"
                )
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_modules_stay_small():
    """No module over ~450 lines: one idea per module."""
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 460
    }
    assert not big, f"modules over 460 lines: {big}"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["status", "report-load"])
def test_read_only_paths_import_no_torch(tmp_path, command):
    """`bnexp status` and loading a report's inputs read files only: torch is never imported."""
    code = {
        "status": "from bnexp.cli import app\n"
        "import sys\n"
        "try:\n    app(['status', sys.argv[1]])\nexcept SystemExit:\n    pass\n",
        "report-load": "import bnexp.report, bnexp.sweep.store, bnexp.results\n",
    }[command]
    (tmp_path / "plan.csv").write_text("run_id\nabc\n")
    probe = (
        code
        + "import sys\n"
        + "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('TORCH' if bad else 'CLEAN')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        timeout=60,
    )
    assert out.stdout.strip().endswith("CLEAN"), out.stdout + out.stderr


def test_functions_fit_on_a_screen():
    """No function of the package over 80 lines (a long one is two ideas: split it)."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    long.append(f"{where} {node.name} ({n})")
    assert not long, f"functions over 80 lines: {long}"
