"""One spool directory, `SpoolDir/{tmp,new,failed}`, on the file system (SPEC.md).

A file in `new/` is the only durable copy of a record until Kafka acknowledges it. The Spool
class is the file-system side of that contract and nothing else: it sets the folders up,
lists, reads, retires and dead-letters entries, and writes records the way SPEC.md's writer
contract says. It never looks inside a record; names are jobcompd.spool.names' business,
dead letters jobcompd.spool.deadletters'.
"""

from __future__ import annotations

import errno
import heapq
import os
import pwd
import shlex
import stat
import time
from collections.abc import Iterator, Set
from pathlib import Path

from jobcompd.spool import deadletters, layout, space
from jobcompd.spool.durable import (
    fsync_dir,
    open_for_reading,
    unlink_quietly,
    write_new_file,
)
from jobcompd.spool.errors import RejectedFile, SpoolError, Unreadable
from jobcompd.spool.names import check_entry_name, make_name

# Errors of the process, not of the file: retrying later may work, dead-lettering would be wrong.
_TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS,
                               errno.EINTR, errno.EAGAIN})


def _access_fix(path: str) -> str:
    """The command that lets this process read ``path``: a chown to its user when another
    user owns the file, else a chmod."""
    try:
        st = os.lstat(path)
    except OSError:
        return f"chmod 0600 {shlex.quote(path)}"
    if st.st_uid != os.geteuid():
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = str(os.geteuid())
        return f"chown {shlex.quote(user)} {shlex.quote(path)}"
    return f"chmod u+r {shlex.quote(path)}"


def _open_error(name: str, path: str, e: OSError) -> RejectedFile:
    if e.errno == errno.ELOOP:
        return RejectedFile(name, "symlink",
                            f"{path} is a symbolic link; records must be regular files "
                            "written into the spool, never links to files elsewhere")
    if e.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
        return RejectedFile(name, "not_regular",
                            f"{path} is not a regular file (socket or device); only "
                            "record files belong in new/")
    return RejectedFile(name, "unreadable", f"cannot open {path}: {e.strerror}")


