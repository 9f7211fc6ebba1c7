"""The spool directory: listing, reading, retiring, dead-lettering and writing records."""

from __future__ import annotations

import errno
import json
import os
import resource
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from jobcompd.spool import (
    RejectedFile,
    Spool,
    SpoolError,
    SpoolFull,
    SpoolName,
    durable,
    files,
    make_name,
    parse_name,
    space,
)

MAX = 1000
NS = 1795618456000000000


def name(i: int, job: int = 42, event: str = "end", fmt: str = "env") -> str:
    return f"{NS + i:019d}.{job}.{event}.{fmt}"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    sp = Spool(tmp_path / "spool", max_record_bytes=MAX, allowed_uids=None)
    assert sp.ensure_dirs() == []
    return sp


def put(sp: Spool, fname: str, data: bytes = b"JOBID=42\0") -> Path:
    path = sp.new / fname
    path.write_bytes(data)
    return path


def rejected(sp: Spool, fname: str) -> RejectedFile:
    with pytest.raises(RejectedFile) as info:
        sp.read(fname)
    assert info.value.name == fname
    assert str(sp.new / fname) in str(info.value)
    return info.value


# -- names --------------------------------------------------------------------------------


def test_parse_name_splits_the_parts() -> None:
    assert parse_name("1795618456123456789.4294967295.start.json") == SpoolName(
        name="1795618456123456789.4294967295.start.json", ns=1795618456123456789,
        job_id=4294967295, event="start", fmt="json")


@pytest.mark.parametrize("bad", [
    "",
    "179561845612345678.1.end.env",        # 18 digits
    "17956184561234567890.1.end.env",      # 20 digits
    "1795618456123456789.0.end.env",       # job id 0
    "1795618456123456789.042.end.env",     # leading zero
    "1795618456123456789.4294967296.end.env",  # beyond uint32
    "1795618456123456789.1.begin.env",
    "1795618456123456789.1.end.txt",
    "1795618456123456789.1.end.env.reason",
    "1795618456123456789.1.end",
    "README",
])
def test_parse_name_rejects_other_names(bad: str) -> None:
    with pytest.raises(RejectedFile) as info:
        parse_name(bad)
    assert info.value.reason == "bad_name"
    assert repr(bad) in str(info.value)


def test_make_name_round_trips_and_validates() -> None:
    assert parse_name(make_name(5, 7, "start", "json")) == SpoolName(
        "0000000000000000005.7.start.json", 5, 7, "start", "json")
    for args in [(10**19, 1, "end", "env"), (1, 0, "end", "env"), (1, 1, "stop", "env"),
                 (1, 1, "end", "xml")]:
        with pytest.raises(ValueError):
            make_name(*args)


# -- set-up -------------------------------------------------------------------------------


def test_ensure_dirs_creates_the_layout_once(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "a" / "spool", max_record_bytes=MAX, allowed_uids=None)
    with pytest.raises(SpoolError, match=r"cannot create spool directory .*a/spool"):
        sp.ensure_dirs()  # the parent of the spool is the operator's business
    (tmp_path / "a").mkdir()
    assert sp.ensure_dirs() == []
    for path in (sp.root, sp.tmp, sp.new, sp.failed):
        assert stat.S_IMODE(path.stat().st_mode) == 0o750
    put(sp, name(1))
    assert sp.ensure_dirs() == []
    assert sp.count_new() == 1


def test_ensure_dirs_warns_about_a_world_writable_spool(spool: Spool) -> None:
    os.chmod(spool.new, 0o777)
    warnings = spool.ensure_dirs()
    assert len(warnings) == 1
    assert str(spool.new) in warnings[0] and "world-writable" in warnings[0]


