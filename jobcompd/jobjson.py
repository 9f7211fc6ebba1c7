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

What the objects print is not always what Slurm's record holds, and the differences are undone
here: NO_VAL/INFINITE in every printed form (32- and 64-bit, unsigned and signed, ``{"set":
false}``) are unset; a TRES count sacct prints as -2 is NO_VAL64, which Slurm keeps in the
``*_raw`` string and drops from the named one; a job cancelled while pending has its end time as
start time; standard-stream paths that a parser expanded or filled in are left out, since the
submitted value is not in the object; scontrol's task count (the node count when none was
requested) is left out; a job cancelled or timed out while running has exit code ``0:0``, the
value at the state change when Slurm records it. docs/differences.md lists each with its reason.
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
NO_VAL64 = 2**64 - 2
INFINITE64 = 2**64 - 1
NO_CONSUME_VAL64 = 2**64 - 3
#: The largest value each width may hold (64-bit values must fit the message's int64).
_LIMITS = {16: 0xFFFF, 32: _UINT32_MAX, 64: _INT64_MAX}
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
#: Slurm's fixed TRES ids (src/common/slurmdb_defs.h TRES_*); GRES, licenses and burst
#: buffers get ids the site's database assigns.
_FIXED_TRES_IDS = {"cpu": 1, "mem": 2, "energy": 3, "node": 4, "billing": 5, "fs/disk": 6,
                   "vmem": 7, "pages": 8}  # fmt: skip
_ENERGY_ID = 3

