"""Job objects of ``scontrol show job --json``, ``squeue --json`` and ``sacct --json`` as the
jobcomp/kafka record.

Pure functions: a decoded job object in, a :class:`~jobcompd.record.JobRecord` out. Two families
of objects exist, each in several shapes (Slurm's data_parser plugins, one per release):

* **scontrol/squeue** (``slurm_job_info_t``; has ``job_state``). 22.05 (OpenAPI v0.0.38, only
  ``squeue --json``): plain numbers (``null`` for unset), state a string, exit codes raw wait
  statuses. 23.02 (v0.0.39): times still plain, most counts ``{"set", "infinite",
  "number"}``. 23.11 (v0.0.40) and later: times ``{"set", ...}`` too, state a list such as
  ``["COMPLETED"]`` or ``["PENDING", "REQUEUED"]``, exit codes ``{"status": [...],
  "return_code": ..., "signal": {"id": ..., "name": ...}}`` (some 23.11 builds still print
  raw statuses).
* **sacct** (``slurmdb_job_rec_t``; has ``state: {current, reason}`` and ``time: {...}``).
  22.05 (dbv0.0.38): plain numbers, ``state.current`` a string, exit codes ``{"status",
  "return_code", "signal": {"signal_id", "name"}}``. 23.02 and later: the same nesting with
  ``{"set", ...}`` numbers and a state list. ``tres.requested``/``tres.allocated`` are lists
  of ``{"type", "name", "id", "count"}``, rendered here as Slurm's ``tres_req``/``tres_alloc``
  strings and their ``*_raw`` forms.

Every accessor takes any of these forms, so one mapping serves all versions. A field an object
does not carry is never invented: keys Slurm always writes become ``null``, the others are
left out. sacct prints user and group names but no numeric ids; the caller may pass an
:class:`IdLookup` (``jobcompd backfill`` resolves names on its host), without one such a job
is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from msgspec import UNSET, UnsetType

from jobcompd.record import (
    EVENT_END,
    EVENT_START,
    INFINITE,
    NO_VAL,
    JobRecord,
    RecordError,
    _cpu_hours,
    _elapsed,
    _finish_start,
    _json_preview,
    _queue_wait,
    _time,
    wait_status_pair,
)

__all__ = [
    "SACCT",
    "SCONTROL",
    "IdLookup",
    "NoRecord",
    "UnknownName",
    "end_epoch",
    "from_job",
    "is_job_object",
    "shape",
]

SCONTROL = "scontrol"
SACCT = "sacct"

_UINT32_MAX = 0xFFFFFFFF
_INT64_MAX = 2**63 - 1
#: The largest value each width may hold (64-bit values must fit the message's int64).
_LIMITS = {16: 0xFFFF, 32: _UINT32_MAX, 64: _INT64_MAX}
# Slurm's "unset" and "unlimited" per integer width; a plain number equal to one means unset.
_SENTINELS = {
    16: (0xFFFE, 0xFFFF),
    32: (NO_VAL, INFINITE),
    64: (2**64 - 2, 2**64 - 1),
}

_FINISHED = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE", "OUT_OF_MEMORY"}
)  # fmt: skip
_STARTED = frozenset({"RUNNING", "SUSPENDED"})
_BASE_STATES = _FINISHED | _STARTED | {"PENDING"}
#: A run that ended in a requeue: jobcomp records it with the base state, PENDING.
_REQUEUE_FLAGS = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"})
#: sacct's node list for a job that never got nodes.
_NO_NODES = "None assigned"


class NoRecord(RecordError):
    """The job is fine but its state gives no record of the event asked for (pending,
    still running, never started)."""


class UnknownName(RecordError):
    """A user or group sacct names (or leaves unnamed) does not resolve to an id here."""


class IdLookup(Protocol):
    """Resolves the user and group names sacct prints to numeric ids (None: unknown)."""

    def uid(self, name: str) -> int | None: ...

    def gid(self, name: str) -> int | None: ...


def is_job_object(obj: Mapping[str, Any]) -> bool:
    """A job object has ``job_id``; a record in the jobcomp schema has ``jobid`` instead."""
    return "job_id" in obj and "jobid" not in obj


def shape(job: Mapping[str, Any]) -> str:
    """SCONTROL (scontrol/squeue) or SACCT, told by the keys only that family has."""
    if "job_state" in job:
        return SCONTROL
    if isinstance(job.get("state"), Mapping) or isinstance(job.get("time"), Mapping):
        return SACCT
    raise RecordError(
        f"{_where(job)}: neither 'job_state' (scontrol/squeue --json) nor 'state'/'time' "
        "objects (sacct --json): not a Slurm job object"
    )


def from_job(
    job: Mapping[str, Any],
    *,
    event: str | None = None,
    send_script: bool = False,
    send_comment: bool = False,
    ids: IdLookup | None = None,
) -> tuple[str, JobRecord]:
    """The record jobcomp/kafka would have sent for this job, and its event.

    ``event`` (EVENT_END/EVENT_START) asks for that record; without it a finished job gives
    its end record and a running one its start record. A pending job has no record, an end
    record needs a finished job (or a run that ended in a requeue), a start record a job that
    got nodes. ``send_script``/``send_comment`` are JobCompParams' options of the same name.
    Raises RecordError naming the job, the field and the value.
    """
    if event not in (None, EVENT_END, EVENT_START):
        raise RecordError(f"event {event!r}: expected {EVENT_END!r} or {EVENT_START!r}")
    view = _View(job)
    sacct = shape(job) == SACCT
    fields = _sacct(view) if sacct else _scontrol(view)
    chosen = _choose_event(fields, event, view.where)
    if sacct:  # only for a job that has a record: a pending job's user need not resolve
        uid_of = ids.uid if ids is not None else None
        gid_of = ids.gid if ids is not None else None
        fields.uid = view.resolved_id("user_id", "user", fields.user_name, uid_of)
        fields.gid = view.resolved_id("group_id", "group", fields.group_name, gid_of)
    return chosen, _build(fields, chosen, send_script=send_script, send_comment=send_comment)


def end_epoch(job: Mapping[str, Any]) -> int:
    """The job's end time in epoch seconds; 0 when unset (still running or pending)."""
    view = _View(job)
    path = "end_time" if shape(job) == SCONTROL else "time.end"
    return view.epoch(path)


