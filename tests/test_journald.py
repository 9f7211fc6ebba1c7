"""journald: structured fields, checked with journalctl against a real systemd-journald.

When no journald runs (a container, this sandbox), the module starts /lib/systemd/systemd-journald
by hand (as root: it needs /run/systemd/journal and /run/log/journal) and stops it after. A
journald that was already running is used as it is and never touched. With pytest-xdist several
workers share one journald: each holds a shared flock while it uses it, and the last one out
stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import structlog

from jobcompd import log as logmod
from tests.broker import wait_for
from tests.support import DATA, DaemonUnderTest, read_env_fixture

JOURNAL_DIR = Path("/run/systemd/journal")
JOURNAL_SOCKET = JOURNAL_DIR / "socket"
JOURNALD_CANDIDATES = (Path("/lib/systemd/systemd-journald"),
                       Path("/usr/lib/systemd/systemd-journald"))
_SHARED = Path(tempfile.gettempdir()) / "jobcompd-test-journald"


# --------------------------------------------------------------------------- the journald


def journald_answers() -> bool:
    """Is a journald listening on its native socket (not merely a stale socket file)?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(str(JOURNAL_SOCKET))
        except OSError:
            return False
    return True


def _journald_binary() -> Path | None:
    return next((p for p in JOURNALD_CANDIDATES if p.exists()), None)


def _ours(pid: int, binary: Path) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name == binary.name
    except OSError:
        return False


