"""The daemon's side of the segments in ``SpoolDir/seg/``: what is read, what is left to retire.

A segment is read front to back under a shared flock (writers append under an exclusive one),
so a read never sees half a frame. Per segment the store keeps the offset read so far and how
many of the frames handed out are still unacknowledged. Delivered frames become holes (batched,
on the retirer's thread); a segment that is sealed, read to its end and has nothing outstanding
is removed whole, with one unlink for what were hundreds of records.

After a restart every segment is read again from its start: holes (delivered frames) are
skipped with SEEK_DATA, so only what was not yet acknowledged, or not yet punched when the
daemon died, is sent again (DESIGN.md, durability rule 3).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from jobcompd import segment
from jobcompd.segment import Frame, Torn
from jobcompd.spool import RejectedFile, open_for_reading

log = structlog.get_logger("jobcompd.segstore")

#: The daemon seals ``current`` once it holds this much ...
SEAL_BYTES = 1 << 20
#: ... or once it is this old and not empty, so that a quiet cluster's segment is removed too.
SEAL_AGE_S = 30.0
#: Bytes read from a segment per system call.
READ_CHUNK = 1 << 20


@dataclass(slots=True)
class SegmentWork:
    """What the retirer thread does to one segment: punch delivered frames, maybe remove it."""

    segment: str
    holes: list[tuple[int, int]]
    remove: bool = False


@dataclass(slots=True)
class _Segment:
    name: str
    fd: int
    seen_at: float  # monotonic, when the store first opened it
    offset: int = 0  # next byte to read
    size: int = 0  # at the last look
    sealed: bool = False
    outstanding: int = 0  # frames and torn runs handed out, not yet retired
    holes: list[tuple[int, int]] = field(default_factory=list)


class SegmentStore:
    """The segments of one ``seg/`` directory, as the daemon's main loop sees them."""

    def __init__(self, directory: Path, *, allowed_uids: frozenset[int] | None,
                 seal_bytes: int = SEAL_BYTES, seal_age_s: float = SEAL_AGE_S) -> None:
        self.directory = Path(directory)
        self.allowed_uids = allowed_uids
        self.seal_bytes = seal_bytes
        self.seal_age_s = seal_age_s
        self._segments: dict[str, _Segment] = {}
        #: handed to the retirer for removal; not to be opened again while they still exist.
        self._removing: set[str] = set()
        self._work: dict[str, SegmentWork] = {}
        #: something may have changed on disk since the last read.
        self.dirty = True
        #: seg/ may hold segments not opened yet, or have lost some: list it before reading.
        self.listing_stale = True

    # -- reading --------------------------------------------------------------------------

    def notice(self, names: Iterable[str], overflowed: bool) -> None:
        """What inotify told about seg/. A write to a segment already open (or through
        ``current``) only needs a read; another name, or lost events, a listing first: listing
        seg/ for every record a hook appends was a tenth of the main loop's samples at 1,000
        records/s (py-spy)."""
        self.dirty = True
        if overflowed or any(n != segment.CURRENT and n not in self._segments for n in names):
            self.listing_stale = True

    def refresh(self) -> list[RejectedFile]:
        """Open the segments that appeared, forget the ones that vanished.

        Returns the entries that must not be read (for the caller to dead-letter).
        """
        self.listing_stale = False  # a change during the listing sets it again
        rejected: list[RejectedFile] = []
        try:
            with os.scandir(self.directory) as it:
                names = {e.name for e in it if e.name != segment.CURRENT and e.name[0] != "."}
        except FileNotFoundError:
            names = set()
        self._removing &= names
        for name in sorted(names - self._segments.keys() - self._removing):
            try:
                self._open(name)
            except RejectedFile as e:
                rejected.append(e)
            except FileNotFoundError:
                continue
        for name in self._segments.keys() - names:
            seg = self._segments.pop(name)
            os.close(seg.fd)
            if seg.outstanding or seg.offset < seg.size:
                log.warning("segment_vanished", segment=name, unread_bytes=seg.size - seg.offset,
                            detail="removed by someone else before every record in it was sent")
        return rejected

    def _open(self, name: str) -> None:
        path = self.directory / name
        if not segment.is_segment_name(name):
            raise RejectedFile(name, "bad_name", f"{path} is not a segment name "
                                  "(<epoch-ns>.<pid>.seg); only writers of jobcompd put "
                                  "files in seg/")
        try:
            fd = open_for_reading(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RejectedFile(name, "symlink", f"{path} is a symbolic link") from None
            if e.errno == errno.ENOENT:
                raise
            raise RejectedFile(name, "unreadable", f"cannot open {path}: {e.strerror}") from e
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = ("not_regular", f"{path} is not a regular file")
        elif st.st_nlink > 2:
            problem = ("hardlink", f"{path} has {st.st_nlink} links; a segment has its own name "
                       "and at most the current link")
        elif self.allowed_uids is not None and st.st_uid not in self.allowed_uids:
            problem = ("owner", f"{path} is owned by uid {st.st_uid}, not by one of "
                       f"SpoolOwners ({', '.join(map(str, sorted(self.allowed_uids)))})")
        if problem is not None:
            os.close(fd)
            raise RejectedFile(name, *problem)
        # Sealed or not is only learnt under the lock (_read_segment).
        self._segments[name] = _Segment(name, fd, time.monotonic(), size=st.st_size)

    @property
    def more(self) -> bool:
        """Whether a read would find data (as far as the last look knows)."""
        return self.dirty or any(s.offset < s.size for s in self._segments.values())

    def read(self, budget: int) -> tuple[list[Frame], list[Torn]]:
        """Read up to about ``budget`` bytes of frames, oldest segment first."""
        frames: list[Frame] = []
        torn: list[Torn] = []
        self.dirty = False
        for name in sorted(self._segments):
            if budget <= 0:
                self.dirty = True
                break
            seg = self._segments[name]
            budget -= self._read_segment(seg, budget, frames, torn)
        return frames, torn

    def _read_segment(self, seg: _Segment, budget: int, frames: list[Frame],
                      torn: list[Torn]) -> int:
        """Read one segment's unread bytes under a shared lock; return how many were taken."""
        fd = seg.fd
        taken = 0
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            st = os.fstat(fd)
            seg.size = st.st_size
            # One link and some data, seen under the lock: sealed for good. (With no data it
            # may be a writer's new segment not yet linked as current.)
            seg.sealed = st.st_nlink < 2 and st.st_size > 0
            want = READ_CHUNK
            while seg.offset < seg.size and taken < budget:
                try:
                    pos = os.lseek(fd, seg.offset, os.SEEK_DATA)  # skip delivered frames
                except OSError as e:
                    if e.errno != errno.ENXIO:
                        raise
                    pos = seg.size
                if pos >= seg.size:
                    seg.offset = seg.size
                    break
                buf = os.pread(fd, min(seg.size - pos, want), pos)
                if not buf:
                    break
                at_eof = pos + len(buf) >= seg.size
                parsed = segment.parse_frames(buf, at_eof=at_eof)
                for off, size, rname, payload in parsed.frames:
                    frames.append(Frame(seg.name, pos + off, size, rname, payload))
                for off, data in parsed.torn:
                    torn.append(Torn(seg.name, pos + off, data))
                seg.outstanding += len(parsed.frames) + len(parsed.torn)
                if parsed.consumed == 0:
                    want = max(want * 2, parsed.need)  # one frame bigger than a chunk
                    continue
                want = READ_CHUNK
                seg.offset = pos + parsed.consumed
                taken += seg.offset - pos
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return taken

    def read_back(self, name: str, offset: int, size: int) -> bytes:
        """The bytes of a frame handed out earlier (to dead-letter it)."""
        seg = self._segments.get(name)
        if seg is None:
            raise FileNotFoundError(errno.ENOENT, "segment is gone", str(self.directory / name))
        return os.pread(seg.fd, size, offset)

    # -- sealing and retiring ---------------------------------------------------------------

    def seal_due(self, now: float) -> None:
        """Seal ``current`` once it is big or old enough; its rest is read at the next read."""
        for seg in self._segments.values():
            if seg.sealed or seg.size == 0:
                continue
            if seg.size >= self.seal_bytes or now - seg.seen_at >= self.seal_age_s:
                try:
                    segment.seal(seg.fd, self.directory)
                except OSError as e:
                    log.error("segment_seal_failed", segment=seg.name, error=str(e))
                    continue
                self.dirty = True  # the next read takes its last frames and sees it sealed

    def retire(self, name: str, offset: int, size: int) -> None:
        """A frame (or torn run) is delivered or dead-lettered: punch it, and maybe remove."""
        seg = self._segments.get(name)
        if seg is None:
            return
        seg.outstanding -= 1
        work = self._work.get(name)
        if work is None:
            work = self._work[name] = SegmentWork(name, [])
        work.holes.append((offset, size))

    def take_work(self) -> list[SegmentWork]:
        """What the retirer should do now: the holes since the last call, and the segments
        that are finished (sealed, read to the end, nothing outstanding)."""
        for name, seg in list(self._segments.items()):
            if seg.sealed and seg.outstanding == 0 and seg.offset >= seg.size:
                work = self._work.get(name)
                if work is None:
                    work = self._work[name] = SegmentWork(name, [])
                work.remove = True
                work.holes = []  # the whole file goes: no need to punch it
                os.close(seg.fd)
                del self._segments[name]
                self._removing.add(name)
        works = list(self._work.values())
        self._work = {}
        return works

    def unread_bytes(self) -> int:
        """Bytes of segments not read yet, as of the last look (holes included)."""
        return sum(s.size - s.offset for s in self._segments.values())

    def outstanding(self) -> int:
        return sum(s.outstanding for s in self._segments.values())

    def names(self) -> Iterable[str]:
        return self._segments.keys()

    def close(self) -> None:
        for seg in self._segments.values():
            os.close(seg.fd)
        self._segments = {}


class Puncher:
    """Carries out SegmentWork; runs on the retirer's thread (no state shared with the store)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._can_punch = True

    def apply(self, works: list[SegmentWork]) -> list[tuple[str, Exception]]:
        failed: list[tuple[str, Exception]] = []
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            return [(w.segment, e) for w in works]
        try:
            for work in works:
                try:
                    if work.remove:
                        os.unlink(work.segment, dir_fd=dir_fd)
                    elif work.holes and self._can_punch:
                        self._punch(work, dir_fd)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    failed.append((work.segment, e))
        finally:
            os.close(dir_fd)
        return failed

    def _punch(self, work: SegmentWork, dir_fd: int) -> None:
        fd = os.open(work.segment, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            for offset, length in segment.coalesce(work.holes):
                try:
                    segment.punch(fd, offset, length)
                except OSError as e:
                    if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
                        self._can_punch = False
                        log.warning("segment_punch_unsupported", path=str(self.directory),
                                    detail="delivered records stay in their segment until it "
                                    "is removed; after a crash they are sent again")
                        return
                    raise
        finally:
            os.close(fd)