def test_ensure_dirs_refuses_a_file_where_a_directory_belongs(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    root.mkdir()
    (root / "new").write_text("oops")
    with pytest.raises(SpoolError, match="new exists but is not a directory"):
        Spool(root, max_record_bytes=MAX, allowed_uids=None).ensure_dirs()


# -- scan ---------------------------------------------------------------------------------


def test_scan_returns_oldest_first_within_the_limit(spool: Spool) -> None:
    order = [7, 3, 11, 0, 5, 9, 1]
    for i in order:
        put(spool, name(i, job=100 - i))
    put(spool, ".hidden")
    names, more = spool.scan(3, frozenset())
    assert names == [name(0, 100), name(1, 99), name(3, 97)]
    assert more is True
    names, more = spool.scan(len(order), frozenset())
    assert names == sorted(name(i, 100 - i) for i in order)
    assert more is False


def test_scan_skips_excluded_names_without_counting_them(spool: Spool) -> None:
    for i in range(5):
        put(spool, name(i))
    in_flight = frozenset({name(0), name(2)})
    names, more = spool.scan(3, in_flight)
    assert names == [name(1), name(3), name(4)]
    assert more is False
    names, more = spool.scan(2, in_flight)
    assert names == [name(1), name(3)]
    assert more is True


def test_scan_lists_foreign_names_too(spool: Spool) -> None:
    """Badly named files must come out so that the daemon can dead-letter them."""
    put(spool, name(1))
    put(spool, "zz-not-a-record")
    (spool.new / "a-directory").mkdir()
    names, _ = spool.scan(10, frozenset())
    assert names == [name(1), "a-directory", "zz-not-a-record"]


def test_scan_of_an_empty_spool(spool: Spool) -> None:
    assert spool.scan(10, frozenset()) == ([], False)
    assert spool.count_new() == 0
    with pytest.raises(ValueError):
        spool.scan(0, frozenset())


# -- read ---------------------------------------------------------------------------------


def test_read_returns_the_bytes(spool: Spool) -> None:
    data = b"JOBNAME=a\nb\0JOBID=42\0"
    put(spool, name(1), data)
    assert spool.read(name(1)) == data
    put(spool, name(2), b"x" * MAX)
    assert spool.read(name(2)) == b"x" * MAX


def test_read_rejects_a_file_beyond_the_limit(spool: Spool) -> None:
    put(spool, name(1), b"x" * (MAX + 1))
    e = rejected(spool, name(1))
    assert e.reason == "too_large"
    assert f"{MAX + 1} bytes" in str(e)


def test_read_of_a_vanished_file_raises_file_not_found(spool: Spool) -> None:
    with pytest.raises(FileNotFoundError):
        spool.read(name(1))


def test_read_rejects_a_symlink_and_leaves_its_target_alone(spool: Spool, tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"JOBID=1\0")
    (spool.new / name(1)).symlink_to(target)
    assert rejected(spool, name(1)).reason == "symlink"


def test_read_rejects_a_fifo_without_blocking(spool: Spool) -> None:
    os.mkfifo(spool.new / name(1))
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            spool.read(name(1))
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "read() blocked on a FIFO with no writer"
    assert isinstance(outcome[0], RejectedFile)
    assert outcome[0].reason == "not_regular"


def test_read_rejects_a_directory(spool: Spool) -> None:
    (spool.new / name(1)).mkdir()
    assert rejected(spool, name(1)).reason == "not_regular"


def test_read_rejects_a_hard_link(spool: Spool, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"JOBID=1\0")
    os.link(elsewhere, spool.new / name(1))
    e = rejected(spool, name(1))
    assert e.reason == "hardlink"
    assert "2 hard links" in str(e)


def test_read_leaves_the_access_time_alone(spool: Spool) -> None:
    """Reading a record writes nothing to the disk: with relatime, an access time older than
    the modification time is updated by a read (a journal transaction per record)."""
    path = put(spool, name(1))
    old = path.stat().st_mtime_ns - 10**9 * 86400
    os.utime(path, ns=(old, path.stat().st_mtime_ns))
    assert spool.read(name(1)) == b"JOBID=42\0"
    assert path.stat().st_atime_ns == old


_READ_AS_NOBODY = """
import os, sys
from jobcompd.spool import Spool
os.setgid(65534)
os.setuid(65534)
spool = Spool(sys.argv[1], max_record_bytes=1024, allowed_uids=None)
sys.stdout.buffer.write(spool.read(sys.argv[2]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root")
def test_read_of_a_file_the_reader_does_not_own() -> None:
    """O_NOATIME is only for the owner: another user's record is read all the same."""
    # Not in tmp_path: pytest's base directory is root's alone.
    with tempfile.TemporaryDirectory(prefix="jobcompd-test-") as top:
        root = Path(top) / "spool"
        sp = Spool(root, max_record_bytes=MAX, allowed_uids=None)
        sp.ensure_dirs()
        for d in (Path(top), root, sp.new):
            d.chmod(0o755)
        path = put(sp, name(1))
        path.chmod(0o644)
        out = subprocess.run([sys.executable, "-c", _READ_AS_NOBODY, str(root), name(1)],
                             capture_output=True, timeout=60,
                             cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == b"JOBID=42\0"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_read_rejects_a_file_of_another_owner(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "spool", max_record_bytes=MAX, allowed_uids=frozenset({0}))
    sp.ensure_dirs()
    put(sp, name(1))
    assert sp.read(name(1)) == b"JOBID=42\0"
    os.chown(sp.new / name(1), 65534, 65534)  # nobody
    e = rejected(sp, name(1))
    assert e.reason == "owner"
    assert "uid 65534" in str(e)
    any_owner = Spool(sp.root, max_record_bytes=MAX, allowed_uids=None)
    assert any_owner.read(name(1)) == b"JOBID=42\0"


def test_read_refuses_names_that_leave_new(spool: Spool) -> None:
    (spool.root / "outside").write_bytes(b"x")
    for bad in ("../outside", "..", ""):
        with pytest.raises(RejectedFile) as info:
            spool.read(bad)
        assert info.value.reason == "bad_name"


# -- retire and dead letters ----------------------------------------------------------------


def test_retire_removes_the_files_and_tolerates_their_absence(spool: Spool) -> None:
    put(spool, name(1))
    put(spool, name(2))
    assert spool.retire_all([name(1), name(2)]) == []
    assert not (spool.new / name(1)).exists() and not (spool.new / name(2)).exists()
    assert spool.retire_all([name(1)]) == []


def test_retire_reports_what_it_cannot_remove_and_goes_on(spool: Spool) -> None:
    put(spool, name(2))
    (spool.new / name(1)).mkdir()  # unlink() of a directory fails: EISDIR
    failed = spool.retire_all(["../escape", name(1), name(2)])
    assert [(n, type(e).__name__) for n, e in failed] == [
        ("../escape", "RejectedFile"), (name(1), "IsADirectoryError")]
    assert not (spool.new / name(2)).exists()


def read_reason(sp: Spool, fname: str) -> dict:
    path = sp.failed / (fname + ".reason")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_bytes())


def test_dead_letter_moves_the_file_and_explains_why(spool: Spool) -> None:
    put(spool, name(1), b"garbage")
    spool.dead_letter(name(1), "malformed", "no JOBID in the record", line=3, attempts=2)
    assert not (spool.new / name(1)).exists()
    assert (spool.failed / name(1)).read_bytes() == b"garbage"
    info = read_reason(spool, name(1))
    assert info["reason"] == "malformed"
    assert info["message"] == "no JOBID in the record"
    assert info["line"] == 3 and info["attempts"] == 2
    assert info["time"].endswith("+00:00")
    assert "vanished" not in info
    assert sorted(os.listdir(spool.failed)) == [name(1), name(1) + ".reason"]


def test_dead_letter_of_a_vanished_file_writes_only_the_reason(spool: Spool) -> None:
    spool.dead_letter(name(1), "symlink", "gone meanwhile")
    assert os.listdir(spool.failed) == [name(1) + ".reason"]
    info = read_reason(spool, name(1))
    assert info["reason"] == "symlink" and info["vanished"] is True


def test_dead_letter_moves_a_symlink_not_its_target(spool: Spool, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep me")
    (spool.new / name(1)).symlink_to(target)
    spool.dead_letter(name(1), "symlink", "a link")
    assert (spool.failed / name(1)).is_symlink()
    assert target.read_bytes() == b"keep me"
    assert os.listdir(spool.new) == []


def test_dead_letter_moves_weird_entries(spool: Spool) -> None:
    (spool.new / name(1)).mkdir()
    (spool.new / name(1) / "inside").write_bytes(b"x")
    os.mkfifo(spool.new / name(2))
    spool.dead_letter(name(1), "not_regular", "a directory")
    spool.dead_letter(name(2), "not_regular", "a FIFO")
    assert (spool.failed / name(1) / "inside").exists()
    assert stat.S_ISFIFO(os.lstat(spool.failed / name(2)).st_mode)
    assert os.listdir(spool.new) == []


def test_dead_letter_never_overwrites_an_earlier_one(spool: Spool) -> None:
    put(spool, name(1), b"first")
    spool.dead_letter(name(1), "malformed", "first")
    put(spool, name(1), b"second")
    with pytest.raises(FileExistsError):
        spool.dead_letter(name(1), "malformed", "second")
    assert (spool.new / name(1)).read_bytes() == b"second"
    assert (spool.failed / name(1)).read_bytes() == b"first"


def test_failed_entries_and_retry(spool: Spool) -> None:
    put(spool, name(2))
    put(spool, name(1))
    spool.dead_letter(name(2), "too_large", "big")
    spool.dead_letter(name(1), "owner", "uid 1000")
    spool.dead_letter(name(3), "unreadable", "vanished")  # only a reason file
    (spool.failed / "manual-copy").write_bytes(b"x")      # no reason file
    entries = spool.failed_entries()
    assert [n for n, _ in entries] == [name(1), name(2), name(3), "manual-copy"]
    assert [info.get("reason") for _, info in entries] == [
        "owner", "too_large", "unreadable", None]

    assert spool.retry_failed(name(2)) == name(2)
    assert (spool.new / name(2)).exists()
    assert not (spool.failed / name(2)).exists()
    assert not (spool.failed / (name(2) + ".reason")).exists()
    assert spool.scan(10, frozenset()) == ([name(2)], False)

    with pytest.raises(SpoolError, match="no dead letter"):
        spool.retry_failed(name(9))
    with pytest.raises(SpoolError, match="vanished"):
        spool.retry_failed(name(3))
    with pytest.raises(SpoolError, match="reason file of"):
        spool.retry_failed(name(1) + ".reason")
    put(spool, name(1), b"a newer file of that name")
    with pytest.raises(SpoolError, match="already exists"):
        spool.retry_failed(name(1))
    assert (spool.failed / name(1)).exists()


def test_failed_entries_with_a_corrupt_reason_file(spool: Spool) -> None:
    put(spool, name(1))
    spool.dead_letter(name(1), "malformed", "x")
    (spool.failed / (name(1) + ".reason")).write_bytes(b"{not json")
    [(fname, info)] = spool.failed_entries()
    assert fname == name(1)
    assert info["reason"] == "unknown" and "cannot read" in info["message"]


def test_a_dead_lettered_reason_named_file_is_not_taken_for_a_reason(spool: Spool) -> None:
    put(spool, "x.reason", b"planted")
    spool.dead_letter("x.reason", "bad_name", "bad name")
    assert spool.failed_entries() == [("x.reason", read_reason(spool, "x.reason"))]


# -- write_record ---------------------------------------------------------------------------


def test_write_record_puts_a_complete_private_file_into_new(spool: Spool) -> None:
    fname = spool.write_record(b'{"jobid": 7}', job_id=7, event="end", fmt="json")
    parsed = parse_name(fname)
    assert (parsed.job_id, parsed.event, parsed.fmt) == (7, "end", "json")
    assert abs(parsed.ns - time.time_ns()) < 60 * 10**9
    assert (spool.new / fname).read_bytes() == b'{"jobid": 7}'
    assert stat.S_IMODE((spool.new / fname).stat().st_mode) == 0o600
    assert os.listdir(spool.tmp) == []
    assert spool.read(fname) == b'{"jobid": 7}'


def test_write_record_keeps_call_order(spool: Spool) -> None:
    names = [spool.write_record(b"JOBID=1\0", job_id=1, event="end", fmt="env")
             for _ in range(50)]
    assert len(set(names)) == 50
    assert spool.scan(100, frozenset())[0] == names


def test_write_record_is_invisible_until_complete(spool: Spool, monkeypatch) -> None:
    seen_in_new_at_fsync: list[list[str]] = []
    real_fsync = os.fsync

    def watching_fsync(fd: int) -> None:
        seen_in_new_at_fsync.append(os.listdir(spool.new))
        real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", watching_fsync)
    fname = spool.write_record(b"JOBID=5\0", job_id=5, event="start", fmt="env")
    # first fsync: the data in tmp/, nothing in new/; second: new/ after the rename
    assert seen_in_new_at_fsync == [[], [fname]]


def test_write_record_removes_its_file_when_the_disk_refuses(spool: Spool) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))  # writes beyond 100 bytes: EFBIG
    try:
        with pytest.raises(OSError) as info:
            spool.write_record(b"x" * 500, job_id=1, event="end", fmt="env")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert info.value.errno == errno.EFBIG
    assert os.listdir(spool.tmp) == [] and os.listdir(spool.new) == []