class Spool:
    """One spool directory. Paths only; no state besides the last time stamp written."""

    def __init__(self, root: Path, *, max_record_bytes: int,
                 allowed_uids: frozenset[int] | None, min_free_bytes: int | None = None) -> None:
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be positive, not {max_record_bytes}")
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.new = self.root / "new"
        self.failed = self.root / "failed"
        #: new/ as text, joined to a name with one f-string per record: a Path per record
        #: (join, fspath, str) is a measurable share of the main loop's time.
        self._new_text = os.fspath(self.new)
        self.max_record_bytes = max_record_bytes
        self.allowed_uids = allowed_uids
        #: SpoolMinFreeBytes for write_record; None: what the hooks read (SPEC.md, "Free space").
        self.min_free_bytes = min_free_bytes
        self._last_ns = 0

    # -- set-up -----------------------------------------------------------------------------

    def ensure_dirs(self) -> list[str]:
        """Create what is missing, return warnings about what is unsafe (layout.ensure_dirs).
        """
        return layout.ensure_dirs(self.root, self.tmp, self.new, self.failed)

    def set_min_free(self, value: int) -> list[str]:
        """Apply SpoolMinFreeBytes to this object's writes and tell the hooks through the
        threshold file (SPEC.md, "Free space"); returns warnings about what went wrong."""
        self.min_free_bytes = value
        try:
            space.write_min_free(self.root, value)
        except OSError as e:
            path = self.root / space.MIN_FREE_FILE
            return [f"cannot write {path}: {e.strerror or e}; the hooks go on with the "
                    f"threshold it holds, or {space.DEFAULT_MIN_FREE_BYTES} bytes without it"]
        return []

    def free_bytes(self) -> int | None:
        """Bytes still free on the spool's file system for an unprivileged writer."""
        return space.free_bytes(self.new)

    # -- intake -----------------------------------------------------------------------------

    def scan(self, limit: int, exclude: Set[str]) -> tuple[list[str], bool]:
        """The `limit` oldest names in new/ (name order is time order), skipping `exclude`
        and dot-files; the flag says that more were there.

        One pass of os.scandir with no stat per file, and a heap of `limit` names, so a
        million-file backlog costs one directory read and O(limit) memory.
        """
        if limit < 1:
            raise ValueError(f"scan limit must be positive, not {limit}")
        total = 0

        def candidates() -> Iterator[str]:
            nonlocal total
            with os.scandir(self.new) as it:
                for entry in it:
                    name = entry.name
                    if name[0] == "." or name in exclude:
                        continue
                    total += 1
                    yield name

        names = heapq.nsmallest(limit, candidates())
        return names, total > limit

    def count_new(self) -> int:
        """Number of entries in new/ (dot-files aside), for the backlog gauge."""
        with os.scandir(self.new) as it:
            return sum(1 for entry in it if entry.name[0] != ".")

    def read(self, name: str) -> bytes:
        """The bytes of new/`name`, if it is a file jobcompd may take as a record.

        Opened with O_NOFOLLOW (a symlink fails with ELOOP) and O_NONBLOCK (a FIFO cannot
        block the daemon), then checked on the open descriptor: a regular file with one
        link (a hard link could expose a file from elsewhere), owned by an allowed user, at
        most max_record_bytes long. Never reads more than max_record_bytes + 1 bytes.

        FileNotFoundError propagates (the file was retired or moved meanwhile). Errors of the
        process rather than of the file (EMFILE, ENFILE, ENOMEM, ...) propagate as OSError so
        that a good record is retried later instead of dead-lettered. A file this process may
        not open (its owner or mode) raises Unreadable. Anything else raises RejectedFile.
        """
        check_entry_name(name)
        path = f"{self._new_text}/{name}"
        try:
            fd = open_for_reading(path)
        except FileNotFoundError:
            raise
        except PermissionError as e:
            fix = _access_fix(path)
            raise Unreadable(name, f"cannot open {path}: {e.strerror} (jobcompd runs as uid "
                             f"{os.geteuid()}); it stays in new/ until {fix}", fix) from e
        except OSError as e:
            if e.errno in _TRANSIENT_ERRNOS:
                raise
            raise _open_error(name, path, e) from e
        try:
            st = os.fstat(fd)
            self._check_stat(name, path, st)
            chunks: list[bytes] = []
            left = self.max_record_bytes + 1
            # One read() of the size fstat gave, plus a byte to see the end: a short read of a
            # regular file is its end. Only a file that grows while being read takes more.
            want = min(st.st_size + 1, left)
            try:
                while left > 0:
                    chunk = os.read(fd, want)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
                    if len(chunk) < want:
                        break
                    want = min(left, 1 << 20)
            except OSError as e:
                if e.errno in _TRANSIENT_ERRNOS:
                    raise
                raise RejectedFile(name, "unreadable",
                                   f"cannot read {path}: {e.strerror}; check the disk, then "
                                   "'jobcompd failed retry'") from e
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > self.max_record_bytes:
            raise RejectedFile(name, "too_large",
                               f"{path} grew beyond {self.max_record_bytes} bytes while being "
                               "read; a record must be complete before it is renamed into new/")
        return data

    def _check_stat(self, name: str, path: str, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise RejectedFile(name, "not_regular",
                               f"{path} is not a regular file "
                               f"({stat.filemode(st.st_mode)}); only record files belong in "
                               "new/")
        if st.st_nlink != 1:
            raise RejectedFile(name, "hardlink",
                               f"{path} has {st.st_nlink} hard links; a record must be written "
                               "into the spool, not linked from elsewhere")
        if self.allowed_uids is not None and st.st_uid not in self.allowed_uids:
            allowed = ", ".join(str(u) for u in sorted(self.allowed_uids))
            raise RejectedFile(name, "owner",
                               f"{path} is owned by uid {st.st_uid}, not by one of the "
                               f"SpoolOwners (uids {allowed}); add the writer to SpoolOwners "
                               "if it is trusted")
        if st.st_size > self.max_record_bytes:
            raise RejectedFile(name, "too_large",
                               f"{path} is {st.st_size} bytes, more than the limit of "
                               f"{self.max_record_bytes} bytes")

    # -- outcome ----------------------------------------------------------------------------

    def retire_all(self, names: list[str]) -> list[tuple[str, Exception]]:
        """Remove new/`name` of each name once Kafka has acknowledged it; already gone is fine.

        new/ is opened once and each name unlinked relative to it, which spares the path walk
        per file. Returns the names that could not be removed, with their errors.
        No fsync of new/: if a crash undoes an unlink, the file is sent again with the same
        key and jobcompd-id header, a duplicate docs/design.md allows (durability rule 3). A
        directory fsync per delivered record would cost a disk flush per message.
        """
        failed: list[tuple[str, Exception]] = []
        try:
            dir_fd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            return [(name, e) for name in names]
        try:
            for name in names:
                try:
                    check_entry_name(name)
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                except (OSError, SpoolError) as e:
                    failed.append((name, e))
        finally:
            os.close(dir_fd)
        return failed

    def dead_letter(self, name: str, reason: str, message: str, **detail: object) -> None:
        """Move new/`name` to failed/ with its reason file (deadletters.dead_letter)."""
        deadletters.dead_letter(self.new, self.failed, name, reason, message, detail)

    # -- writers ----------------------------------------------------------------------------

    def write_record(self, data: bytes, *, job_id: int, event: str, fmt: str) -> str:
        """Put one record into new/ atomically and durably; return its name.

        SPEC.md's writer contract, "Writing a record": create tmp/<name> exclusively (O_EXCL,
        O_NOFOLLOW, mode 0600), write all, fsync, rename into new/, fsync new/. On failure
        (ENOSPC, EFBIG, ...) the temporary file is removed and the error re-raised; nothing
        partial is ever visible in new/. An error from the final fsync of new/ is raised too,
        although the record is then in new/ and will be sent: a caller that retries may
        create a duplicate. Below SpoolMinFreeBytes nothing is written and SpoolFull (an
        OSError) is raised, as the hooks refuse a record there.

        Time stamps are strictly increasing within this Spool object, so records written in
        a loop (backfill) keep their order and never share a name.
        """
        if not data:
            raise ValueError(f"refusing to spool an empty record for job {job_id}")
        if len(data) > self.max_record_bytes:
            raise SpoolError(f"record for job {job_id} is {len(data)} bytes, more than "
                             f"the spool's limit of {self.max_record_bytes} bytes; the daemon "
                             "would reject it")
        min_free = self.min_free_bytes
        if min_free is None:
            min_free = space.read_min_free(self.root)
        space.check_room(self.new, min_free, f"job {job_id} {event}")
        ns = max(time.time_ns(), self._last_ns + 1)
        name = make_name(ns, job_id, event, fmt)
        self._last_ns = ns
        tmp = self.tmp / name
        try:
            write_new_file(tmp, data)  # removes what it created if it fails
        except FileExistsError:
            raise SpoolError(f"{tmp} already exists; another writer uses the same time "
                             "stamp and job id") from None
        try:
            if os.path.lexists(self.new / name):
                raise SpoolError(f"{self.new / name} already exists; not replacing a record")
            os.rename(tmp, self.new / name)
        except BaseException:
            unlink_quietly(tmp)
            raise
        fsync_dir(self.new)
        return name

    # -- dead letters (for the CLI) ---------------------------------------------------------

    def clean_tmp(self, older_than_s: float) -> list[str]:
        """Remove files a killed writer left in tmp/ (layout.clean_tmp)."""
        return layout.clean_tmp(self.tmp, older_than_s)

    def failed_entries(self) -> list[tuple[str, dict]]:
        """Dead letters in name order, each with its reason (deadletters.entries)."""
        return deadletters.entries(self.failed)

    def retry_failed(self, name: str) -> str:
        """Move dead letter failed/`name` back into new/ (deadletters.retry)."""
        return deadletters.retry(self.new, self.failed, name)
