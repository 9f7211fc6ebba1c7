"""The size rules a reader of the package relies on (docs/design.md, "Layout"): no class
over 300 lines, and no function over 60 lines unless its docstring says why it is longer
than most (the word "Longer" opens that reason)."""

from __future__ import annotations

import ast

from tests.support import ROOT

PACKAGE = ROOT / "jobcompd"
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


def _definitions() -> list[tuple[str, ast.AST]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((f"{where}:{node.lineno} {node.name}", node))
    return found


def _lines(node: ast.AST) -> int:
    return node.end_lineno - node.lineno + 1  # type: ignore[attr-defined,operator]


def test_no_class_is_over_300_lines() -> None:
    long = [f"{name} ({_lines(node)} lines)" for name, node in _definitions()
            if isinstance(node, ast.ClassDef) and _lines(node) > MAX_CLASS_LINES]
    assert long == [], "split these classes: " + "; ".join(long)


def test_a_long_function_says_why() -> None:
    unexplained = [
        f"{name} ({_lines(node)} lines)" for name, node in _definitions()
        if not isinstance(node, ast.ClassDef) and _lines(node) > MAX_FUNCTION_LINES
        and "Longer" not in (ast.get_docstring(node) or "")  # type: ignore[arg-type]
    ]
    assert unexplained == [], ("split these functions, or say in the docstring why they are "
                               "longer: " + "; ".join(unexplained))
