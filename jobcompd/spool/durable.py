"""The file operations the writer contract is made of (SPEC.md, "Writing a record"): create a
file exclusively and never through a symlink, write it whole, fsync it; fsync a folder after a
rename into it; open an entry to read it without following or blocking."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

DIR_MODE = 0o750  # writers (the hook, as SlurmUser) own the spool; group may read
FILE_MODE = 0o600  # records hold job names, paths and comments


def fsync_dir(path: Path) -> None:
    """Make renames into `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes) -> None:
    """Create `path` (never an existing entry, never through a symlink), write, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # exact mode, whatever the umask
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)


def replace_file(directory: Path, name: str, data: bytes) -> None:
    """Write directory/name atomically through a hidden temporary file."""
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    unlink_quietly(tmp)
    try:
        write_new_file(tmp, data)
        os.rename(tmp, directory / name)
    except BaseException:
        unlink_quietly(tmp)
        raise


def open_for_reading(path: Path | str) -> int:
    """Open a spool entry to read it: no symlink, no blocking on a FIFO, and no atime.

    With ``relatime`` (the default mount option) the first read of a freshly written file
    updates its access time, which dirties the inode: a journal transaction per record, which
    may have to wait while the hooks' fsyncs keep the journal busy. O_NOATIME needs the file's
    owner or CAP_FOWNER; for anyone else's file (EPERM) the open is done again without it.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError as e:
        if e.errno != errno.EPERM:
            raise
        return os.open(path, flags)


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
