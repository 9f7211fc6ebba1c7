"""Records already in the jobcomp schema (jobcomp/elasticsearch bodies, jobcomp/kafka records
of any Slurm from 23.02 on), sent as they came: Slurm's own rendering, byte for byte."""

from __future__ import annotations

from typing import Any

import msgspec

from jobcompd.records import scanner
from jobcompd.records.errors import RecordError, show_json
from jobcompd.records.ids import object_id
from jobcompd.records.model import Record
from jobcompd.records.slurmfmt import UINT32_MAX

__all__ = ["pass_through", "without_members"]


def pass_through(
    body: bytes,
    obj: dict[str, Any],
    cluster: str,
    event: str,
    *,
    send_script: bool,
    send_comment: bool,
) -> Record:
    """A record already in the jobcomp schema, sent as it came.

    ``body`` is the record's bytes, minus surrounding whitespace and the trailing NUL that
    Slurm before 23.11.7 sent, and ``obj`` its decoded object. The value is ``body``: Slurm's
    own rendering, byte for byte, with every key (also ones the model does not know) in its
    order. Re-encoding could only lose fidelity (number spelling, escapes, unknown fields).
    The only change: ``script`` and ``comment`` are cut out of the bytes unless
    send_script/send_comment ask for them, the way Slurm 25.05+/26.05+ leave them out (Slurm
    before 25.05 sent the script of every batch job). Only the shape is checked: a JSON
    object with an integer ``jobid``.
    """
    jobid = obj["jobid"]
    if not isinstance(jobid, int) or isinstance(jobid, bool) or not 1 <= jobid <= UINT32_MAX:
        raise RecordError(
            f"jobid={show_json(jobid)}: expected an integer job id from 1 to {UINT32_MAX}"
        )
    dropped = frozenset(key for key, wanted in (("script", send_script),
                                                ("comment", send_comment))
                        if not wanted and key in obj)  # fmt: skip
    if dropped:
        body = without_members(body, dropped)
    return Record(job_id=jobid, event=event, value=body, record_id=object_id(cluster, event, obj))


def without_members(body: bytes, names: frozenset[str]) -> bytes:
    """``body`` (a valid JSON object) without its top-level members named in ``names``.

    Every other byte stays as it was: the members kept are copied verbatim, joined by the
    separator that followed each of them in the original (after the last one kept, the
    object's closing bytes follow). One pass over the members, so the cost grows with the
    body's size and no faster, however many members it holds.
    """
    spans = list(scanner.members(body, body.index(b"{")))
    as_written = {msgspec.json.encode(name) for name in names}
    # A key is dropped when written as one of the names, or when it decodes to one (only a
    # key with an escape can).
    dropped = [
        i for i, (_, key, _, _) in enumerate(spans)
        if key in as_written or (b"\\" in key and msgspec.json.decode(key) in names)
    ]  # fmt: skip
    if not dropped:
        return body
    gone = set(dropped)  # never every member: jobid stays
    last_kept = next(i for i in reversed(range(len(spans))) if i not in gone)
    cuts = [(spans[i][0], spans[i + 1][0]) for i in dropped if i < last_kept]
    if last_kept < len(spans) - 1:
        cuts.append((spans[last_kept][3], spans[-1][3]))
    out, pos = [], 0
    for start, end in cuts:
        out.append(body[pos:start])
        pos = end
    out.append(body[pos:])
    return b"".join(out)

