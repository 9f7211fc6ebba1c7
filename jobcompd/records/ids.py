"""The ``jobcompd-id`` header: a stable id of the Slurm event a record describes, the same on
every re-send and for the same event rendered from another source, so consumers can drop
duplicates (docs/design.md, "The message")."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import UNSET

from jobcompd.records.model import JobRecord

__all__ = ["object_id", "record_id"]

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
    return object_id(cluster, event, fields, restart_count)


def object_id(
    cluster: str, event: str, fields: Mapping[str, Any], restart_count: int | None = None
) -> str:
    """The id of a record given as a decoded jobcomp object (``fields`` maps JSON keys to
    values; keys other than the identity keys are ignored)."""
    picked = [[key, fields[key]] for key in _IDENTITY_KEYS if key in fields]
    payload = msgspec.json.encode([_ID_VERSION, cluster, event, restart_count, picked])
    return hashlib.blake2b(payload, digest_size=16).hexdigest()