# ------------------------------------------------------------------------------------------
# The source-neutral view of a job


@dataclass(slots=True)
class _Fields:
    """What one job object says, in jobcomp's terms (None: the object does not carry it)."""

    job_id: int
    user_name: str | None
    uid: int | None  # None until resolved (sacct prints names only)
    group_name: str | None
    gid: int | None
    start: int
    end: int
    submit: int
    eligible: int
    resize: int
    base_state: str
    requeued: bool
    exit_code: str
    derived_ec: str
    nodes: str | None
    cpus: int
    node_count: int
    partition: str | None
    alloc_node: str | None
    container: str | None
    array_job_id: int | None
    array_task_id: int | None
    het_job_id: int
    het_job_offset: int
    priority: int | None
    work_dir: str | None
    std_err: str | None
    std_in: str | None
    std_out: str | None
    cluster: str | None
    qos: str | None
    ntasks: int | None
    ntasks_per_node: int | None
    ntasks_per_tres: int | None
    cpus_per_task: int | None
    excluded_nodes: str | None
    features: str | None
    time_limit_min: int | None
    job_name: str | None
    reservation: str | None
    wckey: str | None
    tres_req_raw: str | None
    tres_req: str | None
    tres_alloc_raw: str | None
    tres_alloc: str | None
    account: str | None
    admin_comment: str | None
    comment: str | None
    script: str | None
    failed_node: str | None


