"""Segments without a daemon: the frame format (parse_frames, encode_frame), the Python writer
(append, seal), the hole punch, and the daemon's reading side (SegmentStore, Puncher).

The parser is checked against images built from known pieces (valid frames, holes of NUL
bytes, torn pieces), both in one go and in chunks the way SegmentStore reads a segment.
"""

from __future__ import annotations

import errno
import fcntl
import multiprocessing
import os
import re
import stat
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jobcompd import segment
from jobcompd.segment import MAGIC, Frame, SegmentError, Torn
from jobcompd.segstore import Puncher, SegmentStore, SegmentWork

NS = 1795618456000000000
OWNERS = frozenset({os.getuid()})

property_settings = settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large])


# -- building segment images from known pieces -------------------------------------------------

#: The spec's header, written out independently of the module: used only to make sure that a
#: generated image holds no frame by accident (a torn prefix completed by the bytes after it).
_ORACLE_HEADER = re.compile(
    rb"JCR1 ([0-9]{19}\.[1-9][0-9]*\.(?:end|start)\.(?:env|json)) ([1-9][0-9]*) ([0-9a-f]{8})\n")


def frame_checks_at(data: bytes, at: int) -> bool:
    m = _ORACLE_HEADER.match(data, at)
    if m is None or m.end() - at > segment.MAX_HEADER:
        return False
    payload = data[m.end():m.end() + int(m.group(2))]
    return len(payload) == int(m.group(2)) and zlib.crc32(payload) == int(m.group(3), 16)


@dataclass
class Image:
    """A segment's bytes and what each byte of it is."""

    data: bytes
    frames: list[tuple[int, int, str, bytes]]  # what parse_frames must return
    torn: list[tuple[int, bytes]]  # the torn pieces put in
    frame_bytes: set[int]
    hole_bytes: set[int]

    @property
    def torn_bytes_not_nul(self) -> set[int]:
        return {off + k for off, data in self.torn for k, b in enumerate(data) if b != 0}


def build(pieces: list[tuple]) -> Image:
    """pieces: ("frame", name, payload) | ("hole", length) | ("torn", bytes)."""
    data = bytearray()
    img = Image(b"", [], [], set(), set())
    for piece in pieces:
        at = len(data)
        if piece[0] == "frame":
            raw = segment.encode_frame(piece[1], piece[2])
            img.frames.append((at, len(raw), piece[1], piece[2]))
            img.frame_bytes.update(range(at, at + len(raw)))
        elif piece[0] == "hole":
            raw = b"\0" * piece[1]
            img.hole_bytes.update(range(at, at + len(raw)))
        else:
            raw = piece[1]
            img.torn.append((at, raw))
        data += raw
    img.data = bytes(data)
    return img


def no_accidental_frame(img: Image) -> bool:
    """No frame outside the frame pieces (a torn prefix whose missing bytes happen to follow)."""
    starts = {off for off, *_ in img.frames}
    at = img.data.find(MAGIC)
    while at >= 0:
        if at not in starts and at not in img.frame_bytes and frame_checks_at(img.data, at):
            return False
        at = img.data.find(MAGIC, at + 1)
    return True


record_names = st.builds(
    lambda ns, job, event, fmt: f"{ns:019d}.{job}.{event}.{fmt}",
    st.integers(0, 10**19 - 1), st.integers(1, 10**10 - 1),
    st.sampled_from(["end", "start"]), st.sampled_from(["env", "json"]))
