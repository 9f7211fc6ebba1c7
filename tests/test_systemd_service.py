"""The shipped unit under a real systemd, installed by ``make install`` and run as User=slurm.

One container per module (tests/nspawn.py: the host's systemd as PID 1 over a throw-away
overlay of /) gets jobcompd the way an operator installs it: ``make wheelhouse``, then ``make
install WHEELHOUSE=...`` in a network namespace of its own (so with no network), from a copy
of this tree, the Slurm user created when missing. The daemon talks to the session's Tansu
broker on the host's loopback (the container shares the host's network), records come through
the installed hook run as slurm, and every check reads what systemd, journald and Kafka
report. The one change to the shipped unit is a shorter
watchdog (a drop-in), so that a frozen loop is caught in seconds rather than a minute.

A host that cannot boot the container fails these tests with the reason; they never skip.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.broker import Tansu, free_port, wait_for
from tests.nspawn import Container, ContainerError
from tests.support import DATA, Received, consume, read_env_fixture

pytestmark = [pytest.mark.systemd, pytest.mark.broker]

ROOT = Path(__file__).resolve().parent.parent
SRC_INSIDE = "/var/tmp/jobcompd-src"
WHEELS_INSIDE = "/var/tmp/jobcompd-wheels"
HOOK = "/usr/local/bin/jobcompd-spool"
SPOOL = "/var/spool/jobcompd"
CLUSTER = "box"
WATCHDOG_S = 5
END_ENV = read_env_fixture(DATA / "records" / "end-4.env")
ES_BODY = DATA / "records" / "elasticsearch" / "es-0001-job36.json"

SETUP = f"""set -e
getent passwd slurm >/dev/null || useradd --system --user-group --no-create-home \
    --shell /usr/sbin/nologin slurm
mkdir -p {SRC_INSIDE}
tar -C /jobcompd-src --exclude=./.venv --exclude=./.git --exclude=./.hypothesis \
    --exclude=./.run --exclude=./.build --exclude=./build -cf - . | tar -C {SRC_INSIDE} -xf -
make -C {SRC_INSIDE} wheelhouse WHEELHOUSE={WHEELS_INSIDE}
unshare --net make -C {SRC_INSIDE} install WHEELHOUSE={WHEELS_INSIDE}    # no network at all
mkdir -p /etc/systemd/system/jobcompd.service.d
printf '[Service]\\nWatchdogSec={WATCHDOG_S}s\\n' \
    > /etc/systemd/system/jobcompd.service.d/50-test.conf
systemctl daemon-reload
"""


@dataclass
class Box:
    """The container with jobcompd installed, and what the tests do to it."""

    c: Container
    bootstrap: str

    def configure(self, topic: str, *, params: str = "", bootstrap: str | None = None,
                  **keys: str) -> None:
        """Both configuration files, in place (install made them 0640 root:slurm)."""
        jcp = f"topic={topic}" + (f",{params}" if params else "")
        conf = {"ClusterName": CLUSTER, "JobCompLoc": "rdkafka.conf", "JobCompParams": jcp,
                **keys}
        self.c.write("/etc/jobcompd/jobcompd.conf",
                     "".join(f"{k}={v}\n" for k, v in conf.items()))
        self.c.write("/etc/jobcompd/rdkafka.conf",
                     f"bootstrap.servers={bootstrap or self.bootstrap}\n")

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.c.run("systemctl " + shlex.join(args), check=check)

    def show(self, *props: str) -> dict[str, str]:
        """The unit's properties, as systemd reports them."""
        out = self.systemctl("show", "-p", ",".join(props), "jobcompd").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def restart(self, topic: str, **kw: str) -> str:
        """A fresh start with this configuration; the main PID."""
        self.configure(topic, **kw)
        self.systemctl("reset-failed", "jobcompd", check=False)
        self.systemctl("restart", "jobcompd")
        state = self.show("ActiveState", "MainPID")
        assert state["ActiveState"] == "active", self.journal_text()
        return state["MainPID"]

    def hook(self, *job_ids: int) -> None:
        """Records through the installed hook, run as slurm with only Slurm's variables."""
        lines = []
        for job_id in job_ids:
            env = {**END_ENV, "JOBID": str(job_id), "JOBNAME": f"job-{job_id}"}
            lines.append("env -i " + shlex.join(f"{k}={v}" for k, v in env.items())
                         + f" setpriv --reuid=slurm --regid=slurm --init-groups {HOOK}")
        self.c.run("set -e\n" + "\n".join(lines))

    def spool(self, sub: str = "new") -> list[str]:
        return self.c.run(f"ls {SPOOL}/{sub}").stdout.split()

    def journal(self, *matches: str) -> list[dict]:
        """journalctl's entries (all fields) for these matches."""
        out = self.c.run("journalctl --no-pager -o json " + shlex.join(matches)).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def events(self, msg: str) -> int:
        """How many ``msg`` events the daemon has logged since the container booted."""
        return len(self.journal("-u", "jobcompd", f"JOBCOMPD_MSG={msg}"))

    def journal_text(self) -> str:
        return self.c.run("journalctl --no-pager -u jobcompd -n 40", check=False).stdout


