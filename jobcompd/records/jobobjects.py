"""Job objects of ``scontrol show job --json``, ``squeue --json`` and ``sacct --json`` as the
jobcomp/kafka record.

Pure functions: a decoded job object in, a :class:`~jobcompd.records.model.JobRecord` out.
Two families of objects exist, each in several shapes (Slurm's data_parser plugins, one per
release):

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

Every accessor (:class:`~jobcompd.records.jobview.JobView`) takes any of these forms, so one
mapping serves all versions. A field an object does not carry is never invented: keys Slurm
always writes become ``null``, the others are left out. sacct prints user and group names but
no numeric ids; the caller may pass an :class:`IdLookup` (``jobcompd backfill`` resolves names
on its host), without one such a job is refused.

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from msgspec import UNSET, UnsetType

from jobcompd.records.errors import NoRecord, RecordError, UnknownName
from jobcompd.records.jobview import FINISHED_STATES, STARTED_STATES, JobView, describe_job
from jobcompd.records.model import EVENT_END, EVENT_START, JobRecord
from jobcompd.records.slurmfmt import (
    cpu_hours,
    elapsed,
    finish_start,
    format_time,
    queue_wait,
    raw_tres_from_named,
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

#: States slurmctld records the moment it kills the job, before the killed batch step reports
#: its status: the record's exit code is the one of that moment, 0:0.
_KILLED_AT_STATE_CHANGE = frozenset({"CANCELLED", "TIMEOUT"})
#: sacct's node list for a job that never got nodes.
_NO_NODES = "None assigned"


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
        f"{describe_job(job)}: neither 'job_state' (scontrol/squeue --json) nor 'state'/'time' "
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
    view = JobView(job)
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
    view = JobView(job)
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


def _run(o: JobView, sacct: bool) -> _Run:
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


def _scontrol(o: JobView, event: str) -> _Fields:
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
        tres_req_raw=raw_tres_from_named(tres_req, energy_unset=False),
        tres_req=tres_req,
        tres_alloc_raw=raw_tres_from_named(
            tres_alloc, energy_unset=_energy_unset(o, event, nodes)
        ),
        tres_alloc=tres_alloc,
        **_scontrol_request(o),
    )


def _energy_unset(o: JobView, event: str, nodes: str | None) -> bool:
    """Whether Slurm's end record carries energy as NO_VAL64: a batch job that ran, whose
    energy slurmctld sets at the end (an srun/salloc allocation keeps 0, seen on 24.11)."""
    return event == EVENT_END and nodes is not None and o.get("batch_flag") is not False


def _scontrol_request(o: JobView) -> dict[str, Any]:
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


def _scontrol_streams(o: JobView) -> tuple[str | None, str | None, str | None]:
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


def _sacct(o: JobView, event: str) -> _Fields:
    """``sacct --json`` (slurmdb_job_rec_t); uid and gid are resolved later, from the names."""
    nodes = o.text("nodes")
    if nodes == _NO_NODES:
        nodes = None
    base, requeued = o.state("state.current")
    req_raw, req = o.tres("tres.requested")
    alloc_raw, alloc = o.tres("tres.allocated")
    start, end = o.epoch("time.start"), o.epoch("time.end")
    if not start and not nodes and base in FINISHED_STATES:
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


def _sacct_request(o: JobView) -> dict[str, Any]:
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
    finished = run.base_state in FINISHED_STATES or (run.base_state == "PENDING" and run.requeued)
    started = run.start != 0 and run.nodes is not None
    if event is None:
        if finished:
            return EVENT_END
        if run.base_state in STARTED_STATES and started:
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
        f"({', '.join(sorted(FINISHED_STATES))}, or PENDING with REQUEUED)"
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
        "submit": format_time(f.submit, "submit time"),
        "eligible": format_time(f.eligible, "eligible time"),
        "queue_wait": queue_wait(f.start, f.eligible),
        "time_limit": UNSET if f.time_limit_min is None else f.time_limit_min * 60,
        "comment": _opt(f.comment) if send_comment else UNSET,
        "script": _opt(f.script) if send_script else UNSET,
        **{key: _opt(getattr(f, attr)) for key, attr in _OPTIONAL},
    }
    if event == EVENT_START:
        return JobRecord(start=format_time(f.start, "start time"), state=None, **common)
    run_time = elapsed(f.start, f.end)
    killed = f.base_state in _KILLED_AT_STATE_CHANGE and f.nodes is not None
    return JobRecord(
        # Like Slurm: @start is the resize time when there is one, elapsed uses the start.
        start=finish_start(f.resize or f.start, f.end, "start time"),
        end=format_time(f.end, "end time"),
        elapsed=run_time,
        derived_ec=f.derived_ec,
        exit_code="0:0" if killed else f.exit_code,
        state="PENDING" if f.requeued and f.base_state == "PENDING" else f.base_state,
        failed_node=f.failed_node,
        cpu_hours=cpu_hours(run_time, f.cpus),
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