def test_write_record_removes_its_file_when_fsync_fails(spool: Spool, monkeypatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        spool.write_record(b"JOBID=1\0", job_id=1, event="end", fmt="env")
    assert os.listdir(spool.tmp) == [] and os.listdir(spool.new) == []


def test_write_record_does_not_follow_a_symlink_in_tmp(spool: Spool, tmp_path: Path,
                                                        monkeypatch) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    monkeypatch.setattr(files.time, "time_ns", lambda: NS)
    (spool.tmp / name(0, job=3)).symlink_to(victim)
    with pytest.raises(SpoolError, match="already exists"):
        spool.write_record(b"JOBID=3\0", job_id=3, event="end", fmt="env")
    assert victim.read_bytes() == b"untouched"
    assert (spool.tmp / name(0, job=3)).is_symlink()
    assert os.listdir(spool.new) == []


def test_write_record_refuses_what_the_reader_would_reject(spool: Spool) -> None:
    with pytest.raises(SpoolError, match="more than the spool's limit"):
        spool.write_record(b"x" * (MAX + 1), job_id=1, event="end", fmt="env")
    with pytest.raises(ValueError):
        spool.write_record(b"", job_id=1, event="end", fmt="env")
    with pytest.raises(ValueError):
        spool.write_record(b"x", job_id=1, event="finish", fmt="env")
    assert os.listdir(spool.tmp) == [] and os.listdir(spool.new) == []


# -- free space (SPEC.md, "Free space") ---------------------------------------------------

#: More than any file system holds: a writer that reads this threshold refuses every record.
HUGE = 999_999_999_999_999_999
DEFAULT = space.DEFAULT_MIN_FREE_BYTES
#: What a threshold file may hold, and the threshold every writer takes from it.
THRESHOLD_FILES = [
    (b"999999999999999999\n", HUGE),
    (b"999999999999999999", HUGE),  # no newline
    (b"999999999999999999\nand a second line", HUGE),  # the first line counts
    (b"99\x009999999999999999\n", HUGE),  # NUL bytes dropped, as a shell's read drops them
    (b"0\n", 0),
    (b"67108865\n", DEFAULT + 1),
    (b"0999999999999999999\n", DEFAULT),  # a leading zero
    (b"9999999999999999999\n", DEFAULT),  # 19 digits
    (b" 999999999999999999\n", DEFAULT),
    (b"999999999999999999 \n", DEFAULT),
    (b"-1\n", DEFAULT),
    (b"1e18\n", DEFAULT),
    (b"64M\n", DEFAULT),
    (b"\n", DEFAULT),
    (b"", DEFAULT),
]


def plant_threshold(root: Path, kind: str, content: bytes = b"") -> None:
    """SpoolDir/.min-free-bytes as a file holding ``content``, or as another kind of entry
    that points at (or is) such a file; none but the file may be read."""
    path = root / space.MIN_FREE_FILE
    if kind == "file":
        path.write_bytes(content)
    elif kind == "symlink":
        (root / "elsewhere").write_bytes(b"999999999999999999\n")
        path.symlink_to(root / "elsewhere")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize(("content", "threshold"), THRESHOLD_FILES)
def test_the_threshold_file_is_read_as_the_hooks_read_it(spool: Spool, content: bytes,
                                                          threshold: int) -> None:
    plant_threshold(spool.root, "file", content)
    assert space.read_min_free(spool.root) == threshold


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "missing"])
def test_a_threshold_entry_that_is_no_file_means_the_default(spool: Spool, kind: str) -> None:
    plant_threshold(spool.root, kind)
    assert space.read_min_free(spool.root) == DEFAULT


