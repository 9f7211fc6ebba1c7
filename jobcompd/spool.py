"""The spool directory: `SpoolDir/{tmp,new,failed}` (docs/design.md, "The spool protocol").

Writers create a record in `tmp/`, fsync it and rename it into `new/`; a file in `new/` is the
only durable copy of a record until Kafka acknowledges it. This module is the file-system side
of that protocol and nothing else: it lists, reads, retires and dead-letters files, and writes
records atomically. It never looks inside a record.

File names are `<epoch-ns>.<jobid>.<event>.<format>`, with exactly 19 digits of nanoseconds
so that plain string order is time order.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import json
import os
import pwd
import re
import shlex
import stat
import time
from collections.abc import Iterator, Set
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

EVENTS = ("end", "start")
FORMATS = ("env", "json")
MAX_JOB_ID = 2**32 - 1  # Slurm job ids are uint32
REASON_SUFFIX = ".reason"
DIR_MODE = 0o750  # writers (the hook, as SlurmUser) own the spool; group may read
FILE_MODE = 0o600  # records hold job names, paths and comments

_NAME_RE = re.compile(r"(?P<ns>[0-9]{19})\.(?P<job>[1-9][0-9]{0,9})\.(?P<event>end|start)"
                      r"\.(?P<fmt>env|json)")
# Errors of the process, not of the file: retrying later may work, dead-lettering would be wrong.
_TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS,
                               errno.EINTR, errno.EAGAIN})
_MAX_REASON_BYTES = 1 << 20


class SpoolError(Exception):
    """A spool operation failed; the message says what and what to do."""


class RejectedFile(SpoolError):
    """A file in `new/` that can never be a record: the caller moves it to `failed/`.

    `reason` is a short code for the reason file and the metrics: bad_name, symlink,
    not_regular, hardlink, owner, too_large, unreadable.
    """

    def __init__(self, name: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.reason = reason


class Unreadable(SpoolError):
    """A record the daemon may not open because of its owner or mode: not bad data. It stays
    in new/ and is taken once someone runs ``fix`` (a chown or chmod command)."""

    def __init__(self, name: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.name = name
        self.fix = fix


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


class SpoolName(NamedTuple):
    """The parts of a spool file name (a named tuple: one is made per record)."""

    name: str
    ns: int
    job_id: int
    event: str
    fmt: str


def parse_name(name: str) -> SpoolName:
    """Split `<epoch-ns>.<jobid>.<event>.<format>`; anything else is rejected as bad_name."""
    m = _NAME_RE.fullmatch(name)
    if m is None or int(m["job"]) > MAX_JOB_ID:
        raise RejectedFile(
            name, "bad_name",
            f"spool file {name!r} is not named <epoch-ns>.<jobid>.<event>.<format> "
            f"(19-digit nanoseconds, job id 1..{MAX_JOB_ID}, event {'|'.join(EVENTS)}, "
            f"format {'|'.join(FORMATS)}); only jobcompd-spool and jobcompd write to new/")
    return SpoolName(name=name, ns=int(m["ns"]), job_id=int(m["job"]), event=m["event"],
                     fmt=m["fmt"])


def make_name(ns: int, job_id: int, event: str, fmt: str) -> str:
    """Build a spool file name; raises ValueError for values parse_name would reject."""
    if not 0 <= ns < 10**19:
        raise ValueError(f"time stamp {ns} ns does not fit 19 digits")
    if not 1 <= job_id <= MAX_JOB_ID:
        raise ValueError(f"job id {job_id} is outside 1..{MAX_JOB_ID}")
    if event not in EVENTS:
        raise ValueError(f"event {event!r} is not one of {', '.join(EVENTS)}")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return f"{ns:019d}.{job_id}.{event}.{fmt}"


def _check_entry_name(name: str) -> None:
    """Refuse names that would leave the directory (they never come from scan())."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RejectedFile(name, "bad_name", f"{name!r} is not a file name in the spool")


