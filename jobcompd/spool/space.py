"""The spool's free space (SPEC.md, "Free space"): the threshold every writer keeps free, the
file that tells it to the hooks, and the figures the daemon exports.

A long outage fills the spool's file system, which may be slurmctld's own. Every writer refuses
a record while fewer than the threshold's bytes are free for an unprivileged user (statvfs's
``f_bavail``): root's reserved blocks are never counted as free, so a refusal leaves the
threshold plus the reserve to slurmctld and the rest of the host.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

#: SpoolMinFreeBytes when the daemon has not said otherwise (the hooks have the same figure).
DEFAULT_MIN_FREE_BYTES = 64 << 20
#: The largest threshold: 18 digits at most, so the sh hook's 64-bit arithmetic cannot overflow.
MAX_MIN_FREE_BYTES = 1 << 50
#: In SpoolDir: the threshold in force, written by the daemon, read by every writer.
MIN_FREE_FILE = ".min-free-bytes"
#: Mode of that file: not secret, and a hook may run as another user than the daemon.
MIN_FREE_FILE_MODE = 0o644
#: Its first line, as the hooks read it: 0, or 1 to 18 digits without a leading zero.
_MIN_FREE_LINE = re.compile(rb"0|[1-9][0-9]{0,17}")
#: What one read() takes of it, in the C hook too.
_READ_LIMIT = 64


class SpoolFull(OSError):
    """A record refused because the spool's file system is below its threshold.

    An OSError without an errno: callers that stop on a failed write stop here too (backfill
    exits 74), and the HTTP intake answers 503, which Slurm retries."""


def read_min_free(root: Path) -> int:
    """The threshold the hooks apply: the first line of ``root/.min-free-bytes`` when it is a
    plain decimal number (NUL bytes dropped, as a shell's read drops them), else (no such
    regular file, unreadable, anything else) the default."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(root / MIN_FREE_FILE, flags)
    except OSError:
        return DEFAULT_MIN_FREE_BYTES
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return DEFAULT_MIN_FREE_BYTES
        data = os.read(fd, _READ_LIMIT)
    except OSError:
        return DEFAULT_MIN_FREE_BYTES
    finally:
        os.close(fd)
    line = data.split(b"\n", 1)[0].replace(b"\0", b"")
    return int(line) if _MIN_FREE_LINE.fullmatch(line) else DEFAULT_MIN_FREE_BYTES


def write_min_free(root: Path, value: int) -> None:
    """Tell the hooks the threshold: ``root/.min-free-bytes`` replaced atomically (a hidden
    temporary file, fsynced, renamed), mode 0644. OSError propagates."""
    if not 0 <= value <= MAX_MIN_FREE_BYTES:
        raise ValueError(f"min free bytes {value} is not within 0..{MAX_MIN_FREE_BYTES}")
    path = root / MIN_FREE_FILE
    tmp = root / f"{MIN_FREE_FILE}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, MIN_FREE_FILE_MODE)
        try:
            os.fchmod(fd, MIN_FREE_FILE_MODE)
            os.write(fd, f"{value}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def free_bytes(path: Path | str) -> int | None:
    """Bytes an unprivileged user may still write on the file system of ``path`` (f_bavail
    blocks of f_frsize bytes), or None when it cannot tell."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize if st.f_frsize > 0 else None


def check_room(path: Path | str, min_free: int, what: str) -> None:
    """Raise SpoolFull, in the hooks' words, when the file system of ``path`` has fewer than
    ``min_free`` bytes free for an unprivileged user; ``what`` names the record refused. 0
    never refuses; a file system that cannot tell is written to (the write reports a real
    failure)."""
    if min_free <= 0:
        return
    free = free_bytes(path)
    if free is not None and free < min_free:
        raise SpoolFull(f"spool nearly full: {path} has {free} bytes free, less than "
                        f"SpoolMinFreeBytes={min_free}; {what} not recorded")


def allocated_bytes(directory: Path | str) -> int:
    """Disk space the entries of ``directory`` take (their allocated blocks), dot-files aside:
    one lstat per entry."""
    total = 0
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name[0] == ".":
                continue
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


class UsageMeter:
    """The bytes of new/ for the gauge, at a bounded cost: the sum takes one lstat per record,
    which a backlog of a million records turns into a second or two of the main loop, so a
    new sum is due after ``interval_s`` and at least ``duty`` times as long as the last took
    (``clock`` times it)."""

    def __init__(self, directory: Path, interval_s: float = 10.0, duty: float = 100.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.interval_s = interval_s
        self.duty = duty
        self.value: int | None = None
        self._clock = clock
        self._due = 0.0

    def measure(self, now: float) -> int | None:
        """The last sum of new/'s allocated bytes, taken again when due (``now``: monotonic);
        None until one succeeded."""
        if now < self._due:
            return self.value
        began = self._clock()
        try:
            self.value = allocated_bytes(self.directory)
        except OSError:
            self.value = None
        took = self._clock() - began
        self._due = now + max(self.interval_s, self.duty * took)
        return self.value
