"""A real slurmctld pair: ``scontrol takeover`` while jobs run, one shared jobcompd spool.

Two slurmctld on loopback (tests/slurm/pair.py: ``SlurmctldHost=ctl1(127.0.0.1)``, then
``ctl2(127.0.0.2)``, one slurm.conf, one StateSaveLocation, one slurmd), Slurm 22.05 as
``slurm22_cluster()`` gives it. Both run jobcomp/script with one hook that writes into one
shared spool; two jobcompd (``Standby=yes``, host names ctl1 and ctl2) share that spool, the
first active, the second its standby. The run:

1. under ctl1: short jobs end (their records are sent by ctl1's jobcompd); two jobs start that
   run until the test lets them end, and a held job waits;
2. ``scontrol takeover``: ctl2 takes control, ctl1's slurmctld exits;
3. under ctl2: the two running jobs end, and ctl1's jobcompd (its host still up) sends the
   records ctl2's hook wrote;
4. ctl1's jobcompd hangs (SIGSTOP): the held job is released and ends, new jobs end, their
   records wait in the spool and the standby does not take the held lock; then ctl1's
   jobcompd is fenced (SIGKILL) and ctl2's takes the spool over with that backlog.

Then every job's end record is in Kafka, once (a duplicate only with the same key, value and
``jobcompd-id``), with the state and exit code scontrol shows; nothing is left in the spool's
new/ or failed/; and the hook log written by the wrapper (the host name of its UTS namespace)
shows that ctl1's slurmctld ran the hook of the jobs of step 1 and ctl2's all others, once each.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.broker import wait_for
from tests.slurm import chroot
from tests.slurm.chroot_cluster import how_it_runs, slurm22_cluster
from tests.slurm.cluster import ClusterError, wait_all_done, wait_for_state
from tests.slurm.pair import BACKUP, PRIMARY, ControllerPair, namespaces_work, uts_prefix
from tests.support import HOOK, DaemonUnderTest, Received

pytestmark = [pytest.mark.slurm, pytest.mark.broker]

#: A job that runs until the test creates this file in the jobs folder (its working folder).
RELEASE = "release-across"
UNTIL_RELEASED = f"while [ ! -e {RELEASE} ]; do sleep 0.2; done"


@pytest.fixture
def pair():
    """Slurm 22.05 and munged ready, the cluster's lock held; the test starts the pair.
    Everything started is stopped by PID at the end, after a failure too."""
    if os.geteuid() != 0:
        pytest.fail("the slurmctld pair test runs slurmctld, slurmd and munged in namespaces "
                    "of their own: run it as root", pytrace=False)
    why = namespaces_work()
    if why is not None:
        pytest.fail(f"cannot run two slurmctld on this machine: {why}", pytrace=False)
    try:
        cluster = slurm22_cluster()
    except (ClusterError, chroot.RootError) as e:
        pytest.fail(f"cannot run the slurmctld pair test: {e}", pytrace=False)
    controllers = ControllerPair(cluster)
    try:
        cluster.prepare()
        controllers.stop_leftover_jobcompd()
        cluster.start_munge()
    except (ClusterError, chroot.RootError) as e:
        controllers.stop()
        pytest.fail(f"cannot run the slurmctld pair test ({cluster.describe()}): {e}",
                    pytrace=False)
    yield controllers
    controllers.stop()


@dataclass
class Job:
    """A submitted job, the controller that must run its end hook, what it must end as."""

    label: str
    job_id: int
    controller: str
    state: str
    exit_code: str


def install_hook(pair: ControllerPair, spool: Path) -> str:
    """The shell hook behind a wrapper (both slurmctld run the same one, as they read one
    slurm.conf) that names the shared spool, then logs ``<host name> <job id> <hook's exit
    status>``; returns the wrapper's path as slurmctld sees it."""
    c = pair.cluster
    hooks = c.base / "hooks"
    shutil.copy(HOOK, hooks / "jobcompd-spool")
    wrapper = hooks / "jobcompd-hook-shared"
    hook, log = (shlex.quote(c.inside(p)) for p in (hooks / "jobcompd-spool", hook_log(pair)))
    wrapper.write_text("#!/bin/sh\n"
                       f"JOBCOMPD_SPOOL={shlex.quote(c.inside(spool))}\n"
                       "export JOBCOMPD_SPOOL\n"
                       f"{hook}\n"
                       "rc=$?\n"
                       f'echo "$(uname -n) $JOBID $rc" >> {log}\n'
                       "exit $rc\n")
    wrapper.chmod(0o755)
    return c.inside(wrapper)