def _scontrol(o: _View) -> _Fields:
    """``scontrol show job --json`` / ``squeue --json`` (slurm_job_info_t)."""
    nodes = o.text("nodes")
    base, requeued = o.state("job_state")
    return _Fields(
        job_id=o.job_id(),
        user_name=o.text("user_name"),
        uid=o.required_id("user_id"),
        group_name=o.text("group_name"),
        gid=o.required_id("group_id"),
        start=o.epoch("start_time"),
        end=o.epoch("end_time"),
        submit=o.epoch("submit_time"),
        eligible=o.epoch("eligible_time"),
        resize=o.epoch("resize_time"),
        base_state=base,
        requeued=requeued,
        exit_code=o.exit_pair("exit_code"),
        derived_ec=o.exit_pair("derived_exit_code"),
        nodes=nodes,
        # For a job that never got nodes Slurm reports the requested minimum here, while
        # jobcomp's total_cpus/total_nodes are the allocation: 0.
        cpus=(o.number("cpus") or 0) if nodes else 0,
        node_count=(o.number("node_count") or 0) if nodes else 0,
        partition=o.text("partition"),
        alloc_node=o.text("allocating_node"),
        container=o.text("container"),
        array_job_id=o.number("array_job_id"),
        array_task_id=o.number("array_task_id"),
        het_job_id=o.number("het_job_id") or 0,
        het_job_offset=o.number("het_job_offset") or 0,
        priority=o.number("priority"),
        work_dir=o.text("current_working_directory"),
        std_err=o.text("standard_error"),
        std_in=o.text("standard_input"),
        std_out=o.text("standard_output"),
        # jobcomp's cluster is the cluster of the job's accounting association.
        cluster=o.text("cluster") if o.number("association_id") else None,
        qos=o.text("qos"),
        ntasks=o.number("tasks"),
        ntasks_per_node=o.number("tasks_per_node", bits=16),
        ntasks_per_tres=o.number("tasks_per_tres", bits=16),
        cpus_per_task=o.number("cpus_per_task", bits=16),
        excluded_nodes=o.text("excluded_nodes"),
        features=o.text("features"),
        time_limit_min=o.number("time_limit"),
        job_name=o.text("name"),
        reservation=o.text("resv_name"),
        wckey=o.text("wckey"),
        tres_req_raw=None,
        tres_req=o.text("tres_req_str"),
        tres_alloc_raw=None,
        tres_alloc=o.text("tres_alloc_str"),
        account=o.text("account"),
        admin_comment=o.text("admin_comment"),
        comment=o.text("comment"),
        script=None,
        failed_node=o.text("failed_node"),
    )


def _sacct(o: _View) -> _Fields:
    """``sacct --json`` (slurmdb_job_rec_t); uid and gid are resolved later, from the names."""
    nodes = o.text("nodes")
    if nodes == _NO_NODES:
        nodes = None
    base, requeued = o.state("state.current")
    user_name, group_name = o.text("user"), o.text("group")
    req_raw, req = o.tres("tres.requested")
    alloc_raw, alloc = o.tres("tres.allocated")
    wckey = o.get("wckey")
    return _Fields(
        job_id=o.job_id(),
        user_name=user_name,
        uid=None,
        group_name=group_name,
        gid=None,
        start=o.epoch("time.start"),
        end=o.epoch("time.end"),
        submit=o.epoch("time.submission"),
        eligible=o.epoch("time.eligible"),
        resize=0,
        base_state=base,
        requeued=requeued,
        exit_code=o.exit_pair("exit_code"),
        derived_ec=o.exit_pair("derived_exit_code"),
        nodes=nodes,
        cpus=o.tres_count("tres.allocated", "cpu") if nodes else 0,
        node_count=(o.number("allocation_nodes") or 0) if nodes else 0,
        partition=o.text("partition"),
        alloc_node=None,
        container=o.text("container"),
        array_job_id=o.number("array.job_id"),
        array_task_id=o.number("array.task_id"),
        het_job_id=o.number("het.job_id") or 0,
        het_job_offset=o.number("het.job_offset") or 0,
        priority=o.number("priority"),
        work_dir=o.text("working_directory"),
        std_err=o.text("stderr"),
        std_in=o.text("stdin"),
        std_out=o.text("stdout"),
        cluster=o.text("association.cluster"),
        qos=o.text("qos"),
        ntasks=None,
        ntasks_per_node=None,
        ntasks_per_tres=None,
        cpus_per_task=None,
        excluded_nodes=None,
        features=o.text("constraints"),
        time_limit_min=o.number("time.limit"),
        job_name=o.text("name"),
        # 22.05's dbv0.0.38 declares reservation.name a number by mistake: only a string is
        # a name.
        reservation=o.text("reservation.name", lenient=True),
        wckey=o.text("wckey.wckey") if isinstance(wckey, Mapping) else o.text("wckey"),
        tres_req_raw=req_raw,
        tres_req=req,
        tres_alloc_raw=alloc_raw,
        tres_alloc=alloc,
        account=o.text("account"),
        admin_comment=o.text("comment.administrator"),
        # sacct keeps the job's own comment in the "job" slot (slurmdbd's derived_es column).
        comment=o.text("comment.job"),
        script=o.text("script"),
        failed_node=o.text("failed_node"),
    )


