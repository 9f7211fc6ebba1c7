"""The status file: ``StateSaveLocation/jobcompd.status``, what ``jobcompd status`` prints.

The daemon rewrites it every few seconds and at each change of state (started, reloading,
stopping, stopped); the command line reads it. It holds facts, not history: pid, start time,
backlog, oldest pending record, in flight, broker state, counters, last error, and the
configuration in force with every secret redacted. JSON, so scripts can read it too.

Whether the daemon still runs is not taken from the file (a killed daemon cannot update it)
but from the instance lock the daemon holds in the same folder (statefile.py): the kernel lists the
holder of an flock in /proc/locks, without anyone having to touch the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobcompd import __version__
from jobcompd.service.statefile import LOCK_FILE

if TYPE_CHECKING:
    from jobcompd.config import Config

@dataclass(frozen=True, slots=True)
class Role:
    """Whether this daemon drains the spool (holds its lock) or stands by for it."""

    active: bool
    holder: str  # host:pid of the spool lock's holder (this daemon's own when active)
    waited_s: float = 0.0  # how long this daemon waited for the lock (so far, when standby)


STATUS_FILE = "jobcompd.status"
STATUS_VERSION = 1
#: How often the daemon rewrites the file (seconds); ``jobcompd status`` calls a file older
#: than a few of these stale.
UPDATE_INTERVAL_S = 5.0
#: Owner and group (SlurmUser, its group) may read it; it holds no secret but paths and names.
STATUS_MODE = 0o640
STATES = ("starting", "standby", "running", "reloading", "stopping", "stopped")
_MAX_BYTES = 1 << 20


class StatusError(Exception):
    """The status file cannot be used; the message names it and says why."""


class StatusMissing(StatusError):
    """There is no status file: the daemon never ran with this StateSaveLocation."""


def status_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATUS_FILE


# --------------------------------------------------------------------------- building


def config_summary(cfg: Config) -> dict[str, Any]:
    """The configuration in force, as plain JSON values, secrets shown as ``***``: the file,
    every key of the configuration table under its Config attribute's name (JobCompParams as
    ``params``), and the producer's effective librdkafka properties."""
    from jobcompd.config import KEYS

    summary: dict[str, Any] = {"path": str(cfg.path)}
    for key in KEYS:
        summary[key.attr] = key.show(getattr(cfg, key.attr))
    summary["kafka"] = cfg.redacted_kafka()
    return summary


def build_status(
    *,
    state: str,
    started_at: float,
    backlog: int,
    in_flight: int,
    oldest_pending_ns: int | None,
    broker_up: bool | None,
    counters: Mapping[str, int],
    config: Mapping[str, Any],
    last_error: str | None = None,
    last_error_at: float | None = None,
    backlog_truncated: bool = False,
    dead_letters: int | None = None,
    unreadable: int = 0,
    restart_needed: Mapping[str, str] | None = None,
    interval_s: float = UPDATE_INTERVAL_S,
    now: float | None = None,
    role: Role | None = None,
    spool_free_bytes: int | None = None,
    spool_bytes: int | None = None,
    spool_min_free_bytes: int | None = None,
) -> dict[str, Any]:
    """The status document. ``state`` is one of STATES; ``started_at``, ``last_error_at`` and
    ``now`` are Unix times; ``oldest_pending_ns`` is the spool time stamp (epoch ns) of the
    oldest unacknowledged record; ``config`` is :func:`config_summary`'s result (the
    configuration in force); ``restart_needed`` maps the keys a reload changed but could not
    apply to their configured values; ``role`` says whether this daemon holds the spool
    lock (``active``) or stands by, and who holds it (``lock_holder``); the ``spool_*`` bytes
    are the spool's free space, what new/ takes, and SpoolMinFreeBytes (None: not known)."""
    if state not in STATES:
        raise ValueError(f"status state {state!r}: expected one of {', '.join(STATES)}")
    now = time.time() if now is None else now
    return {
        "version": STATUS_VERSION,
        "jobcompd_version": __version__,
        "state": state,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started_at": started_at,
        "written_at": now,
        "uptime_s": max(0.0, now - started_at),
        "update_interval_s": interval_s,
        "backlog": backlog,
        "backlog_truncated": backlog_truncated,
        "in_flight": in_flight,
        **_oldest_pending(oldest_pending_ns, now),
        "broker": {None: "unknown", True: "up", False: "down"}[broker_up],
        "dead_letters": dead_letters,
        "unreadable": unreadable,
        "restart_needed": dict(restart_needed or {}),
        "spool_free_bytes": spool_free_bytes,
        "spool_bytes": spool_bytes,
        "spool_min_free_bytes": spool_min_free_bytes,
        "counters": dict(counters),
        "last_error": (None if last_error is None
                       else {"message": last_error, "at": last_error_at}),
        "config": dict(config),
        **_role_fields(role),
    }


