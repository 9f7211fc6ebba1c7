"""``jobcompd backfill FILE|-``: jobs of a ``sacct --json`` or ``scontrol show job --json`` dump
into the spool, one job end record each, for the daemon to ship with its usual guarantees.

Each job is rendered here (jobcompd.records.jobobjects), and the rendered jobcomp record is what
goes into the spool (format ``json``), not the job object. Rendering here means: a job that
cannot become a record is reported now, by its position in the dump, to the person running the
command (instead of being dead-lettered later by the daemon); sacct's user and group names are
turned into ids on this host (sacct prints no uid/gid, the daemon could not know them); the
``--since/--until`` filter needs the end time anyway; and spool files stay small (a sacct job
object with its steps is many times larger than its record). The record id (the ``jobcompd-id``
header) is computed by the daemon from the record's content, so backfilling the same dump twice
gives the same ids, and consumers can drop the repeats.

Input: one or more JSON documents (a whole dump, or several concatenated, for example one
``scontrol show job --json <id>`` per line), each ``{"jobs": [...]}`` or a single job object.
A job that is not valid JSON, or not a job Slurm could have sent a record for, is reported by
its index and skipped; a document cut off in the middle keeps the jobs before the cut. Errors
that Slurm itself put into a dump (``"errors": [...]``, for example "Invalid job id
specified") are reported and make the run fail, like an invalid job: the dump lacks jobs it
was asked for. slurmrestd's responses (``/slurm/v0.0.x/job(s)``, ``/slurmdb/v0.0.x/job(s)``)
have the same shape and are read alike.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import mmap
import os
import pwd
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from os import EX_CANTCREAT, EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_OK
from pathlib import Path
from typing import Any, TextIO

from jobcompd import config as configmod
from jobcompd.records import EVENT_END, RecordError, encode, jobobjects
from jobcompd.records.dumps import Item, read_jobs
from jobcompd.spool import Spool, SpoolError

__all__ = ["Item", "LocalIds", "Summary", "backfill", "parse_when", "read_jobs"]

# Skip reasons, in the order the summary lists them.
NOT_FINISHED = "not finished"
FILTERED = "outside --since/--until"
INVALID = "invalid"
UNKNOWN_NAME = "unknown user or group"
TOO_LARGE = "too large for the spool"
_REASONS = (NOT_FINISHED, FILTERED, INVALID, UNKNOWN_NAME, TOO_LARGE)
_PROBLEMS = frozenset({INVALID, UNKNOWN_NAME, TOO_LARGE})
#: Not a job: an error Slurm reported in the dump instead of (some of) its jobs.
SLURM_ERROR = "error reported by Slurm"


# ------------------------------------------------------------------------------------------
# Rendering and writing


@dataclass
class Summary:
    """What a backfill did: jobs read, records written, and jobs skipped by reason."""

    read: int = 0
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    slurm_errors: int = 0

    @property
    def problems(self) -> int:
        own = sum(n for reason, n in self.skipped.items() if reason in _PROBLEMS)
        return own + self.slurm_errors

    def line(self, *, dry_run: bool) -> str:
        verb = "would be written" if dry_run else "written"
        total = sum(self.skipped.values())
        reasons = ", ".join(f"{self.skipped[r]} {r}" for r in _REASONS if self.skipped[r])
        skipped = f"{total} skipped ({reasons})" if total else "0 skipped"
        errors = ""
        if self.slurm_errors:
            plural = "s" if self.slurm_errors > 1 else ""
            errors = f"; {self.slurm_errors} {SLURM_ERROR}{plural} in the dump"
        return f"{self.read} jobs read, {self.written} {verb}, {skipped}{errors}"


class LocalIds:
    """User and group ids from this host's passwd and group databases (NSS), cached."""

    @staticmethod
    @lru_cache(maxsize=4096)
    def uid(name: str) -> int | None:
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            return None

    @staticmethod
    @lru_cache(maxsize=4096)
    def gid(name: str) -> int | None:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None


