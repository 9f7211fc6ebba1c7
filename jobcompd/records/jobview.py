"""Typed access to one Slurm job object, whatever the data_parser version printed it.

The same field comes in several forms across Slurm releases: plain numbers or ``{"set",
"infinite", "number"}`` objects, NO_VAL/INFINITE in every width and signedness, states as a
string or a list, exit codes as raw wait statuses or objects, TRES as lists. A
:class:`JobView` reads each form by dotted path ("time.end") and gives the value in one form,
or raises a RecordError that names the job, the path and the value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jobcompd.records.errors import RecordError, UnknownName, show_json
from jobcompd.records.slurmfmt import (
    INFINITE,
    INFINITE64,
    INT64_MAX,
    NO_CONSUME_VAL64,
    NO_VAL,
    NO_VAL64,
    UINT32_MAX,
    named_tres_value,
    wait_status_pair,
)

__all__ = ["FINISHED_STATES", "STARTED_STATES", "JobView", "describe_job"]

#: Base states of a job that has ended.
FINISHED_STATES = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE", "OUT_OF_MEMORY"}
)  # fmt: skip
#: Base states of a job that runs.
STARTED_STATES = frozenset({"RUNNING", "SUSPENDED"})
_BASE_STATES = FINISHED_STATES | STARTED_STATES | {"PENDING"}
#: A run that ended in a requeue: jobcomp records it with the base state, PENDING.
_REQUEUE_FLAGS = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"})
_KEPT_STATE_FLAG_HINT = (
    "a base job state (COMPLETED, FAILED, ...): this flag hides the job's base state, dump "
    "the job again once it has ended"
)

#: The largest value each width may hold (64-bit values must fit the message's int64).
_LIMITS = {16: 0xFFFF, 32: UINT32_MAX, 64: INT64_MAX}
# Slurm's "unset" and "unlimited" per integer width. A field may be printed through a wider
# type than its own (a 16-bit count as uint32, a uint32 through a 64-bit dumper), so each
# width also takes the wider widths' values.
_SENTINELS = {
    64: frozenset({NO_VAL64, INFINITE64}),
    32: frozenset({NO_VAL, INFINITE, NO_VAL64, INFINITE64}),
    16: frozenset({0xFFFE, 0xFFFF, NO_VAL, INFINITE, NO_VAL64, INFINITE64}),
}
#: NO_VAL and INFINITE printed as signed integers (INT32/INT64 dumpers print -2 and -1).
_SIGNED_UNSET = frozenset({-1, -2})
#: A time printed with a 32-bit sentinel (sacct 25.11 prints a pending-cancelled job's start
#: as 4294967294) is as unset as one printed with the 64-bit ones.
_TIME_UNSET = frozenset({NO_VAL, INFINITE})
#: sacct's TRES parser prints its uint64 counts as int64: -1 INFINITE64, -2 NO_VAL64,
#: -3 NO_CONSUME_VAL64.
_SIGNED_TRES = {-1: INFINITE64, -2: NO_VAL64, -3: NO_CONSUME_VAL64}


def describe_job(job: Mapping[str, Any]) -> str:
    """How messages name a job object: "job 42", or "job object" without a usable id."""
    job_id = job.get("job_id")
    if isinstance(job_id, int) and not isinstance(job_id, bool) and job_id > 0:
        return f"job {job_id}"
    return "job object"


class JobView:
    """Getters by dotted path ("time.end"); errors name the job, the path and the value."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.job = job
        self.where = describe_job(job)

    def _error(self, path: str, value: Any, expected: str) -> RecordError:
        return RecordError(f"{self.where}: {path}={show_json(value)}: expected {expected}")

    def get(self, path: str) -> Any:
        """The value at ``path``; None when it or an object on the way is absent or null."""
        value: Any = self.job
        walked = []
        for key in path.split("."):
            if value is None:
                return None
            if not isinstance(value, Mapping):
                raise self._error(".".join(walked), value, "an object")
            value = value.get(key)
            walked.append(key)
        return value

    def number(self, path: str, *, bits: int = 32) -> int | None:
        """A non-negative integer, plain or ``{"set", "infinite", "number"}``; None when unset,
        unlimited or one of Slurm's NO_VAL/INFINITE values of that width."""
        value = self.get(path)
        return self._number(path, value, bits)

    def _number(self, path: str, value: Any, bits: int) -> int | None:
        if value is None:
            return None
        raw = value
        if isinstance(value, Mapping):
            if value.get("set") is False or value.get("infinite") is True:
                return None
            if "number" not in value:
                raise self._error(path, raw, 'an integer or {"set", "infinite", "number"}')
            value = value["number"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(path, raw, 'a non-negative integer or {"set", "infinite", "number"}')
        if value in _SENTINELS[bits] or value in _SIGNED_UNSET:
            return None
        if value < 0:
            raise self._error(path, raw, 'a non-negative integer or {"set", "infinite", "number"}')
        if value > _LIMITS[bits]:
            raise self._error(path, raw, f"a {bits}-bit integer (at most {_LIMITS[bits]})")
        return value

    def epoch(self, path: str) -> int:
        """Epoch seconds; 0 when unset (Slurm's own "not set" value), also when printed as a
        32-bit NO_VAL/INFINITE."""
        value = self.number(path, bits=64) or 0
        return 0 if value in _TIME_UNSET else value

    def job_id(self) -> int:
        job_id = self.number("job_id")
        if job_id is None or not 1 <= job_id <= UINT32_MAX:
            raise self._error("job_id", self.job.get("job_id"), f"a job id from 1 to {UINT32_MAX}")
        return job_id

    def required_id(self, path: str) -> int:
        value = self.number(path)
        if value is None:
            raise self._error(path, self.get(path), "a numeric id")
        return value

    def resolved_id(
        self, path: str, what: str, name: str | None, lookup: Callable[[str], int | None] | None
    ) -> int:
        """A uid/gid from the object, else from its name through ``lookup`` (sacct)."""
        value = self.number(path)
        if value is not None:
            return value
        if name is None:
            raise UnknownName(f"{self.where}: no {what} name and no {path}: cannot tell the {path}")
        if lookup is None:
            raise RecordError(
                f"{self.where}: sacct prints the {what} name {name!r} but no {path}; "
                "render sacct dumps with 'jobcompd backfill', which resolves names on its host"
            )
        resolved = lookup(name)
        if resolved is None:
            raise UnknownName(
                f"{self.where}: {what} {name!r} is unknown on this host (sacct prints no "
                f"{path}); run where the cluster's {what}s resolve"
            )
        return resolved

    def text(self, path: str, *, lenient: bool = False) -> str | None:
        """A string; None when absent, null or empty (Slurm's unset string)."""
        value = self.get(path)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            if lenient:
                return None
            raise self._error(path, value, "a string")
        return value

    def state(self, path: str) -> tuple[str, bool]:
        """The base state and whether the run ended in a requeue.

        A list (23.11+) holds the base state and flags. A string (older) is job_state_string()
        output, where a set flag hides the base state: requeue flags mean base PENDING; any
        other flag (COMPLETING, CONFIGURING, ...) leaves the base state unknown.
        """
        value = self.get(path)
        if isinstance(value, str):
            if value in _BASE_STATES:
                return value, False
            if value in _REQUEUE_FLAGS:
                return "PENDING", True
            raise self._error(path, value, _KEPT_STATE_FLAG_HINT)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            bases = [v for v in value if v in _BASE_STATES]
            if len(bases) == 1:
                return bases[0], bool(_REQUEUE_FLAGS.intersection(value))
        raise self._error(path, value, 'a job state, e.g. "COMPLETED" or ["COMPLETED"]')

    def exit_pair(self, path: str) -> str:
        """Slurm's 'exit:signal' from a raw wait status or a data_parser exit-code object."""
        value = self.get(path)
        if value is None:
            return "0:0"
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= UINT32_MAX:
                raise self._error(path, value, "a 32-bit wait status")
            return wait_status_pair(value)
        if not isinstance(value, Mapping):
            raise self._error(path, value, "a wait status or an exit-code object")
        if "status" not in value and ("set" in value or "number" in value):
            # v0.0.39 (23.02): the raw wait status as a uint32 {"set", "infinite", "number"}
            raw = self.number(path)
            return "0:0" if raw is None else wait_status_pair(raw)
        status = value.get("status")
        if isinstance(status, list) and len(status) == 1:
            status = status[0]
        if status == "SIGNALED":
            signal = value.get("signal")
            if not isinstance(signal, Mapping):
                raise self._error(path, value, "a signal object with a SIGNALED status")
            sig_path = f"{path}.signal.{'id' if 'id' in signal else 'signal_id'}"
            sig = self.number(sig_path, bits=16)
            if sig is None:
                raise self._error(sig_path, self.get(sig_path), "the number of the signal")
            return f"0:{sig}"
        if status in ("SUCCESS", "ERROR"):
            return f"{self.number(f'{path}.return_code') or 0}:0"
        if status in ("PENDING", "CORE_DUMPED"):
            return "0:0"
        if status == "INVALID":
            raw = self.number(f"{path}.return_code")
            return "0:0" if raw is None else wait_status_pair(raw)
        raise self._error(
            path, value, "status SUCCESS, ERROR, SIGNALED, CORE_DUMPED, PENDING or INVALID"
        )

    def _tres_items(self, path: str) -> list[tuple[str, str, int | None, int]]:
        """(type, label, id, count) of a TRES list; label is "type" or "type/name"; the count
        is Slurm's uint64 (NO_VAL64 and the like as such); zero counts are left out, as Slurm
        never prints them."""
        value = self.get(path)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._error(path, value, 'a list of {"type", "name", "id", "count"}')
        items = []
        for index, item in enumerate(value):
            here = f"{path}[{index}]"
            if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
                raise self._error(here, item, 'an object {"type", "name", "id", "count"}')
            name = item.get("name")
            if name is not None and not isinstance(name, str):
                raise self._error(f"{here}.name", name, "a string")
            count = self._tres_count(f"{here}.count", item.get("count"))
            if not count:
                continue
            tres_id = self._number(f"{here}.id", item.get("id"), 32)
            label = f"{item['type']}/{name}" if name else item["type"]
            items.append((item["type"], label, tres_id, count))
        return items

    def _tres_count(self, path: str, value: Any) -> int:
        """A TRES count as Slurm's uint64: sacct prints counts as int64, so NO_VAL64 comes
        as -2 (every allocation's energy without an energy plugin), INFINITE64 as -1 and
        NO_CONSUME_VAL64 as -3."""
        raw = value
        if isinstance(value, Mapping):
            value = value.get("number") if value.get("set") is not False else 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(path, raw, "an integer")
        value = _SIGNED_TRES.get(value, value)
        if not 0 <= value <= INFINITE64:
            raise self._error(path, raw, "a 64-bit count (-1, -2 and -3 are Slurm's sentinels)")
        return value

    def tres(self, path: str) -> tuple[str | None, str | None]:
        """The ``*_raw`` ("1=8,2=16000") and named ("cpu=8,mem=16000M") TRES strings.

        Like Slurm's assoc_mgr_make_tres_str_from_array: list order, zero counts skipped,
        memory and burst buffers (in MB) converted to a larger unit only when exact. The raw
        form prints every count as it is, sentinels included; the named form leaves out
        NO_VAL64 and INFINITE64 and prints NO_CONSUME_VAL64 as 0. The raw form needs every
        id; without them only the named form is made.
        """
        items = self._tres_items(path)
        if not items:
            return None, None
        named = ",".join(
            f"{label}={named_tres_value(kind, count)}"
            for kind, label, _, count in items
            if count not in (NO_VAL64, INFINITE64)
        )
        if any(tres_id is None for _, _, tres_id, _ in items):
            return None, named or None
        raw = ",".join(f"{tres_id}={count}" for _, _, tres_id, count in items)
        return raw, named or None

    def tres_count(self, path: str, label: str) -> int:
        """The count of one TRES ("cpu") in a list; 0 when absent or a sentinel."""
        for _, name, _, count in self._tres_items(path):
            if name == label:
                return count if count < NO_CONSUME_VAL64 else 0
        return 0

