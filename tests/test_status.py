"""The status file and the liveness check behind ``jobcompd status``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobcompd import config
from jobcompd.service import statusfile as status
from tests.support import ROOT, DaemonUnderTest


def sample_status(**overrides) -> dict:
    args = dict(
        state="running", started_at=time.time() - 3600, backlog=12, in_flight=3,
        oldest_pending_ns=time.time_ns() - 45 * 10**9, broker_up=True,
        counters={"delivered": 100, "dead_lettered:malformed": 2, "retried": 1},
        config={"spool_dir": "/var/spool/jobcompd"}, last_error="broker down",
        last_error_at=time.time() - 60,
    )
    args.update(overrides)
    return status.build_status(**args)


def test_status_round_trips_with_the_facts_an_operator_needs(tmp_path):
    doc = sample_status()
    status.write_status(tmp_path, doc)
    got = status.read_status(tmp_path)
    assert got == json.loads(json.dumps(doc))
    assert got["pid"] == os.getpid()
    assert got["state"] == "running"
    assert 3590 < got["uptime_s"] < 3700
    assert 44 < got["oldest_pending_age_s"] < 60
    assert got["broker"] == "up"
    assert got["counters"]["delivered"] == 100
    assert got["last_error"]["message"] == "broker down"
    path = tmp_path / status.STATUS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == status.STATUS_MODE
    assert sorted(p.name for p in tmp_path.iterdir()) == [status.STATUS_FILE]


def test_nothing_pending_and_unknown_broker_are_explicit():
    doc = sample_status(oldest_pending_ns=None, broker_up=None, last_error=None)
    assert doc["oldest_pending_at"] is None and doc["oldest_pending_age_s"] is None
    assert doc["broker"] == "unknown"
    assert doc["last_error"] is None
    with pytest.raises(ValueError, match="'sleeping'"):
        sample_status(state="sleeping")


def test_readers_never_see_a_partial_file(tmp_path):
    status.write_status(tmp_path, sample_status())
    stop = threading.Event()
    errors: list[Exception] = []

    def reader():
        while not stop.is_set():
            try:
                status.read_status(tmp_path)
            except status.StatusError as e:
                errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            status.write_status(tmp_path, sample_status(backlog=i, config={"x": "y" * i}))
    finally:
        stop.set()
        t.join()
    assert errors == []


def test_missing_corrupt_and_foreign_files_are_told_apart(tmp_path):
    with pytest.raises(status.StatusMissing, match=str(tmp_path / status.STATUS_FILE)):
        status.read_status(tmp_path)
    path = tmp_path / status.STATUS_FILE
    path.write_text('{"pid": 1, "version": 1')
    with pytest.raises(status.StatusError, match="not valid JSON"):
        status.read_status(tmp_path)
    path.write_text('{"hello": 1}')
    with pytest.raises(status.StatusError, match="no pid"):
        status.read_status(tmp_path)
    path.write_text('{"pid": 1, "version": 99}')
    with pytest.raises(status.StatusError, match="version 99"):
        status.read_status(tmp_path)


def test_config_in_force_hides_secrets(tmp_path):
    dut = DaemonUnderTest(root=tmp_path, bootstrap="127.0.0.1:9092",
                          kafka={"security.protocol": "sasl_plaintext",
                                 "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "jobcompd",
                                 "sasl.password": "s3cret-Pa55"})
    cfg = config.load(dut.conf)
    summary = status.config_summary(cfg)
    assert summary["kafka"]["sasl.password"] == "***"
    assert summary["kafka"]["sasl.username"] == "jobcompd"
    assert summary["params"]["topic"] == dut.topic
    assert summary["spool_dir"] == str(dut.spool)
    status.write_status(tmp_path, sample_status(config=summary))
    assert "s3cret-Pa55" not in (tmp_path / status.STATUS_FILE).read_text()


# --------------------------------------------------------------------------- liveness


class LockHolder:
    """Another process holding the instance lock, as a running daemon does."""

    def __init__(self, state_dir: Path, argv0: str = "python") -> None:
        code = ("import sys; from pathlib import Path;"
                "from jobcompd.service.statefile import InstanceLock;"
                f"l = InstanceLock(Path({str(state_dir)!r})); l.acquire();"
                "print('locked', flush=True); sys.stdin.read()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, argv0], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout.readline() == b"locked\n"
        self.pid = self.proc.pid

    def release(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def test_a_lock_holder_is_running_and_its_death_is_noticed(tmp_path):
    assert status.liveness(tmp_path, 12345) == status.Liveness(
        False, None, f"no lock file {tmp_path / 'jobcompd.lock'}")
    holder = LockHolder(tmp_path)
    try:
        alive = status.liveness(tmp_path, None)
        assert alive.running is True
        assert alive.pid == holder.pid
    finally:
        holder.release()
    # The lock file stays behind; nobody holds it any more.
    assert (tmp_path / "jobcompd.lock").exists()
    alive = status.liveness(tmp_path, holder.pid)
    assert alive.running is False and alive.pid is None


def test_without_proc_locks_the_process_itself_is_checked(tmp_path):
    no_locks = tmp_path / "no-such-proc-locks"
    holder = LockHolder(tmp_path, argv0="jobcompd")
    try:
        alive = status.liveness(tmp_path, holder.pid, proc_locks=no_locks)
        assert (alive.running, alive.pid) == (True, holder.pid)
        # A pid now used by something else (pid reuse after a crash) is not a jobcompd.
        other = subprocess.Popen(["sleep", "60"])
        try:
            alive = status.liveness(tmp_path, other.pid, proc_locks=no_locks)
        finally:
            other.kill()
            other.wait()
        assert alive.running is False
        assert "not a jobcompd" in alive.how
    finally:
        holder.release()
    alive = status.liveness(tmp_path, holder.pid, proc_locks=no_locks)
    assert alive.running is False
