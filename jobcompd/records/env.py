"""A hook environment (``env -0`` dump) as the record Slurm's jobcomp/kafka would have sent.

Three sources are understood, told apart by the environment's shape:

* the environment of Slurm's jobcomp/script (``JOBID`` …) → job end record;
* the environment of PrologSlurmctld (``SLURM_SCRIPT_CONTEXT=prolog_slurmctld``) → job start
  record;
* the environment of EpilogSlurmctld (``SLURM_SCRIPT_CONTEXT=epilog_slurmctld``) → job end
  record.

Dumps are what ``env -0`` prints: ``KEY=VALUE`` entries, each ended by a NUL byte. Values are
decoded as UTF-8; invalid byte sequences become U+FFFD, so the message is always valid UTF-8
JSON (Slurm's json-c would copy the raw bytes and emit invalid JSON instead). Fields an
environment does not carry are never invented: keys Slurm always writes become ``null``, keys
Slurm writes only when set are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from jobcompd.records.encoding import encode
from jobcompd.records.envvalues import (
    cpus_per_node_total,
    exit_pair,
    integer,
    job_id,
    nullable,
    optional,
    time_limit,
    wait_status,
)
from jobcompd.records.errors import RecordError, show_bytes, show_text
from jobcompd.records.ids import record_id
from jobcompd.records.model import EVENT_END, EVENT_START, JobRecord, Record
from jobcompd.records.slurmfmt import (
    NO_VAL,
    cpu_hours,
    elapsed,
    finish_start,
    format_time,
    queue_wait,
)

__all__ = ["HOOK_TIME_VAR", "env_record", "from_env", "parse_env"]

#: Added by jobcompd's spool hook: when it ran, in epoch seconds. Slurm 22.05 passes no start
#: or end time to PrologSlurmctld/EpilogSlurmctld, so this is the best time there is.
HOOK_TIME_VAR = "JOBCOMPD_HOOK_TIME"

_PROLOG = "prolog_slurmctld"
_EPILOG = "epilog_slurmctld"


def env_record(data: bytes, cluster: str, *, send_comment: bool) -> Record:
    """The message of one ``env`` spool file."""
    env = parse_env(data)
    event, rec = from_env(env, send_comment=send_comment)
    restart_count = None
    if "SLURM_SCRIPT_CONTEXT" in env:
        restart_count = integer(env, "SLURM_JOB_RESTART_COUNT", default=0)
    return Record(
        job_id=rec.jobid,
        event=event,
        value=encode(rec),
        record_id=record_id(cluster, event, rec, restart_count=restart_count),
    )


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
            f"last entry {show_bytes(last)} is not ended by a NUL byte: "
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
            f"entry {index} {show_bytes(entry.encode())} is not KEY=VALUE "
            "(env -0 format expected)"
        )
    return env


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
                rec = msgspec.structs.replace(rec, comment=optional(env, "SLURM_JOB_COMMENT"))
            return event, rec
        raise RecordError(
            f"SLURM_SCRIPT_CONTEXT={show_text(context)}: expected {_PROLOG!r} or {_EPILOG!r} "
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

    Not in this environment, so absent (or null where Slurm always writes the key): container,
    alloc_node, failed_node (null); priority, ntasks, ntasks_per_node, ntasks_per_tres,
    cpus_per_task, excluded_nodes, wc_key, the TRES strings, admin_comment, comment, script and
    parent_accounts (omitted). Without ELIGIBLE (before 24.05) also @eligible and @queue_wait.
    """
    jobid = job_id(env, "JOBID")
    start = integer(env, "START")
    end = integer(env, "END")
    total_cpus = integer(env, "PROCS")
    run_time = elapsed(start, end)
    array_job_id, array_task_id = _array_ids(env)
    het_job_id, het_job_offset = _het_ids(env)
    eligible = integer(env, "ELIGIBLE", default=0)
    return JobRecord(
        jobid=jobid,
        sluid=optional(env, "SLUID"),
        original_sluid=optional(env, "ORIGINAL_SLUID"),
        container=None,
        username=nullable(env, "USERNAME"),
        user_id=integer(env, "UID"),
        groupname=nullable(env, "GROUPNAME"),
        group_id=integer(env, "GID"),
        start=finish_start(start, end, "START"),
        end=format_time(end, "END"),
        elapsed=run_time,
        partition=nullable(env, "PARTITION"),
        alloc_node=None,
        nodes=nullable(env, "NODES"),
        total_cpus=total_cpus,
        total_nodes=integer(env, "NODECNT"),
        derived_ec=exit_pair(env, "DERIVED_EC"),
        exit_code=exit_pair(env, "EXITCODE"),
        state=nullable(env, "JOBSTATE"),
        failed_node=None,
        cpu_hours=cpu_hours(run_time, total_cpus),
        array_job_id=array_job_id,
        array_task_id=array_task_id,
        pack_job_id=het_job_id,
        pack_job_offset=het_job_offset,
        het_job_id=het_job_id,
        het_job_offset=het_job_offset,
        submit=format_time(integer(env, "SUBMIT", default=0), "SUBMIT"),
        eligible=format_time(eligible, "ELIGIBLE"),
        queue_wait=queue_wait(start, eligible),
        work_dir=_work_dir(env),
        std_err=optional(env, "STDERR"),
        std_in=optional(env, "STDIN"),
        std_out=optional(env, "STDOUT"),
        cluster=optional(env, "CLUSTER"),
        qos=optional(env, "QOS"),
        orig_dependency=optional(env, "DEPENDENCY"),
        features=optional(env, "CONSTRAINTS"),
        time_limit=time_limit(env, "LIMIT"),
        job_name=optional(env, "JOBNAME"),
        reservation_name=optional(env, "RESERVATION"),
        account=optional(env, "ACCOUNT"),
    )


