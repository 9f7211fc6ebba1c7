"""The spool lock and the standby (Standby=yes): who holds the lock, what refuses a start, what
an operator sees of a daemon that waits. The takeovers under load are tests/faults/
test_controller_pair.py."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from jobcompd.service import mounts, standby
from jobcompd.service.spoollock import LOCK_NAME, SpoolLock, SpoolLockLost
from tests.broker import wait_for
from tests.support import DaemonUnderTest
from tests.test_notify import NotifySocket

_HOLD = """
import fcntl, os, sys
from pathlib import Path
from jobcompd.service.spoollock import SpoolLock
how, folder = sys.argv[1], Path(sys.argv[2])
if how == "spool":
    assert SpoolLock(folder).try_acquire()
else:
    fd = os.open(folder / ".jobcompd.lock", os.O_RDWR | os.O_CREAT, 0o644)
    if how == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:
        fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def _holder(folder: Path, how: str) -> subprocess.Popen:
    """Another process holding the lock file: as jobcompd does, or by flock or a classic
    POSIX lock alone (what another program or release might take)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, how, str(folder)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("how", ["spool", "flock", "posix"])
def test_a_held_lock_is_never_taken_and_is_free_once_its_holder_dies(tmp_path, how):
    holder = _holder(tmp_path, how)
    lock = SpoolLock(tmp_path)
    try:
        assert not lock.try_acquire()
        assert not lock.held
        if how == "spool":
            assert lock.holder() == f"{socket.gethostname()}:{holder.pid}"
        if how != "flock":
            assert lock.probe() is True
    finally:
        holder.kill()
        holder.wait()
    assert lock.try_acquire()
    assert lock.holder() == f"{socket.gethostname()}:{os.getpid()}"
    lock.verify()
    lock.release()
    assert lock.probe() is False


def test_closing_another_descriptor_of_the_lock_file_keeps_the_lock(tmp_path):
    """A classic POSIX lock would be dropped here: the OFD lock belongs to its open file."""
    lock = SpoolLock(tmp_path)
    assert lock.try_acquire()
    with open(tmp_path / LOCK_NAME, "rb") as f:
        f.read()
    assert SpoolLock(tmp_path).probe() is True
    assert not SpoolLock(tmp_path).try_acquire()
    lock.release()


def test_a_removed_lock_file_is_noticed_by_its_holder(tmp_path):
    lock = SpoolLock(tmp_path)
    assert lock.try_acquire()
    (tmp_path / LOCK_NAME).unlink()
    with pytest.raises(SpoolLockLost, match="removed or replaced"):
        lock.verify()
    lock.release()


# --------------------------------------------------------------------------- mounts

MOUNTINFO = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 0:50 / /srv/slurm\\040state rw,relatime shared:20 - nfs4 ctl:/export rw,vers=4.2,\
local_lock=none,addr=10.0.0.1
41 22 0:51 / /lustre rw - lustre mgs@tcp:/fs rw,localflock
42 22 0:52 / /gpfs/fs1 rw - gpfs fs1 rw
43 22 0:53 / /nfs3 rw - nfs srv:/x rw,vers=3,nolock
44 22 0:54 / /nfs4local rw - nfs4 srv:/y rw,vers=4.1,local_lock=posix
"""