def _oldest_pending(oldest_pending_ns: int | None, now: float) -> dict[str, float | None]:
    """When the oldest unacknowledged record was written (Unix time), and its age."""
    if oldest_pending_ns is None:
        return {"oldest_pending_at": None, "oldest_pending_age_s": None}
    oldest_at = oldest_pending_ns / 1e9
    return {"oldest_pending_at": oldest_at, "oldest_pending_age_s": max(0.0, now - oldest_at)}


def _role_fields(role: Role | None) -> dict[str, Any]:
    if role is None:
        return {}
    return {"role": "active" if role.active else "standby", "lock_holder": role.holder,
            "standby_waited_s": round(role.waited_s, 1)}


# --------------------------------------------------------------------------- the file


def write_status(state_dir: Path, status: Mapping[str, Any]) -> Path:
    """Replace the status file atomically (hidden temporary file, then rename), so a reader
    never sees half a file. No fsync: it is rewritten every few seconds, and after a power cut
    an old or empty one only makes ``jobcompd status`` say so. OSError propagates."""
    path = status_path(state_dir)
    tmp = path.with_name(f".{STATUS_FILE}.tmp")
    data = (json.dumps(status, indent=1, ensure_ascii=False, default=str) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 STATUS_MODE)
    try:
        os.fchmod(fd, STATUS_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def read_status(state_dir: Path) -> dict[str, Any]:
    """Read the status file. Raises StatusMissing when there is none, StatusError when it
    cannot be read or is not a status document."""
    path = status_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StatusMissing(
            f"no status file {path}: jobcompd has not run with StateSaveLocation {state_dir} "
            "(or cannot write there); is this the right configuration (-c)?") from None
    except PermissionError:
        raise StatusError(f"cannot read {path}: permission denied; run as root or as the "
                          "daemon's user (SlurmUser)") from None
    except OSError as e:
        raise StatusError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = os.read(fd, _MAX_BYTES + 1)
    except OSError as e:
        raise StatusError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_BYTES:
        raise StatusError(f"{path} is larger than {_MAX_BYTES} bytes: not a status file")
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise StatusError(f"{path} is not valid JSON ({e}); the daemon rewrites it every "
                          f"{UPDATE_INTERVAL_S:g} s while it runs") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        raise StatusError(f"{path} is not a jobcompd status file (no pid)")
    if doc.get("version") != STATUS_VERSION:
        raise StatusError(f"{path} has status format version {doc.get('version')!r}, this "
                          f"jobcompd reads version {STATUS_VERSION}: it was written by "
                          "another jobcompd release")
    return doc


# --------------------------------------------------------------------------- is it running?


@dataclass(frozen=True, slots=True)
class Liveness:
    """Whether a daemon runs on this StateSaveLocation. ``running`` is None when that cannot
    be told (no access to /proc/locks nor to the process)."""

    running: bool | None
    pid: int | None
    how: str


def _proc_locks_holders(lock: os.stat_result, proc_locks: Path) -> list[tuple[bool, int]]:
    """(same device, pid) of every flock held on the lock file's inode."""
    holders = []
    for line in proc_locks.read_text().splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146321 0 EOF"; "1: -> FLOCK ..." is a waiter.
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            pid = int(parts[4])
            same_dev = (int(major, 16), int(minor, 16)) == (os.major(lock.st_dev),
                                                           os.minor(lock.st_dev))
            if int(inode) == lock.st_ino and pid > 0:
                holders.append((same_dev, pid))
        except ValueError:
            continue
    return holders


def liveness(state_dir: Path, pid: int | None,
             proc_locks: Path = Path("/proc/locks")) -> Liveness:
    """Who holds the instance lock of ``state_dir`` (the daemon keeps it while it runs; the
    kernel drops it when the process dies, however it dies). ``pid`` is the status file's, for
    the fallback when /proc/locks cannot be read: a process check."""
    lock_path = Path(state_dir) / LOCK_FILE
    try:
        lock = os.stat(lock_path)
    except FileNotFoundError:
        return Liveness(False, None, f"no lock file {lock_path}")
    except OSError as e:
        return _process_check(pid, f"cannot stat {lock_path}: {e.strerror}")
    try:
        holders = _proc_locks_holders(lock, proc_locks)
    except OSError as e:
        return _process_check(pid, f"cannot read {proc_locks}: {e.strerror}")
    if not holders:
        return Liveness(False, None, f"nobody holds {lock_path}")
    holders.sort(reverse=True)  # the same device first (btrfs reports another one)
    return Liveness(True, holders[0][1], f"pid {holders[0][1]} holds {lock_path}")


def _process_check(pid: int | None, why: str) -> Liveness:
    if pid is None:
        return Liveness(None, None, why)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return Liveness(False, None, f"{why}; no process {pid}")
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return Liveness(None, pid, f"{why}; process {pid} exists but cannot be inspected")
    if b"jobcompd" in cmdline:
        return Liveness(True, pid, f"{why}; process {pid} is a jobcompd")
    return Liveness(False, None, f"{why}; process {pid} is not a jobcompd (pid reused)")