payloads = st.one_of(
    st.binary(min_size=1, max_size=300),
    # the shape of a hook's env dump: NUL-terminated entries
    st.lists(st.binary(min_size=1, max_size=20).filter(lambda b: b"\0" not in b),
             min_size=1, max_size=10).map(lambda items: b"".join(i + b"\0" for i in items)),
)
frame_pieces = st.tuples(st.just("frame"), record_names, payloads)
# A hole is a punched frame (47 bytes at least) or a punched torn run; one NUL after a torn
# run is taken for part of it (an env record separates its variables with one NUL), so a hole
# beside a torn run is at least two bytes long (two torn runs next to each other are one).
hole_pieces = st.tuples(st.just("hole"), st.integers(2, 700))
garbage = st.tuples(
    st.binary(min_size=1, max_size=120),
    st.sampled_from([b"", b"J", b"JC", b"JCR", b"JCR1"]),  # ends like the start of a header
).map(lambda t: t[0] + t[1]).filter(lambda b: MAGIC not in b and b.strip(b"\0") != b"")
frame_prefixes = st.builds(
    lambda name, payload, cut: (lambda raw: raw[:1 + cut % (len(raw) - 1)])(
        segment.encode_frame(name, payload)),
    record_names, payloads, st.integers(0, 10**6))
torn_pieces = st.tuples(st.just("torn"), st.one_of(garbage, frame_prefixes))
segment_pieces = st.lists(st.one_of(frame_pieces, hole_pieces, torn_pieces), max_size=12)

#: A torn piece followed by a hole: the hole is not part of the torn run.
NAME = f"{NS}.7.end.env"
TORN_THEN_HOLE = [("torn", b"garbage"), ("hole", 8), ("frame", NAME, b"A=1\0B=2\0")]


def parse_in_chunks(data: bytes, chunk: int) -> tuple[list, list[tuple[int, bytes]]]:
    """Parse the way SegmentStore reads: a chunk at a time, growing it when nothing fits."""
    frames: list[tuple[int, int, str, bytes]] = []
    torn: list[tuple[int, bytes]] = []
    pos, want, rounds = 0, chunk, 0
    while pos < len(data):
        rounds += 1
        assert rounds <= 64 * (len(data) + 1), f"no progress at {pos} after {rounds} reads"
        buf = data[pos:pos + want]
        at_eof = pos + len(buf) >= len(data)
        parsed = segment.parse_frames(buf, at_eof=at_eof)
        assert 0 <= parsed.consumed <= len(buf)
        if parsed.consumed == 0:
            assert not at_eof, f"nothing consumed of the last {len(buf)} bytes"
            assert parsed.frames == [] and parsed.torn == [], "reported without consuming"
            want = max(want * 2, parsed.need)
            continue
        frames += [(pos + off, size, name, payload) for off, size, name, payload in parsed.frames]
        torn += [(pos + off, data) for off, data in parsed.torn]
        pos += parsed.consumed
        want = chunk
    return frames, torn


def torn_cover(img: Image, torn: list[tuple[int, bytes]]) -> set[int]:
    """The byte offsets the torn runs cover, after checking that each run is the image's bytes."""
    covered: set[int] = set()
    last_end = 0
    for off, data in torn:
        assert data, f"empty torn run at {off}"
        assert off >= last_end, f"torn run at {off} overlaps or precedes the one before"
        assert img.data[off:off + len(data)] == data, f"torn run at {off} is not the image's bytes"
        assert data[0] != 0, f"torn run at {off} starts in a hole"
        covered.update(range(off, off + len(data)))
        last_end = off + len(data)
    overlap = covered & img.frame_bytes
    assert not overlap, f"torn runs cover frame bytes from {min(overlap, default=0)}"
    missing = img.torn_bytes_not_nul - covered
    assert not missing, f"torn bytes not reported, from offset {min(missing, default=0)}"
    return covered


def not_nul(data: bytes, covered: set[int]) -> set[int]:
    return {p for p in covered if data[p] != 0}


# -- parse_frames -----------------------------------------------------------------------------


@property_settings
@given(segment_pieces)
def test_parse_whole_image_finds_every_frame_and_every_torn_byte(pieces: list[tuple]):
    img = build(pieces)
    assume(no_accidental_frame(img))
    parsed = segment.parse_frames(img.data, at_eof=True)
    assert parsed.frames == img.frames
    assert parsed.consumed == len(img.data)
    torn_cover(img, parsed.torn)


@property_settings
@given(segment_pieces)
@example(TORN_THEN_HOLE)
def test_parse_whole_image_never_reports_a_hole_as_torn(pieces: list[tuple]):
    img = build(pieces)
    assume(no_accidental_frame(img))
    parsed = segment.parse_frames(img.data, at_eof=True)
    covered = torn_cover(img, parsed.torn)
    holes = sorted(covered & img.hole_bytes)
    assert not holes, f"hole bytes {holes[0]}..{holes[-1]} reported as torn: {parsed.torn}"


