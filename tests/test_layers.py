"""The import graph of src/deliberate reads bottom to top, each layer importing only the ones below it.

Every ``import`` / ``from … import`` of a ``deliberate`` module counts, at module level or inside a function
(a lazy import is still a dependency). A module may import its own layer or lower ones, never a higher one, and
the graph has no cycles. The layers, lowest first:
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "deliberate"

LAYERS = [
    # foundation: nothing of deliberate below them (faults aside)
    ("foundation", {"distributed", "registry", "faults", "fileio", "lock"}),
    ("core", {"config", "rundir", "checkpoint"}),  # settings, run-directory files, training-state checkpoints
    ("data", {"data"}),
    ("generation", {"generation"}),
    ("learning", {"learning"}),
    ("practice", {"practice"}),
    ("job", {"job", "branch", "repair", "evaluation"}),
    ("reports", {"reports"}),
    ("cli", {"cli"}),
]
STANDALONE = {"theory"}  # Section 4: imports nothing else of deliberate, and nothing imports it but the CLI


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    if top in STANDALONE:
        return -1
    raise AssertionError(f"module deliberate.{module} is in no layer of tests/test_layers.py: add it to one")


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """The deliberate modules ``path`` imports (dotted, relative to the package)."""
    me = module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name[len("deliberate."):] for a in node.names if a.name.startswith("deliberate.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("deliberate"):
                    continue
                base = node.module.split(".")[1:]
            else:
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for a in node.names:  # `from . import x` names a module; `from .m import f` names m
                cand = ".".join(base + [a.name])
                out.add(cand if (SRC / Path(*cand.split("."))).with_suffix(".py").exists()
                        or (SRC / Path(*cand.split(".")) / "__init__.py").exists() else ".".join(base))
    return {m for m in out if m}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(SRC.rglob("*.py")) if module_name(p)}


def upward(graph_: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph_.items():
        lm = layer_of(mod)
        for dep in deps:
            ld = layer_of(dep)
            if lm == -1 and ld != -1:
                bad.append(f"{mod} (standalone) imports {dep}")
            elif ld == -1 and lm != -1 and mod != "cli":
                bad.append(f"{mod} imports the standalone {dep}")
            elif lm != -1 and ld > lm:
                bad.append(f"{mod} ({LAYERS[lm][0]}) imports {dep} ({LAYERS[ld][0]}), a higher layer")
    return sorted(bad)


def cycles(graph_: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among modules (a subpackage's ``__init__`` importing its own modules is not one)."""
    found, state = [], {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph_.get(m, ())):
            if d == m or (m and d.startswith(m + ".")):  # a package importing its members
                continue
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d] if d in stack else [m, d])
            elif d in graph_ and not state.get(d):
                visit(d, stack + [d])
        state[m] = 2

    for m in graph_:
        if not state.get(m):
            visit(m, [m])
    return found


def test_every_module_imports_only_downward():
    g = graph()
    assert len(g) > 30  # the walk found the package
    assert upward(g) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checker_catches_an_upward_import():
    """A learner module that imports the pool (practice, above learning) is reported, as is a cycle."""
    g = graph()
    src = (SRC / "learning" / "learner.py").read_text() + "\nfrom ..practice.pool import Pool\n"
    g["learning.learner"] = imports_of(SRC / "learning" / "learner.py", src)
    assert any("learning.learner (learning) imports practice.pool (practice)" in b for b in upward(g))
    g2 = graph()
    g2["distributed"] = g2["distributed"] | {"practice.pool"}
    assert cycles(g2) and upward(g2)


@pytest.mark.parametrize("module", ["distributed", "registry"])
def test_the_bottom_imports_nothing_of_deliberate(module):
    assert graph()[module] == set()