def _choose_event(f: _Fields, event: str | None, where: str) -> str:
    finished = f.base_state in _FINISHED or (f.base_state == "PENDING" and f.requeued)
    started = f.start != 0 and f.nodes is not None
    if event is None:
        if finished:
            return EVENT_END
        if f.base_state in _STARTED and started:
            return EVENT_START
    elif event == EVENT_END and finished:
        return EVENT_END
    elif event == EVENT_START and started:
        return EVENT_START
    if event == EVENT_START:
        raise NoRecord(
            f"{where}: state {f.base_state} without nodes or start time: the job never "
            "started, so it has no start record"
        )
    if f.base_state == "PENDING":
        raise NoRecord(f"{where}: state PENDING: a job that has not run has no record yet")
    raise NoRecord(
        f"{where}: state {f.base_state}: an end record needs a finished job "
        f"({', '.join(sorted(_FINISHED))}, or PENDING with REQUEUED)"
    )


def _build(f: _Fields, event: str, *, send_script: bool, send_comment: bool) -> JobRecord:
    array_job_id: int | UnsetType = UNSET
    array_task_id: int | UnsetType = UNSET
    if f.array_task_id is not None:
        array_job_id, array_task_id = f.array_job_id or 0, f.array_task_id
    het_job_offset = f.het_job_offset if f.het_job_id else 0
    common: dict[str, Any] = {
        "jobid": f.job_id,
        "container": f.container,
        "username": f.user_name,
        "user_id": f.uid,
        "groupname": f.group_name,
        "group_id": f.gid,
        "partition": f.partition,
        "alloc_node": f.alloc_node,
        "nodes": f.nodes,
        "total_cpus": f.cpus,
        "total_nodes": f.node_count,
        "array_job_id": array_job_id,
        "array_task_id": array_task_id,
        "het_job_id": f.het_job_id,
        "het_job_offset": het_job_offset,
        "priority": _opt(f.priority),
        "submit": _time(f.submit, "submit time"),
        "eligible": _time(f.eligible, "eligible time"),
        "queue_wait": _queue_wait(f.start, f.eligible),
        "work_dir": _opt(f.work_dir),
        "std_err": _opt(f.std_err),
        "std_in": _opt(f.std_in),
        "std_out": _opt(f.std_out),
        "cluster": _opt(f.cluster),
        "qos": _opt(f.qos),
        "ntasks": _opt(f.ntasks),
        "ntasks_per_node": _opt(f.ntasks_per_node),
        "ntasks_per_tres": _opt(f.ntasks_per_tres),
        "cpus_per_task": _opt(f.cpus_per_task),
        "excluded_nodes": _opt(f.excluded_nodes),
        "features": _opt(f.features),
        "time_limit": UNSET if f.time_limit_min is None else f.time_limit_min * 60,
        "job_name": _opt(f.job_name),
        "reservation_name": _opt(f.reservation),
        "wc_key": _opt(f.wckey),
        "tres_req_raw": _opt(f.tres_req_raw),
        "tres_req": _opt(f.tres_req),
        "tres_alloc_raw": _opt(f.tres_alloc_raw),
        "tres_alloc": _opt(f.tres_alloc),
        "account": _opt(f.account),
        "admin_comment": _opt(f.admin_comment),
        "comment": _opt(f.comment) if send_comment else UNSET,
        "script": _opt(f.script) if send_script else UNSET,
    }
    if event == EVENT_START:
        return JobRecord(start=_time(f.start, "start time"), state=None, **common)
    elapsed = _elapsed(f.start, f.end)
    return JobRecord(
        # Like Slurm: @start is the resize time when there is one, elapsed uses the start.
        start=_finish_start(f.resize or f.start, f.end, "start time"),
        end=_time(f.end, "end time"),
        elapsed=elapsed,
        derived_ec=f.derived_ec,
        exit_code=f.exit_code,
        state="PENDING" if f.requeued and f.base_state == "PENDING" else f.base_state,
        failed_node=f.failed_node,
        cpu_hours=_cpu_hours(elapsed, f.cpus),
        pack_job_id=f.het_job_id,
        pack_job_offset=het_job_offset,
        **common,
    )


