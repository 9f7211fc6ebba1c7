"""The jobs of a ``sacct --json`` or ``scontrol show job --json`` dump, one by one.

Input: one or more JSON documents (a whole dump, or several concatenated, for example one
``scontrol show job --json <id>`` per line), each ``{"jobs": [...]}`` or a single job object.
slurmrestd's responses (``/slurm/v0.0.x/job(s)``, ``/slurmdb/v0.0.x/job(s)``) have the same
shape and are read alike. A job that is not valid JSON is an item with an error, and the
jobs around it are still read; a document cut off in the middle keeps the jobs before the cut.
Errors that Slurm itself put into a dump (``"errors": [...]``, for example "Invalid job id
specified") come first, as items of their own.

Pure: bytes (or a mapped file) in, items out. Jobs are decoded one at a time, when their turn
comes, so a dump is never held as Python objects all at once.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from jobcompd.records import scanner
from jobcompd.records.scanner import Buffer

__all__ = ["Item", "read_jobs"]


@dataclass(frozen=True, slots=True)
class Item:
    """One job of the input: the decoded object, or why it could not be read."""

    where: str  # "job #17": its position in the input, for messages
    job: dict[str, Any] | None
    error: str | None = None
    slurm_error: bool = False  # not a job: an error Slurm reported in the dump


class _Dump(msgspec.Struct):
    """A dump with its jobs left undecoded: each is decoded when its turn comes."""

    jobs: list[msgspec.Raw]
    errors: list[Any] = []


class _ErrorsOnly(msgspec.Struct):
    """What Slurm 23.02 prints instead of a dump when the query failed: no ``jobs``."""

    errors: list[Any]


def read_jobs(data: Buffer) -> tuple[int | None, Iterator[Item]]:
    """The number of jobs (None when unknown up front) and the jobs of ``data``, in order;
    errors Slurm reported in the dump come first, as items with ``slurm_error`` set."""
    try:
        dump = msgspec.json.decode(data, type=_Dump)
    except (msgspec.DecodeError, RecursionError):
        return None, _read_tolerant(data)
    jobs = (_decode_job(i, raw) for i, raw in enumerate(dump.jobs, 1))
    return len(dump.jobs), itertools.chain(_slurm_errors(dump.errors, "the dump"), jobs)


def _slurm_errors(errors: list[Any], where: str) -> Iterator[Item]:
    """The entries of a dump's ``errors`` list (slurmrestd/data_parser's error objects:
    ``error``, ``description``, ``error_number``, ``source``) as report items."""
    for entry in errors:
        if isinstance(entry, dict):
            text = " ".join(str(entry[k]) for k in ("error", "description") if entry.get(k))
            number = entry.get("error_number")
            text = f"{text or 'an error'}" + (f" (error {number})" if number else "")
        else:
            text = str(entry)
        yield Item(where, None, f"Slurm reported: {text}", slurm_error=True)


def _decode_job(index: int, raw: bytes | msgspec.Raw) -> Item:
    where = f"job #{index}"
    try:
        job = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        return Item(where, None, f"not valid JSON: {exc}")
    if not isinstance(job, dict):
        return Item(where, None, f"a JSON {type(job).__name__}, not a job object")
    return Item(where, job)


def _read_tolerant(data: Buffer) -> Iterator[Item]:
    """Documents one after the other; inside a broken one, the jobs one by one."""
    index = 0
    for start, end in scanner.documents(data):
        span = data[start:end] if end is not None else data[start:]
        whole = _whole_document(span, start, index + 1)
        if whole is not None:
            for item in whole:
                if not item.slurm_error:
                    index += 1
                yield item
            continue
        jobs_at = _jobs_array(data, start)
        if jobs_at is None:
            yield Item(
                f"input at byte {start}", None,
                "neither a dump ({\"jobs\": [...]}) nor a job object; skipped up to byte "
                f"{end if end is not None else len(data)}",
            )  # fmt: skip
            continue
        for job_start, job_end in scanner.elements(data, jobs_at):
            index += 1
            if job_end is None:
                yield Item(
                    f"job #{index}", None,
                    f"the input is cut off inside this job (at byte {len(data)}); the jobs "
                    "before it were read",
                )  # fmt: skip
                return
            yield _decode_job(index, data[job_start:job_end])
        if end is None:
            return


def _whole_document(span: Buffer, start: int, first: int) -> Iterator[Item] | None:
    """The items of a document that decodes whole (a dump, a failed query's errors or a
    single job object), jobs numbered from ``first``; None when it does not decode so."""
    where = f"the dump at byte {start}"
    with contextlib.suppress(msgspec.DecodeError, RecursionError):
        dump = msgspec.json.decode(span, type=_Dump)
        jobs = (_decode_job(i, raw) for i, raw in enumerate(dump.jobs, first))
        return itertools.chain(_slurm_errors(dump.errors, where), jobs)
    with contextlib.suppress(msgspec.DecodeError, RecursionError):
        failed = msgspec.json.decode(span, type=_ErrorsOnly)
        return _slurm_errors(failed.errors, where)
    with contextlib.suppress(msgspec.DecodeError, RecursionError):
        single = msgspec.json.decode(span)
        if isinstance(single, dict) and "job_id" in single:
            return iter([Item(f"job #{first}", single)])
    return None


def _jobs_array(data: Buffer, start: int) -> int | None:
    """Index of the '[' of the top-level "jobs" member of the object at ``start``."""
    if data[start : start + 1] != b"{":
        return None
    return scanner.member_value(data, start, b'"jobs"', b"[")