@contextlib.contextmanager
def _setup_lock():
    fd = os.open(f"{_SHARED}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def journald():
    """A journald for this module: the running one, or one started (and later stopped) here."""
    if shutil.which("journalctl") is None:
        pytest.skip("journalctl is not installed")
    binary = _journald_binary()
    pidfile = Path(f"{_SHARED}.pid")
    users = os.open(f"{_SHARED}.users", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with _setup_lock():
            if not journald_answers():
                if binary is None or os.geteuid() != 0:
                    pytest.skip("no journald runs, and starting one needs root and "
                                "systemd-journald")
                with contextlib.suppress(OSError):
                    JOURNAL_SOCKET.unlink()  # stale, from a journald that died
                out = open(f"{_SHARED}.log", "ab")  # noqa: SIM115
                proc = subprocess.Popen([str(binary)], stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=out, start_new_session=True)
                out.close()
                pidfile.write_text(f"{proc.pid}\n")
                wait_for(journald_answers, 30, what="systemd-journald to listen")
            fcntl.flock(users, fcntl.LOCK_SH)
        yield
    finally:
        with _setup_lock():
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)  # anyone else still using it?
                last = True
            except BlockingIOError:
                last = False
            if last and pidfile.exists() and binary is not None:
                pid = int(pidfile.read_text())
                if _ours(pid, binary):
                    os.kill(pid, signal.SIGTERM)
                    wait_for(lambda: not _ours(pid, binary), 30, what="journald to stop")
                pidfile.unlink()
            os.close(users)


def journal(*matches: str, timeout: float = 30, until=None) -> list[dict]:
    """``journalctl MATCH... -o json`` entries, polled until ``until(entries)`` holds."""

    def query():
        res = subprocess.run(["journalctl", "--no-pager", "-o", "json", *matches],
                             capture_output=True, text=True, timeout=30)
        entries = [json.loads(ln) for ln in res.stdout.splitlines() if ln.strip()]
        return entries if until is None or until(entries) else None

    return wait_for(query, timeout, interval=0.2, what=f"journal entries {' '.join(matches)}")


def with_msg(entries: list[dict], msg: str) -> list[dict]:
    return [e for e in entries if e.get("JOBCOMPD_MSG") == msg]


def unique_job_id() -> int:
    """Job ids from earlier runs stay in the journal: pick one nobody used."""
    return random.randrange(10**8, 2**32 - 1)


def end_env(job_id: int) -> dict[str, str]:
    env = read_env_fixture(DATA / "records" / "end-4.env")
    env["JOBID"] = str(job_id)
    return env


# --------------------------------------------------------------------------- field mapping alone


def test_events_become_journal_fields(monkeypatch):
    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr(logmod.journal, "sendv", lambda *lines: sent.append(lines))
    logmod.configure(debug=True, target="journal")
    try:
        structlog.get_logger("test").debug(
            "delivered", job_id=4242, job_event="job_end", file="x.end.env", topic="t1",
            partition=2, offset=17, attempts=1, kafka={"acks": "all"}, ok=True)
    finally:
        logmod.configure(target="stderr")
    (lines,) = sent
    fields = dict(line.split("=", 1) for line in lines)
    assert fields["MESSAGE"] == ("delivered job_id=4242 event=job_end file=x.end.env topic=t1 "
                                 "partition=2 offset=17 attempts=1 "
                                 'kafka="{\\"acks\\":\\"all\\"}" ok=true')
    assert fields["PRIORITY"] == "7"
    assert fields["SYSLOG_IDENTIFIER"] == "jobcompd"
    assert fields["JOBCOMPD_MSG"] == "delivered"
    assert fields["SLURM_JOB_ID"] == "4242"
    assert fields["JOBCOMPD_EVENT"] == "job_end"
    assert (fields["KAFKA_TOPIC"], fields["KAFKA_PARTITION"], fields["KAFKA_OFFSET"]) == (
        "t1", "2", "17")
    assert fields["FILE"] == "x.end.env"
    assert fields["ATTEMPTS"] == "1"
    assert json.loads(fields["KAFKA"]) == {"acks": "all"}
    assert fields["OK"] == "true"
    assert fields["CODE_FILE"] == __file__
    assert fields["CODE_FUNC"] == "test_events_become_journal_fields"
    assert int(fields["CODE_LINE"]) > 0


@pytest.mark.parametrize(("key", "field"), [
    ("reason", "REASON"), ("retry-in", "RETRY_IN"), ("_private", "JOBCOMPD_PRIVATE"),
    ("2nd", "JOBCOMPD_2ND"), ("message", "JOBCOMPD_MESSAGE"), ("priority", "JOBCOMPD_PRIORITY"),
    ("x" * 80, "X" * 64),
])
def test_field_names_are_valid_journal_names_that_never_override_ours(key, field):
    assert logmod.journal_field_name(key) == field


def test_levels_map_to_syslog_priorities(monkeypatch):
    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr(logmod.journal, "sendv", lambda *lines: sent.append(lines))
    logmod.configure(debug=True, target="journal")
    try:
        log = structlog.get_logger("test")
        log.debug("a")
        log.info("b")
        log.warning("c")
        log.error("d")
        log.critical("e")
        logmod.KafkaLogAdapter().log(40, "%s [%s] %s", "FAIL", "rdkafka#producer-1",
                                     "Connect to ipv4#127.0.0.1:9 failed")
    finally:
        logmod.configure(target="stderr")
    prios = [dict(ln.split("=", 1) for ln in lines)["PRIORITY"] for lines in sent]
    assert prios == ["7", "6", "4", "3", "2", "3"]
    kafka = dict(ln.split("=", 1) for ln in sent[-1])
    assert kafka["KAFKA_FACILITY"] == "FAIL"
    assert kafka["MESSAGE"] == "librdkafka FAIL: Connect to ipv4#127.0.0.1:9 failed"


def test_without_journald_lines_fall_back_to_stderr(monkeypatch):
    def refuse(*_lines):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(logmod.journal, "sendv", refuse)
    stream = io.StringIO()
    logmod.configure(target="journal", stream=stream)
    try:
        structlog.get_logger("test").error("dead_lettered", job_id=7, reason="malformed")
        structlog.get_logger("test").info("started")
    finally:
        logmod.configure(target="stderr")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("level=error msg=journal_unreachable")
    assert lines[1] == "level=error msg=dead_lettered job_id=7 reason=malformed"
    assert lines[2] == "level=info msg=started"


def test_stderr_target_is_unchanged():
    stream = io.StringIO()
    logmod.configure(target="stderr", stream=stream)
    structlog.get_logger("test").info("started", job_id=1, job_event="job_end")
    assert " level=info msg=started job_id=1 event=job_end" in stream.getvalue()
    with pytest.raises(ValueError, match="'syslog'"):
        logmod.configure(target="syslog")


# --------------------------------------------------------------------------- the real journald


@pytest.mark.broker
def test_one_jobs_journey_is_one_journalctl_away(daemon: DaemonUnderTest, journald):
    """LogTarget=journal with DebugFlags=JobComp: intake and delivery, with Kafka's answer."""
    daemon.extra_conf.update(LogTarget="journal", DebugFlags="JobComp")
    daemon.write_config()
    proc = daemon.start(wait_ready=False)
    pid = f"_PID={proc.pid}"
    journal(pid, "JOBCOMPD_MSG=started", until=bool)
    job_id = unique_job_id()
    daemon.hook(end_env(job_id))
    (received,) = daemon.consume(1)

    entries = journal(f"SLURM_JOB_ID={job_id}", until=lambda es: with_msg(es, "delivered"))
    assert {e["_PID"] for e in entries} == {str(proc.pid)}
    for msg in ("ingested", "produced", "delivered"):
        assert with_msg(entries, msg), f"no {msg} entry: {[e['MESSAGE'] for e in entries]}"
    (delivered,) = with_msg(entries, "delivered")
    assert delivered["SYSLOG_IDENTIFIER"] == "jobcompd"
    assert delivered["PRIORITY"] == "7"  # debug: per-record events need DebugFlags=JobComp
    assert delivered["JOBCOMPD_EVENT"] == "job_end"
    assert delivered["KAFKA_TOPIC"] == received.topic == daemon.topic
    assert delivered["KAFKA_PARTITION"] == str(received.partition)
    assert delivered["KAFKA_OFFSET"] == str(received.offset)
    assert delivered["MESSAGE"].startswith(f"delivered job_id={job_id} event=job_end ")
    assert delivered["CODE_FILE"].endswith("service/delivery.py")
    assert delivered["CODE_FUNC"] == "_delivered"
    assert delivered["FILE"].split(".")[1] == str(job_id)
    # Nothing went to stderr: the journal has it all.
    assert "msg=delivered" not in daemon.log_text()


@pytest.mark.broker
def test_an_error_shows_with_priority_3(daemon: DaemonUnderTest, journald):
    daemon.extra_conf["LogTarget"] = "journal"
    daemon.write_config()
    proc = daemon.start(wait_ready=False)
    journal(f"_PID={proc.pid}", "JOBCOMPD_MSG=started", until=bool)
    job_id = unique_job_id()
    (daemon.spool / "new" / f"{time.time_ns():019d}.{job_id}.end.json").write_bytes(b"{oops")
    (entry,) = journal(f"SLURM_JOB_ID={job_id}", "-p", "err", until=bool)
    assert entry["JOBCOMPD_MSG"] == "dead_lettered"
    assert entry["PRIORITY"] == "3"
    assert entry["REASON"] == "malformed"
    assert "not valid JSON" in entry["ERROR"] or "JSON" in entry["ERROR"]
    assert entry["MESSAGE"].startswith(f"dead_lettered job_id={job_id} ")


@pytest.mark.broker
def test_librdkafka_lines_carry_their_facility(daemon: DaemonUnderTest, journald):
    daemon.extra_conf.update(LogTarget="journal", DebugFlags="JobComp")
    daemon.kafka["debug"] = "broker"
    daemon.write_config()
    proc = daemon.start(wait_ready=False)
    entries = journal(f"_PID={proc.pid}", "JOBCOMPD_MSG=librdkafka",
                      until=lambda es: any(e.get("KAFKA_FACILITY") for e in es))
    entry = next(e for e in entries if e.get("KAFKA_FACILITY"))
    assert entry["MESSAGE"].startswith(f"librdkafka {entry['KAFKA_FACILITY']}: ")
    assert entry["KAFKA_CLIENT"].startswith("rdkafka#producer-")
    assert entry["SYSLOG_IDENTIFIER"] == "jobcompd"


@pytest.mark.broker
def test_auto_target_follows_journal_stream(daemon: DaemonUnderTest, journald):
    """LogTarget=auto (the default): journald when JOURNAL_STREAM names our stderr, as systemd
    sets it for StandardError=journal; stderr when it names something else."""
    daemon.log_path.touch()
    st = daemon.log_path.stat()
    proc = daemon.start(wait_ready=False,
                        extra_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    journal(f"_PID={proc.pid}", "JOBCOMPD_MSG=started", until=bool)
    assert "msg=started" not in daemon.log_text()
    daemon.stop()

    daemon.start(extra_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    assert daemon.log_lines("started")  # one target for everything: stderr
