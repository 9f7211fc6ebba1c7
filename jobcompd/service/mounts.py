"""What file system holds the spool, and whether a lock taken there is seen by other hosts.

A standby on the other controller only waits for the spool lock if both hosts' kernels ask one
lock manager: the NFS v4 server, GPFS's token manager, Lustre's MDS (mounted ``flock``),
CephFS's MDS. Some mount options keep POSIX locks on the host that takes them, and then both
controllers' daemons would be active at once; those are refused with the remount that fixes
them. inotify only sees this host's writes, so on a network file system the daemon rescans.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

#: File systems that several hosts mount at once (the spool may be written elsewhere).
NETWORK_FS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "ceph", "fuse.ceph", "fuse.cephfs", "cifs", "smb3",
    "glusterfs", "fuse.glusterfs", "beegfs", "gfs2", "ocfs2", "9p", "afs", "fuse.sshfs",
})
#: How many files of new/ the id-mapping check looks at.
IDMAP_SAMPLE = 50


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of /proc/self/mountinfo: where, what type, and every option (per mount and
    per super block, as ``key`` or ``key=value``)."""

    point: str
    fstype: str
    source: str
    options: tuple[str, ...]

    def option(self, key: str) -> str | None:
        """The value of ``key=value`` ("" for a bare ``key``), None when absent."""
        for opt in self.options:
            name, sep, value = opt.partition("=")
            if name == key:
                return value if sep else ""
        return None

    @property
    def network(self) -> bool:
        return self.fstype in NETWORK_FS or self.fstype.split(".")[0] in NETWORK_FS


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        options = tuple(fields[5].split(",")) + tuple(
            tail[2].split(",") if len(tail) > 2 else ())
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), options))
    return mounts


def mount_of(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> Mount | None:
    """The mount that holds ``path`` (the last one mounted on the longest matching point)."""
    try:
        mounts = parse_mountinfo(mountinfo.read_text())
    except OSError:
        return None
    real = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts:
        point = m.point.rstrip("/") or "/"
        inside = real == point or real.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = m
    return best


def local_lock_problem(m: Mount) -> str | None:
    """Why a POSIX lock on this mount would not be seen by another host; None when it is, or
    when the mount is not shared at all."""
    where = f"{m.point} ({m.fstype} from {m.source})"
    if m.fstype in ("nfs", "nfs4"):
        if m.option("nolock") is not None:
            return (f"{where} is mounted with nolock: POSIX locks stay on this host; remount "
                    "without nolock (NFS v4: local_lock=none)")
        local = m.option("local_lock")
        if local in ("posix", "all"):
            return (f"{where} is mounted with local_lock={local}: POSIX locks stay on this "
                    "host; remount with local_lock=none (or local_lock=flock)")
    if m.fstype == "lustre":
        if m.option("localflock") is not None:
            return (f"{where} is mounted with localflock: locks stay on this client; remount "
                    "with -o flock")
        if m.option("noflock") is not None:
            return f"{where} is mounted with noflock: no locks at all; remount with -o flock"
    if m.fstype in ("cifs", "smb3") and m.option("nobrl") is not None:
        return f"{where} is mounted with nobrl: byte-range locks stay on this host; remount " \
               "without nobrl"
    return None


def nobody_uids() -> frozenset[int]:
    """The uids an NFS v4 client shows for an owner it cannot map (nobody, 65534)."""
    uids = {65534}
    for name in ("nobody", "nfsnobody"):
        with contextlib.suppress(KeyError):
            uids.add(pwd.getpwnam(name).pw_uid)
    return frozenset(uids)


def idmap_problem(spool_dir: Path, new_dir: Path) -> str | None:
    """The spool, or a record in new/, owned by nobody: NFS v4 could not map its owner to a
    local user (the idmapd Domain differs between client and server, or the user is unknown
    on one side), so the owner check would refuse every record."""
    nobody = nobody_uids()
    paths = [spool_dir, new_dir]
    try:
        with os.scandir(new_dir) as it:
            for i, entry in enumerate(it):
                if i >= IDMAP_SAMPLE:
                    break
                paths.append(Path(entry.path))
    except OSError:
        pass
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if st.st_uid in nobody:
            return (f"{path} is owned by uid {st.st_uid} (nobody): the NFS v4 id mapping "
                    "does not know its owner, and jobcompd refuses records of owners not in "
                    "SpoolOwners; set the same Domain= in /etc/idmapd.conf on the server and "
                    "both controllers (nfsidmap -c to clear the cache), or use the same "
                    "numeric uids and sec=sys with nfs4_disable_idmapping")
    return None