def _opt(value: Any) -> Any:
    return UNSET if value is None else value


# ------------------------------------------------------------------------------------------
# Typed access to one job object, whatever the data_parser version


def _where(job: Mapping[str, Any]) -> str:
    job_id = job.get("job_id")
    if isinstance(job_id, int) and not isinstance(job_id, bool) and job_id > 0:
        return f"job {job_id}"
    return "job object"


class _View:
    """Getters by dotted path ("time.end"); errors name the job, the path and the value."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.job = job
        self.where = _where(job)

    def _error(self, path: str, value: Any, expected: str) -> RecordError:
        return RecordError(f"{self.where}: {path}={_json_preview(value)}: expected {expected}")

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
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._error(path, raw, 'a non-negative integer or {"set", "infinite", "number"}')
        if value in _SENTINELS[bits]:
            return None
        if value > _LIMITS[bits]:
            raise self._error(path, raw, f"a {bits}-bit integer (at most {_LIMITS[bits]})")
        return value

    def epoch(self, path: str) -> int:
        """Epoch seconds; 0 when unset (Slurm's own "not set" value)."""
        return self.number(path, bits=64) or 0

    def job_id(self) -> int:
        job_id = self.number("job_id")
        if job_id is None or not 1 <= job_id <= _UINT32_MAX:
            raise self._error("job_id", self.job.get("job_id"), f"a job id from 1 to {_UINT32_MAX}")
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
            raise self._error(
                path,
                value,
                "a base job state (COMPLETED, FAILED, ...): this flag hides the "
                "job's base state, dump the job again once it has ended",
            )
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
            if not 0 <= value <= _UINT32_MAX:
                raise self._error(path, value, "a 32-bit wait status")
            return wait_status_pair(value)
        if not isinstance(value, Mapping):
            raise self._error(path, value, "a wait status or an exit-code object")
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
        """(type, label, id, count) of a TRES list; label is "type" or "type/name"; zero
        counts are left out, as Slurm never prints them."""
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
            count = self._number(f"{here}.count", item.get("count"), 64)
            if not count:
                continue
            tres_id = self._number(f"{here}.id", item.get("id"), 32)
            label = f"{item['type']}/{name}" if name else item["type"]
            items.append((item["type"], label, tres_id, count))
        return items

    def tres(self, path: str) -> tuple[str | None, str | None]:
        """The ``*_raw`` ("1=8,2=16000") and named ("cpu=8,mem=16000M") TRES strings.

        Like Slurm's assoc_mgr_make_tres_str_from_array: list order, zero counts skipped,
        memory and burst buffers (in MB) converted to a larger unit only when exact. The raw
        form needs every id; without them only the named form is made.
        """
        items = self._tres_items(path)
        if not items:
            return None, None
        named = ",".join(
            f"{label}={_mega(count) if kind.lower() in ('mem', 'bb') else count}"
            for kind, label, _, count in items
        )
        if any(tres_id is None for _, _, tres_id, _ in items):
            return None, named
        return ",".join(f"{tres_id}={count}" for _, _, tres_id, count in items), named

    def tres_count(self, path: str, label: str) -> int:
        """The count of one TRES ("cpu") in a list; 0 when absent."""
        return next((count for _, name, _, count in self._tres_items(path) if name == label), 0)


def _mega(count: int) -> str:
    """Slurm's convert_num_unit(count, UNIT_MEGA, NO_VAL, CONVERT_NUM_UNIT_EXACT).

    Divide by 1024 while the value is at least 1024 and a multiple of 512 (so halves such as
    1.5G still count as exact), then print an integer, or two decimals for a half.
    """
    units = "KMGTP"
    num = float(count)
    unit = 1  # "M" in units
    while num >= 1024 and int(num) % 512 == 0:
        num /= 1024
        unit += 1
    suffix = units[unit] if unit < len(units) else "?"
    if float(int(num)) == num:
        return f"{int(num)}{suffix}"
    return f"{num:.2f}{suffix}"
