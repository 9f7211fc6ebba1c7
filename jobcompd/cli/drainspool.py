"""``jobcompd drain-spool PATH``: the records of another host's spool, into this one's.

For a controller whose disk outlived it: its spool, mounted or copied here, is moved record by
record into the local SpoolDir's new/, where the running jobcompd sends them. The message and
its ``jobcompd-id`` are made from the record's bytes and ClusterName, so they are the ones the
dead host's daemon would have sent. Each record is written as the hook writes (tmp/, fsync,
rename into new/, never over a name that is there), new/ is fsynced, and only then is the source
removed: a crash in between leaves a record in both places, and running the command again finds
the copy already in new/ and only removes the source. A record the dead daemon had already sent
but not yet removed is sent again, with the same ``jobcompd-id``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jobcompd import config as configmod
from jobcompd import spool as spoolmod
from jobcompd.spool.durable import FILE_MODE, fsync_dir, open_for_reading, write_new_file

#: Records moved between two fsyncs of new/ (and removals at the source).
BATCH = 500


@dataclass
class Tally:
    """What the command did, for its closing lines."""

    moved: int = 0
    already_here: int = 0
    skipped: list[str] = field(default_factory=list)


def _source_new(path: Path) -> Path:
    """PATH is a spool (with new/) or its new/ itself."""
    if (path / "new").is_dir():
        return path / "new"
    if path.name == "new" and path.is_dir():
        return path
    raise FileNotFoundError(f"{path} is neither a spool (no new/ in it) nor its new/")


def _read(path: Path) -> bytes:
    fd = open_for_reading(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise ValueError("not a regular file with one link")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _place(local: spoolmod.Spool, name: str, data: bytes, owner: tuple[int, int] | None
           ) -> bool:
    """Put ``data`` into local new/ as ``name`` (a free name of the same time and job if a
    different record holds it); False when new/ already holds this very record."""
    meta = spoolmod.parse_name(name)
    ns = meta.ns
    while True:
        target = local.new / name
        try:
            if target.read_bytes() == data:
                return False
            ns += 1
            name = spoolmod.make_name(ns, meta.job_id, meta.event, meta.fmt)
            continue
        except FileNotFoundError:
            pass
        tmp = local.tmp / f"{name}.drain-{os.getpid()}"
        write_new_file(tmp, data)
        try:
            if owner is not None:
                os.chown(tmp, *owner)
            os.chmod(tmp, FILE_MODE)
            # As the hook: never over a name in new/; a rename, not a link (the daemon
            # dead-letters a record with two links).
            if os.path.lexists(target):
                continue
            os.rename(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return True


def drain(source_new: Path, local: spoolmod.Spool, *, dry_run: bool = False) -> Tally:
    """Move every record of ``source_new`` into ``local``'s new/, oldest first."""
    tally = Tally()
    st = os.stat(local.new)
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
    names = sorted(os.listdir(source_new))
    for start in range(0, len(names), BATCH):
        done = []
        for name in names[start:start + BATCH]:
            try:
                spoolmod.parse_name(name)
                data = _read(source_new / name)
            except (spoolmod.RejectedFile, ValueError, OSError) as e:
                tally.skipped.append(f"{name}: {getattr(e, 'strerror', None) or e}")
                continue
            if dry_run:
                tally.moved += 1
                continue
            if _place(local, name, data, owner):
                tally.moved += 1
            else:
                tally.already_here += 1
            done.append(name)
        if done:
            fsync_dir(local.new)
            for name in done:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(source_new / name)
            fsync_dir(source_new)
    return tally


def cmd_drain_spool(args: argparse.Namespace) -> int:
    try:
        cfg = configmod.load(configmod.config_path(args.config))
    except configmod.ConfigError as e:
        print(f"jobcompd drain-spool: {e}", file=sys.stderr)
        return os.EX_CONFIG
    local = spoolmod.Spool(cfg.spool_dir, max_record_bytes=cfg.params.max_record_bytes,
                           allowed_uids=None)
    try:
        source = _source_new(Path(args.path))
        if os.path.samefile(source, local.new):
            print(f"jobcompd drain-spool: {source} is this host's own new/", file=sys.stderr)
            return os.EX_USAGE
        tally = drain(source, local, dry_run=args.dry_run)
    except OSError as e:
        text = f"{e.strerror}: {e.filename or args.path}" if e.strerror else str(e)
        print(f"jobcompd drain-spool: {text}", file=sys.stderr)
        return os.EX_NOINPUT
    _report(tally, source, local, args.dry_run)
    return os.EX_DATAERR if tally.skipped else os.EX_OK


def _report(tally: Tally, source: Path, local: spoolmod.Spool, dry_run: bool) -> None:
    verb = "would move" if dry_run else "moved"
    print(f"{verb} {tally.moved} records from {source} into {local.new}"
          + (f"; {tally.already_here} were there already (removed at the source)"
             if tally.already_here else ""))
    for line in tally.skipped:
        print(f"left in place: {line}")
    leftovers = [p for p in (source.parent / "failed", source.parent / "tmp") if p.is_dir()
                 and any(True for _ in os.scandir(p))]
    for folder in leftovers:
        what = ("dead letters: look at them with jobcompd failed list --spool-dir "
                f"{source.parent}" if folder.name == "failed" else
                "partial writes of hooks that were killed: never records")
        print(f"not moved: {folder} ({what})")
    if tally.moved and not dry_run:
        print("the running jobcompd sends them (journalctl -u jobcompd; jobcompd status)")
