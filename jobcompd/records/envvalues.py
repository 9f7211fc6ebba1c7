"""One variable of a hook environment, checked and turned into the message's value.

Each getter takes the environment and the variable's name and, on a bad value, raises a
RecordError that names the variable and the accepted form, so a dead letter says what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from msgspec import UNSET, UnsetType

from jobcompd.records.errors import RecordError, show_text
from jobcompd.records.slurmfmt import INT64_MAX, UINT32_MAX, wait_status_pair

__all__ = [
    "cpus_per_node_total",
    "exit_pair",
    "integer",
    "job_id",
    "nullable",
    "optional",
    "time_limit",
    "wait_status",
]

# Digit counts are bounded so that int() never meets Python's limit on long digit strings.
_EXIT_PAIR = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")
_LIMIT = re.compile(r"(?:([0-9]{1,12})-)?([0-9]{1,12}):([0-5][0-9]):([0-5][0-9])")
_CPUS_ITEM = re.compile(r"([0-9]{1,10})(?:\(x([0-9]{1,10})\))?")


def integer(env: Mapping[str, str], name: str, *, default: int | None = None) -> int:
    """A non-negative 64-bit integer; ``default`` when absent, else absence is an error."""
    value = env.get(name)
    if value is None:
        if default is None:
            raise RecordError(f"{name} is missing: expected a non-negative integer")
        return default
    # isascii() first: str.isdigit() alone also takes digits of other scripts.
    if not (value.isascii() and value.isdigit() and len(value) <= 19) or (
        number := int(value)
    ) > INT64_MAX:
        raise RecordError(f"{name}={show_text(value)}: expected a non-negative integer")
    return number


def job_id(env: Mapping[str, str], name: str) -> int:
    """A job id, 1 to 2**32-1."""
    value = integer(env, name)
    if not 1 <= value <= UINT32_MAX:
        raise RecordError(f"{name}={value}: expected a job id from 1 to {UINT32_MAX}")
    return value


def optional(env: Mapping[str, str], name: str) -> str | UnsetType:
    """Slurm writes these keys only when set; the hooks pass unset strings as empty."""
    value = env.get(name, "")
    return value if value else UNSET


def nullable(env: Mapping[str, str], name: str) -> str | None:
    """Slurm always writes these keys, null when unset."""
    value = env.get(name, "")
    return value if value else None


def exit_pair(env: Mapping[str, str], name: str) -> str:
    """jobcomp/script's 'exit:signal', as it is."""
    value = env.get(name)
    if value is None:
        raise RecordError(f"{name} is missing: expected 'exit:signal', e.g. '0:0'")
    if not _EXIT_PAIR.fullmatch(value):
        raise RecordError(
            f"{name}={show_text(value)}: expected 'exit:signal', e.g. '3:0' or '0:9'"
        )
    return value


def wait_status(env: Mapping[str, str], name: str) -> str:
    """A raw wait(2) status (EpilogSlurmctld) as Slurm's 'exit:signal'."""
    if name not in env:
        raise RecordError(f"{name} is missing: expected a raw wait status, e.g. 768")
    status = integer(env, name)
    if status > UINT32_MAX:
        raise RecordError(f"{name}={status}: expected a 32-bit wait status")
    return wait_status_pair(status)


def time_limit(env: Mapping[str, str], name: str) -> int | UnsetType:
    """jobcomp/script's LIMIT, '[D-]HH:MM:SS' or 'UNLIMITED', in seconds (unset if unlimited)."""
    value = env.get(name)
    if value is None or value == "UNLIMITED":
        return UNSET
    match = _LIMIT.fullmatch(value)
    if not match:
        raise RecordError(f"{name}={show_text(value)}: expected '[D-]HH:MM:SS' or 'UNLIMITED'")
    days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def cpus_per_node_total(env: Mapping[str, str], name: str) -> int:
    """Sum Slurm's compressed CPU list, e.g. '4(x2),8' is 4+4+8 = 16 (0 when absent)."""
    value = env.get(name)
    if value is None:
        return 0
    total = 0
    for item in value.split(","):
        match = _CPUS_ITEM.fullmatch(item)
        if not match:
            raise RecordError(
                f"{name}={show_text(value)}: expected comma-separated 'N' or 'N(xM)' items, "
                "e.g. '4(x2),8'"
            )
        total += int(match[1]) * int(match[2] or 1)
    if total > INT64_MAX:
        raise RecordError(f"{name}: CPU total {total} is too large")
    return total
