"""The spool lock: ``SpoolDir/.jobcompd.lock``, held by the one daemon that drains the spool.

It is taken twice on one open file: as an open-file-description POSIX lock (``F_OFD_SETLK``),
which NFS v4, GPFS, Lustre (``-o flock``) and CephFS pass to their lock manager, so that a
daemon on the other controller sees it; and as an ``flock``, so that jobcompd releases which
only flock exclude each other too. Both are owned by the open file, not the process: closing
some other descriptor of the file never drops them (a classic POSIX lock would be), and on NFS,
where flock is emulated with a whole-file POSIX lock, the two share one lock owner instead of
refusing each other. The kernel (or, for a dead host, the file system's lease) drops them when
the holder dies; nothing here ever breaks a lock that someone holds.

The file holds ``host:pid`` of the holder, for the standby's status and the error messages. It
is never removed: a daemon that locked a removed file and one that locked its replacement would
both be active, so the holder checks every few seconds that the path still names its file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from pathlib import Path

LOCK_NAME = ".jobcompd.lock"
#: struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), native layout.
_FLOCK = "@hhqqi4x"
_HELD_ERRNOS = (errno.EAGAIN, errno.EACCES)


class SpoolLockLost(Exception):
    """The holder no longer holds the spool lock (the file was replaced, or the file system
    took the lock back after this host lost its lease)."""


def _ofd(fd: int, cmd: int, kind: int) -> bytes:
    return fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))


def identity() -> str:
    """How this daemon is named in the lock file: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class SpoolLock:
    """The exclusive lock on one spool; ``try_acquire`` never waits."""

    def __init__(self, spool_dir: Path) -> None:
        self.path = Path(spool_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it. False when another daemon does; OSError when the
        file cannot be made or the file system refuses locks."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            if not self._lock(fd) or not self._still_named(fd):
                os.close(fd)
                return False
        except BaseException:
            os.close(fd)
            raise
        # The name only serves messages: on a full disk, go without it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{identity()}\n".encode(), 0)
        self._fd = fd
        return True

    @staticmethod
    def _lock(fd: int) -> bool:
        try:
            _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
        except OSError as e:
            if e.errno in _HELD_ERRNOS:
                return False
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _still_named(self, fd: int) -> bool:
        """Whether the path still names the locked file (it may be replaced meanwhile)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def verify(self) -> None:
        """Raise SpoolLockLost unless this daemon still holds the lock on the file the path
        names. Asking again for a lock one holds costs a system call (an RPC on NFS, where it
        fails once the server has given the lock to someone else)."""
        fd = self._fd
        if fd is None:
            raise SpoolLockLost(f"{self.path} is not held")
        if not self._still_named(fd):
            raise SpoolLockLost(f"{self.path} was removed or replaced while this daemon held "
                                "it; another daemon may lock the new file")
        try:
            _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
        except OSError as e:
            raise SpoolLockLost(f"{self.path}: the file system no longer grants this daemon's "
                                f"lock ({e.strerror}); its lease may have expired") from None

    def holder(self) -> str:
        """``host:pid`` written by the holder ("unknown" when it wrote none)."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(256).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        return text or "unknown"

    def probe(self) -> bool | None:
        """Whether anyone (this process included, on another file) holds the lock; None when
        that cannot be told (no lock file, or it cannot be opened)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            got = _ofd(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK)
        except OSError:
            return None
        finally:
            os.close(fd)
        return struct.unpack(_FLOCK, got)[0] != fcntl.F_UNLCK

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