def test_set_min_free_writes_what_every_writer_reads(spool: Spool) -> None:
    assert spool.set_min_free(123_456) == []
    path = spool.root / space.MIN_FREE_FILE
    assert path.read_bytes() == b"123456\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert space.read_min_free(spool.root) == 123_456 == spool.min_free_bytes
    assert spool.set_min_free(0) == [] and path.read_bytes() == b"0\n"
    assert sorted(os.listdir(spool.root)) == [".min-free-bytes", "failed", "new", "tmp"]


def test_set_min_free_that_cannot_write_warns_and_still_applies(spool: Spool) -> None:
    (spool.root / space.MIN_FREE_FILE).mkdir()  # a rename onto a directory fails
    [warning] = spool.set_min_free(space.MAX_MIN_FREE_BYTES)
    assert f"cannot write {spool.root}/.min-free-bytes: Is a directory" in warning
    assert spool.min_free_bytes == space.MAX_MIN_FREE_BYTES
    assert sorted(os.listdir(spool.root)) == [".min-free-bytes", "failed", "new", "tmp"]
    with pytest.raises(SpoolFull):
        spool.write_record(b"JOBID=1\0", job_id=1, event="end", fmt="env")


def test_write_record_refuses_below_its_threshold_and_leaves_nothing(spool: Spool) -> None:
    spool.min_free_bytes = HUGE
    with pytest.raises(SpoolFull) as info:
        spool.write_record(b"JOBID=8\0", job_id=8, event="end", fmt="env")
    # An OSError without errno: backfill stops on it, the HTTP intake answers 503.
    assert isinstance(info.value, OSError) and info.value.errno is None
    free = space.free_bytes(spool.new)
    assert free is not None
    assert str(info.value) == (f"spool nearly full: {spool.new} has {free} bytes free, less "
                               f"than SpoolMinFreeBytes={HUGE}; job 8 end not recorded")
    assert os.listdir(spool.tmp) == [] and os.listdir(spool.new) == []


