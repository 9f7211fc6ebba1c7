"""The parsing worker: the same results as parsing in the daemon, a worker that dies with the
daemon, and a daemon that goes on parsing by itself when its worker is killed."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobcompd import parsepool, record, segment
from tests.broker import wait_for
from tests.support import DATA, DaemonUnderTest, read_env_fixture

RECORDS = DATA / "records"


def items() -> list[parsepool.Item]:
    out: list[parsepool.Item] = []
    for path in sorted(RECORDS.glob("*.env")):
        out.append((path.read_bytes(), "env", "end"))
    out.append((b"JOBID=1\0not an entry\0", "env", "end"))  # malformed
    out.append((b'{"jobid": 5, "state": "COMPLETED"}', "json", "end"))
    return out


def test_the_worker_gives_what_the_main_loop_would():
    pool = parsepool.ParsePool()
    try:
        batch = items()
        submitted = pool.submit(batch, "cl", False, True)
        assert submitted is not None
        # An idle main loop waits in select() on these; the results must wake it.
        deadline = time.monotonic() + 60
        while not submitted.done():
            read, write = pool.wait_fds()
            assert read, "nothing to wait on while the batch is with the worker"
            select.select(read, write, [], max(0.0, deadline - time.monotonic()))
            assert time.monotonic() < deadline, "the worker's results never arrived"
        got = submitted.result()
    finally:
        pool.shutdown()
    expected = parsepool.parse_batch(batch, "cl", False, True)
    assert got == expected
    assert any(isinstance(r, str) for r in got) and any(isinstance(r, record.Record) for r in got)


def test_batches_bigger_than_the_pipe_come_back_whole_and_in_order():
    """The main loop never blocks on the pipes: what they cannot take yet waits for a later
    round. Many batches of a few MB each still arrive complete, each to its own submitter."""
    pool = parsepool.ParsePool()
    padded = [(data + b"PAD=" + b"x" * 30_000 + b"\0", fmt, hint)
              for data, fmt, hint in items() if fmt == "env" and b"not an entry" not in data]
    try:
        batches = []
        for i in range(8):
            batch = padded * 20
            batches.append((pool.submit(batch, f"cl{i}", False, False), batch, f"cl{i}"))
        for submitted, batch, cluster in batches:
            assert submitted is not None
            assert submitted.result(timeout=120) == parsepool.parse_batch(batch, cluster,
                                                                          False, False)
    finally:
        pool.shutdown()


def test_a_killed_worker_fails_its_batches_and_the_pool_parses_no_more():
    pool = parsepool.ParsePool()
    submitted = pool.submit(items(), "cl", False, False)
    assert submitted is not None
    pid = pool.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(parsepool.WorkerGone):
        submitted.result(timeout=60)
    assert not pool.usable
    assert pool.submit(items(), "cl", False, False) is None
    assert not _alive(pid)


def test_batches_still_with_a_stopped_worker_fail_instead_of_waiting_for_ever():
    pool = parsepool.ParsePool()
    submitted = pool.submit(items() * 50, "cl", False, False)
    assert submitted is not None
    pool.shutdown()
    assert submitted.done()
    with pytest.raises(parsepool.WorkerGone, match="stopped"):
        submitted.result()


_ORPHAN = textwrap.dedent("""
    import os, sys, time
    from jobcompd import parsepool
    pool = parsepool.ParsePool()
    pool.submit([(b"JOBID=1\\0", "env", "end")], "c", False, False).result(timeout=60)
    print(pool.pid, flush=True)
    time.sleep(600)
""")


def test_the_worker_dies_with_the_daemon_and_ignores_its_signals(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        # Ctrl-C in a terminal reaches the whole process group; the daemon handles it.
        os.kill(worker, signal.SIGINT)
        os.kill(worker, signal.SIGHUP)
        assert Path(f"/proc/{worker}").exists()
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not _alive(worker), 10, what="the worker to die with its parent")
    finally:
        if proc.poll() is None:
            proc.kill()


_KILLED_WHILE_STARTING = textwrap.dedent("""
    import os, signal
    from jobcompd import parsepool
    pool = parsepool.ParsePool()
    pool.submit([(b"JOBID=1\\0", "env", "end")], "c", False, False)
    print(pool.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # before the worker has set PR_SET_PDEATHSIG
""")


def test_a_worker_whose_daemon_died_while_it_started_ends_too():
    """SIGKILL of the daemon while its worker is still importing Python: the worker finds
    it has a new parent and ends, instead of waiting on its queue for ever."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WHILE_STARTING],
                            stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    try:
        wait_for(lambda: not _alive(worker), 30, what="the orphaned worker to end")
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _workers(pid: int) -> list[int]:
    """The daemon's parsing workers (not multiprocessing's resource tracker)."""
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    workers = []
    for kid in kids:
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(kid)
    return workers


def _payload(job_id: int) -> bytes:
    env = read_env_fixture(RECORDS / "end-4.env")
    env["JOBID"] = str(job_id)
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


@pytest.mark.broker
def test_a_killed_worker_loses_nothing(daemon: DaemonUnderTest):
    """A backlog big enough for the worker; the worker is killed mid-drain; the daemon says so
    and parses the rest itself."""
    count = 20_000
    seg = daemon.spool / "seg"
    seg.mkdir(parents=True)
    base = time.time_ns() - 10**9
    with open(seg / f"{base}.1.seg", "wb") as f:
        for i in range(count):
            f.write(segment.encode_frame(f"{base + i}.{i + 1}.end.env", _payload(i + 1)))
    daemon.start()
    assert daemon.proc is not None
    worker = wait_for(lambda: _workers(daemon.proc.pid), 30, interval=0.005,
                      what="the parsing worker")[0]
    os.kill(worker, signal.SIGKILL)
    daemon.wait_log("parse_worker_failed", timeout=60)
    got = daemon.consume(count, timeout=120, settle=0.5)
    assert sorted({int(r.key.split(b":")[1]) for r in got}) == list(range(1, count + 1))
    assert daemon.failed_files() == []
    assert daemon.stop() == 0
