"""The package's modules import alone and in any order: each in a fresh interpreter, and no
two modules import each other, also through an import inside a function (such a cycle shows
only when the modules happen to be imported in the wrong order)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "jobcompd"


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: its dotted name, its file, whether it is a package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def imported(name: str, path: Path, is_package: bool, known: dict) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file: ``from X import Y``
    counts as X.Y when that is a module, else as X."""
    here = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    out.add(target)
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other (strongly connected components)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                found.append(sorted([v, *group]))

    for v in graph:
        if v not in order:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it():
    known = modules()
    graph = {name: imported(name, *known[name], known) for name in known}
    assert cycles(graph) == []


def test_each_module_imports_alone_in_a_fresh_interpreter():
    failed = []
    for name in modules():
        res = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
        if res.returncode != 0:
            failed.append(f"{name}: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    assert failed == []
