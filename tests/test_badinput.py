"""Bad input at the daemon level: whatever lands in new/, the daemon stays up, the bad entry goes
to failed/ with a reason, and every good record beside it still arrives.

Hostile entries are there too: links to files elsewhere, a FIFO, a device, a socket, a huge
sparse file, a file of a user not in SpoolOwners, names built to forge log lines. None is
followed, read past the limit, or allowed to block the daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.broker import wait_for
from tests.faults.common import end_env, end_env_bytes, next_name
from tests.support import DaemonUnderTest, rss_kib

pytestmark = pytest.mark.broker

MAX_RECORD_BYTES = 4096


def _malformed(r: random.Random, job_id: int) -> tuple[str, bytes, str]:
    """(name, content, expected reason) of one generated bad file."""
    ns = next_name(job_id).split(".")[0]
    env = end_env_bytes(job_id)
    kind = r.randrange(14)
    if kind == 0:
        return f"{ns}.{job_id}.end.env", b"", "malformed"
    if kind == 1:
        return f"{ns}.{job_id}.end.env", r.randbytes(r.randrange(1, 600)), "malformed"
    if kind == 2:  # cut off before its last NUL
        return f"{ns}.{job_id}.end.env", env[: r.randrange(1, len(env) - 1)].rstrip(b"\0"), \
            "malformed"
    if kind == 3:
        return f"{ns}.{job_id}.end.env", env.replace(b"JOBID=", b"JOBIX="), "malformed"
    if kind == 4:
        bad = r.choice([b"0", b"-1", b"abc", b"4294967296", b"", b"1e3"])
        return f"{ns}.{job_id}.end.env", env.replace(f"JOBID={job_id}".encode(),
                                                       b"JOBID=" + bad), "malformed"
    if kind == 5:
        return f"{ns}.{job_id}.end.env", env.replace(b"\0START=", b"\0START=soon\0X="), \
            "malformed"
    if kind == 6:
        return f"{ns}.{job_id}.end.json", b'{"jobid": ' + str(job_id).encode(), "malformed"
    if kind == 7:
        return f"{ns}.{job_id}.end.json", b'[{"jobid": 1}]', "malformed"
    if kind == 8:
        return f"{ns}.{job_id}.end.json", b'{"jobname": "x"}', "malformed"
    if kind == 9:
        return f"{ns}.{job_id}.end.json", b'{"jobid": "%d"}' % job_id, "malformed"
    if kind == 10:
        return f"{ns}.{job_id}.end.json", b"[" * 3000, "malformed"
    if kind == 11:
        return f"{ns}.{job_id}.end.env", env + b"X" * MAX_RECORD_BYTES, "too_large"
    if kind == 12:
        name = r.choice([f"{ns}.{job_id}.stop.env", f"{ns}.{job_id}.end.txt", f"{ns[1:]}.1.end.env",
                         f"{ns}.0.end.env", f"{ns}.{job_id}.end", f"x{ns}.{job_id}.end.env",
                         f"{ns}.99999999999.end.env", f"{ns}.{job_id}.end.env~"])
        return name, env, "bad_name"
    return f"{ns}.{job_id}.start.json", b"\xef\xbb\xbf{}", "malformed"


def test_ten_thousand_malformed_files_among_valid_ones(daemon: DaemonUnderTest):
    bad_count, good_count = 10_000, 1_000
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed {seed}")
    r = random.Random(seed)
    daemon.params["max_record_bytes"] = str(MAX_RECORD_BYTES)
    daemon.write_config()
    # On a tmpfs where the machine allows it: 10,000 dead letters are 20,000 fsyncs on disk.
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:
            stack.enter_context(tmpfs_or_disk(daemon.spool))
        daemon.start()
        _drop_and_check(daemon, bad_count, good_count, r)
        daemon.stop()


@contextlib.contextmanager
def tmpfs_or_disk(path: Path):
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g,mode=0750", "tmpfs", str(path)],
                         capture_output=True)
    try:
        yield
    finally:
        if res.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _drop_and_check(daemon: DaemonUnderTest, bad_count: int, good_count: int,
                    r: random.Random) -> None:
    files: list[tuple[str, bytes, str | None]] = []
    for i in range(good_count):
        job = 10_000_000 + i
        files.append((next_name(job), end_env_bytes(job), None))
    for i in range(bad_count):
        files.append(_malformed(r, 11_000_000 + i))
    r.shuffle(files)
    tmp, new = daemon.spool / "tmp", daemon.spool / "new"
    for name, content, _ in files:
        (tmp / name).write_bytes(content)
    for name, _, _ in files:
        os.rename(tmp / name, new / name)

    got = daemon.consume(good_count, timeout=180, settle=1.0)
    ids = {json.loads(m.value)["jobid"] for m in got}
    assert ids == set(range(10_000_000, 10_000_000 + good_count))
    assert len(got) == good_count
    wait_for(lambda: len(daemon.failed_files()) == 2 * bad_count, 120, interval=0.5,
             what="every bad file dead-lettered with its reason")
    expected = {name: why for name, _, why in files if why is not None}
    failed = daemon.spool / "failed"
    seen = 0
    for name, why in expected.items():
        info = json.loads((failed / (name + ".reason")).read_bytes())
        assert info["reason"] == why, (name, info)
        assert info["message"], name
        seen += 1
    assert seen == bad_count
    assert daemon.new_files() == []
    assert daemon.proc.poll() is None
    assert len(daemon.log_lines("dead_lettered")) == bad_count
    print(f"BADINPUT malformed={bad_count} valid={good_count} arrived={len(got)}")


# -- hostile entries ------------------------------------------------------------------------

SECRET = b"TOP-SECRET-do-not-ship-4711"


def _plant(kind: str, new: Path, outside: Path, job_id: int) -> tuple[str, str]:
    """Put one hostile entry into new/; return its name and the reason expected for it."""
    name = next_name(job_id)
    path = new / name
    if kind == "symlink":
        path.symlink_to(outside / "secret")
        return name, "symlink"
    if kind == "symlink_to_dir":
        path.symlink_to(outside)
        return name, "symlink"
    if kind == "hardlink":
        os.link(outside / "record", path)
        return name, "hardlink"
    if kind == "fifo":
        os.mkfifo(path)
        return name, "not_regular"
    if kind == "directory":
        path.mkdir()
        (path / "inside").write_bytes(end_env_bytes(job_id))
        return name, "not_regular"
    if kind == "device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: endless
        return name, "not_regular"
    if kind == "socket":
        # Bound under a short name (AF_UNIX paths are limited to 108 bytes), then moved in.
        short = f"/tmp/jcd-{os.getpid()}-{job_id}.sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(short)
        s.close()
        os.rename(short, path)
        return name, "not_regular"
    # Files are made outside and renamed in, as the spool protocol says: a file written in
    # place could be read half made (empty, or still root's before the chown).
    if kind == "sparse_8gib":
        staged = outside / name
        with open(staged, "wb") as f:
            f.truncate(8 << 30)
        os.rename(staged, path)
        return name, "too_large"
    if kind == "foreign_owner":
        staged = outside / name
        staged.write_bytes(end_env_bytes(job_id))
        os.chown(staged, 54321, 54321)
        os.rename(staged, path)
        return name, "owner"
    if kind in ("keys_100k_json", "keys_100k_env"):
        # 100,000 members in 500 kB: the key handling was quadratic (90 s in the main loop,
        # past the unit's watchdog); it is refused before any parse.
        if kind == "keys_100k_json":
            name = name.replace(".env", ".json")
            data = b'{"jobid":%d,"script":"x"' % job_id + b',"":1' * 100_000 + b"}"
        else:
            data = end_env_bytes(job_id) + b"K=1\0" * 100_000
        staged = outside / name
        staged.write_bytes(data)
        os.rename(staged, new / name)
        return name, "too_many_keys"
    if kind == "forged_log_line":
        name = f"{name}\nts=2026-01-01T00:00:00Z level=info msg=delivered job_id={job_id}"
        (new / name).write_bytes(end_env_bytes(job_id))
        return name, "bad_name"
    if kind == "not_utf8_name":
        raw = os.fsencode(name) + b"\xff\xfe"
        with open(os.path.join(os.fsencode(new), raw), "wb") as f:
            f.write(end_env_bytes(job_id))
        return os.fsdecode(raw), "bad_name"
    raise AssertionError(kind)


HOSTILE = ["symlink", "symlink_to_dir", "hardlink", "fifo", "directory", "device", "socket",
           "sparse_8gib", "foreign_owner", "forged_log_line", "not_utf8_name",
           "keys_100k_json", "keys_100k_env"]


def test_hostile_entries_are_refused_without_harm(daemon: DaemonUnderTest, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET + b"\0JOBID=5\0")
    (outside / "record").write_bytes(end_env_bytes(12_999_999))
    daemon.start()
    rss_start = rss_kib(daemon.proc.pid)
    new = daemon.spool / "new"
    planted: dict[str, str] = {}
    good = []
    for i, kind in enumerate(HOSTILE):
        name, why = _plant(kind, new, outside, 12_000_000 + i)
        planted[name] = why
        # A good record right behind each: nothing may hold it up.
        daemon.hook(end_env(12_100_000 + i))
        good.append(12_100_000 + i)
        got = daemon.consume(len(good), timeout=15)
        assert {json.loads(m.value)["jobid"] for m in got} == set(good), (
            f"a good record is held up behind a {kind}:\n{daemon.log_text()[-2000:]}")

    wait_for(lambda: not daemon.new_files(), 20, what="new/ emptied")
    failed = daemon.spool / "failed"
    for name, why in planted.items():
        info = json.loads((failed / (name + ".reason")).read_bytes())
        assert info["reason"] == why, (name, info)
        assert os.path.lexists(failed / name), name
    assert daemon.proc.poll() is None
    # Nothing was followed or read: the files elsewhere are intact, the secret went nowhere.
    assert (outside / "secret").read_bytes() == SECRET + b"\0JOBID=5\0"
    assert (outside / "record").read_bytes() == end_env_bytes(12_999_999)
    log = daemon.log_text()
    assert SECRET.decode() not in log
    assert all(SECRET not in m.value for m in daemon.consume(len(good), settle=0.5))
    # Nor read past the limit: 8 GiB of zeros and /dev/zero did not reach memory.
    assert rss_kib(daemon.proc.pid) < rss_start + 50 * 1024
    # A name cannot forge a log line: every line is one whole event.
    for line in log.splitlines():
        assert line.startswith("ts="), f"a log line not written by the logger: {line!r}"
    # The forged text stays inside the quoted file= value of the dead_lettered line.
    assert not [ln for ln in log.splitlines() if ln.split(" ", 3)[2] == "msg=delivered"]
    assert len(daemon.log_lines("dead_lettered")) == len(HOSTILE)


def test_world_writable_spool_is_warned_about_at_start(daemon: DaemonUnderTest):
    for sub in ("", "tmp", "new", "failed"):
        (daemon.spool / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(daemon.spool / sub, 0o777)
    os.chmod(daemon.spool / "new", 0o1777)
    daemon.start()
    lines = daemon.log_lines("spool_warning")
    warned = " ".join(lines)
    for sub in ("tmp", "new", "failed"):
        assert str(daemon.spool / sub) in warned
    assert all("world-writable" in ln for ln in lines)
    daemon.hook(end_env(12_200_000))
    assert len(daemon.consume(1)) == 1  # a warning, not a refusal


def test_a_fifo_with_a_writer_does_not_block_either(daemon: DaemonUnderTest):
    """Someone holds the FIFO open for writing and never writes: still no hang."""
    daemon.start()
    fifo = daemon.spool / "new" / next_name(12_300_000)
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that stays silent
    try:
        t0 = time.monotonic()
        daemon.hook(end_env(12_300_001))
        assert len(daemon.consume(1, timeout=15)) == 1
        assert time.monotonic() - t0 < 15
        wait_for(lambda: os.path.lexists(daemon.spool / "failed" / fifo.name), 10,
                 what="the FIFO dead-lettered")
    finally:
        os.close(fd)


def test_a_name_that_is_not_utf8_is_dead_lettered_under_journald_logging(daemon):
    """LogTarget=journal: a file name of raw bytes must not crash the logger (journald only
    takes UTF-8), or the daemon dies on every start before it can move the file away."""
    daemon.extra_conf["LogTarget"] = "journal"
    daemon.write_config()
    daemon.start(wait_ready=False)  # its lines go to the journal, or to stderr without one
    wait_for(lambda: (daemon.spool / "new").is_dir(), 20, what="the spool created")
    daemon.hook(end_env(12_400_000))
    assert len(daemon.consume(1)) == 1
    raw = os.fsencode(next_name(12_400_001)) + b"\xff"
    with open(os.path.join(os.fsencode(daemon.spool / "new"), raw), "wb") as f:
        f.write(end_env_bytes(12_400_001))
    daemon.hook(end_env(12_400_002))
    assert len(daemon.consume(2, timeout=15)) == 2
    wait_for(lambda: os.path.lexists(os.path.join(os.fsencode(daemon.spool / "failed"), raw)),
             10, what="the file dead-lettered")
    assert daemon.proc.poll() is None, daemon.log_text()[-3000:]


# -- a bad configuration edit ---------------------------------------------------------------

NINES = "9" * 5000


def _jobcompd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobcompd", *args], capture_output=True,
                          text=True, timeout=60)


def _one_line(text: str) -> str:
    """The one line of an error: no traceback, the 5000 digits not repeated."""
    assert "Traceback" not in text, text
    assert NINES[:100] not in text, text[:500]
    (line,) = text.strip().splitlines()
    return line


def test_a_5000_digit_number_at_start_exits_78_naming_file_line_and_key(tmp_path: Path):
    """Python refuses to convert more than 4300 digits (ValueError): at start that was exit 1,
    which systemd restarts for ever, instead of 78."""
    dut = DaemonUnderTest(root=tmp_path, bootstrap="127.0.0.1:9",
                          params={"max_inflight": NINES})
    res = _jobcompd("run", "-c", str(dut.conf))
    assert res.returncode == 78, res.stderr
    line = _one_line(res.stderr)
    assert f"{dut.conf}:3: JobCompParams: max_inflight=999" in line, line
    assert "is out of range" in line


def test_check_with_a_5000_digit_spool_owner_says_so_in_one_line(tmp_path: Path):
    dut = DaemonUnderTest(root=tmp_path, bootstrap="127.0.0.1:9",
                          extra_conf={"SpoolOwners": f"root,{NINES}"})
    res = _jobcompd("check", "-c", str(dut.conf))
    assert res.returncode == 78, res.stdout + res.stderr
    assert "Traceback" not in res.stdout
    line = _one_line(res.stderr)
    assert f"{dut.conf}:6: SpoolOwners: uid 999" in line and "is out of range" in line, line


def test_a_5000_digit_number_on_reload_keeps_the_running_configuration(daemon):
    """On SIGHUP the ValueError went past the reload's except ConfigError: the daemon died."""
    daemon.start()
    daemon.hook(end_env(12_500_000))
    assert len(daemon.consume(1)) == 1
    daemon.params["max_inflight"] = NINES
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    (line,) = daemon.wait_log("reload_failed")
    assert f"{daemon.conf}:3: JobCompParams: max_inflight=999" in line, line
    assert "the running configuration is kept" in line
    assert NINES[:100] not in daemon.log_text()
    daemon.hook(end_env(12_500_001))
    assert len(daemon.consume(2, settle=0.5)) == 2  # still running, on the old configuration
    assert daemon.proc.poll() is None
    status = wait_for(lambda: _status_with_error(daemon), 15, what="last_error in the status")
    assert "max_inflight=999" in status["last_error"]["message"]
    assert "\n" not in status["last_error"]["message"]
    assert status["config"]["params"]["max_inflight"] == 10000


