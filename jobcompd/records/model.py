"""The message model: :class:`JobRecord`, the JSON object Slurm's jobcomp/kafka sends, and
:class:`Record`, one message ready to produce.

The model is the one place that defines the message: ``jobcompd schema`` prints its JSON
Schema, and every source (environment dumps, job objects) builds a JobRecord. A key Slurm
always writes has no default (``null`` when the source lacks it); a key Slurm writes only
when set defaults to ``UNSET`` and is left out.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

import msgspec
from msgspec import UNSET, UnsetType

__all__ = ["EVENT_END", "EVENT_START", "JobRecord", "Record"]

EVENT_END = "job_end"
EVENT_START = "job_start"


def _f(description: str) -> msgspec.Meta:
    """A field's description, which ``jobcompd schema`` prints."""
    return msgspec.Meta(description=description)


_Str = str | UnsetType
_Int = int | UnsetType


class JobRecord(msgspec.Struct, kw_only=True, frozen=True):
    """The JSON object jobcomp/kafka sends, fields in Slurm's insertion order.

    Keys without a default are always written by Slurm (``null`` when the value is unset);
    keys defaulting to ``UNSET`` are written only when set, and some only in job end records.
    Decoding ignores keys this model does not know, so newer Slurm records still decode.
    The descriptions carry the Slurm versions (``jobcompd schema`` prints them).
    """

    jobid: Annotated[
        int,
        _f(
            "Job id; array tasks and heterogeneous job components have their own. Always "
            "present (Slurm 23.02+, like every key not marked otherwise)."
        ),
    ]
    sluid: Annotated[
        _Str,
        _f(
            "Job db_index as a SLUID: 's' + 13 Crockford base32 characters; changes on requeue "
            "and resize. Slurm 26.05+, always present there."
        ),
    ] = UNSET
    original_sluid: Annotated[
        _Str,
        _f(
            "SLUID of this run (step_id.sluid); changes on requeue, not on resize. Slurm 26.05+, "
            "only when non-zero."
        ),
    ] = UNSET
    container: Annotated[
        str | None, _f("OCI container bundle path; null when none. Always present.")
    ]
    username: Annotated[
        str | None, _f("User name; null when it cannot be resolved. Always present.")
    ]
    user_id: Annotated[int, _f("Numeric user id. Always present.")]
    groupname: Annotated[
        str | None, _f("Group name; null when it cannot be resolved. Always present.")
    ]
    group_id: Annotated[int, _f("Numeric group id. Always present.")]
    start: Annotated[
        _Str,
        _f(
            "Start time, UTC 'YYYY-MM-DDTHH:MM:SS' (no zone). End records: the resize time if "
            "the job was resized, else the start; omitted when the job never started (start 0, "
            "or start after end). Start records (25.05+): the job start. Before 23.11.9/24.05 an "
            "unset time was sent as 'Unknown'."
        ),
    ] = msgspec.field(default=UNSET, name="@start")
    end: Annotated[
        _Str,
        _f(
            "End time, UTC 'YYYY-MM-DDTHH:MM:SS'; 'now' for a resize. End records only; "
            "omitted when unknown (23.11.9+/24.05+; before: 'Unknown')."
        ),
    ] = msgspec.field(default=UNSET, name="@end")
    elapsed: Annotated[
        _Int,
        _f(
            "Run time in seconds: end - start (not the resize time) when both are set and "
            "start < end, else 0 (23.11.1+; before, an unset time gave a meaningless value). "
            "End records only."
        ),
    ] = UNSET
    partition: Annotated[
        str | None,
        _f(
            "Partition the job ran in (25.05+; before 25.05 the requested partition list, "
            "comma-separated). Always present, null when unset."
        ),
    ]
    alloc_node: Annotated[
        str | None,
        _f("Host the job was submitted or allocated from; null when unknown. Always present."),
    ]
    nodes: Annotated[
        str | None,
        _f(
            "Allocated nodes as a Slurm hostlist expression, e.g. 'node[01-02]'; null when "
            "the job never got nodes. Always present."
        ),
    ]
    total_cpus: Annotated[
        int, _f("Allocated CPUs; 0 for a job that never got nodes. Always present.")
    ]
    total_nodes: Annotated[
        int, _f("Allocated nodes; 0 for a job that never got nodes. Always present.")
    ]
    derived_ec: Annotated[
        _Str,
        _f(
            "Highest exit status of the job's steps as 'exit:signal' (a signalled step gives "
            "'0:<sig>'). End records only."
        ),
    ] = UNSET
    exit_code: Annotated[
        _Str,
        _f(
            "Job exit status as 'exit:signal' (a signalled job gives '0:<sig>'). TIMEOUT and "
            "CANCELLED jobs are recorded with '0:0' at the state change. End records only."
        ),
    ] = UNSET
    state: Annotated[
        str | None,
        _f(
            "End records: base job state (COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, "
            "PREEMPTED, BOOT_FAIL, DEADLINE, OUT_OF_MEMORY, PENDING for a requeue; RESIZING for a "
            "resize). Start records (25.05+): always null. Always present."
        ),
    ]
    failed_node: Annotated[
        str | UnsetType | None,
        _f("Node that caused the failure, or null. End records only (always there)."),
    ] = UNSET
    cpu_hours: Annotated[
        float | UnsetType,
        _f(
            "elapsed * total_cpus / 3600 computed in single precision, printed with %.17g "
            "(e.g. 0.02777777798473835, 8.0). End records only."
        ),
    ] = UNSET
    array_job_id: Annotated[_Int, _f("Array job id; array tasks only.")] = UNSET
    array_task_id: Annotated[_Int, _f("Array task id; array tasks only.")] = UNSET
    pack_job_id: Annotated[
        _Int,
        _f(
            "Legacy name of het_job_id. End records only; in practice always present (0 for "
            "ordinary jobs)."
        ),
    ] = UNSET
    pack_job_offset: Annotated[
        _Int, _f("Legacy name of het_job_offset. End records only; in practice always present.")
    ] = UNSET
    het_job_id: Annotated[
        _Int, _f("Heterogeneous job leader id; 0 for ordinary jobs (in practice always present).")
    ] = UNSET
    het_job_offset: Annotated[
        _Int, _f("Component offset in a heterogeneous job; 0 for ordinary jobs.")
    ] = UNSET
    priority: Annotated[_Int, _f("Job priority. Slurm 24.05+; omitted when unset or infinite.")] = (
        UNSET
    )
    submit: Annotated[
        _Str,
        _f(
            "Submit time, UTC 'YYYY-MM-DDTHH:MM:SS' (for a requeued job: the requeue time); "
            "when set (before 23.11.9/24.05: 'Unknown' when unset)."
        ),
    ] = msgspec.field(default=UNSET, name="@submit")
    eligible: Annotated[
        _Str,
        _f(
            "Eligible (begin) time, UTC 'YYYY-MM-DDTHH:MM:SS'; when set (before 23.11.9/24.05: "
            "'Unknown' when unset)."
        ),
    ] = msgspec.field(default=UNSET, name="@eligible")
    queue_wait: Annotated[
        _Int,
        _f(
            "Seconds from eligible to start; only when both are set and the result is >= 0 "
            "(23.11.9+/24.05+; before, it could be negative)."
        ),
    ] = msgspec.field(default=UNSET, name="@queue_wait")
    work_dir: Annotated[_Str, _f("Working directory; when set.")] = UNSET
    std_err: Annotated[_Str, _f("stderr path as submitted (patterns like %j unexpanded).")] = UNSET
    std_in: Annotated[_Str, _f("stdin path as submitted.")] = UNSET
    std_out: Annotated[_Str, _f("stdout path as submitted (patterns like %j unexpanded).")] = UNSET
    cluster: Annotated[
        _Str,
        _f(
            "Cluster of the job's accounting association (absent without accounting); not "
            "slurm.conf's ClusterName."
        ),
    ] = UNSET
    qos: Annotated[_Str, _f("QOS name; when set.")] = UNSET
    ntasks: Annotated[_Int, _f("Requested tasks; when set.")] = UNSET
    ntasks_per_node: Annotated[_Int, _f("Requested tasks per node; when set.")] = UNSET
    ntasks_per_tres: Annotated[_Int, _f("Requested tasks per GPU/TRES; when set.")] = UNSET
    cpus_per_task: Annotated[_Int, _f("Requested CPUs per task; when set.")] = UNSET
    orig_dependency: Annotated[
        _Str, _f("Dependency as submitted, e.g. 'afterok:4(unfulfilled)'; when set.")
    ] = UNSET
    excluded_nodes: Annotated[_Str, _f("Excluded nodes (--exclude); when set.")] = UNSET
    features: Annotated[_Str, _f("Requested features (--constraint); when set.")] = UNSET
    time_limit: Annotated[
        _Int,
        _f(
            "Time limit in seconds (partition MaxTime when the job has none); omitted when "
            "unlimited."
        ),
    ] = UNSET
    job_name: Annotated[_Str, _f("Job name, raw (may hold newlines and UTF-8).")] = UNSET
    reservation_name: Annotated[_Str, _f("Reservation; when set.")] = UNSET
    wc_key: Annotated[_Str, _f("WCKey; when set.")] = UNSET
    tres_req_raw: Annotated[
        _Str,
        _f("Requested TRES as '<id>=<count>,...' (mem in MB), e.g. '1=8,2=16000'. 23.11.1+."),
    ] = UNSET
    tres_req: Annotated[
        _Str,
        _f(
            "Requested TRES as '<name>=<value>,...'; memory and burst buffers converted to a "
            "larger unit only when exact, e.g. 'cpu=8,mem=16G,gres/gpu=2'."
        ),
    ] = UNSET
    tres_alloc_raw: Annotated[
        _Str, _f("Allocated TRES as '<id>=<count>,...'. 23.11.1+ (refreshed at job end).")
    ] = UNSET
    tres_alloc: Annotated[_Str, _f("Allocated TRES as '<name>=<value>,...'.")] = UNSET
    account: Annotated[_Str, _f("Account; when set.")] = UNSET
    admin_comment: Annotated[_Str, _f("Admin comment. Slurm 26.05+; when set.")] = UNSET
    comment: Annotated[
        _Str, _f("Job comment. Slurm 26.05+; only with JobCompParams send_comment.")
    ] = UNSET
    script: Annotated[
        _Str,
        _f(
            "Batch script. Slurm 25.05+: only with JobCompParams send_script; before 25.05 always "
            "sent for batch jobs."
        ),
    ] = UNSET
    parent_accounts: Annotated[
        _Str,
        _f(
            "Association chain '/root/.../account' (root first, the account usually twice); "
            "with accounting only."
        ),
    ] = UNSET


class Record(NamedTuple):
    """One message ready to produce. A named tuple: the daemon builds one per record, and a
    tuple is the cheapest object to build and to hold."""

    job_id: int
    event: str  # EVENT_END or EVENT_START
    value: bytes  # exact message bytes
    record_id: str  # the `jobcompd-id` header value (hex)


