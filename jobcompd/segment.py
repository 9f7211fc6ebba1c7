"""Segments: many records appended to one spool file (DESIGN.md, "Segments").

With one file per record, removing each delivered file is the dearest step of a record in the
kernel, and it caps a drain at a few thousand records per second whatever the daemon does
(bench/, ceilings (b) and (d)). A segment holds many records, one *frame* after another; the
daemon retires delivered frames by punching holes over them (a crash then re-sends only what was
not yet punched) and removes the whole segment once it is sealed and every frame in it is
delivered or dead-lettered.

Writers (the compiled hook, ``append``) append one frame per record to ``seg/current``, a hard
link to the segment being written, under an exclusive flock. A segment whose link count has
dropped to one is *sealed*: writers check the count under the lock and never append to it. The
daemon seals ``current`` when it is big or old enough, reads segments under a shared lock (so it
never sees half a frame), and takes each frame as it would take a file in ``new/``.

This module holds the frame format (pure), the writer and the hole punch. The daemon's reading
side is ``SegmentStore`` in ``segstore``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from jobcompd.spool import fsync_dir, unlink_quietly

MAGIC = b"JCR1 "
CURRENT = "current"
SUFFIX = ".seg"
#: A frame header is short; more than this without its newline is not a header.
MAX_HEADER = 128
#: Writers seal ``current`` themselves past this size (the daemon may be down for days).
WRITER_SEAL_BYTES = 64 << 20
#: Rounds of open-lock-check a writer tries before giving up (seals racing with it).
TRIES = 5
#: A frame claiming more than this is torn, not a record (no record is this big).
MAX_FRAME_PAYLOAD = 64 << 20
FILE_MODE = 0o600

_HEADER_RE = re.compile(
    rb"JCR1 ([0-9]{19}\.[1-9][0-9]{0,9}\.(?:end|start)\.(?:env|json)) ([1-9][0-9]{0,9}) "
    rb"([0-9a-f]{8})\n"
)
_SEGMENT_NAME_RE = re.compile(r"[0-9]{19}\.[0-9]{1,10}\.seg")


class SegmentError(Exception):
    """A segment could not be written; the message names the path and what to do."""


class Frame(NamedTuple):
    """One record read from a segment (a named tuple: thousands are made per second)."""

    segment: str  # file name in seg/
    offset: int  # where the frame starts
    size: int  # header and payload
    name: str  # the record's name, as a file in new/ would have it
    payload: bytes

    @property
    def key(self) -> str:
        """The record's identity in the daemon's window and state file, and in its logs."""
        return f"seg/{self.segment}@{self.offset}"


class Torn(NamedTuple):
    """Bytes of a segment that are no frame: a writer killed mid-write, or a power cut."""

    segment: str
    offset: int
    data: bytes


@dataclass(slots=True)
class Parsed:
    """What ``parse_frames`` found in a buffer: offsets are relative to its start."""

    frames: list[tuple[int, int, str, bytes]]  # (offset, size, name, payload)
    torn: list[tuple[int, bytes]]  # (offset, bytes)
    consumed: int  # bytes fully accounted for; the rest waits for more data
    need: int  # bytes the unfinished frame at `consumed` needs in all (0: unknown)


def is_segment_name(name: str) -> bool:
    return _SEGMENT_NAME_RE.fullmatch(name) is not None


def encode_frame(name: str, payload: bytes) -> bytes:
    """The bytes a writer appends for one record."""
    if not payload:
        raise ValueError(f"refusing an empty record {name}")
    header = b"JCR1 %s %d %08x\n" % (name.encode("ascii"), len(payload), zlib.crc32(payload))
    if _HEADER_RE.fullmatch(header) is None:
        raise ValueError(f"{name!r} is not a spool record name (<epoch-ns>.<jobid>.<event>.<fmt>)")
    return header + payload


def parse_frames(buf: bytes, *, at_eof: bool) -> Parsed:
    """Split ``buf`` (read from a segment at a frame boundary) into frames.

    NUL bytes between frames are retired frames (punched holes) and are skipped. Bytes that do
    not make a frame whose CRC checks are torn; parsing picks up at the next ``JCR1 `` that
    does, or at the next hole. A frame or a torn run cut off by the end of ``buf`` is left for
    the next read (``consumed`` stops before it), unless ``at_eof`` says that the buffer ends
    where the segment ends while no writer can be writing (the reader holds the lock).
    """
    out = Parsed([], [], 0, 0)
    end = len(buf)
    i = 0
    torn_at = -1  # start of a torn run not yet closed

    def close_torn(at: int) -> None:
        nonlocal torn_at
        if torn_at >= 0:
            out.torn.append((torn_at, buf[torn_at:at]))
            torn_at = -1

    while i < end:
        if torn_at < 0 and buf[i] == 0:
            while i < end and buf[i] == 0:
                i += 1
            continue
        if buf.startswith(MAGIC, i):
            m = _HEADER_RE.match(buf, i)
            if m is not None:
                length = int(m.group(2))
                stop = m.end() + length
                if stop > end and not at_eof and length <= MAX_FRAME_PAYLOAD:
                    close_torn(i)
                    out.need = stop - i
                    break  # the rest of this frame is not read yet
                payload = buf[m.end():stop]
                if stop <= end and zlib.crc32(payload) == int(m.group(3), 16):
                    close_torn(i)
                    out.frames.append((i, stop - i, m.group(1).decode("ascii"), payload))
                    i = stop
                    continue
            elif not at_eof and end - i < MAX_HEADER and buf.find(b"\n", i, end) < 0:
                close_torn(i)
                break  # a header cut off by the end of the buffer
        elif not at_eof and end - i < len(MAGIC) and MAGIC.startswith(buf[i:end]):
            close_torn(i)
            break  # the start of a header cut off by the end of the buffer
        # No frame starts here: torn bytes, up to the next header that may start one, or the
        # next hole (two NULs or more: an env record separates its variables with one).
        if torn_at < 0:
            torn_at = i
        nxt = buf.find(MAGIC, i + 1)
        hole = buf.find(b"\0\0", i + 1)
        if hole >= 0 and (nxt < 0 or hole < nxt):
            close_torn(hole)
            i = hole
        elif nxt >= 0:
            i = nxt
        elif at_eof:
            i = end
        else:
            break  # the torn run may go on past this buffer: read it whole next time
    if torn_at >= 0 and i >= end:
        close_torn(end)
    out.consumed = torn_at if torn_at >= 0 else i
    return out


# -- writing ------------------------------------------------------------------------------------


def append(seg_dir: Path, name: str, payload: bytes) -> str:
    """Append one record to ``seg_dir``'s current segment, durably; return the segment's name.

    The Python twin of the compiled hook's segment mode (jobcompd/hook/jobcompd-spool.c), for
    the daemon's own writers and for tests and benchmarks. Raises SegmentError.
    """
    frame = encode_frame(name, payload)
    current = seg_dir / CURRENT
    for _ in range(TRIES):
        try:
            fd = os.open(current, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
            segment = None
        except FileNotFoundError:
            created = _create(seg_dir)
            if created is None:
                continue
            fd, segment = created
        except OSError as e:
            raise SegmentError(f"cannot open {current}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            if st.st_nlink < 2:
                continue  # sealed meanwhile
            if st.st_size >= WRITER_SEAL_BYTES:
                unlink_quietly(current)
                continue
            try:
                written = os.write(fd, frame)
            except OSError as e:
                os.ftruncate(fd, st.st_size)
                raise SegmentError(f"cannot append to {current}: {e.strerror}") from e
            if written != len(frame):
                os.ftruncate(fd, st.st_size)
                raise SegmentError(f"cannot append to {current}: short write (disk full?)")
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.fdatasync(fd)
            return segment or _name_of(seg_dir, st)
        finally:
            os.close(fd)
    raise SegmentError(f"{current} kept being sealed or replaced while appending ({TRIES} tries)")


def _create(seg_dir: Path) -> tuple[int, str] | None:
    """Make a new segment and link it as ``current``; None if another writer was first."""
    segment = f"{time.time_ns():019d}.{os.getpid()}{SUFFIX}"
    path = seg_dir / segment
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                     | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return None
    except OSError as e:
        raise SegmentError(f"cannot create {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, FILE_MODE)
        fsync_dir(seg_dir)
        os.link(path, seg_dir / CURRENT)
    except FileExistsError:
        os.close(fd)
        unlink_quietly(path)
        return None
    except OSError as e:
        os.close(fd)
        unlink_quietly(path)
        raise SegmentError(f"cannot create {path}: {e.strerror}") from e
    return fd, segment


#: (device, inode) -> durable name of the segments this process has seen as current.
_known_names: dict[tuple[int, int], str] = {}


def _name_of(seg_dir: Path, st: os.stat_result) -> str:
    """The durable name of the segment with this inode (for the caller's information); the
    folder is read only for a segment this process has not named yet."""
    key = (st.st_dev, st.st_ino)
    name = _known_names.get(key)
    if name is not None:  # one stat, for an inode number used again by a later segment
        try:
            if os.stat(seg_dir / name).st_ino != st.st_ino:
                name = None
        except FileNotFoundError:
            name = None
    if name is None:
        with os.scandir(seg_dir) as it:
            name = next((e.name for e in it if e.name != CURRENT and e.inode() == st.st_ino),
                        CURRENT)
        if len(_known_names) > 64:
            _known_names.clear()
        _known_names[key] = name
    return name


def seal(fd: int, seg_dir: Path) -> bool:
    """Seal the segment open on ``fd`` if it is still ``current``; True if this call did."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        if os.fstat(fd).st_nlink < 2:
            return False
        unlink_quietly(seg_dir / CURRENT)
        return True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


# -- retiring -----------------------------------------------------------------------------------

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_fallocate.restype = ctypes.c_int


def punch(fd: int, offset: int, length: int) -> None:
    """Turn a delivered frame into a hole (zeros that take no disk space).

    Raises OSError; EOPNOTSUPP where the file system cannot punch holes (the frame is then
    only forgotten in memory, and a crash sends it again).
    """
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge adjacent (offset, length) ranges, so that a batch costs few punches."""
    merged: list[tuple[int, int]] = []
    for offset, length in sorted(ranges):
        if merged and merged[-1][0] + merged[-1][1] == offset:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((offset, length))
    return merged
