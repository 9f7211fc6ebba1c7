"""What every part of the configuration shares: the error type and the reading of a file.

A configuration problem is always a :class:`ConfigError` whose text is the whole message for
the operator: the file, the line when there is one, the key, what is wrong and what to do.
The helpers here keep those messages one line long and free of the operator's raw bytes.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Slurm trims with C isspace(); Python's str.strip() would also eat Unicode spaces.
C_SPACE = " \t\n\v\f\r"
#: A config file larger than this is not a config file (or is /dev/zero); it is refused.
MAX_FILE_BYTES = 1 << 20
#: The longest piece of an operator's value repeated in a message.
SHOWN_CHARS = 40
#: The longest file name repeated in a message about reading it.
SHOWN_PATH_CHARS = 300


class ConfigError(Exception):
    """A configuration problem; ``str(e)`` is the complete message for the operator."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A value as written in a file, with its line for messages."""

    value: str
    line: int


def read_text(path: Path, what: str, fix: str = "") -> tuple[str, os.stat_result]:
    """Read a small regular text file; every failure is a ConfigError naming the file.
    ``fix`` says what to do when the file cannot be opened."""
    name = clip(str(path), SHOWN_PATH_CHARS)
    try:
        # O_NONBLOCK: a FIFO given by mistake must not hang the daemon at open().
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if not fix and isinstance(e, PermissionError):
            fix = ("; run this as root or as the daemon's user, and let that user read it "
                   "('jobcompd check' as root names the command)")
        raise ConfigError(f"{name}: cannot read {what}: {e.strerror}{fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{name}: {what} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{name}: cannot read {what}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{name}: {what} is larger than {MAX_FILE_BYTES} bytes")
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ConfigError(f"{name}:{line}: {what} contains a NUL byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{name}:{line}: {what} is not valid UTF-8") from None
    return text, st


def resolve(value: str, base: Path) -> Path:
    """Paths in a config file are relative to that file's folder, not to the cwd."""
    p = Path(value)
    return p if p.is_absolute() else base / p


def suggest(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean X?"`` for the closest choice (compared case-insensitively), or ``""``."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[close[0]]}?" if close else ""


def clip(value: str, limit: int = SHOWN_CHARS) -> str:
    """An operator's value as a message may repeat it: control characters escaped, and at
    most ``limit`` characters, with the length of what was left out."""
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in value[:limit])
    if len(value) > limit:
        shown += f"… ({len(value)} characters)"
    return shown


#: What :func:`decimal` gives for a number of more digits than any bound here needs.
HUGE = 10**21


def decimal(text: str) -> int | None:
    """``text`` as a base-10 integer with an optional sign, or None when it is not one.

    A number of more than twenty digits comes back as ``±HUGE``, outside every range a
    caller checks: the digits are counted before they are converted, because Python refuses
    to convert a long enough string of them (ValueError, ``sys.get_int_max_str_digits``)."""
    sign, digits = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    digits = digits.lstrip("0") or "0"
    number = HUGE if len(digits) > 20 else int(digits)
    return -number if sign == "-" else number