def job_ids(count: int) -> list[int]:
    """Ids no other test of the session uses (the journal keeps them all)."""
    first = int(uuid.uuid4().int % 10**8) + 10**8
    return list(range(first, first + count))


def keys_of(messages: list[Received]) -> set[str]:
    return {m.key.decode() for m in messages if m.key is not None}


def expect_keys(ids: list[int]) -> set[str]:
    return {f"{CLUSTER}:{i}" for i in ids}


def new_topic() -> str:
    return f"sd-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, broker: Tansu) -> Iterator[Box]:
    """The container, booted once for the module, with jobcompd installed by make install."""
    work = tmp_path_factory.mktemp("nspawn")
    container = Container(work=work, binds=[(ROOT, "/jobcompd-src")])
    try:
        container.boot()
    except ContainerError as e:
        pytest.fail(f"cannot boot systemd in a container: {e}", pytrace=False)
    try:
        container.run(SETUP, timeout=600)
        yield Box(container, broker.bootstrap)
    finally:
        journal = container.run("journalctl -b --no-pager", check=False, timeout=30)
        (work / "journal.txt").write_text(journal.stdout)
        container.shutdown()


# ------------------------------------------------------------------------------------------
# Install


def test_install_puts_a_venv_of_the_system_python_and_the_compiled_hook_in_place(box: Box):
    out = box.c.run(f"""readlink /opt/jobcompd; readlink /usr/local/bin/jobcompd
readlink /usr/local/bin/jobcompd-spool; sed -n 's/^home = //p' /opt/jobcompd/pyvenv.cfg
head -c 4 {HOOK} | od -An -c | tr -d ' '
stat -c '%a %U:%G %n' /etc/jobcompd /etc/jobcompd/jobcompd.conf /etc/jobcompd/rdkafka.conf
systemctl show -p User,FragmentPath jobcompd""").stdout.splitlines()
    target, cmd_link, hook_link, home, magic, *rest = out
    assert target.startswith("/opt/jobcompd-0.")
    assert (cmd_link, hook_link) == ("/opt/jobcompd/bin/jobcompd",
                                     "/opt/jobcompd/bin/jobcompd-spool")
    assert home == "/usr/bin"  # the distribution's Python, which the service user can read
    assert magic == "177ELF"  # the compiled hook is the default
    assert rest[:3] == ["750 root:slurm /etc/jobcompd",
                        "640 root:slurm /etc/jobcompd/jobcompd.conf",
                        "640 root:slurm /etc/jobcompd/rdkafka.conf"]
    assert "User=slurm" in rest
    assert "FragmentPath=/usr/local/lib/systemd/system/jobcompd.service" in rest


def test_install_names_a_missing_slurm_user_and_changes_nothing(box: Box):
    before = box.c.run("readlink /opt/jobcompd").stdout
    res = box.c.run(f"make -C {SRC_INSIDE} install WHEELHOUSE={WHEELS_INSIDE} "
                    "SLURM_USER=nosuchuser", check=False)
    assert res.returncode != 0
    assert "SLURM_USER=nosuchuser does not exist" in res.stderr, res.stderr
    assert box.c.run("readlink /opt/jobcompd").stdout == before


