"""The spool's folders: made and checked at start, and what is left over in them cleaned up
(files killed writers left in tmp/) or refused (segments, a spool format no release read).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from jobcompd.spool.durable import DIR_MODE
from jobcompd.spool.errors import SpoolError


def ensure_dirs(root: Path, tmp: Path, new: Path, failed: Path) -> list[str]:
    """Create what is missing and return warnings about what is unsafe.

    Missing directories are made with mode 0750. When the spool folder exists and we are
    root, new subdirectories get its owner and group, so that the hook (running as
    SlurmUser, who should own the spool folder) can write tmp/ and new/.
    Raises SpoolError when a path exists but is not a directory, or when new/ or failed/
    is not readable and writable by this process (what ``jobcompd check`` calls a FAIL).
    """
    warnings: list[str] = []
    created_root = _mkdir(root)
    root_st = os.stat(root)
    for sub in (tmp, new, failed):
        if _mkdir(sub) and not created_root and os.geteuid() == 0:
            os.chown(sub, root_st.st_uid, root_st.st_gid)
    stats = {p: os.stat(p) for p in (root, tmp, new, failed)}
    for path, st in stats.items():
        if st.st_mode & stat.S_IWOTH:
            warnings.append(
                f"spool directory {path} is world-writable (mode {stat.filemode(st.st_mode)})"
                f": anyone can plant or remove records; chmod o-w {path}")
    for path in (tmp, failed):
        if stats[path].st_dev != stats[new].st_dev:
            warnings.append(
                f"{path} and {new} are on different file systems: renames between "
                "them are not atomic (the hook's mv falls back to copying, dead-lettering "
                "fails); keep tmp/, new/ and failed/ on one file system")
    for path in (new, failed):
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK, effective_ids=True):
            raise SpoolError(
                f"jobcompd (uid {os.geteuid()}) cannot read and write {path} (owner uid "
                f"{stats[path].st_uid}, mode {stat.filemode(stats[path].st_mode)}): it "
                "removes delivered records there and moves bad ones into failed/; give "
                "the spool to the daemon's user (systemd-tmpfiles --create, or chown -R "
                "SlurmUser of the spool); jobcompd check names the fix")
    return warnings


def refuse_segments(root: Path) -> None:
    """Refuse a spool whose seg/ holds files: segments were a spool format that was never
    released and is no longer read, and records left there would be stranded silently.

    Raises SpoolError naming the files and what to do.
    """
    seg = root / "seg"
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


def clean_tmp(tmp: Path, older_than_s: float) -> list[str]:
    """Remove files a killed writer left in tmp/ (older than `older_than_s` seconds).

    A hook that slurmctld kills mid-way leaves its temporary file behind; it never
    reached new/, so it is not a record. Maildir waits 36 hours before removing such
    files; a caller should wait at least much longer than a writer can take.
    """
    cutoff = time.time() - older_than_s
    removed: list[str] = []
    with os.scandir(tmp) as it:
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
