"""One spool file in, the Kafka message Slurm's jobcomp/kafka would have sent out.

Pure functions: bytes in, values out; no I/O. Five sources are understood:

* the environment of Slurm's jobcomp/script (``JOBID`` …) → job end record;
* the environment of PrologSlurmctld (``SLURM_SCRIPT_CONTEXT=prolog_slurmctld``) → job start record;
* the environment of EpilogSlurmctld (``SLURM_SCRIPT_CONTEXT=epilog_slurmctld``) → job end record;
* JSON already in the jobcomp schema (a body from jobcomp/elasticsearch or jobcomp/kafka),
  passed through byte for byte (only ``script``/``comment`` cut out unless asked for);
* a Slurm job object (``scontrol show job --json``, ``squeue --json``, ``sacct --json``),
  rendered by :mod:`jobcompd.jobjson`.

Environment files are what ``env -0`` prints: ``KEY=VALUE`` entries, each ended by a NUL byte.
Values are decoded as UTF-8; invalid byte sequences become U+FFFD, so the message is always
valid UTF-8 JSON (Slurm's json-c would copy the raw bytes and emit invalid JSON instead).

The message is built as a :class:`JobRecord` and encoded exactly as json-c prints it for
Slurm (compact, insertion order, ``/`` as ``\\/``, ``cpu_hours`` with ``%.17g``). Fields an
environment does not carry are never invented: keys Slurm always writes become ``null``,
keys Slurm writes only when set are left out.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import struct
import time
from collections.abc import Mapping
from typing import Annotated, Any, NamedTuple

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "EVENT_END",
    "EVENT_START",
    "HOOK_TIME_VAR",
    "JobRecord",
    "Record",
    "RecordError",
    "encode",
    "from_env",
    "parse_env",
    "parse_record",
    "record_id",
    "wait_status_pair",
]

EVENT_END = "job_end"
EVENT_START = "job_start"

#: Added by jobcompd's spool hook: when it ran, in epoch seconds. Slurm 22.05 passes no start
#: or end time to PrologSlurmctld/EpilogSlurmctld, so this is the best time there is.
HOOK_TIME_VAR = "JOBCOMPD_HOOK_TIME"

NO_VAL = 0xFFFFFFFE  # Slurm's "not set" for 32-bit values
INFINITE = 0xFFFFFFFF  # Slurm's "unlimited" for 32-bit values
_INT64_MAX = 2**63 - 1
_UINT32_MAX = 0xFFFFFFFF

_PROLOG = "prolog_slurmctld"
_EPILOG = "epilog_slurmctld"


class RecordError(ValueError):
    """The input is not a record jobcompd can send; the message says what and where."""


# ------------------------------------------------------------------------------------------
# The message model


def _f(description: str) -> msgspec.Meta:
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
    """One message ready to produce. (A named tuple: it crosses from the parsing worker to
    the daemon by pickle, many per batch, and a tuple pickles at a fraction of a dataclass's
    cost.)"""

    job_id: int
    event: str  # EVENT_END or EVENT_START
    value: bytes  # exact message bytes
    record_id: str  # the `jobcompd-id` header value (hex)


# ------------------------------------------------------------------------------------------
# Encoding (json-c, as Slurm's serializer/json prints it)


def _json_c_double(x: float) -> bytes:
    """Print a double the way json-c does by default: %.17g, '.0' added to bare integers."""
    if not math.isfinite(x):
        raise RecordError(f"cpu_hours={x!r}: expected a finite number")
    text = format(x, ".17g")  # the same conversion as C's "%.17g"
    if "." not in text and "e" not in text:
        text += ".0"
    return text.encode("ascii")


def encode(rec: JobRecord) -> bytes:
    """The exact message bytes json-c would print for ``rec``.

    msgspec already matches json-c for everything but two details, fixed here: json-c escapes
    ``/`` (a ``/`` can only occur inside strings in JSON text, so a plain replace is exact)
    and prints doubles with ``%.17g`` instead of the shortest round-trip form.
    Control characters match as is: ``\\b \\f \\n \\r \\t`` and lowercase ``\\u00xx``.
    """
    if not isinstance(rec.cpu_hours, UnsetType):
        raw = msgspec.Raw(_json_c_double(rec.cpu_hours))
        rec = msgspec.structs.replace(rec, cpu_hours=raw)
    return msgspec.json.encode(rec).replace(b"/", b"\\/")


def _cpu_hours(elapsed: int, total_cpus: int) -> float:
    """Slurm's ``(elapsed * total_cpus) / 3600.0f``: the product and the quotient are floats.

    Computing in double and rounding to single after each step gives the correctly rounded
    single-precision result (double has more than 2*24+2 bits).
    """
    product = _to_float32(float(elapsed * total_cpus))
    return _to_float32(product / 3600.0)


def _to_float32(x: float) -> float:
    """Round to single precision (inputs stay below 2**127, so this never overflows)."""
    return struct.unpack("f", struct.pack("f", x))[0]


# ------------------------------------------------------------------------------------------
# Environment files


def parse_env(data: bytes) -> dict[str, str]:
    """Split an ``env -0`` dump into a dict.

    Every entry must end with a NUL byte (a missing final NUL means a cut-off file) and hold
    a ``=``; the value is everything after the first ``=``, so it may contain ``=`` and
    newlines. A repeated name keeps its first value, as getenv(3) does.
    """
    if not data:
        raise RecordError("empty file: expected NUL-separated KEY=VALUE entries (env -0)")
    if b"\0" not in data:
        raise RecordError(
            "not NUL-separated: expected KEY=VALUE entries each ended by a NUL byte (env -0)"
        )
    if not data.endswith(b"\0"):
        last = data.rsplit(b"\0", 1)[1]
        raise RecordError(
            f"last entry {_preview(last)} is not ended by a NUL byte: "
            "the file looks cut off (env -0 ends every entry with NUL)"
        )
    # One decode for the whole dump: NUL and "=" are ASCII, never inside a UTF-8 sequence, so
    # splitting after decoding gives what decoding each entry would, at a fraction of the cost.
    # dict() of the reversed pairs keeps the first value of a repeated name; it refuses an
    # entry without "=" (a pair of one), and an entry "=value" shows up as the name "".
    pairs = [entry.split("=", 1) for entry in data[:-1].decode("utf-8", "replace").split("\0")]
    try:
        env = dict(reversed(pairs))
    except ValueError:
        env = {"": ""}
    if "" in env:
        index, entry = next((i, "=".join(pair)) for i, pair in enumerate(pairs, start=1)
                            if len(pair) != 2 or not pair[0])
        raise RecordError(
            f"entry {index} {_preview(entry.encode())} is not KEY=VALUE "
            "(env -0 format expected)"
        )
    return env


def _preview(raw: bytes, limit: int = 60) -> str:
    """A bounded, printable rendering of raw bytes for error messages."""
    return _show(raw[: limit + 1].decode("utf-8", "replace"), limit)


def _json_preview(value: Any, limit: int = 60) -> str:
    """A decoded JSON value shown as JSON text, bounded, for error messages."""
    try:
        text = msgspec.json.encode(value).decode("utf-8", "replace")
    except (TypeError, ValueError, OverflowError):
        return f"(a JSON {type(value).__name__})"
    return text[:limit] + ("…" if len(text) > limit else "")


def _show(value: str, limit: int = 60) -> str:
    """A bounded, printable rendering of a value for error messages."""
    if len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


def from_env(env: Mapping[str, str], *, send_comment: bool = False) -> tuple[str, JobRecord]:
    """Build the record from a hook environment; the shape of the env tells the source.

    ``SLURM_SCRIPT_CONTEXT`` (PrologSlurmctld/EpilogSlurmctld) is checked first because a
    SPANK-provided job environment could in principle hold any other name. ``send_comment``
    (JobCompParams) adds the job comment where the environment has one (SLURM_JOB_COMMENT of
    the prolog and epilog; jobcomp/script passes none).
    """
    context = env.get("SLURM_SCRIPT_CONTEXT")
    if context is not None:
        rec = None
        if context == _PROLOG:
            event, rec = EVENT_START, _from_prolog(env)
        elif context == _EPILOG:
            event, rec = EVENT_END, _from_epilog(env)
        if rec is not None:
            if send_comment:
                rec = msgspec.structs.replace(rec, comment=_opt(env, "SLURM_JOB_COMMENT"))
            return event, rec
        raise RecordError(
            f"SLURM_SCRIPT_CONTEXT={_show(context)}: expected {_PROLOG!r} or {_EPILOG!r} "
            "(slurmd prologs and epilogs are not job records)"
        )
    if "JOBID" in env:
        return EVENT_END, _from_jobcomp_script(env)
    raise RecordError(
        "unknown environment: neither JOBID (jobcomp/script) nor SLURM_SCRIPT_CONTEXT "
        "(PrologSlurmctld/EpilogSlurmctld) is set"
    )


def _from_jobcomp_script(env: Mapping[str, str]) -> JobRecord:
    """The jobcomp/script environment (Slurm's job_record at job end) as a job end record.

    Not in this environment, so absent (or null where Slurm always writes the key):
    container, alloc_node, failed_node (null); priority, ntasks, ntasks_per_node,
    ntasks_per_tres, cpus_per_task, excluded_nodes, wc_key, the TRES strings, admin_comment,
    comment, script and parent_accounts (omitted). Without ELIGIBLE (before 24.05) also
    @eligible and @queue_wait.
    """
    job_id = _job_id(env, "JOBID")
    start = _int(env, "START")
    end = _int(env, "END")
    total_cpus = _int(env, "PROCS")
    elapsed = _elapsed(start, end)
    array_job_id: int | UnsetType = UNSET
    array_task_id: int | UnsetType = UNSET
    task = _int(env, "ARRAYTASKID", default=NO_VAL)
    if task != NO_VAL:
        array_job_id, array_task_id = _int(env, "ARRAYJOBID"), task
    het_id_var = "HETJOBID" if "HETJOBID" in env else "PACKJOBID"
    het_offset_var = "HETJOBOFFSET" if "HETJOBOFFSET" in env else "PACKJOBOFFSET"
    het_job_id = _int(env, het_id_var, default=0)
    het_job_offset = _int(env, het_offset_var, default=0)
    eligible = _int(env, "ELIGIBLE", default=0)
    work_dir = env.get("WORK_DIR", "")
    return JobRecord(
        jobid=job_id,
        sluid=_opt(env, "SLUID"),
        original_sluid=_opt(env, "ORIGINAL_SLUID"),
        container=None,
        username=_nullable(env, "USERNAME"),
        user_id=_int(env, "UID"),
        groupname=_nullable(env, "GROUPNAME"),
        group_id=_int(env, "GID"),
        start=_finish_start(start, end, "START"),
        end=_time(end, "END"),
        elapsed=elapsed,
        partition=_nullable(env, "PARTITION"),
        alloc_node=None,
        nodes=_nullable(env, "NODES"),
        total_cpus=total_cpus,
        total_nodes=_int(env, "NODECNT"),
        derived_ec=_exit_pair(env, "DERIVED_EC"),
        exit_code=_exit_pair(env, "EXITCODE"),
        state=_nullable(env, "JOBSTATE"),
        failed_node=None,
        cpu_hours=_cpu_hours(elapsed, total_cpus),
        array_job_id=array_job_id,
        array_task_id=array_task_id,
        pack_job_id=het_job_id,
        pack_job_offset=het_job_offset,
        het_job_id=het_job_id,
        het_job_offset=het_job_offset,
        submit=_time(_int(env, "SUBMIT", default=0), "SUBMIT"),
        eligible=_time(eligible, "ELIGIBLE"),
        queue_wait=_queue_wait(start, eligible),
        # jobcomp/script writes the literal "unknown" when the job has no working directory.
        work_dir=UNSET if work_dir in ("", "unknown") else work_dir,
        std_err=_opt(env, "STDERR"),
        std_in=_opt(env, "STDIN"),
        std_out=_opt(env, "STDOUT"),
        cluster=_opt(env, "CLUSTER"),
        qos=_opt(env, "QOS"),
        orig_dependency=_opt(env, "DEPENDENCY"),
        features=_opt(env, "CONSTRAINTS"),
        time_limit=_time_limit(env, "LIMIT"),
        job_name=_opt(env, "JOBNAME"),
        reservation_name=_opt(env, "RESERVATION"),
        account=_opt(env, "ACCOUNT"),
    )


def _from_prolog(env: Mapping[str, str]) -> JobRecord:
    """The PrologSlurmctld environment as a job start record (jobcomp/kafka's start keys).

    @start is SLURM_JOB_START_TIME when Slurm passes it, else the hook's own time
    (JOBCOMPD_HOOK_TIME; the prolog runs right after the start), else omitted. Not available,
    so absent or null: sluid, container, alloc_node (null), priority, @submit, @eligible,
    @queue_wait, cluster (SLURM_CLUSTER_NAME is ClusterName, not the association's cluster),
    ntasks and friends, orig_dependency, excluded_nodes, features (SLURM_JOB_CONSTRAINTS are
    the features in use, not the requested ones), time_limit, the TRES strings,
    admin_comment, script, parent_accounts; comment only with send_comment
    (SLURM_JOB_COMMENT).
    """
    start_var = "SLURM_JOB_START_TIME"
    start = _int(env, start_var, default=0)
    if start == 0:
        start_var = HOOK_TIME_VAR
        start = _int(env, start_var, default=0)
    return JobRecord(
        start=_time(start, start_var),
        state=None,
        **_script_context_fields(env),
    )


def _from_epilog(env: Mapping[str, str]) -> JobRecord:
    """The EpilogSlurmctld environment as a job end record.

    SLURM_JOB_EXIT_CODE and SLURM_JOB_DERIVED_EC are raw wait(2) statuses, decoded to
    'exit:signal' like Slurm does. The epilog knows no job state, so ``state`` is null. Times:
    @start from SLURM_JOB_START_TIME and @end from SLURM_JOB_END_TIME when Slurm passes them
    (22.05 passes neither); without an end time the hook's own time (JOBCOMPD_HOOK_TIME,
    shortly after the end) stands in for @end. elapsed and cpu_hours need both times, else
    they are 0. Also left out, as for the prolog: sluid, priority, @submit, @eligible,
    @queue_wait, cluster, ntasks and friends, orig_dependency, excluded_nodes, features,
    time_limit, TRES strings, admin_comment, script, parent_accounts (comment only with
    send_comment); container, alloc_node and failed_node are null.
    """
    start = _int(env, "SLURM_JOB_START_TIME", default=0)
    end_var = "SLURM_JOB_END_TIME"
    end = _int(env, end_var, default=0)
    if end == 0:
        end_var = HOOK_TIME_VAR
        end = _int(env, end_var, default=0)
    fields = _script_context_fields(env)
    elapsed = _elapsed(start, end)
    het_job_id, het_job_offset = fields["het_job_id"], fields["het_job_offset"]
    return JobRecord(
        start=_finish_start(start, end, "SLURM_JOB_START_TIME"),
        end=_time(end, end_var),
        elapsed=elapsed,
        derived_ec=_wait_status(env, "SLURM_JOB_DERIVED_EC"),
        exit_code=_wait_status(env, "SLURM_JOB_EXIT_CODE"),
        state=None,
        failed_node=None,
        cpu_hours=_cpu_hours(elapsed, fields["total_cpus"]),
        pack_job_id=het_job_id,
        pack_job_offset=het_job_offset,
        **fields,
    )


def _script_context_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """Fields the PrologSlurmctld and EpilogSlurmctld environments share."""
    array_job_id: int | UnsetType = UNSET
    array_task_id: int | UnsetType = UNSET
    if "SLURM_ARRAY_TASK_ID" in env or "SLURM_ARRAY_JOB_ID" in env:
        array_job_id = _int(env, "SLURM_ARRAY_JOB_ID")
        array_task_id = _int(env, "SLURM_ARRAY_TASK_ID")
    het_id_var = "SLURM_HET_JOB_ID" if "SLURM_HET_JOB_ID" in env else "SLURM_PACK_JOB_ID"
    het_offset_var = (
        "SLURM_HET_JOB_OFFSET" if "SLURM_HET_JOB_OFFSET" in env else "SLURM_PACK_JOB_OFFSET"
    )
    account = env.get("SLURM_JOB_ACCOUNT", "")
    only_old_name = "SLURM_JOB_ID" not in env and "SLURM_JOBID" in env
    job_var = "SLURM_JOBID" if only_old_name else "SLURM_JOB_ID"
    return {
        "jobid": _job_id(env, job_var),
        "original_sluid": _opt(env, "SLURM_JOB_SLUID"),
        "container": None,
        "username": _nullable(env, "SLURM_JOB_USER"),
        "user_id": _int(env, "SLURM_JOB_UID"),
        "groupname": _nullable(env, "SLURM_JOB_GROUP"),
        "group_id": _int(env, "SLURM_JOB_GID"),
        "partition": _nullable(env, "SLURM_JOB_PARTITION"),
        "alloc_node": None,
        "nodes": _nullable(env, "SLURM_JOB_NODELIST"),
        "total_cpus": _cpus_per_node_total(env, "SLURM_JOB_CPUS_PER_NODE"),
        "total_nodes": _int(env, "SLURM_JOB_NUM_NODES", default=0),
        "array_job_id": array_job_id,
        "array_task_id": array_task_id,
        "het_job_id": _int(env, het_id_var, default=0),
        "het_job_offset": _int(env, het_offset_var, default=0),
        "work_dir": _opt(env, "SLURM_JOB_WORK_DIR"),
        "std_err": _opt(env, "SLURM_JOB_STDERR"),
        "std_in": _opt(env, "SLURM_JOB_STDIN"),
        "std_out": _opt(env, "SLURM_JOB_STDOUT"),
        "qos": _opt(env, "SLURM_JOB_QOS"),
        "job_name": _opt(env, "SLURM_JOB_NAME"),
        "reservation_name": _opt(env, "SLURM_JOB_RESERVATION"),
        "wc_key": _opt(env, "SLURM_WCKEY"),
        # The prolog/epilog print a NULL account with "%s", which glibc renders "(null)".
        "account": UNSET if account in ("", "(null)") else account,
    }


# ------------------------------------------------------------------------------------------
# Value parsing helpers: each names the variable and the accepted form on error

# Digit counts are bounded so that int() never meets Python's limit on long digit strings.
_EXIT_PAIR = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")
_LIMIT = re.compile(r"(?:([0-9]{1,12})-)?([0-9]{1,12}):([0-5][0-9]):([0-5][0-9])")
_CPUS_ITEM = re.compile(r"([0-9]{1,10})(?:\(x([0-9]{1,10})\))?")


def _int(env: Mapping[str, str], name: str, *, default: int | None = None) -> int:
    value = env.get(name)
    if value is None:
        if default is None:
            raise RecordError(f"{name} is missing: expected a non-negative integer")
        return default
    # isascii() first: str.isdigit() alone also takes digits of other scripts.
    if not (value.isascii() and value.isdigit() and len(value) <= 19) or (
        number := int(value)
    ) > _INT64_MAX:
        raise RecordError(f"{name}={_show(value)}: expected a non-negative integer")
    return number


def _job_id(env: Mapping[str, str], name: str) -> int:
    job_id = _int(env, name)
    if not 1 <= job_id <= _UINT32_MAX:
        raise RecordError(f"{name}={job_id}: expected a job id from 1 to {_UINT32_MAX}")
    return job_id


def _opt(env: Mapping[str, str], name: str) -> str | UnsetType:
    """Slurm writes these keys only when set; the hooks pass unset strings as empty."""
    value = env.get(name, "")
    return value if value else UNSET


def _nullable(env: Mapping[str, str], name: str) -> str | None:
    """Slurm always writes these keys, null when unset."""
    value = env.get(name, "")
    return value if value else None


def _time(epoch: int, name: str) -> str | UnsetType:
    """UTC 'YYYY-MM-DDTHH:MM:SS', or unset for 0/NO_VAL/INFINITE (Slurm omits those)."""
    if epoch in (0, NO_VAL, INFINITE):
        return UNSET
    day, second = divmod(epoch, 86400)
    try:
        date = _date_of(day)
    except (OverflowError, OSError, ValueError):
        raise RecordError(f"{name}={epoch}: not a representable epoch time") from None
    minute, second = divmod(second, 60)
    return date + _HOUR_MINUTE[minute] + _SECOND[second]


#: 'HH:MM:' of each minute of a day and 'SS' of each second: joining them costs much less than
#: formatting three numbers, and a record has four times.
_HOUR_MINUTE = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(24 * 60))
_SECOND = tuple(f"{s:02d}" for s in range(60))


@functools.lru_cache(maxsize=64)
def _date_of(day: int) -> str:
    """'YYYY-MM-DDT' of a day since the epoch. The jobs of a batch end on a few days, so
    formatting each day once spares strftime and gmtime on every time of every record."""
    return time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))


def _finish_start(start: int, end: int, name: str) -> str | UnsetType:
    """@start of an end record: omitted when the job never started (0, or start > end)."""
    if end and start > end:
        return UNSET
    return _time(start, name)


def _elapsed(start: int, end: int) -> int:
    return end - start if start and end and start < end else 0


def _queue_wait(start: int, eligible: int) -> int | UnsetType:
    if start and eligible and start >= eligible:
        return start - eligible
    return UNSET


def _exit_pair(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None:
        raise RecordError(f"{name} is missing: expected 'exit:signal', e.g. '0:0'")
    if not _EXIT_PAIR.fullmatch(value):
        raise RecordError(f"{name}={_show(value)}: expected 'exit:signal', e.g. '3:0' or '0:9'")
    return value


def _wait_status(env: Mapping[str, str], name: str) -> str:
    """A raw wait(2) status (EpilogSlurmctld) as Slurm's 'exit:signal'."""
    if name not in env:
        raise RecordError(f"{name} is missing: expected a raw wait status, e.g. 768")
    status = _int(env, name)
    if status > _UINT32_MAX:
        raise RecordError(f"{name}={status}: expected a 32-bit wait status")
    return wait_status_pair(status)


def wait_status_pair(status: int) -> str:
    """Slurm's 'exit:signal' for a raw wait(2) status (NO_VAL, stopped or odd gives '0:0')."""
    exit_code = signal = 0
    if status != NO_VAL:
        low = status & 0x7F
        if low == 0:  # WIFEXITED
            exit_code = (status >> 8) & 0xFF
        elif low != 0x7F:  # WIFSIGNALED
            signal = low
    return f"{exit_code}:{signal}"


def _time_limit(env: Mapping[str, str], name: str) -> int | UnsetType:
    """jobcomp/script's LIMIT, '[D-]HH:MM:SS' or 'UNLIMITED', in seconds (unset if unlimited)."""
    value = env.get(name)
    if value is None or value == "UNLIMITED":
        return UNSET
    match = _LIMIT.fullmatch(value)
    if not match:
        raise RecordError(f"{name}={_show(value)}: expected '[D-]HH:MM:SS' or 'UNLIMITED'")
    days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _cpus_per_node_total(env: Mapping[str, str], name: str) -> int:
    """Sum Slurm's compressed CPU list, e.g. '4(x2),8' is 4+4+8 = 16 (0 when absent)."""
    value = env.get(name)
    if value is None:
        return 0
    total = 0
    for item in value.split(","):
        match = _CPUS_ITEM.fullmatch(item)
        if not match:
            raise RecordError(
                f"{name}={_show(value)}: expected comma-separated 'N' or 'N(xM)' items, "
                "e.g. '4(x2),8'"
            )
        total += int(match[1]) * int(match[2] or 1)
    if total > _INT64_MAX:
        raise RecordError(f"{name}: CPU total {total} is too large")
    return total


# ------------------------------------------------------------------------------------------
# Record id

#: Keys that tell one Slurm event from another for the same job id: requeued runs differ in
#: times (and sluid), a reused job id in its submit time, a resize record in its state.
#: Values that only describe the event (names, counts, exit codes, cpu_hours) stay out, so
#: two captures of one event through different paths tend to get one id.
_IDENTITY_KEYS = (
    "jobid",
    "sluid",
    "original_sluid",
    "@submit",
    "@start",
    "@end",
    "state",
    "array_job_id",
    "array_task_id",
    "het_job_id",
    "het_job_offset",
)
_ID_VERSION = "jobcompd-id/1"
#: Read once: each call evaluates every annotation of the struct again.
_JOB_RECORD_FIELDS = msgspec.structs.fields(JobRecord)
#: (JSON key, JobRecord attribute) of the identity keys: read straight off the struct, which
#: gives what msgspec.to_builtins would (strings, ints, None; UNSET left out) at a fraction of
#: the cost of converting the whole record.
_IDENTITY_ATTRS = tuple(
    (f.encode_name, f.name)
    for key in _IDENTITY_KEYS
    for f in _JOB_RECORD_FIELDS
    if f.encode_name == key
)


def record_id(cluster: str, event: str, rec: JobRecord, *, restart_count: int | None = None) -> str:
    """A stable id (blake2b-128, hex) of the Slurm event ``rec`` describes.

    Built from the cluster, the event and the identity keys above, never from when or how
    often the record was sent. ``restart_count`` (SLURM_JOB_RESTART_COUNT of the prolog and
    epilog) separates the runs of a requeued job when Slurm gives no times. A start time the
    hook had to supply (Slurm 22.05 prolog) is part of @start and so of the id: that keeps a
    job id reused after wrap-around apart, at the price of a new id when slurmctld re-runs
    the same prolog after a restart.
    """
    fields = {key: value for key, attr in _IDENTITY_ATTRS
              if (value := getattr(rec, attr)) is not UNSET}
    return _digest(cluster, event, fields, restart_count)


def _digest(cluster: str, event: str, fields: Mapping[str, Any], restart_count: int | None) -> str:
    picked = [[key, fields[key]] for key in _IDENTITY_KEYS if key in fields]
    payload = msgspec.json.encode([_ID_VERSION, cluster, event, restart_count, picked])
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


# ------------------------------------------------------------------------------------------
# Entry point

_EVENT_HINTS = {
    "end": EVENT_END,
    "start": EVENT_START,
    EVENT_END: EVENT_END,
    EVENT_START: EVENT_START,
}
_JSON_WHITESPACE = b" \t\r\n"
_JSON_TYPE_NAMES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def parse_record(
    data: bytes,
    fmt: str,
    *,
    cluster: str,
    event_hint: str | None = None,
    send_script: bool = False,
    send_comment: bool = False,
) -> Record:
    """Turn one spool file's bytes into the message to send. Raises only RecordError.

    ``fmt`` is ``"env"`` or ``"json"``. JSON is either a record in the jobcomp schema (it has
    ``jobid``), passed through, or a Slurm job object (it has ``job_id``: ``scontrol show job
    --json``, ``squeue --json`` or ``sacct --json``), rendered. A whole dump (``{"jobs":
    [...]}``) is refused: ``jobcompd backfill`` splits those.

    ``event_hint`` (``"end"``/``"start"`` from the spool file name; ``EVENT_END``/
    ``EVENT_START`` are accepted too) gives the event of JSON input, which does not say it
    itself; without a hint a jobcomp record is a job end record (jobcomp/elasticsearch only
    sends those) and a job object gives what its state allows. Env input carries its event;
    the hint is ignored.

    ``send_script`` and ``send_comment`` are JobCompParams' options: without them the
    ``script`` and ``comment`` keys are left out, as Slurm 25.05+ (script) and 26.05+
    (comment) do, also from records passed through.
    """
    if fmt == "env":
        return _parse_env_record(data, cluster, send_comment=send_comment)
    if fmt == "json":
        return _parse_json_record(
            data, cluster, event_hint, send_script=send_script, send_comment=send_comment
        )
    raise RecordError(f"record format {fmt!r}: expected 'env' or 'json'")


def _parse_env_record(data: bytes, cluster: str, *, send_comment: bool) -> Record:
    env = parse_env(data)
    event, rec = from_env(env, send_comment=send_comment)
    restart_count = None
    if "SLURM_SCRIPT_CONTEXT" in env:
        restart_count = _int(env, "SLURM_JOB_RESTART_COUNT", default=0)
    return Record(
        job_id=rec.jobid,
        event=event,
        value=encode(rec),
        record_id=record_id(cluster, event, rec, restart_count=restart_count),
    )


def _parse_json_record(
    data: bytes, cluster: str, event_hint: str | None, *, send_script: bool, send_comment: bool
) -> Record:
    """Pass a jobcomp-schema object through, or render a Slurm job object."""
    event: str | None = None
    if event_hint is not None:
        if event_hint not in _EVENT_HINTS:
            raise RecordError(f"event {event_hint!r}: expected 'end' or 'start'")
        event = _EVENT_HINTS[event_hint]
    body = data.strip(_JSON_WHITESPACE)
    if body.endswith(b"\0"):
        body = body[:-1].rstrip(_JSON_WHITESPACE)
    if not body:
        raise RecordError("empty file: expected a JSON object in the jobcomp schema")
    try:
        obj = msgspec.json.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise RecordError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        found = _JSON_TYPE_NAMES.get(type(obj), type(obj).__name__)
        raise RecordError(f"JSON {found} found: expected an object in the jobcomp schema")
    if "jobid" in obj:
        return _pass_through(
            body, obj, cluster, event or EVENT_END, send_script=send_script,
            send_comment=send_comment,
        )  # fmt: skip
    if "job_id" in obj:
        # Imported here: jobjson builds on this module's model and helpers.
        from jobcompd import jobjson

        event, rec = jobjson.from_job(
            obj, event=event, send_script=send_script, send_comment=send_comment
        )
        return Record(
            job_id=rec.jobid, event=event, value=encode(rec),
            record_id=record_id(cluster, event, rec),
        )  # fmt: skip
    if isinstance(obj.get("jobs"), list):
        raise RecordError(
            f'a dump of {len(obj["jobs"])} job(s) ({{"jobs": [...]}}) is not one record: '
            "feed it to 'jobcompd backfill FILE'"
        )
    raise RecordError("JSON object has no 'jobid' (jobcomp schema) nor 'job_id' (Slurm job object)")


def _pass_through(
    body: bytes,
    obj: dict[str, Any],
    cluster: str,
    event: str,
    *,
    send_script: bool,
    send_comment: bool,
) -> Record:
    """A record already in the jobcomp schema, sent as it came.

    The value is the original bytes, minus surrounding whitespace and the trailing NUL that
    Slurm before 23.11.7 sent: that is Slurm's own rendering, byte for byte, with every key
    (also ones this model does not know) in its order. Re-encoding could only lose fidelity
    (number spelling, escapes, unknown fields). The only change: ``script`` and ``comment``
    are cut out of the bytes unless send_script/send_comment ask for them, the way Slurm
    25.05+/26.05+ leave them out (Slurm before 25.05 sent the script of every batch job).
    Only the shape is checked: a JSON object with an integer ``jobid``.
    """
    jobid = obj["jobid"]
    if not isinstance(jobid, int) or isinstance(jobid, bool) or not 1 <= jobid <= _UINT32_MAX:
        raise RecordError(
            f"jobid={_json_preview(jobid)}: expected an integer job id from 1 to {_UINT32_MAX}"
        )
    dropped = {key for key, wanted in (("script", send_script), ("comment", send_comment))
               if not wanted and key in obj}  # fmt: skip
    if dropped:
        body = _drop_keys(body, dropped)
    return Record(
        job_id=jobid, event=event, value=body, record_id=_digest(cluster, event, obj, None)
    )


def _drop_keys(body: bytes, names: set[str]) -> bytes:
    """``body`` (a valid JSON object) without its top-level members named in ``names``.

    Every other byte stays as it was: the members kept are copied verbatim, joined by the
    separator that followed each of them in the original.
    """
    members = _members(body)
    kept = [m for m in members if m[2] not in names]  # never empty: jobid stays
    out = [body[: members[0][0]]]
    for index, (start, end, _) in enumerate(kept):
        out.append(body[start:end])
        if index + 1 < len(kept):
            following = members.index(kept[index]) + 1
            out.append(body[end : members[following][0]])
    out.append(body[members[-1][1] :])
    return b"".join(out)


def _members(body: bytes) -> list[tuple[int, int, str]]:
    """(start, end, key) of each top-level member ``"key":value`` of a valid JSON object."""
    members = []
    i = _skip_ws(body, body.index(b"{") + 1)
    while body[i : i + 1] == b'"':
        start = i
        i = _skip_string(body, i)
        key = msgspec.json.decode(body[start:i])
        i = _skip_ws(body, i)
        i = _skip_value(body, _skip_ws(body, i + 1))  # past the ':'
        members.append((start, i, key))
        i = _skip_ws(body, i)
        if body[i : i + 1] == b",":
            i = _skip_ws(body, i + 1)
    return members


def _skip_ws(body: bytes, i: int) -> int:
    while body[i : i + 1] in (b" ", b"\t", b"\r", b"\n"):
        i += 1
    return i


def _skip_string(body: bytes, i: int) -> int:
    """Index just past the string that opens at ``body[i]`` (a '"')."""
    i += 1
    while True:
        j = body.index(b'"', i)
        backslashes = 0
        while body[j - 1 - backslashes] == 0x5C:  # '\\'
            backslashes += 1
        if backslashes % 2 == 0:
            return j + 1
        i = j + 1


def _skip_value(body: bytes, i: int) -> int:
    """Index just past the JSON value that starts at ``body[i]``."""
    first = body[i : i + 1]
    if first == b'"':
        return _skip_string(body, i)
    if first in (b"{", b"["):
        depth = 0
        while True:
            c = body[i : i + 1]
            if c == b'"':
                i = _skip_string(body, i)
                continue
            if c in (b"{", b"["):
                depth += 1
            elif c in (b"}", b"]"):
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(body) and body[i : i + 1] not in (b",", b"}", b"]", b" ", b"\t", b"\r", b"\n"):
        i += 1
    return i