def test_destdir_stages_a_relocated_venv_without_a_user_check(box: Box):
    """Staged for a package, here with no compiler: the shell hook is the hook."""
    stage = "/var/tmp/stage"
    box.c.run(f"make -C {SRC_INSIDE} install DESTDIR={stage} WHEELHOUSE={WHEELS_INSIDE} "
              "SLURM_USER=nosuchuser CC=false", timeout=300)
    link = box.c.run(f"readlink {stage}/opt/jobcompd").stdout.strip()
    assert link.startswith("/opt/jobcompd-0.")
    out = box.c.run(f"""cd {stage}{link}; head -1 bin/jobcompd; grep -rlF {stage} . | wc -l
        head -1 bin/jobcompd-spool; cmp bin/jobcompd-spool bin/jobcompd-spool.sh && echo same
        grep -h '^User=' {stage}/usr/local/lib/systemd/system/jobcompd.service.d/*""")
    shebang, leftovers, hook, same, user = out.stdout.splitlines()
    assert shebang == f"#!{link}/bin/python"  # the final path, not the staging one
    assert leftovers == "0", "files name the staging folder"
    assert (hook, same) == ("#!/bin/sh", "same")
    assert user == "User=nosuchuser"


# ------------------------------------------------------------------------------------------
# The service


def test_start_returns_once_ready_and_status_shows_the_status_line(box: Box):
    pid = box.restart(new_topic())
    # Type=notify: `systemctl start` returned only after READY=1, so the unit is active at once
    # (it would be "activating" before) and the daemon logged "started" before systemd did.
    state = box.show("ActiveState", "SubState", "StatusText", "Type")
    assert (state["ActiveState"], state["SubState"], state["Type"]) == ("active", "running",
                                                                        "notify")
    assert re.match(r"backlog \d+, in flight \d+, delivered \d+, failed \d+, broker ",
                    state["StatusText"]), state["StatusText"]
    status = box.systemctl("status", "--no-pager", "jobcompd", check=False).stdout
    assert 'Status: "backlog ' in status, status
    started = box.journal(f"_PID={pid}", "JOBCOMPD_MSG=started")
    ready = [e for e in box.journal("-u", "jobcompd", "_PID=1")
             if e["MESSAGE"].startswith("Started jobcompd.service")]
    assert started and ready
    assert int(started[-1]["__MONOTONIC_TIMESTAMP"]) <= int(ready[-1]["__MONOTONIC_TIMESTAMP"])
    # systemd has nothing to say about the installed folders (their modes match the unit's).
    assert not [e["MESSAGE"] for e in box.journal("-u", "jobcompd", "-p", "warning")
                if "Directory" in e["MESSAGE"]]
    owner = box.c.run(f"stat -c %U /proc/{pid}; readlink /proc/{pid}/exe").stdout.split()
    assert owner[0] == "slurm"
    assert owner[1].startswith("/usr/bin/python3")


def test_hook_records_written_as_the_slurm_user_are_delivered(box: Box):
    topic = new_topic()
    box.restart(topic)
    ids = job_ids(5)
    box.hook(*ids)
    got = consume(box.bootstrap, topic, len(ids), timeout=30)
    assert keys_of(got) == expect_keys(ids)
    wait_for(lambda: box.spool() == [], 10, what="the spool to empty")


def test_reload_applies_a_changed_topic_and_refuses_a_broken_config(box: Box):
    first, second = new_topic(), new_topic()
    pid = box.restart(first)
    reloaded = box.events("reloaded")
    box.configure(second)
    box.systemctl("reload", "jobcompd")
    wait_for(lambda: box.events("reloaded") > reloaded, 15, what="the reload")
    (a,) = job_ids(1)
    box.hook(a)
    assert keys_of(consume(box.bootstrap, second, 1)) == expect_keys([a])

    failed = box.events("reload_failed")
    box.c.write("/etc/jobcompd/jobcompd.conf", "ClusterName=box\nNoSuchKey=1\n")
    box.systemctl("reload", "jobcompd")
    wait_for(lambda: box.events("reload_failed") > failed, 15, what="the refused reload")
    state = box.show("ActiveState", "MainPID")
    assert (state["ActiveState"], state["MainPID"]) == ("active", pid)
    (b,) = job_ids(1)
    box.hook(b)
    assert expect_keys([b]) <= keys_of(consume(box.bootstrap, second, 2))