def backfill(
    items: Iterator[Item],
    emit: Callable[[bytes, int], None],
    *,
    send_script: bool = False,
    send_comment: bool = False,
    since: int | None = None,
    until: int | None = None,
    ids: jobobjects.IdLookup | None = None,
    report: Callable[[str], None] = lambda line: None,
    progress: Callable[[int], None] = lambda done: None,
) -> Summary:
    """Render each job's end record and hand it to ``emit(value, job_id)``.

    Jobs that give no end record (pending, running), end outside ``since <= end < until``
    (epoch seconds), or cannot be rendered are counted and skipped; the last kind is also
    reported, one line each. ``emit`` raising SpoolError skips that job as too large; any
    other exception stops the run and propagates.
    """
    summary = Summary()
    for item in items:
        if item.slurm_error:
            report(f"{item.where}: {item.error}")
            summary.slurm_errors += 1
            continue
        summary.read += 1
        progress(summary.read)
        reason = _one(item, emit, summary, send_script, send_comment, since, until, ids, report)
        if reason is not None:
            summary.skipped[reason] += 1
    return summary


def _one(
    item: Item,
    emit: Callable[[bytes, int], None],
    summary: Summary,
    send_script: bool,
    send_comment: bool,
    since: int | None,
    until: int | None,
    ids: jobobjects.IdLookup | None,
    report: Callable[[str], None],
) -> str | None:
    """Handle one job; the skip reason, or None when its record was emitted."""
    if item.job is None:
        report(f"{item.where}: {item.error}")
        return INVALID
    where = item.where
    job_id = item.job.get("job_id")
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        where += f" (job_id {job_id})"
    try:
        if not jobobjects.is_job_object(item.job):
            raise RecordError("no 'job_id': not a Slurm job object")
        _, rec = jobobjects.from_job(
            item.job, event=EVENT_END, send_script=send_script, send_comment=send_comment,
            ids=ids,
        )  # fmt: skip
        end = jobobjects.end_epoch(item.job)
        value = encode(rec)
    except jobobjects.NoRecord:
        return NOT_FINISHED
    except jobobjects.UnknownName as exc:
        report(f"{where}: {_without_job_prefix(exc, job_id)}")
        return UNKNOWN_NAME
    except RecordError as exc:
        report(f"{where}: {_without_job_prefix(exc, job_id)}")
        return INVALID
    if (since is not None and end < since) or (until is not None and end >= until):
        return FILTERED
    try:
        emit(value, rec.jobid)
    except SpoolError as exc:
        report(f"{where}: {exc}")
        return TOO_LARGE
    summary.written += 1
    return None


def _without_job_prefix(exc: Exception, job_id: Any) -> str:
    """The error without its own "job N: " (the report line names the job already)."""
    text = str(exc)
    prefix = f"job {job_id}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


# ------------------------------------------------------------------------------------------
# Command line

_WHEN = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"  # date
    r"(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?"  # optional time, seconds optional
    r"(Z?)"  # UTC instead of local time
)


def parse_when(text: str) -> int:
    """``YYYY-MM-DD[THH:MM[:SS]]`` in local time (like sacct -S/-E), or UTC with a final
    ``Z``, as epoch seconds."""
    match = _WHEN.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r}: expected YYYY-MM-DD[THH:MM[:SS]], e.g. 2026-05-01T08:00")
    parts = [int(p) if p else 0 for p in match.groups()[:6]]
    try:
        when = datetime(*parts)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if match[7]:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int | None, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty()
        self.drawn = False  # the bar is on the screen now
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and done != self.total):
            return
        self.last = now
        if self.total:
            filled = 30 * done // self.total
            bar = "#" * filled + "-" * (30 - filled)
            text = f"\rbackfill [{bar}] {done}/{self.total} jobs"
        else:
            text = f"\rbackfill {done} jobs"
        self.stream.write(text)
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        """Wipe the bar so that a message can take its line; the next update redraws it."""
        if self.drawn:
            self.stream.write("\r\033[K")
            self.drawn = False
            self.last = 0.0

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