def hook_log(pair: ControllerPair) -> Path:
    """Where the wrapper logs each run (as the host sees it)."""
    return pair.cluster.base / "hooks" / "ran.log"


def hook_runs(pair: ControllerPair) -> dict[int, list[tuple[str, str]]]:
    """{job id: [(host name, exit status), ...]} from the wrapper's log."""
    runs: dict[int, list[tuple[str, str]]] = defaultdict(list)
    path = hook_log(pair)
    for line in path.read_text().splitlines() if path.exists() else []:
        host, job, rc = line.split()
        runs[int(job)].append((host, rc))
    return runs


def start_jobcompd(pair: ControllerPair, bootstrap: str) -> tuple[DaemonUnderTest, ...]:
    """ctl1's jobcompd (active) and ctl2's (its standby) on the shared spool, one topic."""
    def on(ctl: str, topic: str | None) -> DaemonUnderTest:
        d = DaemonUnderTest(root=pair.cluster.base / f"jobcompd-{ctl}", bootstrap=bootstrap,
                            cluster=pair.cluster.cluster, command_prefix=uts_prefix(ctl),
                            # JobComp: each delivery is logged, with its job id
                            extra_conf={"Standby": "yes", "DebugFlags": "JobComp"})
        d.topic = topic or d.topic
        d.spool = pair.shared / "jobcompd"
        d.write_config()
        return d
    active = on(PRIMARY, None)
    standby = on(BACKUP, active.topic)
    active.start()
    standby.start(wait_ready=False)
    standby.wait_log("standby")
    return active, standby


def under_primary(pair: ControllerPair) -> tuple[list[Job], list[int], int]:
    """Jobs that end under ctl1 (their hooks run, their end records written); returns them,
    the ids of two running jobs that wait for RELEASE, and a held job's id."""
    c = pair.cluster
    across = [c.sbatch("-J", f"across-{i}", "--wrap", UNTIL_RELEASED) for i in (1, 2)]
    held = c.sbatch("-J", "held-across", "--hold", "--wrap", "exit 7")
    before = [Job("before-ok", c.sbatch("-J", "before-ok", "--wrap", "true"),
                  PRIMARY, "COMPLETED", "0:0"),
              Job("before-fail", c.sbatch("-J", "before-fail", "--wrap", "exit 3"),
                  PRIMARY, "FAILED", "3:0")]
    wait_hooks(pair, before)
    for job_id in across:
        wait_for_state(c, job_id, {"RUNNING"}, 30)
    return before, across, held


def wait_hooks(pair: ControllerPair, jobs: list[Job]) -> None:
    """Wait until the jobs have ended and their end hooks have run."""
    wait_all_done(pair.cluster, [j.job_id for j in jobs], timeout=60)
    wait_for(lambda: all(hook_runs(pair).get(j.job_id) for j in jobs), 30,
             what=f"the end hooks of jobs {[j.job_id for j in jobs]}")


def end_across(pair: ControllerPair, across: list[int]) -> list[Job]:
    """With ctl2 in control: the jobs that ran through the takeover end."""
    c = pair.cluster
    for job_id in across:  # ctl2 knows them from the shared state, still running
        assert c.job_state(job_id) == "RUNNING", (job_id, c.show_job(job_id))
    (c.jobs_dir / RELEASE).touch()
    jobs = [Job(f"across-{i}", job_id, BACKUP, "COMPLETED", "0:0")
            for i, job_id in enumerate(across, 1)]
    wait_hooks(pair, jobs)
    return jobs


def end_more(pair: ControllerPair, held: int) -> list[Job]:
    """With ctl2 in control: the job held since ctl1's time runs and ends, new jobs end."""
    c = pair.cluster
    c.run("scontrol", "release", str(held))
    jobs = [Job("held-across", held, BACKUP, "FAILED", "7:0"),
            Job("after-ok", c.sbatch("-J", "after-ok", "--wrap", "true"),
                BACKUP, "COMPLETED", "0:0"),
            Job("after-fail", c.sbatch("-J", "after-fail", "--wrap", "exit 4"),
                BACKUP, "FAILED", "4:0")]
    wait_hooks(pair, jobs)
    return jobs


def delivered_by(daemon: DaemonUnderTest) -> set[int]:
    """The job ids whose records this daemon delivered (its ``delivered`` debug lines)."""
    return {int(m.group(1)) for line in daemon.log_lines("delivered")
            if (m := re.search(r" job_id=(\d+) ", line))}