_FINISHED = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE", "OUT_OF_MEMORY"}
)  # fmt: skip
_STARTED = frozenset({"RUNNING", "SUSPENDED"})
_BASE_STATES = _FINISHED | _STARTED | {"PENDING"}
#: A run that ended in a requeue: jobcomp records it with the base state, PENDING.
_REQUEUE_FLAGS = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"})
#: States slurmctld records the moment it kills the job, before the killed batch step reports
#: its status: the record's exit code is the one of that moment, 0:0.
_KILLED_AT_STATE_CHANGE = frozenset({"CANCELLED", "TIMEOUT"})
#: sacct's node list for a job that never got nodes.
_NO_NODES = "None assigned"
_KEPT_STATE_FLAG_HINT = (
    "a base job state (COMPLETED, FAILED, ...): this flag hides the job's base state, dump "
    "the job again once it has ended"
)


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
    got nodes. The state is read first: a job without a record raises NoRecord whatever its
    other fields hold. ``send_script``/``send_comment`` are JobCompParams' options of the
    same name. Raises RecordError naming the job, the field and the value.
    """
    if event not in (None, EVENT_END, EVENT_START):
        raise RecordError(f"event {event!r}: expected {EVENT_END!r} or {EVENT_START!r}")
    view = _View(job)
    sacct = shape(job) == SACCT
    chosen = _choose_event(_run(view, sacct), event, view.where)
    fields = _sacct(view, chosen) if sacct else _scontrol(view, chosen)
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


@dataclass(frozen=True, slots=True)
class _Run:
    """What decides the event: read before anything else, so that a job without a record
    is skipped however odd its other fields are."""

    base_state: str
    requeued: bool
    start: int
    nodes: str | None


def _run(o: _View, sacct: bool) -> _Run:
    o.job_id()
    base, requeued = o.state("state.current" if sacct else "job_state")
    nodes = o.text("nodes")
    if sacct and nodes == _NO_NODES:
        nodes = None
    start = o.epoch("time.start" if sacct else "start_time")
    return _Run(base, requeued, start, nodes)


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
    original_sluid: str | None = None
    array_job_id: int | None = None
    array_task_id: int | None = None
    het_job_id: int = 0
    het_job_offset: int = 0
    priority: int | None = None
    work_dir: str | None = None
    std_err: str | None = None
    std_in: str | None = None
    std_out: str | None = None
    cluster: str | None = None
    qos: str | None = None
    ntasks: int | None = None
    ntasks_per_node: int | None = None
    ntasks_per_tres: int | None = None
    cpus_per_task: int | None = None
    excluded_nodes: str | None = None
    features: str | None = None
    time_limit_min: int | None = None
    job_name: str | None = None
    reservation: str | None = None
    wckey: str | None = None
    tres_req_raw: str | None = None
    tres_req: str | None = None
    tres_alloc_raw: str | None = None
    tres_alloc: str | None = None
    account: str | None = None
    admin_comment: str | None = None
    comment: str | None = None
    script: str | None = None
    failed_node: str | None = None


def _scontrol(o: _View, event: str) -> _Fields:
    """``scontrol show job --json`` / ``squeue --json`` (slurm_job_info_t)."""
    nodes = o.text("nodes")
    base, requeued = o.state("job_state")
    std_err, std_in, std_out = _scontrol_streams(o)
    tres_req, tres_alloc = o.text("tres_req_str"), o.text("tres_alloc_str")
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
        original_sluid=o.text("step_id.sluid", lenient=True),
        std_err=std_err,
        std_in=std_in,
        std_out=std_out,
        # jobcomp's cluster is the cluster of the job's accounting association.
        cluster=o.text("cluster") if o.number("association_id") else None,
        tres_req_raw=_raw_from_named(tres_req, "tres_req_str", energy_unset=False),
        tres_req=tres_req,
        tres_alloc_raw=_raw_from_named(
            tres_alloc, "tres_alloc_str", energy_unset=_energy_unset(o, event, nodes)
        ),
        tres_alloc=tres_alloc,
        **_scontrol_request(o),
    )


def _energy_unset(o: _View, event: str, nodes: str | None) -> bool:
    """Whether Slurm's end record carries energy as NO_VAL64: a batch job that ran, whose
    energy slurmctld sets at the end (an srun/salloc allocation keeps 0, seen on 24.11)."""
    return event == EVENT_END and nodes is not None and o.get("batch_flag") is not False


def _scontrol_request(o: _View) -> dict[str, Any]:
    """The request side of a scontrol/squeue job: what was asked for, and its labels."""
    return {
        "array_job_id": o.number("array_job_id"),
        "array_task_id": o.number("array_task_id"),
        "het_job_id": o.number("het_job_id") or 0,
        "het_job_offset": o.number("het_job_offset") or 0,
        "priority": o.number("priority"),
        "work_dir": o.text("current_working_directory"),
        "qos": o.text("qos"),
        # `tasks` is the requested count, or the node count when none was requested (where
        # Slurm's record says 0): the object cannot tell which, so ntasks is left out.
        "ntasks": None,
        "ntasks_per_node": o.number("tasks_per_node", bits=16),
        "ntasks_per_tres": o.number("tasks_per_tres", bits=16),
        "cpus_per_task": o.number("cpus_per_task", bits=16),
        "excluded_nodes": o.text("excluded_nodes"),
        "features": o.text("features"),
        "time_limit_min": o.number("time_limit"),
        "job_name": o.text("name"),
        "reservation": o.text("resv_name"),
        "wckey": o.text("wckey"),
        "account": o.text("account"),
        "admin_comment": o.text("admin_comment"),
        "comment": o.text("comment"),
        "failed_node": o.text("failed_node"),
    }


def _scontrol_streams(o: _View) -> tuple[str | None, str | None, str | None]:
    """(std_err, std_in, std_out) as submitted, where the object has them.

    data_parser v0.0.39 to v0.0.42 (Slurm 23.02 to 24.11, told by their {"set", ...} numbers
    and no ``stdout_expanded``) print the paths with their patterns expanded, Slurm's default
    ``slurm-%j.out`` when none was given, and the stdout path as standard_error when ``-e``
    was not given: the submitted value is not there, so std_out and std_err are left out.
    standard_input is ``/dev/null`` when unset, as sbatch submits it. v0.0.38 (22.05) and
    v0.0.43+ (25.05+, which add ``stdout_expanded``) print the paths as submitted.
    """
    std_in = o.text("standard_input")
    if "stdout_expanded" not in o.job and _has_number_objects(o.job):
        return None, std_in, None
    return o.text("standard_error"), std_in, o.text("standard_output")


def _has_number_objects(job: Mapping[str, Any]) -> bool:
    """data_parser v0.0.39+ print counts as {"set", "infinite", "number"}; v0.0.38 plainly."""
    return any(isinstance(job.get(key), Mapping) for key in ("time_limit", "cpus", "priority"))


def _sacct(o: _View, event: str) -> _Fields:
    """``sacct --json`` (slurmdb_job_rec_t); uid and gid are resolved later, from the names."""
    nodes = o.text("nodes")
    if nodes == _NO_NODES:
        nodes = None
    base, requeued = o.state("state.current")
    req_raw, req = o.tres("tres.requested")
    alloc_raw, alloc = o.tres("tres.allocated")
    start, end = o.epoch("time.start"), o.epoch("time.end")
    if not start and not nodes and base in _FINISHED:
        # slurmctld ends a job that never ran with start = end; the database keeps no start.
        start = end
    return _Fields(
        job_id=o.job_id(),
        user_name=o.text("user"),
        uid=None,
        group_name=o.text("group"),
        gid=None,
        start=start,
        end=end,
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
        tres_req_raw=req_raw,
        tres_req=req,
        tres_alloc_raw=alloc_raw,
        tres_alloc=alloc,
        **_sacct_request(o),
    )


def _sacct_request(o: _View) -> dict[str, Any]:
    """The request side of a sacct job: what was asked for, and its labels."""
    wckey = o.get("wckey")
    work_dir = o.text("working_directory")
    array_job_id = o.number("array.job_id")
    return {
        "array_job_id": array_job_id,
        "array_task_id": o.number("array.task_id"),
        "het_job_id": o.number("het.job_id") or 0,
        "het_job_offset": o.number("het.job_offset") or 0,
        "priority": o.number("priority"),
        "work_dir": work_dir,
        "std_err": o.text("stderr"),
        "std_in": o.text("stdin"),
        "std_out": _sacct_stdout(o.text("stdout"), work_dir, bool(array_job_id)),
        "cluster": o.text("association.cluster"),
        "qos": o.text("qos"),
        "features": o.text("constraints"),
        "time_limit_min": o.number("time.limit"),
        "job_name": o.text("name"),
        # 22.05's dbv0.0.38 declares reservation.name a number by mistake: only a string is
        # a name.
        "reservation": o.text("reservation.name", lenient=True),
        "wckey": o.text("wckey.wckey") if isinstance(wckey, Mapping) else o.text("wckey"),
        "account": o.text("account"),
        "admin_comment": o.text("comment.administrator"),
        # sacct keeps the job's own comment in the "job" slot (slurmdbd's derived_es column).
        "comment": o.text("comment.job"),
        "script": o.text("script"),
        "failed_node": o.text("failed_node"),
    }


def _sacct_stdout(stdout: str | None, work_dir: str | None, array: bool) -> str | None:
    """The stdout path the job was submitted with, or None.

    slurmctld sends the database ``<work_dir>/slurm-%j.out`` (``slurm-%A_%a.out`` for an
    array task) for a batch job that set none (accounting_storage/slurmdbd's
    _fill_stdout_str), and sacct prints it: that path, exactly, was not the job's own.
    """
    if stdout is None or work_dir is None:
        return stdout
    default = f"{work_dir}/slurm-{'%A_%a' if array else '%j'}.out"
    return None if stdout == default else stdout


def _choose_event(run: _Run, event: str | None, where: str) -> str:
    finished = run.base_state in _FINISHED or (run.base_state == "PENDING" and run.requeued)
    started = run.start != 0 and run.nodes is not None
    if event is None:
        if finished:
            return EVENT_END
        if run.base_state in _STARTED and started:
            return EVENT_START
    elif event == EVENT_END and finished:
        return EVENT_END
    elif event == EVENT_START and started:
        return EVENT_START
    if event == EVENT_START:
        raise NoRecord(
            f"{where}: state {run.base_state} without nodes or start time: the job never "
            "started, so it has no start record"
        )
    if run.base_state == "PENDING":
        raise NoRecord(f"{where}: state PENDING: a job that has not run has no record yet")
    raise NoRecord(
        f"{where}: state {run.base_state}: an end record needs a finished job "
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
        "original_sluid": _opt(f.original_sluid),
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
        "time_limit": UNSET if f.time_limit_min is None else f.time_limit_min * 60,
        "comment": _opt(f.comment) if send_comment else UNSET,
        "script": _opt(f.script) if send_script else UNSET,
        **{key: _opt(getattr(f, attr)) for key, attr in _OPTIONAL},
    }
    if event == EVENT_START:
        return JobRecord(start=_time(f.start, "start time"), state=None, **common)
    elapsed = _elapsed(f.start, f.end)
    killed = f.base_state in _KILLED_AT_STATE_CHANGE and f.nodes is not None
    return JobRecord(
        # Like Slurm: @start is the resize time when there is one, elapsed uses the start.
        start=_finish_start(f.resize or f.start, f.end, "start time"),
        end=_time(f.end, "end time"),
        elapsed=elapsed,
        derived_ec=f.derived_ec,
        exit_code="0:0" if killed else f.exit_code,
        state="PENDING" if f.requeued and f.base_state == "PENDING" else f.base_state,
        failed_node=f.failed_node,
        cpu_hours=_cpu_hours(elapsed, f.cpus),
        pack_job_id=f.het_job_id,
        pack_job_offset=het_job_offset,
        **common,
    )


#: (record key, _Fields attribute) of the keys Slurm writes only when set.
_OPTIONAL = (
    ("work_dir", "work_dir"), ("std_err", "std_err"), ("std_in", "std_in"),
    ("std_out", "std_out"), ("cluster", "cluster"), ("qos", "qos"), ("ntasks", "ntasks"),
    ("ntasks_per_node", "ntasks_per_node"), ("ntasks_per_tres", "ntasks_per_tres"),
    ("cpus_per_task", "cpus_per_task"), ("excluded_nodes", "excluded_nodes"),
    ("features", "features"), ("job_name", "job_name"), ("reservation_name", "reservation"),
    ("wc_key", "wckey"), ("tres_req_raw", "tres_req_raw"), ("tres_req", "tres_req"),
    ("tres_alloc_raw", "tres_alloc_raw"), ("tres_alloc", "tres_alloc"),
    ("account", "account"), ("admin_comment", "admin_comment"),
)  # fmt: skip


def _opt(value: Any) -> Any:
    return UNSET if value is None else value


# ------------------------------------------------------------------------------------------
# TRES strings


def _raw_from_named(named: str | None, path: str, *, energy_unset: bool) -> str | None:
    """The ``*_raw`` string ("1=8,2=16000") Slurm makes beside a named one, where it can be
    told: every TRES must have a fixed id (GRES, licenses and burst buffers have ids the
    site's database assigns), and memory must convert back to whole MB.

    ``energy_unset``: a batch job's end record carries energy as NO_VAL64 when no energy
    plugin measured it, an entry Slurm keeps in the raw string and drops from the named one
    (assoc_mgr_make_tres_str_from_array), so it is put back in its place (id 3).
    """
    if named is None:
        return None
    pairs: list[tuple[int, int]] = []
    for item in named.split(","):
        name, _, value = item.partition("=")
        tres_id = _FIXED_TRES_IDS.get(name)
        count = _named_count(value, mega=name == "mem")
        if tres_id is None or count is None:
            return None
        pairs.append((tres_id, count))
    if energy_unset and all(tres_id != _ENERGY_ID for tres_id, _ in pairs):
        at = sum(1 for tres_id, _ in pairs if tres_id < _ENERGY_ID)
        pairs.insert(at, (_ENERGY_ID, NO_VAL64))
    return ",".join(f"{tres_id}={count}" for tres_id, count in pairs)


_UNIT_POWER = {"M": 0, "G": 1, "T": 2, "P": 3, "E": 4}


def _named_count(value: str, *, mega: bool) -> int | None:
    """A count of a named TRES string; memory in MB from Slurm's exact unit form
    ("16000M", "16G", "1.50G"). None when it is not one of those."""
    if value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    if not mega or value[-1:] not in _UNIT_POWER:
        return None
    number, power = value[:-1], _UNIT_POWER[value[-1]]
    whole, _, fraction = number.partition(".")
    if not (whole.isascii() and whole.isdigit() and len(whole) <= 19):
        return None
    if fraction not in ("", "00", "50"):  # convert_num_unit's exact forms: N, N.00, N.50
        return None
    return (int(whole) * 2 + (fraction == "50")) * 1024**power // 2


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
            if not 0 <= value <= _UINT32_MAX:
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
            f"{label}={_named_value(kind, count)}"
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


def _named_value(kind: str, count: int) -> str:
    if count == NO_CONSUME_VAL64:
        return "0"
    return _mega(count) if kind.lower() in ("mem", "bb") else str(count)