@property_settings
@given(segment_pieces, st.integers(1, 300))
def test_parse_in_chunks_finds_what_one_parse_finds(pieces: list[tuple], chunk: int):
    img = build(pieces)
    assume(no_accidental_frame(img))
    whole = segment.parse_frames(img.data, at_eof=True)
    frames, torn = parse_in_chunks(img.data, chunk)
    assert frames == img.frames
    covered = torn_cover(img, torn)
    assert not_nul(img.data, covered) == not_nul(img.data, torn_cover(img, whole.torn))


@property_settings
@given(segment_pieces, st.integers(1, 300))
@example(TORN_THEN_HOLE, 10)
def test_parse_in_chunks_gives_the_same_torn_bytes(pieces: list[tuple], chunk: int):
    img = build(pieces)
    assume(no_accidental_frame(img))
    whole = segment.parse_frames(img.data, at_eof=True)
    _, torn = parse_in_chunks(img.data, chunk)
    assert b"".join(d for _, d in torn) == b"".join(d for _, d in whole.torn)


@property_settings
@given(st.lists(st.tuples(record_names, payloads), min_size=1, max_size=5), st.data())
def test_a_frame_with_a_wrong_crc_or_length_is_never_a_frame(records, data):
    raws = [segment.encode_frame(name, payload) for name, payload in records]
    victim = data.draw(st.integers(0, len(raws) - 1), label="victim")
    name, payload = records[victim]
    crc = zlib.crc32(payload)
    how = data.draw(st.sampled_from(["crc", "length", "payload"]), label="how")
    if how == "crc":
        bad_crc = data.draw(st.integers(0, 2**32 - 1).filter(lambda c: c != crc), label="crc")
        raw = b"JCR1 %s %d %08x\n" % (name.encode(), len(payload), bad_crc) + payload
    elif how == "length":
        bad_len = data.draw(st.integers(1, len(payload) + 60).filter(lambda n: n != len(payload)),
                            label="length")
        raw = b"JCR1 %s %d %08x\n" % (name.encode(), bad_len, crc) + payload
    else:
        k = data.draw(st.integers(0, len(payload) - 1), label="byte")
        flip = data.draw(st.integers(1, 255), label="xor")
        raw = raws[victim][:-len(payload)] + payload[:k] + bytes([payload[k] ^ flip]) \
            + payload[k + 1:]
    raws[victim] = raw
    image = b"".join(raws)
    victim_at = sum(len(r) for r in raws[:victim])
    others = [(sum(len(r) for r in raws[:i]), len(raws[i]), *records[i])
              for i in range(len(raws)) if i != victim]
    for frames in (segment.parse_frames(image, at_eof=True).frames,
                   parse_in_chunks(image, data.draw(st.integers(1, 200), label="chunk"))[0]):
        assert victim_at not in [off for off, *_ in frames]
        assert frames == others


def test_a_frame_cut_off_by_the_end_of_the_buffer_waits_for_more():
    raw = segment.encode_frame(NAME, b"X" * 100)
    for cut in (1, 3, 5, 20, len(raw) - 1):
        parsed = segment.parse_frames(raw[:cut], at_eof=False)
        assert (parsed.frames, parsed.torn, parsed.consumed) == ([], [], 0), cut
    parsed = segment.parse_frames(raw[:60], at_eof=False)
    assert parsed.need == len(raw)
    assert segment.parse_frames(raw[:60], at_eof=True).torn == [(0, raw[:60])]


def test_a_torn_header_claiming_a_huge_payload_is_not_waited_for():
    torn = b"JCR1 %s %d 00000000\n" % (NAME.encode(), segment.MAX_FRAME_PAYLOAD + 1)
    good = segment.encode_frame(f"{NS}.8.end.env", b"JOBID=8\0")
    parsed = segment.parse_frames(torn + good[:-1], at_eof=False)
    assert parsed.torn == [(0, torn)] and parsed.consumed == len(torn)


