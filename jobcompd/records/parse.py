"""One spool file's bytes in, the Kafka message Slurm's jobcomp/kafka would have sent out.

The entry point of records: it refuses a record with too many members before reading it, then
hands the bytes to the parser of their kind (an environment dump, a record already in the
jobcomp schema, a Slurm job object). Pure: bytes in, a Record or a RecordError out.
"""

from __future__ import annotations

import msgspec

from jobcompd.records import scanner
from jobcompd.records.encoding import encode
from jobcompd.records.env import env_record
from jobcompd.records.errors import RecordError, TooManyKeys
from jobcompd.records.ids import record_id
from jobcompd.records.jobobjects import from_job
from jobcompd.records.model import EVENT_END, EVENT_START, Record
from jobcompd.records.passthrough import pass_through

__all__ = ["MAX_RECORD_MEMBERS", "parse_record"]

#: The most members a record may have: the top-level keys of a JSON record, the entries of an
#: environment dump. Real Slurm records have far fewer: tests/test_record_limits.py measures
#: every capture in tests/data and the real dumps, and keeps this cap MARGIN times above the
#: largest. Members inside a value (a job object's steps, say) do not count: only
#: ``max_record_bytes`` bounds those, and everything done with them is linear in their size.
MAX_RECORD_MEMBERS = 10_000

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

    A record with more than MAX_RECORD_MEMBERS members raises TooManyKeys (its ``reason`` is
    ``too_many_keys``) before anything in it is decoded.

    ``event_hint`` (``"end"``/``"start"`` from the spool file name; ``EVENT_END``/
    ``EVENT_START`` are accepted too) gives the event of JSON input, which does not say it
    itself; without a hint a jobcomp record is a job end record (jobcomp/elasticsearch only
    sends those) and a job object gives what its state allows. Env input carries its event;
    the hint is ignored.

    ``send_script`` and ``send_comment`` are JobCompParams' options: without them the
    ``script`` and ``comment`` keys are left out, as Slurm 25.05+ (script) and 26.05+
    (comment) do, also from records passed through.
    """
    # Each member takes a byte at least (an entry its NUL, a key its colon): a record of few
    # bytes needs no count, and one of few NULs or colons no closer count.
    if fmt == "env":
        if len(data) > MAX_RECORD_MEMBERS and data.count(b"\0") > MAX_RECORD_MEMBERS:
            raise _too_many("entries")
        return env_record(data, cluster, send_comment=send_comment)
    if fmt == "json":
        if (len(data) > MAX_RECORD_MEMBERS and data.count(b":") > MAX_RECORD_MEMBERS
                and scanner.count_members(data, MAX_RECORD_MEMBERS + 1) > MAX_RECORD_MEMBERS):
            raise _too_many("top-level keys")
        return _json_record(
            data, cluster, event_hint, send_script=send_script, send_comment=send_comment
        )
    raise RecordError(f"record format {fmt!r}: expected 'env' or 'json'")


def _too_many(what: str) -> TooManyKeys:
    return TooManyKeys(
        f"more than {MAX_RECORD_MEMBERS} {what}: a record has at most {MAX_RECORD_MEMBERS} "
        "(Slurm's have fewer than 200); refused unread"
    )


def _json_record(
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
        return pass_through(
            body, obj, cluster, event or EVENT_END, send_script=send_script,
            send_comment=send_comment,
        )  # fmt: skip
    if "job_id" in obj:
        event, rec = from_job(obj, event=event, send_script=send_script, send_comment=send_comment)
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