def check_records(pair: ControllerPair, jobs: list[Job], ends: list[Received]) -> list[str]:
    """Each job's end record once (duplicates identical, same jobcompd-id), its values right,
    its hook run once by the controller in charge when it ended."""
    problems: list[str] = []
    first: dict[int, Received] = {}
    for r in sorted(ends, key=lambda m: (m.partition, m.offset)):
        job_id = r.json["jobid"]
        prev = first.setdefault(job_id, r)
        if prev is not r and (r.key, r.value, r.headers.get("jobcompd-id")) != (
                prev.key, prev.value, prev.headers.get("jobcompd-id")):
            problems.append(f"job {job_id}: a second, different record: {r.value!r}")
    runs = hook_runs(pair)
    for job in jobs:
        msg = first.get(job.job_id)
        if msg is None:
            problems.append(f"{job.label} (job {job.job_id}): no end record in Kafka")
        else:
            got = (msg.key, msg.json["state"], msg.json["exit_code"])
            want = (f"{pair.cluster.cluster}:{job.job_id}".encode(), job.state, job.exit_code)
            if got != want:
                problems.append(f"{job.label} (job {job.job_id}): key, state, exit code "
                                f"{got}, expected {want}")
        if runs.get(job.job_id) != [(job.controller, "0")]:
            problems.append(f"{job.label} (job {job.job_id}): hook runs (host, status) "
                            f"{runs.get(job.job_id)}, expected once on {job.controller}")
    strangers = set(first) - {j.job_id for j in jobs}
    if strangers:
        problems.append(f"records of jobs nobody submitted: {sorted(strangers)}")
    return problems


def test_scontrol_takeover_every_job_arrives_once_from_the_controller_in_charge(pair, broker):
    t0 = time.monotonic()
    spool = pair.shared / "jobcompd"
    spool.mkdir(parents=True, exist_ok=True)
    active, standby = start_jobcompd(pair, broker.bootstrap)
    try:
        pair.start(jobcomp_loc=install_hook(pair, spool))
        t_up = time.monotonic() - t0
        before, across, held = under_primary(pair)
        t_takeover = time.monotonic()
        pair.takeover()
        t_takeover = time.monotonic() - t_takeover
        # ctl1's host is still up: its jobcompd sends what ctl2's hook writes.
        jobs = before + end_across(pair, across)
        wait_for(lambda: not active.new_files(), 30, interval=0.2,
                 what="ctl1's jobcompd to send the records ctl2's hook wrote")
        active.signal(signal.SIGSTOP)  # now ctl1 hangs: its records wait in the spool ...
        more = end_more(pair, held)
        assert len(standby.new_files()) == len(more), standby.new_files()
        assert not standby.log_lines("took_over"), "ctl2's jobcompd took a held spool lock"
        active.kill()  # ... until it is fenced: the standby takes over and sends them
        took = standby.wait_log("took_over", timeout=30)
        jobs += more
        wait_for(lambda: not standby.new_files(), 60, interval=0.2, what="new/ emptied")
        ends = standby.consume(len(jobs), timeout=60, settle=1.0)
        stopped = standby.stop()
    finally:
        for d in (active, standby):
            if d.proc is not None and d.proc.poll() is None:
                d.kill()
    elapsed = time.monotonic() - t0

    problems = check_records(pair, jobs, ends)
    assert not problems, "\n".join(problems) + "\n" + "\n".join(
        r.value.decode(errors="replace") for r in ends)
    assert standby.failed_files() == [], standby.failed_files()
    assert standby.new_files() == []
    # ctl1's jobcompd sent what ctl1's hook and, after the takeover, ctl2's wrote; its
    # standby what ctl2's hook wrote while ctl1 hung.
    assert delivered_by(active) == {j.job_id for j in jobs if j not in more}
    assert delivered_by(standby) == {j.job_id for j in more}
    assert f"previous={PRIMARY}:{active.proc.pid}" in took[0], took
    assert f"backlog={len(more)} " in took[0], took  # the records ctl1's daemon left
    assert stopped == 0, standby.log_text()[-3000:]
    print(f"slurmctld pair ({how_it_runs(pair.cluster)}): up after {t_up:.0f} s, takeover "
          f"{t_takeover:.1f} s, {len(jobs)} jobs' records checked, {len(ends)} messages, all "
          f"after {elapsed:.0f} s")