def test_write_record_takes_the_hooks_threshold_when_it_has_none(spool: Spool) -> None:
    assert spool.min_free_bytes is None  # backfill's Spool: no configuration of its own
    plant_threshold(spool.root, "file", b"999999999999999999\n")
    with pytest.raises(SpoolFull, match="SpoolMinFreeBytes=999999999999999999; job 9 start"):
        spool.write_record(b"JOBID=9\0", job_id=9, event="start", fmt="env")
    plant_threshold(spool.root, "file", b"0\n")
    assert parse_name(spool.write_record(b"JOBID=9\0", job_id=9, event="start",
                                         fmt="env")).job_id == 9


def test_write_record_at_exactly_its_threshold_writes(spool: Spool, monkeypatch) -> None:
    monkeypatch.setattr(space, "free_bytes", lambda path: 4096)
    spool.min_free_bytes = 4096
    spool.write_record(b"JOBID=1\0", job_id=1, event="end", fmt="env")
    spool.min_free_bytes = 4097
    with pytest.raises(SpoolFull, match="has 4096 bytes free, less than SpoolMinFreeBytes=4097"):
        spool.write_record(b"JOBID=1\0", job_id=1, event="end", fmt="env")
    assert len(os.listdir(spool.new)) == 1


def test_free_bytes_is_what_an_unprivileged_writer_may_use(spool: Spool) -> None:
    st = os.statvfs(spool.new)
    assert spool.free_bytes() in {st.f_bavail * st.f_frsize, *(  # the disk is shared
        os.statvfs(spool.new).f_bavail * st.f_frsize for _ in range(3))}
    assert space.free_bytes(spool.root / "no-such-folder") is None