def _status_with_error(daemon: DaemonUnderTest) -> dict | None:
    try:
        doc = json.loads((daemon.state / "jobcompd.status").read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("last_error") else None


TYPO_SECRET = "Pa55-typo-4711"


def test_check_never_prints_a_misspelled_secret(tmp_path: Path):
    dut = DaemonUnderTest(root=tmp_path, bootstrap="127.0.0.1:9",
                          kafka={"sasl.pasword": TYPO_SECRET})
    res = _jobcompd("check", "-c", str(dut.conf))
    assert res.returncode == 78, res.stdout + res.stderr
    assert TYPO_SECRET not in res.stdout + res.stderr
    line = _one_line(res.stderr)
    assert f"{dut.rdkafka}:3: sasl.pasword: No such configuration property" in line, line
    assert "did you mean sasl.password?" in line


def test_a_misspelled_secret_on_reload_reaches_neither_log_nor_status_file(daemon):
    daemon.start()
    daemon.kafka["sasl.pasword"] = TYPO_SECRET
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    (line,) = daemon.wait_log("reload_failed")
    assert "sasl.pasword: No such configuration property" in line, line
    status = wait_for(lambda: _status_with_error(daemon), 15, what="last_error in the status")
    assert "sasl.pasword" in status["last_error"]["message"]
    assert TYPO_SECRET not in daemon.log_text(since_start=False)
    assert TYPO_SECRET not in (daemon.state / "jobcompd.status").read_text()
    assert daemon.proc.poll() is None
