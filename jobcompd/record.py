"""Old name of :mod:`jobcompd.records`, kept only while callers move to the new one."""

from __future__ import annotations

from jobcompd.records import (
    EVENT_END,
    EVENT_START,
    HOOK_TIME_VAR,
    JobRecord,
    Record,
    RecordError,
    encode,
    from_env,
    parse_env,
    parse_record,
    record_id,
    wait_status_pair,
)

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