def test_allocated_bytes_counts_the_blocks_of_new(spool: Spool) -> None:
    assert space.allocated_bytes(spool.new) == 0
    put(spool, name(1), b"x" * 10)
    put(spool, name(2), b"x" * 5000)
    (spool.new / ".hidden").write_bytes(b"x" * 5000)
    expected = sum(os.lstat(spool.new / n).st_blocks * 512 for n in (name(1), name(2)))
    assert space.allocated_bytes(spool.new) == expected > 5000


def test_the_usage_meter_scans_at_most_as_often_as_it_may(spool: Spool) -> None:
    took = [0.0]
    ticks = iter(range(1000))

    def clock() -> float:  # each scan seems to take took[0] seconds
        return next(ticks) % 2 * took[0]

    put(spool, name(1), b"x" * 5000)
    meter = space.UsageMeter(spool.new, interval_s=10.0, duty=100.0, clock=clock)
    first = meter.measure(0.0)
    assert first == space.allocated_bytes(spool.new) > 0
    put(spool, name(2), b"x" * 5000)
    assert meter.measure(9.9) == first  # not yet due
    took[0] = 0.5
    second = meter.measure(10.0)
    assert second == space.allocated_bytes(spool.new) > first
    # That scan took 0.5 s: the next one waits 100 times as long, not 10 s.
    put(spool, name(3), b"x" * 5000)
    assert meter.measure(59.9) == second
    assert meter.measure(60.0) == space.allocated_bytes(spool.new) > second


def test_the_usage_meter_of_a_missing_folder_says_none(tmp_path: Path) -> None:
    assert space.UsageMeter(tmp_path / "gone").measure(0.0) is None


# -- tmp clean-up -------------------------------------------------------------------------


def test_clean_tmp_removes_only_stale_leftovers(spool: Spool) -> None:
    stale = spool.tmp / name(1)
    stale.write_bytes(b"half")
    day_ago = time.time() - 86400
    os.utime(stale, (day_ago, day_ago))
    (spool.tmp / name(2)).write_bytes(b"being written")
    assert spool.clean_tmp(3600) == [name(1)]
    assert os.listdir(spool.tmp) == [name(2)]