def test_mountinfo_is_read_with_its_escapes_and_super_block_options(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    m = mounts.mount_of(Path("/srv/slurm state/jobcompd"), info)
    assert m is not None and (m.point, m.fstype, m.option("vers")) == (
        "/srv/slurm state", "nfs4", "4.2")
    assert m.network and mounts.local_lock_problem(m) is None
    assert mounts.mount_of(Path("/var/spool/jobcompd"), info).fstype == "ext4"


@pytest.mark.parametrize(("point", "says"), [
    ("/lustre", "localflock"), ("/nfs3", "nolock"), ("/nfs4local", "local_lock=posix"),
    ("/gpfs/fs1", None)])
def test_mounts_whose_locks_stay_on_this_host_are_named(tmp_path, point, says):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    m = mounts.mount_of(Path(point) / "spool", info)
    assert m is not None and m.network
    problem = mounts.local_lock_problem(m)
    assert (problem is None) if says is None else (says in problem and "remount" in problem)


def test_standby_refuses_a_node_local_lock_and_only_warns_without_it(monkeypatch, tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    monkeypatch.setattr(mounts, "mount_of", lambda p: mounts.parse_mountinfo(MOUNTINFO)[2])
    with pytest.raises(standby.SpoolNotShareable, match=r"localflock.*both would drain"):
        standby.check_mount(Path("/lustre/spool"), True)
    assert standby.check_mount(Path("/lustre/spool"), False).fstype == "lustre"


def test_an_owner_nfs_cannot_map_is_named_with_the_fix(tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    assert mounts.idmap_problem(tmp_path, new) is None
    record = new / "1795618456000000000.42.end.env"
    record.write_bytes(b"JOBID=42\0")
    os.chown(record, 65534, 65534)
    problem = mounts.idmap_problem(tmp_path, new)
    assert problem and "nobody" in problem and "idmapd.conf" in problem


# --------------------------------------------------------------------------- daemons


def _second(first: DaemonUnderTest, name: str, **extra: str) -> DaemonUnderTest:
    """Another daemon on ``first``'s spool, with a StateSaveLocation of its own."""
    other = DaemonUnderTest(root=first.root / name, bootstrap=first.bootstrap,
                            topic=first.topic, extra_conf=dict(extra))
    other.spool = first.spool
    other.write_config()
    return other


def test_a_second_daemon_on_the_spool_exits_75_naming_the_holder(daemon):
    daemon.start()
    second = _second(daemon, "other")
    res = subprocess.run([sys.executable, "-m", "jobcompd", "run", "-c", str(second.conf)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 75, res.stderr
    assert f"{socket.gethostname()}:{daemon.proc.pid}" in res.stderr
    assert "Standby=yes" in res.stderr
    assert (daemon.spool / LOCK_NAME).exists()


@pytest.fixture
def notify_socket():
    ns = NotifySocket()
    yield ns
    ns.close()


def test_a_standby_says_who_is_active_and_stops_on_sigterm(daemon, notify_socket):
    daemon.start()
    waiting = _second(daemon, "standby", Standby="yes", MetricsListen="127.0.0.1:0")
    waiting.start(wait_ready=False, extra_env={"NOTIFY_SOCKET": str(notify_socket.path)})
    try:
        holder = f"{socket.gethostname()}:{daemon.proc.pid}"
        ready = notify_socket.wait(lambda m: m.get("READY") == "1", what="READY=1")
        assert ready["STATUS"] == f"standby, waiting for the lock held by {holder}"
        line = waiting.wait_log("metrics_listening")[0]
        address = re.search(r"address=(\S+)", line).group(1)
        metrics = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read()
        assert b"jobcompd_active 0.0" in metrics
        assert b"jobcompd_standby_wait_seconds" in metrics
        status = _status_json(waiting)
        assert (status["state"], status["role"], status["lock_holder"]) == (
            "standby", "standby", holder)
        assert status["running"] is True
        waiting.signal(signal.SIGHUP)  # kept for the takeover, not a reason to stop
        wait_for(lambda: _status_json(waiting)["standby_waited_s"] >= 2, 20,
                 what="the standby's wait grows")
        assert waiting.proc.poll() is None
        assert "msg=took_over" not in waiting.log_text()
        assert _status_json(daemon).get("role") == "active"
    finally:
        waiting.signal(signal.SIGTERM)
        assert waiting.wait_exit(20) == 0
    assert waiting.log_lines("stopped")


def _status_json(dut: DaemonUnderTest) -> dict:
    res = subprocess.run([sys.executable, "-m", "jobcompd", "status", "--json", "-c",
                          str(dut.conf)], capture_output=True, text=True, timeout=30)
    return json.loads(res.stdout)


def test_the_shared_rescan_applies_to_standby_and_network_spools(tmp_path):
    class Cfg:
        standby = False

    local = mounts.Mount("/", "ext4", "/dev/vda1", ("rw",))
    nfs = mounts.Mount("/srv", "nfs4", "srv:/x", ("rw",))
    assert standby.shared_rescan(Cfg(), local) is None  # type: ignore[arg-type]
    assert standby.shared_rescan(Cfg(), nfs) == standby.SHARED_RESCAN_S  # type: ignore[arg-type]
    Cfg.standby = True
    assert standby.shared_rescan(Cfg(), local) == standby.SHARED_RESCAN_S  # type: ignore[arg-type]


def test_flock_alone_would_not_be_seen_by_an_ofd_lock(tmp_path):
    """Why the spool lock is taken both ways: on one host, flock and POSIX locks do not see
    each other, so each kind alone would let one of two jobcompd releases in."""
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert SpoolLock(tmp_path).probe() is False
        assert not SpoolLock(tmp_path).try_acquire()
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- drain-spool


def _drain(dut: DaemonUnderTest, path: Path, *more: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobcompd", "drain-spool", "-c", str(dut.conf),
                           str(path), *more], capture_output=True, text=True, timeout=60)


def test_drain_spool_moves_records_once_and_finishes_an_interrupted_run(tmp_path):
    here = DaemonUnderTest(root=tmp_path / "here", bootstrap="127.0.0.1:9")
    for sub in ("tmp", "new", "failed"):
        (here.spool / sub).mkdir(parents=True)
    dead = tmp_path / "dead-spool"
    for sub in ("tmp", "new", "failed"):
        (dead / sub).mkdir(parents=True)
    names = [f"17956184560000000{i:02d}.{40 + i}.end.env" for i in range(5)]
    for i, name in enumerate(names):
        (dead / "new" / name).write_bytes(f"JOBID={40 + i}\0".encode())
    # An earlier run copied the first record and died before removing it at the source.
    (here.spool / "new" / names[0]).write_bytes(b"JOBID=40\0")
    # Another record of this host already has the second one's name.
    (here.spool / "new" / names[1]).write_bytes(b"JOBID=41\0OTHER=1\0")
    (dead / "new" / "not-a-record").write_bytes(b"x")
    (dead / "failed" / "x").write_bytes(b"x")
    assert _drain(here, dead, "--dry-run").returncode == 65
    assert len(os.listdir(dead / "new")) == 6
    res = _drain(here, dead)
    assert res.returncode == 65, res.stderr
    assert "moved 4 records" in res.stdout and "1 were there already" in res.stdout
    assert "left in place: not-a-record" in res.stdout
    assert "dead letters" in res.stdout
    assert os.listdir(dead / "new") == ["not-a-record"]
    here_new = sorted(os.listdir(here.spool / "new"))
    assert len(here_new) == 6 and set(names) <= set(here_new)
    assert not os.listdir(here.spool / "tmp")
    contents = sorted((here.spool / "new" / n).read_bytes() for n in here_new)
    assert contents.count(b"JOBID=41\0") == 1 and contents.count(b"JOBID=40\0") == 1
    again = _drain(here, dead)
    assert "moved 0 records" in again.stdout
    assert _drain(here, here.spool).returncode == 64
    assert _drain(here, tmp_path / "nothing").returncode == 66


def test_check_names_node_local_locks_and_unmapped_owners(monkeypatch, tmp_path):
    from jobcompd.cli import preflight

    class Cfg:
        standby = True
        spool_dir = tmp_path

    (tmp_path / "new").mkdir()
    os.chown(tmp_path / "new", 65534, 65534)
    report = preflight.Report(account=None, unit=None)  # type: ignore[arg-type]
    monkeypatch.setattr(mounts, "mount_of", lambda p: mounts.parse_mountinfo(MOUNTINFO)[5])
    preflight._check_shared(report, Cfg())  # type: ignore[arg-type]
    found = {(f.level, f.subject): f.detail for f in report.findings}
    assert "local_lock=posix" in found[(preflight.FAIL, "SpoolDir")]
    assert report.code == 78
    assert "id mapping" in found[(preflight.WARN, "SpoolDir")]