def _array_ids(env: Mapping[str, str]) -> tuple[int | UnsetType, int | UnsetType]:
    """(array_job_id, array_task_id) of an array task; both absent for any other job."""
    task = integer(env, "ARRAYTASKID", default=NO_VAL)
    if task == NO_VAL:
        return UNSET, UNSET
    return integer(env, "ARRAYJOBID"), task


def _het_ids(env: Mapping[str, str]) -> tuple[int, int]:
    """(het_job_id, het_job_offset), 0 for a job that is not heterogeneous; older Slurm names
    them PACKJOBID and PACKJOBOFFSET."""
    id_var = "HETJOBID" if "HETJOBID" in env else "PACKJOBID"
    offset_var = "HETJOBOFFSET" if "HETJOBOFFSET" in env else "PACKJOBOFFSET"
    return integer(env, id_var, default=0), integer(env, offset_var, default=0)


def _work_dir(env: Mapping[str, str]) -> str | UnsetType:
    """WORK_DIR; absent where jobcomp/script writes the literal "unknown" (no working
    directory) or nothing."""
    work_dir = env.get("WORK_DIR", "")
    return UNSET if work_dir in ("", "unknown") else work_dir


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
    start = integer(env, start_var, default=0)
    if start == 0:
        start_var = HOOK_TIME_VAR
        start = integer(env, start_var, default=0)
    return JobRecord(
        start=format_time(start, start_var),
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
    start = integer(env, "SLURM_JOB_START_TIME", default=0)
    end_var = "SLURM_JOB_END_TIME"
    end = integer(env, end_var, default=0)
    if end == 0:
        end_var = HOOK_TIME_VAR
        end = integer(env, end_var, default=0)
    fields = _script_context_fields(env)
    run_time = elapsed(start, end)
    het_job_id, het_job_offset = fields["het_job_id"], fields["het_job_offset"]
    return JobRecord(
        start=finish_start(start, end, "SLURM_JOB_START_TIME"),
        end=format_time(end, end_var),
        elapsed=run_time,
        derived_ec=wait_status(env, "SLURM_JOB_DERIVED_EC"),
        exit_code=wait_status(env, "SLURM_JOB_EXIT_CODE"),
        state=None,
        failed_node=None,
        cpu_hours=cpu_hours(run_time, fields["total_cpus"]),
        pack_job_id=het_job_id,
        pack_job_offset=het_job_offset,
        **fields,
    )


def _script_context_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """Fields the PrologSlurmctld and EpilogSlurmctld environments share."""
    array_job_id: int | UnsetType = UNSET
    array_task_id: int | UnsetType = UNSET
    if "SLURM_ARRAY_TASK_ID" in env or "SLURM_ARRAY_JOB_ID" in env:
        array_job_id = integer(env, "SLURM_ARRAY_JOB_ID")
        array_task_id = integer(env, "SLURM_ARRAY_TASK_ID")
    het_id_var = "SLURM_HET_JOB_ID" if "SLURM_HET_JOB_ID" in env else "SLURM_PACK_JOB_ID"
    het_offset_var = (
        "SLURM_HET_JOB_OFFSET" if "SLURM_HET_JOB_OFFSET" in env else "SLURM_PACK_JOB_OFFSET"
    )
    account = env.get("SLURM_JOB_ACCOUNT", "")
    only_old_name = "SLURM_JOB_ID" not in env and "SLURM_JOBID" in env
    job_var = "SLURM_JOBID" if only_old_name else "SLURM_JOB_ID"
    return {
        "jobid": job_id(env, job_var),
        "original_sluid": optional(env, "SLURM_JOB_SLUID"),
        "container": None,
        "username": nullable(env, "SLURM_JOB_USER"),
        "user_id": integer(env, "SLURM_JOB_UID"),
        "groupname": nullable(env, "SLURM_JOB_GROUP"),
        "group_id": integer(env, "SLURM_JOB_GID"),
        "partition": nullable(env, "SLURM_JOB_PARTITION"),
        "alloc_node": None,
        "nodes": nullable(env, "SLURM_JOB_NODELIST"),
        "total_cpus": cpus_per_node_total(env, "SLURM_JOB_CPUS_PER_NODE"),
        "total_nodes": integer(env, "SLURM_JOB_NUM_NODES", default=0),
        "array_job_id": array_job_id,
        "array_task_id": array_task_id,
        "het_job_id": integer(env, het_id_var, default=0),
        "het_job_offset": integer(env, het_offset_var, default=0),
        "work_dir": optional(env, "SLURM_JOB_WORK_DIR"),
        "std_err": optional(env, "SLURM_JOB_STDERR"),
        "std_in": optional(env, "SLURM_JOB_STDIN"),
        "std_out": optional(env, "SLURM_JOB_STDOUT"),
        "qos": optional(env, "SLURM_JOB_QOS"),
        "job_name": optional(env, "SLURM_JOB_NAME"),
        "reservation_name": optional(env, "SLURM_JOB_RESERVATION"),
        "wc_key": optional(env, "SLURM_WCKEY"),
        # The prolog/epilog print a NULL account with "%s", which glibc renders "(null)".
        "account": UNSET if account in ("", "(null)") else account,
    }