def test_a_frozen_main_loop_is_killed_by_the_watchdog_and_restarted(box: Box):
    topic = new_topic()
    pid = box.restart(topic)
    restarts = int(box.show("NRestarts")["NRestarts"])
    box.c.run(f"kill -STOP {pid}")
    ids = job_ids(3)
    box.hook(*ids)  # they wait in the spool for the next daemon

    def restarted() -> bool:
        s = box.show("NRestarts", "MainPID", "ActiveState")
        return (int(s["NRestarts"]) > restarts and s["MainPID"] not in ("0", pid)
                and s["ActiveState"] == "active")
    wait_for(restarted, WATCHDOG_S + 30, interval=0.2, what="the watchdog's restart")
    timeouts = [e for e in box.journal("-u", "jobcompd", "_PID=1")
                if "Watchdog timeout" in e["MESSAGE"]]
    assert timeouts, box.journal_text()
    assert keys_of(consume(box.bootstrap, topic, len(ids))) == expect_keys(ids)


def test_a_poison_record_under_the_watchdog_is_dead_lettered_and_nothing_restarts(box: Box):
    """100,000 top-level keys in 500 kB, written as the Slurm user: refused before any parse
    as too_many_keys, within the watchdog's time, while the records around it go on."""
    topic = new_topic()
    pid = box.restart(topic)
    restarts = box.show("NRestarts")["NRestarts"]
    before, after = job_ids(1), job_ids(1)
    box.hook(*before)
    poison = "1000000000000000001.99.end.json"
    body = '{"jobid":99,"script":"x"' + ',"":1' * 100_000 + "}"
    box.c.run(f"setpriv --reuid=slurm --regid=slurm --init-groups sh -c "
              f"'umask 077; cat > {SPOOL}/tmp/{poison} && mv {SPOOL}/tmp/{poison} "
              f"{SPOOL}/new/{poison}'", input=body)
    box.hook(*after)
    assert keys_of(consume(box.bootstrap, topic, 2)) == expect_keys(before + after)
    wait_for(lambda: poison in box.spool("failed"), 30, what="the poison record in failed/")
    reason = json.loads(box.c.run(f"cat {SPOOL}/failed/{poison}.reason").stdout)
    assert reason["reason"] == "too_many_keys"
    state = box.show("ActiveState", "MainPID", "NRestarts")
    assert state == {"ActiveState": "active", "MainPID": pid, "NRestarts": restarts}


