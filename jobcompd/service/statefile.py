"""The state file, and the lock of StateSaveLocation (the spool's own is spoollock.py).

The spool is the truth; the state file only annotates a restart (docs/design.md, durability rule
5). It says whether the last run stopped cleanly, which files were still unsent and which
were in flight when the producer was purged (their re-sends are marked as possible duplicates), the
attempt counts, and lifetime counters. Losing it loses nothing; a file that cannot be read is moved
aside with an error, and the daemon carries on from the spool.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

import msgspec

STATE_FILE = "jobcompd_state"
#: The state file's name in the spool, where it lives with ``Standby=yes``: the daemon that
#: takes over reads what the last holder of the spool wrote.
SHARED_STATE_FILE = ".jobcompd_state"
LOCK_FILE = "jobcompd.lock"
STATE_VERSION = 1


class StateError(Exception):
    """The state file could not be used (corrupt, truncated, from a newer jobcompd)."""


class LockError(Exception):
    """Another jobcompd already runs on this StateSaveLocation."""


class State(msgspec.Struct, kw_only=True):
    """What one run tells the next; written atomically on shutdown (and marked unclean at start)."""

    version: int = STATE_VERSION
    #: False from start-up until a clean shutdown: a crash leaves it False, and the next run marks
    #: its first window of re-sends as possible duplicates.
    clean: bool = False
    saved_at: float = 0.0
    pid: int = 0
    #: spool names that were never handed to the broker (purged from the local queue).
    pending: list[str] = []
    #: spool names that were on the wire when the producer was purged: they may have arrived.
    in_flight: list[str] = []
    #: delivery attempts so far, by spool name (only for names with at least one failed attempt).
    attempts: dict[str, int] = {}
    #: lifetime counters (ingested, delivered, retried, dead_lettered, rebuilds, reloads, …).
    counters: dict[str, int] = {}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(State)


def state_path(state_dir: Path, name: str = STATE_FILE) -> Path:
    return state_dir / name


def load(state_dir: Path, name: str = STATE_FILE) -> State | None:
    """Read the state file; None when there is none. Raises StateError for an unusable file."""
    path = state_path(state_dir, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"{path}: cannot read the state file: {e.strerror}") from e
    try:
        state = _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise StateError(f"{path}: corrupt or truncated state file ({e})") from e
    if state.version != STATE_VERSION:
        raise StateError(
            f"{path}: state file version {state.version} is not {STATE_VERSION} "
            "(written by another jobcompd release)"
        )
    return state


def move_aside(state_dir: Path, name: str = STATE_FILE) -> Path | None:
    """Rename an unusable state file to ``jobcompd_state.bad-<epoch-ns>`` to be inspected."""
    path = state_path(state_dir, name)
    target = path.with_name(f"{name}.bad-{time.time_ns()}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target


def save(state_dir: Path, state: State, name: str = STATE_FILE) -> None:
    """Write atomically: a new file, fsync, rename over the old one, fsync the folder."""
    path = state_path(state_dir, name)
    tmp = path.with_name(f"{name}.new")
    state.saved_at = time.time()
    state.pid = os.getpid()
    data = _encoder.encode(state)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class InstanceLock:
    """An exclusive flock on ``StateSaveLocation/jobcompd.lock``, held for the daemon's lifetime.

    It guards this host's files (the status file, and the state file unless it follows a
    shared spool), tells ``jobcompd status`` that a daemon runs here (/proc/locks), and keeps
    out a jobcompd release that knows no spool lock. A standby holds it while it waits.

    flock is released by the kernel when the process dies, so a SIGKILLed daemon never leaves a
    stale lock behind. The file holds the holder's pid, for the error message of a second instance.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockError(
                f"another jobcompd (pid {holder}) already runs with StateSaveLocation "
                f"{self.path.parent}; stop it first (systemctl stop jobcompd), or give this "
                "instance its own StateSaveLocation and SpoolDir"
            ) from None
        # The pid only serves the message of a second instance: on a full disk, go without it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