def fsync_dir(path: Path) -> None:
    """Make renames into `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new_file(path: Path, data: bytes) -> None:
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


def _reason_info(name: str, reason: str, message: str,
                 detail: dict[str, object]) -> dict[str, object]:
    """What a reason file says about a dead letter."""
    return {"name": name, "reason": reason, "message": message,
            "time": datetime.now(UTC).isoformat(timespec="seconds"), **detail}


def _reason_body(info: dict[str, object]) -> bytes:
    """The reason file: readable UTF-8 JSON. A name that is not valid UTF-8 (os.fsdecode gives
    lone surrogates for its bytes) falls back to \\u escapes, which still round-trip to the
    name."""
    try:
        text = json.dumps(info, default=str, ensure_ascii=False, indent=1)
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        return json.dumps(info, default=str, ensure_ascii=True, indent=1).encode() + b"\n"


class Spool:
    """One spool directory. Paths only; no state besides the last time stamp written."""

    def __init__(self, root: Path, *, max_record_bytes: int,
                 allowed_uids: frozenset[int] | None) -> None:
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
        self._last_ns = 0

    # -- set-up -----------------------------------------------------------------------------

    def ensure_dirs(self) -> list[str]:
        """Create what is missing and return warnings about what is unsafe.

        Missing directories are made with mode 0750. When the spool folder exists and we are
        root, new subdirectories get its owner and group, so that the hook (running as
        SlurmUser, who should own the spool folder) can write tmp/ and new/.
        Raises SpoolError when a path exists but is not a directory, or when new/ or failed/
        is not readable and writable by this process (what ``jobcompd check`` calls a FAIL).
        """
        warnings: list[str] = []
        created_root = self._mkdir(self.root)
        root_st = os.stat(self.root)
        for sub in (self.tmp, self.new, self.failed):
            if self._mkdir(sub) and not created_root and os.geteuid() == 0:
                os.chown(sub, root_st.st_uid, root_st.st_gid)
        stats = {p: os.stat(p) for p in (self.root, self.tmp, self.new, self.failed)}
        for path, st in stats.items():
            if st.st_mode & stat.S_IWOTH:
                warnings.append(
                    f"spool directory {path} is world-writable (mode {stat.filemode(st.st_mode)})"
                    f": anyone can plant or remove records; chmod o-w {path}")
        for path in (self.tmp, self.failed):
            if stats[path].st_dev != stats[self.new].st_dev:
                warnings.append(
                    f"{path} and {self.new} are on different file systems: renames between "
                    "them are not atomic (the hook's mv falls back to copying, dead-lettering "
                    "fails); keep tmp/, new/ and failed/ on one file system")
        for path in (self.new, self.failed):
            if not os.access(path, os.R_OK | os.W_OK | os.X_OK, effective_ids=True):
                raise SpoolError(
                    f"jobcompd (uid {os.geteuid()}) cannot read and write {path} (owner uid "
                    f"{stats[path].st_uid}, mode {stat.filemode(stats[path].st_mode)}): it "
                    "removes delivered records there and moves bad ones into failed/; give "
                    "the spool to the daemon's user (systemd-tmpfiles --create, or chown -R "
                    "SlurmUser of the spool); jobcompd check names the fix")
        return warnings

    def refuse_segments(self) -> None:
        """Refuse a spool whose seg/ holds files: segments were a spool format that was never
        released and is no longer read, and records left there would be stranded silently.

        Raises SpoolError naming the files and what to do.
        """
        seg = self.root / "seg"
        try:
            names = sorted(os.listdir(seg))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise SpoolError(f"cannot list {seg}: {e.strerror}; fix its permissions or "
                             "remove it") from e
        if names:
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10
                                            else "")
            raise SpoolError(
                f"{seg} holds {len(names)} segment file(s) ({shown}): this version of jobcompd "
                "no longer reads segments. Let the version that wrote them deliver them (start "
                f"it once until {seg} is empty), then remove {seg} and start this version")

    @staticmethod
    def _mkdir(path: Path) -> bool:
        """Create `path` (mode DIR_MODE) unless it is a directory; True if created."""
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise SpoolError(f"{path} exists but is not a directory; move it away so "
                                 "jobcompd can create the spool there") from None
            return False
        except OSError as e:
            raise SpoolError(f"cannot create spool directory {path}: {e.strerror}; create it "
                             "(owned by SlurmUser, mode 0750), e.g. with systemd-tmpfiles "
                             "--create") from e
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
        return True

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
        _check_entry_name(name)
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
            raise self._open_error(name, path, e) from e
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

    def _open_error(self, name: str, path: str, e: OSError) -> RejectedFile:
        if e.errno == errno.ELOOP:
            return RejectedFile(name, "symlink",
                                f"{path} is a symbolic link; records must be regular files "
                                "written into the spool, never links to files elsewhere")
        if e.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            return RejectedFile(name, "not_regular",
                                f"{path} is not a regular file (socket or device); only "
                                "record files belong in new/")
        return RejectedFile(name, "unreadable", f"cannot open {path}: {e.strerror}")

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
                    _check_entry_name(name)
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                except (OSError, SpoolError) as e:
                    failed.append((name, e))
        finally:
            os.close(dir_fd)
        return failed

    def dead_letter(self, name: str, reason: str, message: str, **detail: object) -> None:
        """Move new/`name` to failed/ and write failed/`name`.reason
        (JSON) beside it.

        rename() moves the entry itself, whatever it is (a symlink, never its target; a FIFO;
        a directory). If new/`name` is already gone, only the reason file is written.
        The reason file is written first: when that fails (a full disk), nothing has moved,
        the entry stays in new/ for a later attempt, and failed/ never holds a dead letter
        without its reason.
        Raises OSError (FileExistsError when failed/ already holds that name: jobcompd never
        overwrites a dead letter) for the caller to log; the entry then stays in new/.
        """
        _check_entry_name(name)
        source, target = self.new / name, self.failed / name
        present = os.path.lexists(source)
        if present and os.path.lexists(target):
            raise FileExistsError(errno.EEXIST,
                                  f"cannot dead-letter {source}: {target} already exists;"
                                  " move one of them away", str(target))
        info = _reason_info(name, reason, message, detail)
        if not present:
            info["vanished"] = True
        reason_name = name + REASON_SUFFIX
        self._replace_file(self.failed, reason_name, _reason_body(info))
        if present:
            try:
                os.rename(source, target)
            except FileNotFoundError:
                info["vanished"] = True
                self._replace_file(self.failed, reason_name, _reason_body(info))
            except BaseException:
                unlink_quietly(self.failed / reason_name)
                raise
        fsync_dir(self.failed)

    def _replace_file(self, directory: Path, name: str, data: bytes) -> None:
        """Write directory/name atomically through a hidden temporary file."""
        tmp = directory / f".{name}.{os.getpid()}.tmp"
        unlink_quietly(tmp)
        try:
            _write_new_file(tmp, data)
            os.rename(tmp, directory / name)
        except BaseException:
            unlink_quietly(tmp)
            raise

    # -- writers ----------------------------------------------------------------------------

    def write_record(self, data: bytes, *, job_id: int, event: str, fmt: str) -> str:
        """Put one record into new/ atomically and durably; return its name.

        Create tmp/<name> exclusively (O_EXCL, O_NOFOLLOW, mode 0600), write all, fsync,
        rename into new/, fsync new/. On failure (ENOSPC, EFBIG, ...) the temporary file is
        removed and the error re-raised; nothing partial is ever visible in new/. An error
        from the final fsync of new/ is raised too, although the record is then in new/ and
        will be sent: a caller that retries may create a duplicate.

        Time stamps are strictly increasing within this Spool object, so records written in
        a loop (backfill) keep their order and never share a name.
        """
        if not data:
            raise ValueError(f"refusing to spool an empty record for job {job_id}")
        if len(data) > self.max_record_bytes:
            raise SpoolError(f"record for job {job_id} is {len(data)} bytes, more than "
                             f"the spool's limit of {self.max_record_bytes} bytes; the daemon "
                             "would reject it")
        ns = max(time.time_ns(), self._last_ns + 1)
        name = make_name(ns, job_id, event, fmt)
        self._last_ns = ns
        tmp = self.tmp / name
        try:
            _write_new_file(tmp, data)  # removes what it created if it fails
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

    def clean_tmp(self, older_than_s: float) -> list[str]:
        """Remove files a killed writer left in tmp/ (older than `older_than_s` seconds).

        A hook that slurmctld kills mid-way leaves its temporary file behind; it never
        reached new/, so it is not a record. Maildir waits 36 hours before removing such
        files; a caller should wait at least much longer than a writer can take.
        """
        cutoff = time.time() - older_than_s
        removed: list[str] = []
        with os.scandir(self.tmp) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode) or st.st_mtime >= cutoff:
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append(entry.name)
        return sorted(removed)

    # -- dead letters (for the CLI) ---------------------------------------------------------

    def failed_entries(self) -> list[tuple[str, dict]]:
        """Dead letters in name order, each with its reason (a dict; {} if none was written).

        A reason file that cannot be read or parsed gives {"reason": "unknown", "message": ...}.
        """
        with os.scandir(self.failed) as it:
            names = {entry.name for entry in it if entry.name[0] != "."}
        letters = {n for n in names if not n.endswith(REASON_SUFFIX) or n + REASON_SUFFIX in names}
        # A reason file alone: its record vanished before it could be moved.
        orphans = {n[: -len(REASON_SUFFIX)] for n in names - letters
                   if n[: -len(REASON_SUFFIX)] not in names}
        return [(n, self._read_reason(n) if n + REASON_SUFFIX in names else {})
                for n in sorted(letters | orphans)]

    def _read_reason(self, name: str) -> dict:
        path = self.failed / (name + REASON_SUFFIX)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                raw = os.read(fd, _MAX_REASON_BYTES)
            finally:
                os.close(fd)
            info = json.loads(raw)
        except (OSError, ValueError) as e:
            return {"reason": "unknown", "message": f"cannot read {path}: {e}"}
        if not isinstance(info, dict):
            return {"reason": "unknown", "message": f"{path} does not hold a JSON object"}
        return info

    def retry_failed(self, name: str) -> str:
        """Move dead letter failed/`name` back into new/ under the same name (so it keeps its
        place in time order) and drop its reason file. Returns the name."""
        _check_entry_name(name)
        stem = name[: -len(REASON_SUFFIX)]
        if name.endswith(REASON_SUFFIX) and os.path.lexists(self.failed / stem):
            raise SpoolError(f"{name} is the reason file of {stem}; retry that one")
        source = self.failed / name
        if not os.path.lexists(source):
            if os.path.lexists(self.failed / (name + REASON_SUFFIX)):
                raise SpoolError(f"{name} vanished before it reached {self.failed}; only its "
                                 f"reason file is left, remove {name}{REASON_SUFFIX}")
            raise SpoolError(f"no dead letter {name!r} in {self.failed}; "
                             "'jobcompd failed list' shows them")
        target = self.new / name
        if os.path.lexists(target):
            raise SpoolError(f"{target} already exists; not replacing a pending record")
        os.rename(source, target)
        fsync_dir(self.new)
        unlink_quietly(self.failed / (name + REASON_SUFFIX))
        return name