def test_exit_78_is_not_restarted(box: Box):
    box.restart(new_topic())
    restarts = box.show("NRestarts")["NRestarts"]
    box.c.write("/etc/jobcompd/jobcompd.conf", "ClusterName=box\nNoSuchKey=1\n")
    res = box.systemctl("restart", "jobcompd", check=False)
    assert res.returncode != 0
    state = box.show("ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
    # "failed", not "auto-restart": no restart is scheduled.
    assert state == {"ActiveState": "failed", "SubState": "failed", "Result": "exit-code",
                     "ExecMainStatus": "78", "NRestarts": restarts}


def test_stop_with_the_broker_unreachable_keeps_the_records_in_the_spool(box: Box):
    topic = new_topic()
    with socket.socket() as hole:  # accepts connections (the kernel does) and never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        box.restart(topic, bootstrap=f"127.0.0.1:{hole.getsockname()[1]}")
        ids = job_ids(3)
        box.hook(*ids)
        wait_for(lambda: "in flight 3" in box.show("StatusText")["StatusText"], 15,
                 what="the records in flight")
        limit = float(box.show("TimeoutStopUSec")["TimeoutStopUSec"].removesuffix("s"))
        began = time.monotonic()
        box.systemctl("stop", "jobcompd")
        took = time.monotonic() - began
    state = box.show("ActiveState", "Result")
    assert state == {"ActiveState": "inactive", "Result": "success"}
    assert took < limit, f"stop took {took:.1f} s"
    assert {int(n.split(".")[1]) for n in box.spool()} == set(ids)
    box.restart(topic)  # the next start sends them
    assert keys_of(consume(box.bootstrap, topic, len(ids))) == expect_keys(ids)


def test_inside_the_sandbox_http_metrics_inotify_and_the_journal_work(box: Box):
    topic = new_topic()
    metrics_port, http_port = free_port(), free_port()
    pid = box.restart(topic, params="rescan_interval=86400", DebugFlags="JobComp",
                      MetricsListen=f"127.0.0.1:{metrics_port}",
                      HttpListen=f"127.0.0.1:{http_port}")
    (job,) = job_ids(1)
    box.hook(job)  # only inotify can see it: the next rescan is a day away
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/slurm/jobcomp",
                                 data=ES_BODY.read_bytes(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
    got = consume(box.bootstrap, topic, 2, timeout=15)
    assert f"{CLUSTER}:{job}" in keys_of(got) and len(got) == 2
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert "jobcompd_records_delivered" in metrics and "process_cpu_seconds_total" in metrics

    def journey() -> set[str]:
        return {e["JOBCOMPD_MSG"] for e in box.journal("-u", "jobcompd",
                                                        f"SLURM_JOB_ID={job}")}
    assert wait_for(lambda: {"ingested", "produced", "delivered"} <= journey(), 10,
                    what=f"job {job}'s journey in the journal")
    assert not [e for e in box.journal(f"_PID={pid}", "-p", "warning")
                if "inotify" in e["MESSAGE"].lower()]


def test_idle_connections_to_the_endpoints_leave_the_unit_running(box: Box):
    """The unit's LimitNOFILE= is in force, and 300 idle connections to each endpoint (once
    enough to crash the daemon at systemd's default limit) take a few descriptors: the daemon
    still answers a scrape and a POST, and systemd never sees it fail."""
    metrics_port, http_port = free_port(), free_port()
    pid = box.restart(new_topic(), MetricsListen=f"127.0.0.1:{metrics_port}",
                      HttpListen=f"127.0.0.1:{http_port}")
    limits = box.c.run(f"grep 'Max open files' /proc/{pid}/limits").stdout.split()
    assert limits[3:5] == ["8192", "8192"], limits
    fds = int(box.c.run(f"ls /proc/{pid}/fd | wc -l").stdout)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10)
            for port in (metrics_port, http_port) for _ in range(300)]
    try:
        held = int(box.c.run(f"ls /proc/{pid}/fd | wc -l").stdout)
        assert held <= fds + 64, f"{fds} -> {held} descriptors"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10):
            pass
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/slurm/jobcomp",
                                     data=ES_BODY.read_bytes(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201
    finally:
        for s in idle:
            s.close()
    state = box.show("ActiveState", "MainPID", "NRestarts")
    assert (state["ActiveState"], state["MainPID"]) == ("active", pid), box.journal_text()


def test_systemd_analyze_security_rates_the_running_unit_ok(box: Box):
    box.restart(new_topic())
    out = box.c.run("systemd-analyze security --no-pager jobcompd").stdout
    overall = out.strip().splitlines()[-1]
    figure = float(overall.split(":")[1].split()[0])
    assert figure <= 2.0, out


LOAD = r"""
import json, os, sys, time
env, first, count, rate = json.loads(sys.argv[1]), *map(int, sys.argv[2:5])
start = time.monotonic()
for i in range(count):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    env["JOBID"] = str(first + i)
    name = f"{time.time_ns():019d}.{first + i}.end.env"
    with open(f"/var/spool/jobcompd/tmp/{name}", "xb") as f:
        f.write(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
    os.rename(f"/var/spool/jobcompd/tmp/{name}", f"/var/spool/jobcompd/new/{name}")
print(f"{count / (time.monotonic() - start):.0f}")
"""


def test_journald_keeps_every_line_of_500_records_per_second_with_debug(box: Box):
    """Slurm's ceiling is about 500 job ends per second, and DebugFlags=JobComp logs three
    lines for each: 37,500 lines in 25 s. Past journald's default limit here (10,000 per 30 s,
    times 3 for the container's free journal space) a quarter of them would be dropped; the
    unit's LogRateLimitBurst= keeps them all."""
    topic = new_topic()
    box.restart(topic, DebugFlags="JobComp")
    rate, seconds = 500, 25
    ids = job_ids(rate * seconds)
    achieved = box.c.run("setpriv --reuid=slurm --regid=slurm --init-groups /usr/bin/python3 -c "
                         + shlex.join([LOAD, json.dumps(END_ENV), str(ids[0]), str(len(ids)),
                                       str(rate)]), timeout=120).stdout
    assert int(achieved) >= rate * 0.9, f"the load ran at {achieved} records/s"
    assert len(keys_of(consume(box.bootstrap, topic, len(ids), timeout=120))) == len(ids)

    def delivered_lines() -> int:
        return int(box.c.run("journalctl --no-pager -o cat -u jobcompd JOBCOMPD_MSG=delivered "
                             f"KAFKA_TOPIC={topic} | wc -l").stdout)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: delivered_lines() >= len(ids), 30, interval=0.5,
                 what="every delivered line in the journal")
    assert delivered_lines() == len(ids)


