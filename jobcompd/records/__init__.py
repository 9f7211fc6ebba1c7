"""Records: one spool file in, the Kafka message Slurm's jobcomp/kafka would have sent out.

Pure functions of bytes, no I/O. The modules, each with one job:

* ``parse``: :func:`parse_record`, a spool file's bytes to the :class:`Record` to produce,
  and the cap on a record's members;
* ``env`` and ``envvalues``: hook environments (``env -0`` dumps) and their variables;
* ``jobobjects`` and ``jobview``: scontrol/squeue/sacct/slurmrestd job objects, and typed
  access to one whatever the data_parser version;
* ``passthrough``: records already in the jobcomp schema, sent byte for byte;
* ``model``, ``encoding``, ``ids``: the message (JobRecord), its bytes as json-c prints them,
  its ``jobcompd-id``;
* ``slurmfmt``: Slurm's value formats (sentinels, times, exit codes, cpu_hours, TRES);
* ``scanner``: the byte-level JSON scanner; ``dumps``: the jobs of a ``--json`` dump;
* ``errors``: RecordError and its kinds, each with its dead-letter reason.
"""

from __future__ import annotations

from jobcompd.records.encoding import encode
from jobcompd.records.env import HOOK_TIME_VAR, from_env, parse_env
from jobcompd.records.errors import NoRecord, RecordError, TooManyKeys, UnknownName
from jobcompd.records.ids import record_id
from jobcompd.records.model import EVENT_END, EVENT_START, JobRecord, Record
from jobcompd.records.parse import MAX_RECORD_MEMBERS, parse_record
from jobcompd.records.slurmfmt import wait_status_pair

__all__ = [
    "EVENT_END",
    "EVENT_START",
    "HOOK_TIME_VAR",
    "MAX_RECORD_MEMBERS",
    "JobRecord",
    "NoRecord",
    "Record",
    "RecordError",
    "TooManyKeys",
    "UnknownName",
    "encode",
    "from_env",
    "parse_env",
    "parse_record",
    "record_id",
    "wait_status_pair",
]