# -- encode_frame -----------------------------------------------------------------------------


def test_encode_frame_writes_the_spec_header():
    assert segment.encode_frame(NAME, b"abc") == (
        b"JCR1 %s 3 %08x\nabc" % (NAME.encode(), zlib.crc32(b"abc")))


@pytest.mark.parametrize("bad", [
    "",
    "x",
    f"{NS}.0.end.env",  # job id 0
    f"{NS}.01.end.env",  # leading zero
    f"{NS}.12345678901.end.env",  # 11 digits
    f"{NS // 10}.1.end.env",  # 18 digits
    f"{NS}0.1.end.env",  # 20 digits
    f"{NS}.1.begin.env",
    f"{NS}.1.end.txt",
    f"{NS}.1.end.env ",
    f"{NS}.1.end.env\n",
    f"{NS}.1.end.env 5 00000000\nJCR1 {NS}.2.end.env",
    f"{NS}.1.énd.env",
    f"../{NS}.1.end.env",
])
def test_encode_frame_rejects_a_name_that_is_no_record_name(bad: str):
    with pytest.raises(ValueError):
        segment.encode_frame(bad, b"JOBID=1\0")


def test_encode_frame_rejects_an_empty_payload():
    with pytest.raises(ValueError, match="empty"):
        segment.encode_frame(NAME, b"")


# -- the Python writer ------------------------------------------------------------------------


def rec(job: int) -> tuple[str, bytes]:
    """A record name and an env-dump payload of a few hundred bytes."""
    payload = b"".join(b"%s=%d\0" % (key, job) for key in (b"JOBID", b"UID", b"GID")) \
        + b"X=" + b"y" * (100 + job % 7 * 40) + b"\0"
    return f"{NS + job:019d}.{job}.end.env", payload


@pytest.fixture
def seg(tmp_path: Path) -> Path:
    path = tmp_path / "seg"
    path.mkdir(mode=0o750)
    return path


def put(seg_dir: Path, jobs) -> list[tuple[str, str, bytes]]:
    """Append records; returns (segment, name, payload) each."""
    out = []
    for job in jobs:
        name, payload = rec(job)
        out.append((segment.append(seg_dir, name, payload), name, payload))
    return out