# ------------------------------------------------------------------------------------------
# Upgrade and removal


def install(box: Box) -> str:
    """make install from the wheelhouse, as the setup did; its output."""
    return box.c.run(f"make -C {SRC_INSIDE} install WHEELHOUSE={WHEELS_INSIDE}",
                     timeout=300).stdout


def test_install_again_builds_beside_the_running_version_and_restarts_it(box: Box):
    topic = new_topic()
    pid = box.restart(topic)
    old = box.c.run("readlink /opt/jobcompd; touch /var/tmp/before-upgrade").stdout.strip()
    conf = box.c.run("cat /etc/jobcompd/jobcompd.conf").stdout
    out = install(box)
    new = box.c.run("readlink /opt/jobcompd").stdout.strip()
    assert new != old
    # The running version's folder was not written to; it stays for going back.
    assert box.c.run(f"find {old} -newer /var/tmp/before-upgrade | wc -l").stdout.strip() == "0"
    assert "restarting jobcompd.service on the new version" in out
    state = box.show("ActiveState", "MainPID")
    assert state["ActiveState"] == "active" and state["MainPID"] != pid
    cmdline = box.c.run(f"tr '\\0' ' ' < /proc/{state['MainPID']}/cmdline").stdout
    assert cmdline.startswith(f"{new}/bin/python ")
    assert box.c.run("cat /etc/jobcompd/jobcompd.conf").stdout == conf
    (job,) = job_ids(1)
    box.hook(job)
    assert keys_of(consume(box.bootstrap, topic, 1)) == expect_keys([job])


def test_uninstall_removes_what_install_put_down_and_keeps_configuration_and_spool(box: Box):
    topic = new_topic()
    box.restart(topic)
    box.systemctl("stop", "jobcompd")
    (job,) = job_ids(1)
    box.hook(job)  # waits in the spool
    conf = box.c.run("cat /etc/jobcompd/jobcompd.conf /etc/jobcompd/rdkafka.conf").stdout
    try:
        box.c.run(f"make -C {SRC_INSIDE} uninstall")
        left = box.c.run("ls -d /opt/jobcompd* /usr/local/bin/jobcompd* /usr/local/lib/systemd/"
                         "system/jobcompd.service* /usr/local/lib/tmpfiles.d/jobcompd.conf",
                         check=False).stdout
        assert left == ""
        assert box.show("LoadState") == {"LoadState": "not-found"}
        assert box.c.run("cat /etc/jobcompd/jobcompd.conf /etc/jobcompd/rdkafka.conf"
                         ).stdout == conf
        assert [n.split(".")[1] for n in box.spool()] == [str(job)]
        box.c.run("test -d /var/lib/jobcompd")
    finally:
        install(box)
    box.restart(topic)  # the record left in the spool goes out
    assert keys_of(consume(box.bootstrap, topic, 1)) == expect_keys([job])