@contextlib.contextmanager
def _writing_as_owner_of(directory: Path, say: Callable[[str], None]) -> Iterator[None]:
    """As root, write as the owner of the spool (the daemon's user) so it can read the
    records (mode 0600); otherwise write as we are."""
    st = os.stat(directory)
    if os.geteuid() != 0 or st.st_uid == 0:
        yield
        return
    say(f"writing as uid {st.st_uid}, the owner of {directory}, so the daemon can read")
    os.setegid(st.st_gid)
    os.seteuid(st.st_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def _say(line: str) -> None:
    print(f"jobcompd backfill: {line}", file=sys.stderr, flush=True)


def _open(args: argparse.Namespace) -> tuple[configmod.Config, bytes, Spool] | int:
    """The configuration, the dump and the spool to write into; or the exit code, said."""
    try:
        cfg = configmod.load(configmod.config_path(args.config))
    except configmod.ConfigError as exc:
        _say(str(exc))
        return EX_CONFIG
    try:
        data = _read_input(args.file)
    except OSError as exc:
        _say(f"cannot read {args.file}: {exc.strerror}")
        return EX_NOINPUT
    spool = Spool(cfg.spool_dir, max_record_bytes=cfg.params.max_record_bytes, allowed_uids=None)
    if not args.dry_run:
        problem = _spool_problem(spool, cfg)
        if problem is not None:
            _say(problem[1])
            return problem[0]
    return cfg, data, spool


def cmd_backfill(args: argparse.Namespace) -> int:
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    cfg, data, spool = opened
    total, items = read_jobs(data)
    bar = _Progress(total, sys.stderr)

    def report(line: str) -> None:
        bar.clear()
        _say(line)

    def emit(value: bytes, job_id: int) -> None:
        if args.dry_run:
            sys.stdout.buffer.write(value + b"\n")
        else:
            spool.write_record(value, job_id=job_id, event="end", fmt="json")

    options = {
        "send_script": cfg.params.send_script,
        "send_comment": cfg.params.send_comment,
        "since": args.since,
        "until": args.until,
        "ids": LocalIds(),
        "report": report,
        "progress": bar.update,
    }
    try:
        if args.dry_run:
            summary = backfill(items, emit, **options)
        else:
            with _writing_as_owner_of(spool.new, _say):
                summary = backfill(items, emit, **options)
    except OSError as exc:
        bar.close()
        _say(
            f"writing into {spool.new} failed: {exc}; the records written before stay and will "
            "be sent. Fix the cause and run backfill again: repeats carry the same jobcompd-id"
        )
        return EX_IOERR
    bar.close()
    if total is None and summary.read == 0 and not summary.slurm_errors:
        _say(f"{args.file} holds no JSON: expected a sacct or scontrol --json dump")
        return EX_DATAERR
    where = "" if args.dry_run else f" into {spool.new}"
    _say(summary.line(dry_run=args.dry_run) + where)
    return EX_DATAERR if summary.problems else EX_OK


def _read_input(name: str) -> bytes | mmap.mmap:
    """The dump's bytes. A file is mapped, not read: its pages stay page cache, which the
    kernel can drop, so a dump of 100,000 jobs (about 1 GB) costs little anonymous memory."""
    if name == "-":
        return sys.stdin.buffer.read()
    with open(name, "rb") as f:
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty, or not a regular file (a FIFO)
            return f.read()


def _spool_problem(spool: Spool, cfg: configmod.Config) -> tuple[int, str] | None:
    """Why records written now would not reach the daemon, if they would not."""
    if not spool.new.is_dir() or not spool.tmp.is_dir():
        return EX_CANTCREAT, (
            f"{spool.root} has no tmp/ and new/: start jobcompd once, or create the spool "
            "(systemd-tmpfiles --create), then run backfill again"
        )
    euid = os.geteuid()
    if euid != 0 and cfg.spool_owners and euid not in cfg.spool_owners:
        owners = ", ".join(str(u) for u in sorted(cfg.spool_owners))
        return EX_NOPERM, (
            f"uid {euid} is not one of the SpoolOwners ({owners}): the daemon would refuse "
            "its records; run backfill as root or as the spool's owner"
        )
    return None
