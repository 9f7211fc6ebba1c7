"""The README's configuration tables, written from the two tables (keys and options).

``python -m jobcompd.config.docs README.md`` rewrites the part of README.md between the
BEGIN and END markers; a test fails while the README differs from what this module writes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from jobcompd.config.keys import KEYS, Key
from jobcompd.config.params import OPTIONS, Option

BEGIN = "<!-- BEGIN configuration tables: python -m jobcompd.config.docs README.md -->"
END = "<!-- END configuration tables -->"


def key_default(key: Key) -> str:
    """A key's default as the README's table shows it."""
    if key.default is None:
        return key.default_doc
    return f"`{key.default}`" if key.default else "empty"


def option_default(option: Option) -> str:
    """An option's default as the README's table shows it."""
    if option.kind == "flag":
        return "off"
    if option.kind == "topic":
        return f"`{option.default}`"
    return "" if option.default is None else str(option.default)


def option_meaning(option: Option) -> str:
    """An option's doc, with its range when it takes a number."""
    if option.kind != "number":
        return option.doc
    note = f", {option.note}" if option.note else ""
    return f"{option.doc} ({option.low}..{option.high}{note})"


def _table(header: str, rows: Iterable[tuple[str, str, str]]) -> list[str]:
    lines = [f"| {header} | default | meaning |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def _option_rows(options: Iterable[Option]) -> list[tuple[str, str, str]]:
    """One row per option; consecutive options with the same default and meaning share one."""
    rows: list[tuple[str, str, str]] = []
    for option in options:
        name, default, meaning = f"`{option.usage()}`", option_default(option), \
            option_meaning(option)
        if rows and rows[-1][1:] == (default, meaning):
            rows[-1] = (f"{rows[-1][0]}, {name}", default, meaning)
        else:
            rows.append((name, default, meaning))
    return rows


def readme_tables() -> str:
    """The README's tables of keys and of JobCompParams' options, markers included."""
    lines = [BEGIN, ""]
    lines += _table("key", ((f"`{k.name}`", key_default(k), k.doc) for k in KEYS))
    lines += ["", "`JobCompParams`: Slurm's options, with Slurm's names, defaults and ranges.", ""]
    lines += _table("option", _option_rows(o for o in OPTIONS if o.slurm))
    lines += ["", "jobcompd's own additions:", ""]
    lines += _table("option", _option_rows(o for o in OPTIONS if not o.slurm))
    lines += ["", END]
    return "\n".join(lines)


def update_readme(text: str) -> str:
    """``text`` with the part between the markers replaced by :func:`readme_tables`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN!r} ... {END!r} block")
    return text[:start] + readme_tables() + text[end + len(END):]


def main(argv: list[str]) -> int:
    """Rewrite the README named in ``argv`` (README.md by default) in place."""
    path = Path(argv[0] if argv else "README.md")
    text = path.read_text()
    new = update_readme(text)
    if new != text:
        path.write_text(new)
        print(f"{path}: configuration tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