def seal_current(seg_dir: Path) -> bool:
    fd = os.open(seg_dir / segment.CURRENT, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return segment.seal(fd, seg_dir)
    finally:
        os.close(fd)


def frames_in(path: Path) -> list[tuple[int, int, str, bytes]]:
    parsed = segment.parse_frames(path.read_bytes(), at_eof=True)
    assert parsed.torn == [], f"torn bytes in {path.name}: {parsed.torn[:3]}"
    return parsed.frames


def segment_files(seg_dir: Path) -> list[str]:
    return sorted(n for n in os.listdir(seg_dir) if n != segment.CURRENT)


def test_append_writes_frames_to_current_a_hard_link_to_the_segment(seg: Path):
    written = put(seg, [1, 2, 3])
    name = written[0][0]
    assert [s for s, _, _ in written] == [name] * 3
    assert segment.is_segment_name(name) and segment_files(seg) == [name]
    st_seg, st_cur = os.stat(seg / name), os.lstat(seg / segment.CURRENT)
    assert st_seg.st_ino == st_cur.st_ino and st_seg.st_nlink == 2
    assert stat.S_IMODE(st_seg.st_mode) == 0o600
    assert [(n, p) for _, _, n, p in frames_in(seg / name)] == [(n, p) for _, n, p in written]


def test_after_a_seal_the_next_append_starts_a_new_segment(seg: Path):
    [(first, _, _)] = put(seg, [1])
    assert seal_current(seg) is True
    assert not os.path.lexists(seg / segment.CURRENT)
    assert os.stat(seg / first).st_nlink == 1
    [(second, name, payload)] = put(seg, [2])
    assert second != first and segment_files(seg) == [first, second]
    assert os.stat(seg / segment.CURRENT).st_ino == os.stat(seg / second).st_ino
    assert [n for _, _, n, _ in frames_in(seg / first)] == [rec(1)[0]]
    assert [(n, p) for _, _, n, p in frames_in(seg / second)] == [(name, payload)]
    # Sealing a segment that is not current any more does nothing.
    fd = os.open(seg / first, os.O_RDONLY)
    try:
        assert segment.seal(fd, seg) is False
    finally:
        os.close(fd)
    assert os.path.exists(seg / segment.CURRENT)


def test_the_writer_seals_a_segment_that_reached_the_size_limit(seg: Path):
    [(first, _, _)] = put(seg, [1])
    os.truncate(seg / first, segment.WRITER_SEAL_BYTES)  # sparse: no disk used
    [(second, name, _)] = put(seg, [2])
    assert second != first
    assert os.stat(seg / first).st_nlink == 1
    assert os.stat(seg / first).st_size == segment.WRITER_SEAL_BYTES
    assert [n for _, _, n, _ in frames_in(seg / second)] == [name]


def test_append_refuses_a_current_that_is_a_symlink(seg: Path, tmp_path: Path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    os.symlink(target, seg / segment.CURRENT)
    with pytest.raises(SegmentError, match="current"):
        segment.append(seg, *rec(1))
    assert target.read_bytes() == b""


#: The test's sealer seals ``current`` past this size: a few frames, so seals race with appends.
SEALER_BYTES = 3000


def _append_many(seg_dir: str, worker: int, count: int) -> None:
    for k in range(count):
        segment.append(Path(seg_dir), *rec(worker * 1000 + k + 1))


def test_concurrent_writers_and_a_sealer_lose_and_repeat_nothing(seg: Path):
    workers, count = 4, 200
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(seg), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    stop = threading.Event()
    sealed_at: dict[int, int] = {}  # inode: size when sealed

    def sealer() -> None:
        while not stop.is_set():
            try:
                fd = os.open(seg / segment.CURRENT, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                os.sched_yield()
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held through seal(): the size is the last one
                st = os.fstat(fd)
                if st.st_size >= SEALER_BYTES and segment.seal(fd, seg):
                    sealed_at[st.st_ino] = st.st_size
            finally:
                os.close(fd)

    thread = threading.Thread(target=sealer, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        stop.set()
        thread.join(10)
        for p in procs:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * workers
    names = Counter()
    for fname in segment_files(seg):
        for _, _, name, payload in frames_in(seg / fname):
            names[name] += 1
            assert payload == rec(int(name.split(".")[1]))[1]
    expected = {rec(w * 1000 + k + 1)[0] for w in range(workers) for k in range(count)}
    assert set(names) == expected
    assert [n for n, c in names.items() if c != 1] == []
    assert len(sealed_at) >= 5, "the sealer hardly ever sealed: no race was tried"
    stats = {f: os.stat(seg / f) for f in segment_files(seg)}
    links = [st.st_nlink for st in stats.values()]
    assert links.count(2) <= 1 and set(links) <= {1, 2}
    grown = [f for f, st in stats.items()
             if st.st_ino in sealed_at and st.st_size != sealed_at[st.st_ino]]
    assert grown == [], "appended to after it was sealed"


# -- coalesce and punch -----------------------------------------------------------------------


@pytest.mark.parametrize("ranges, merged", [
    ([], []),
    ([(0, 10)], [(0, 10)]),
    ([(10, 5), (0, 10), (15, 1)], [(0, 16)]),
    ([(0, 10), (11, 5)], [(0, 10), (11, 5)]),  # a gap: two punches
    ([(0, 10), (5, 10)], [(0, 10), (5, 10)]),  # overlapping is not adjacent
    ([(30, 5), (0, 10), (10, 10), (40, 2), (35, 5)], [(0, 20), (30, 12)]),
])
def test_coalesce_merges_adjacent_ranges_only(ranges, merged):
    assert segment.coalesce(ranges) == merged


def punch_or_skip(fd: int, offset: int, length: int) -> None:
    try:
        segment.punch(fd, offset, length)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
            pytest.skip(f"no hole punching here: {e}")
        raise


@pytest.fixture
def can_punch(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * 8192)
    fd = os.open(probe, os.O_WRONLY)
    try:
        punch_or_skip(fd, 0, 4096)
    finally:
        os.close(fd)


def test_punch_zeroes_a_range_and_leaves_its_neighbours(tmp_path: Path):
    path = tmp_path / "f"
    data = b"a" * 5000 + b"b" * 7000 + b"c" * 3001
    path.write_bytes(data)
    fd = os.open(path, os.O_WRONLY)
    try:
        punch_or_skip(fd, 5000, 7000)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"a" * 5000 + b"\0" * 7000 + b"c" * 3001


def test_punch_reports_a_bad_descriptor():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as info:
        segment.punch(w, 0, 10)
    assert info.value.errno == errno.EBADF


# -- SegmentStore -----------------------------------------------------------------------------


@pytest.fixture
def stores():
    opened: list[SegmentStore] = []

    def make(seg_dir: Path, **kwargs) -> SegmentStore:
        kwargs.setdefault("allowed_uids", OWNERS)
        store = SegmentStore(seg_dir, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def expected_frames(written: list[tuple[str, str, bytes]]) -> list[Frame]:
    """The frames the records appended in order must come back as."""
    offsets: dict[str, int] = {}
    out = []
    for seg_name, name, payload in written:
        size = len(segment.encode_frame(name, payload))
        off = offsets.get(seg_name, 0)
        out.append(Frame(seg_name, off, size, name, payload))
        offsets[seg_name] = off + size
    return out


def test_store_reads_frames_in_segment_order_once_each(seg: Path, stores):
    first = put(seg, [1, 2, 3])
    assert seal_current(seg)
    second = put(seg, [4, 5])
    assert first[0][0] < second[0][0]
    store = stores(seg)
    assert store.refresh() == []
    frames, torn = store.read(1 << 30)
    want = expected_frames(first + second)
    assert (frames, torn) == (want, [])
    assert [f.key for f in frames[:2]] == [f"seg/{first[0][0]}@0",
                                           f"seg/{first[0][0]}@{want[0].size}"]
    assert store.read(1 << 30) == ([], []) and not store.more
    assert store.read_back(want[1].segment, want[1].offset, want[1].size) == \
        segment.encode_frame(want[1].name, want[1].payload)
    third = put(seg, [6, 7])
    assert store.refresh() == []
    assert store.read(1 << 30) == (expected_frames(second + third)[2:], [])
    assert store.outstanding() == 7


def test_store_lists_seg_again_only_when_inotify_names_a_segment_it_does_not_know(
        seg: Path, stores):
    """A hook's append to a known segment (through ``current``) is read without listing seg/;
    a new segment's name, or an inotify overflow, makes the next read list it first."""
    first = put(seg, [1, 2])
    store = stores(seg)
    store.refresh()
    assert store.read(1 << 30)[0] == expected_frames(first)
    more = put(seg, [3])
    store.notice([segment.CURRENT, first[0][0]], overflowed=False)
    assert store.dirty and not store.listing_stale
    assert store.read(1 << 30)[0] == expected_frames(first + more)[2:]
    assert seal_current(seg)
    new = put(seg, [4])
    store.notice([new[0][0], segment.CURRENT], overflowed=False)
    assert store.listing_stale
    store.refresh()
    assert not store.listing_stale
    assert store.read(1 << 30)[0] == expected_frames(new)
    store.notice([], overflowed=True)
    assert store.listing_stale


def test_store_reads_everything_once_with_a_small_budget(seg: Path, stores):
    written = []
    for batch in ([1, 2], [3], [4, 5, 6]):
        written += put(seg, batch)
        assert seal_current(seg)
    store = stores(seg)
    store.refresh()
    got: list[Frame] = []
    for _ in range(20):
        if not store.more:
            break
        frames, torn = store.read(1)
        assert torn == []
        got += frames
    assert got == expected_frames(written)


def test_store_reads_a_frame_bigger_than_its_read_chunk(seg: Path, stores):
    payload = bytes(range(256)) * (6 << 10)  # 1.5 MiB
    name = f"{NS}.9.end.json"
    seg_name = segment.append(seg, name, payload)
    store = stores(seg)
    store.refresh()
    assert store.read(1 << 30) == (expected_frames([(seg_name, name, payload)]), [])


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")
def test_store_rejects_what_no_writer_of_jobcompd_puts_in_seg(seg: Path, tmp_path: Path, stores):
    [(good, _, _)] = put(seg, [1])
    (seg / "junk.txt").write_bytes(b"x")
    (seg / ".hidden").write_bytes(b"x")  # dot files are ignored, not rejected
    target = tmp_path / "target.seg"
    target.write_bytes(segment.encode_frame(*rec(2)))
    os.symlink(target, seg / f"{NS + 1}.1.seg")
    owned = seg / f"{NS + 2}.1.seg"
    owned.write_bytes(segment.encode_frame(*rec(3)))
    os.chown(owned, 4242, 4242)
    linked = seg / f"{NS + 3}.1.seg"
    linked.write_bytes(segment.encode_frame(*rec(4)))
    os.link(linked, tmp_path / "link1")
    os.link(linked, tmp_path / "link2")
    os.mkdir(seg / f"{NS + 4}.1.seg")
    store = stores(seg)
    rejected = {r.name: r.reason for r in store.refresh()}
    assert rejected == {
        "junk.txt": "bad_name",
        f"{NS + 1}.1.seg": "symlink",
        f"{NS + 2}.1.seg": "owner",
        f"{NS + 3}.1.seg": "hardlink",
        f"{NS + 4}.1.seg": "not_regular",
    }
    assert list(store.names()) == [good]
    frames, _ = store.read(1 << 30)
    assert [f.segment for f in frames] == [good]


def test_store_seals_a_big_current_reads_its_rest_then_removes_it(seg: Path, stores):
    written = put(seg, range(1, 11))
    name = written[0][0]
    store = stores(seg, seal_bytes=1024)
    store.refresh()
    frames, _ = store.read(1 << 30)
    assert len(frames) == 10
    last = put(seg, [11])  # appended after the read, before the seal
    assert last[0][0] == name
    store.seal_due(time.monotonic())
    assert not os.path.lexists(seg / segment.CURRENT)
    assert os.stat(seg / name).st_nlink == 1
    for f in frames:
        store.retire(f.segment, f.offset, f.size)
    works = store.take_work()
    assert [w.remove for w in works] == [False], "removed with a frame not read yet"
    assert sorted(works[0].holes) == [(f.offset, f.size) for f in frames]
    frames, torn = store.read(1 << 30)
    assert (frames, torn) == (expected_frames(written + last)[10:], [])
    store.retire(name, frames[0].offset, frames[0].size)
    works = store.take_work()
    assert works == [SegmentWork(name, [], remove=True)]
    assert Puncher(seg).apply(works) == []
    assert not os.path.exists(seg / name)
    assert store.refresh() == [] and list(store.names()) == []
    assert store.read(1 << 30) == ([], [])


def test_store_does_not_seal_a_small_young_current(seg: Path, stores):
    put(seg, [1])
    store = stores(seg)
    store.refresh()
    store.read(1 << 30)
    store.seal_due(time.monotonic())
    assert os.path.exists(seg / segment.CURRENT)


def test_store_seals_an_old_current(seg: Path, stores):
    put(seg, [1])
    store = stores(seg, seal_age_s=5.0)
    store.refresh()
    store.read(1 << 30)
    store.seal_due(time.monotonic() + 6.0)
    assert not os.path.lexists(seg / segment.CURRENT)


def test_store_never_removes_a_segment_still_current(seg: Path, stores):
    written = put(seg, range(1, 5))
    store = stores(seg)
    store.refresh()
    frames, _ = store.read(1 << 30)
    for f in frames:
        store.retire(f.segment, f.offset, f.size)
    works = store.take_work()
    assert [(w.segment, w.remove) for w in works] == [(written[0][0], False)]
    assert sorted(works[0].holes) == [(f.offset, f.size) for f in frames]
    assert Puncher(seg).apply(works) == []
    assert os.path.exists(seg / written[0][0]) and os.path.exists(seg / segment.CURRENT)
    assert store.take_work() == []


def test_puncher_zeroes_retired_frames_and_a_restart_reads_only_the_rest(
        seg: Path, stores, can_punch):
    written = put(seg, range(1, 7))
    name = written[0][0]
    store = stores(seg)
    store.refresh()
    frames, _ = store.read(1 << 30)
    assert frames == expected_frames(written)
    retired = [frames[i] for i in (0, 1, 2, 4)]
    for f in retired:
        store.retire(f.segment, f.offset, f.size)
    assert Puncher(seg).apply(store.take_work()) == []
    data = (seg / name).read_bytes()
    for f in frames:
        chunk = data[f.offset:f.offset + f.size]
        if f in retired:
            assert chunk == b"\0" * f.size, f.key
        else:
            assert chunk == segment.encode_frame(f.name, f.payload), f.key
    store.close()
    restarted = stores(seg)
    assert restarted.refresh() == []
    assert restarted.read(1 << 30) == ([frames[3], frames[5]], [])


def test_an_empty_segment_with_one_link_is_never_removed(seg: Path, stores):
    # A writer's new segment, created but not linked as current yet.
    name = f"{NS}.77.seg"
    fd = os.open(seg / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    store = stores(seg, seal_age_s=0.0)
    assert store.refresh() == []
    assert store.read(1 << 30) == ([], [])
    store.seal_due(time.monotonic() + 3600)
    assert store.take_work() == []
    assert os.path.exists(seg / name)


def test_store_reports_torn_bytes_and_reads_on(seg: Path, stores):
    prefix = segment.encode_frame(*rec(1))[:70]
    name, payload = rec(2)
    good = segment.encode_frame(name, payload)
    seg_name = f"{NS}.5.seg"
    (seg / seg_name).write_bytes(prefix + good)
    os.chmod(seg / seg_name, 0o600)
    store = stores(seg)
    store.refresh()
    frames, torn = store.read(1 << 30)
    assert torn == [Torn(seg_name, 0, prefix)]
    assert frames == [Frame(seg_name, len(prefix), len(good), name, payload)]
    store.retire(seg_name, 0, len(prefix))
    store.retire(seg_name, frames[0].offset, frames[0].size)
    assert store.take_work() == [SegmentWork(seg_name, [], remove=True)]


def test_store_reports_a_torn_tail_of_current_and_reads_later_appends(seg: Path, stores):
    written = put(seg, [1])
    seg_name = written[0][0]
    tail = segment.encode_frame(*rec(2))[:40]  # a writer killed mid-write
    with open(seg / segment.CURRENT, "ab") as f:
        f.write(tail)
    store = stores(seg)
    store.refresh()
    frames, torn = store.read(1 << 30)
    first = expected_frames(written)
    assert frames == first and torn == [Torn(seg_name, first[0].size, tail)]
    later = put(seg, [3])
    frames, torn = store.read(1 << 30)
    assert torn == []
    name, payload = later[0][1:]
    assert frames == [Frame(seg_name, first[0].size + len(tail),
                            len(segment.encode_frame(name, payload)), name, payload)]


def test_a_restart_reports_the_same_torn_bytes_after_frames_were_punched(
        seg: Path, stores, can_punch):
    junk = b"not a frame"
    one, two = segment.encode_frame(*rec(1)), segment.encode_frame(*rec(2))
    seg_name = f"{NS}.6.seg"
    (seg / seg_name).write_bytes(junk + one + two)
    store = stores(seg)
    store.refresh()
    frames, torn = store.read(1 << 30)
    assert torn == [Torn(seg_name, 0, junk)] and len(frames) == 2
    store.retire(seg_name, frames[0].offset, frames[0].size)  # delivered; the torn run is not
    assert Puncher(seg).apply(store.take_work()) == []
    store.close()
    restarted = stores(seg)
    restarted.refresh()
    assert restarted.read(1 << 30) == ([frames[1]], [Torn(seg_name, 0, junk)])
