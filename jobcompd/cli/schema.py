"""``jobcompd schema``: the JSON Schema of the message jobcompd sends, from the msgspec model.

The model (:class:`jobcompd.records.JobRecord`) is the one place that defines the message:
field names, order, types, which keys are always there, and each key's Slurm version notes in
its description. This command prints it so consumers can validate or generate code; the
checked-in copy docs/message-schema.json is kept equal to it by a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import msgspec

from jobcompd import config as configmod
from jobcompd.records import JobRecord

__all__ = ["cmd_schema", "message_schema", "schema_text"]

_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_TITLE = "Slurm jobcomp/kafka job record (as sent by jobcompd)"
_DESCRIPTION = (
    "The JSON object Slurm's jobcomp/kafka plugin sends for a job end (topic `topic`) or, "
    "since Slurm 25.05, a job start (topic `topic_job_start`); jobcompd sends the same. Keys "
    "appear in the order of `properties`. Keys in `required` are always present (null where "
    "the description says so); the others only when set, some only in end records. A start "
    "record leaves out @end, elapsed, derived_ec, exit_code, failed_node, cpu_hours, "
    "pack_job_id and pack_job_offset, and has state null. Strings escape '/' as '\\/' "
    "(json-c). Keys not listed here may appear in records of newer Slurm releases passed "
    "through unchanged. Kafka headers (not part of this object): event (job_end/job_start), "
    "jobcompd-id (stable id of the record), schema, redelivery."
)


def message_schema() -> dict[str, Any]:
    """The message's JSON Schema (draft 2020-12) as a dict, flattened to one object."""
    generated = msgspec.json.schema(JobRecord)
    record = dict(generated["$defs"]["JobRecord"])
    record.pop("title", None)
    record.pop("description", None)
    return {
        "$schema": _DRAFT,
        "title": _TITLE,
        "description": _DESCRIPTION,
        **record,
    }


def schema_text() -> str:
    """What ``jobcompd schema`` prints: the schema as indented JSON, one trailing newline."""
    return json.dumps(message_schema(), indent=2, ensure_ascii=False) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the schema on stdout. It needs no configuration; a configuration named with -c
    is checked all the same, so that a wrong path or a broken file is not passed over."""
    if getattr(args, "config", None):
        try:
            configmod.load(args.config)
        except configmod.ConfigError as e:
            print(f"jobcompd: {e}", file=sys.stderr)
            return os.EX_CONFIG
    print(schema_text(), end="")
    return os.EX_OK


if __name__ == "__main__":
    print(schema_text(), end="")
