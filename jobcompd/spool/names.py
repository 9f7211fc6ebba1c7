"""Spool file names: ``<epoch-ns>.<jobid>.<event>.<format>`` (SPEC.md, "Names").

The only place in Python that knows the rule. The nanoseconds have exactly 19 digits, so that
plain string order is time order; the job id is Slurm's uint32, never 0.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from jobcompd.spool.errors import RejectedFile

EVENTS = ("end", "start")
FORMATS = ("env", "json")
NS_DIGITS = 19
MAX_JOB_ID = 2**32 - 1  # Slurm job ids are uint32

_NAME_RE = re.compile(r"(?P<ns>[0-9]{19})\.(?P<job>[1-9][0-9]{0,9})\.(?P<event>end|start)"
                      r"\.(?P<fmt>env|json)")


class SpoolName(NamedTuple):
    """The parts of a spool file name (a named tuple: one is made per record)."""

    name: str
    ns: int
    job_id: int
    event: str
    fmt: str


def parse_name(name: str) -> SpoolName:
    """Split `<epoch-ns>.<jobid>.<event>.<format>`; anything else is rejected as bad_name."""
    m = _NAME_RE.fullmatch(name)
    if m is None or int(m["job"]) > MAX_JOB_ID:
        raise RejectedFile(
            name, "bad_name",
            f"spool file {name!r} is not named <epoch-ns>.<jobid>.<event>.<format> "
            f"({NS_DIGITS}-digit nanoseconds, job id 1..{MAX_JOB_ID}, event "
            f"{'|'.join(EVENTS)}, format {'|'.join(FORMATS)}); only jobcompd-spool and "
            "jobcompd write to new/")
    return SpoolName(name=name, ns=int(m["ns"]), job_id=int(m["job"]), event=m["event"],
                     fmt=m["fmt"])


def make_name(ns: int, job_id: int, event: str, fmt: str) -> str:
    """Build a spool file name; raises ValueError for values parse_name would reject."""
    if not 0 <= ns < 10**NS_DIGITS:
        raise ValueError(f"time stamp {ns} ns does not fit {NS_DIGITS} digits")
    if not 1 <= job_id <= MAX_JOB_ID:
        raise ValueError(f"job id {job_id} is outside 1..{MAX_JOB_ID}")
    if event not in EVENTS:
        raise ValueError(f"event {event!r} is not one of {', '.join(EVENTS)}")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return f"{ns:0{NS_DIGITS}d}.{job_id}.{event}.{fmt}"


def check_entry_name(name: str) -> None:
    """Refuse names that would leave the directory (they never come from a scan)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RejectedFile(name, "bad_name", f"{name!r} is not a file name in the spool")
