"""A real slurmctld, end to end: Slurm jobs → hooks / HTTP intake → spool → daemon → Kafka.

A one-node Slurm 22.05 cluster runs real jobs twice. Where the host's Slurm is 22.05 (Debian
12's slurm-wlm, installed when missing; on a RHEL-family host EPEL's slurm, as it comes) it is
the host's; elsewhere (a Debian 13 host has 24.11) it runs from a Debian 12 root built with
mmdebstrap and cached in /var/cache/jobcompd-tests (tests/slurm/chroot_cluster.py, the runner
the 24.11 test uses too). ``JOBCOMPD_TEST_SLURM22_ROOT=1`` takes the root on any host, ``=0``
the host's Slurm whatever its release. The two rounds:

1. ``JobCompType=jobcomp/script`` with ``JobCompLoc`` and ``PrologSlurmctld`` running the real
   hook (through a wrapper that names the spool, as slurmctld passes no environment);
2. ``JobCompType=jobcomp/elasticsearch`` POSTing to the HTTP intake, prolog unchanged.

Each round submits: success, non-zero exit, cancelled while running, cancelled while pending, a
time limit, an array of 3, a name with spaces and unicode. For every job the end message (and,
for jobs that started, the start message) must arrive in Kafka with the values ``scontrol show
job`` reports. The time-limit jobs take 1.5 to 2.5 minutes, so both are submitted first: the
second round's (``-t 2``) keeps running through the slurmctld restart and ends under
jobcomp/elasticsearch.

The daemon, its spool and the hooks live in the cluster's folder (inside the root where there is
one, so that slurmctld's hooks reach the spool); the compiled hook is linked statically there,
as the root's C library may be older than the host's.

All in one test: one machine has one munged and one cluster folder (and its lock), which two
xdist workers could not share.
"""

from __future__ import annotations

import calendar
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobcompd.service.httpintake import HttpIntake
from jobcompd.spool import Spool
from tests.broker import free_port
from tests.slurm import chroot
from tests.slurm.chroot_cluster import ChrootCluster, how_it_runs, slurm22_cluster
from tests.slurm.cluster import ClusterBase, ClusterError, wait_all_done, wait_for_state
from tests.support import C_HOOK_CFLAGS, C_HOOK_SOURCE, HOOK, DaemonUnderTest, build_c_hook

pytestmark = [pytest.mark.slurm, pytest.mark.broker]

#: Set to True once the daemon starts HttpIntake itself from ``HttpListen=`` (the lead wires
#: it): the test then configures HttpListen instead of starting an intake of its own.
INTAKE_IN_DAEMON = True

WEIRD_NAME = 'e2e name with spaces ünïcødé ✓ 日本 "q"'
ABSENT = "(no such key)"  # an expected value: the message must not have the key


@pytest.fixture(scope="module")
def slurm():
    """Slurm 22.05 and munge there (the host's or a Debian 12 root's), munged answering,
    folders clean; the test starts slurmctld and slurmd with its own settings. Everything
    started here is stopped by PID at the end."""
    if os.geteuid() != 0:
        pytest.fail("the Slurm end-to-end test runs slurmctld, slurmd and munged and installs "
                    "them (or builds a Debian 12 root with them) when missing: run it as root",
                    pytrace=False)  # fmt: skip
    try:
        cluster = slurm22_cluster()
    except (ClusterError, chroot.RootError) as e:
        pytest.fail(f"cannot run the Slurm end-to-end test: {e}", pytrace=False)
    try:
        cluster.prepare()
        cluster.start_munge()
    except (ClusterError, chroot.RootError) as e:
        cluster.stop()
        pytest.fail(f"cannot run the Slurm end-to-end test ({cluster.describe()}): {e}",
                    pytrace=False)  # fmt: skip
    yield cluster
    cluster.stop()


# ------------------------------------------------------------------------------------------
# Jobs


@dataclass
class Job:
    """One submitted job; an array expands into one Job per task after it ran."""

    label: str
    round: str  # "script" or "elasticsearch": the jobcomp plugin that wrote its end record
    job_id: int
    started: bool = True
    scontrol: dict[str, str] = field(default_factory=dict)


def submit_battery(slurm: ClusterBase, rnd: str) -> tuple[list[Job], int, int]:
    """The jobs of one round but the time-limit job: (jobs, cancel-running id, array id)."""
    sb = slurm.sbatch
    jobs = [
        Job("success", rnd, sb("-J", f"{rnd}-ok", "--wrap", "sleep 1; echo hi")),
        Job("exit-3", rnd, sb("-J", f"{rnd}-fail", "--wrap", "echo failing; exit 3")),
        Job("weird-name", rnd, sb("-J", f"{WEIRD_NAME} {rnd}", "--wrap", "true")),
    ]
    pending = sb("-J", f"{rnd}-cancel-pending", "--hold", "--wrap", "true")
    slurm.run("scancel", str(pending))
    jobs.append(Job("cancelled-pending", rnd, pending, started=False))
    running = sb("-J", f"{rnd}-cancel-running", "--wrap", "sleep 300")
    array = sb("-J", f"{rnd}-array", "--array=1-3",
               "--wrap", '[ "$SLURM_ARRAY_TASK_ID" = 2 ] && exit 5; exit 0')
    return jobs, running, array


def cancel_when_running(slurm: ClusterBase, job_id: int) -> None:
    wait_for_state(slurm, job_id, {"RUNNING"}, 60)
    slurm.run("scancel", str(job_id))


def array_tasks(slurm: ClusterBase, array_id: int, rnd: str) -> list[Job]:
    tasks = slurm.show_job(array_id)
    assert sorted(t.get("ArrayTaskId") for t in tasks) == ["1", "2", "3"], tasks
    return [Job(f"array-task-{t['ArrayTaskId']}", rnd, int(t["JobId"])) for t in tasks]


def record_scontrol(slurm: ClusterBase, jobs: list[Job]) -> None:
    for job in jobs:
        # (the array task that keeps the array's id shows all tasks)
        shown = [j for j in slurm.show_job(job.job_id) if j["JobId"] == str(job.job_id)]
        assert len(shown) == 1, (job, shown)
        job.scontrol = shown[0]


# ------------------------------------------------------------------------------------------
# Expected values from scontrol


def _owner(value: str) -> tuple[str, int]:
    """``root(0)`` → ("root", 0)."""
    name, _, rest = value.partition("(")
    return name, int(rest.rstrip(")"))


def _duration(value: str) -> int:
    """``[D-]HH:MM:SS`` → seconds."""
    days, _, hms = value.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + s


def _epoch(value: str) -> int:
    return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))


def expected_end(job: Job) -> dict[str, Any]:
    """The end message's values as scontrol shows the job (times in UTC: TZ=UTC)."""
    sc = job.scontrol
    user, uid = _owner(sc["UserId"])
    group, gid = _owner(sc["GroupId"])
    state = sc["JobState"]
    # jobcomp records a cancelled-while-running or timed-out job at the state change, before
    # the killed batch step reports: exit code 0:0, where scontrol later shows 0:15.
    exit_code = "0:0" if state in ("CANCELLED", "TIMEOUT") else sc["ExitCode"]
    exp: dict[str, Any] = {
        "jobid": job.job_id,
        "username": user,
        "user_id": uid,
        "groupname": group,
        "group_id": gid,
        "partition": sc["Partition"],
        "total_cpus": int(sc["NumCPUs"]) if job.started else 0,
        "total_nodes": int(sc["NumNodes"]) if job.started else 0,
        "state": state,
        "exit_code": exit_code,
        "derived_ec": sc["DerivedExitCode"],
        "@submit": sc["SubmitTime"],
        "@start": sc["StartTime"],
        "@end": sc["EndTime"],
        "elapsed": _duration(sc["RunTime"]),
        "job_name": sc["JobName"],
        "work_dir": sc["WorkDir"],
    }
    exp["time_limit"] = ABSENT if sc["TimeLimit"] == "UNLIMITED" else _duration(sc["TimeLimit"])
    exp.update(_array_ids(sc))
    if job.round == "elasticsearch":  # Slurm's own rendering carries more
        exp["alloc_node"] = sc["AllocNode:Sid"].partition(":")[0]
        exp["@eligible"] = _eligible(sc)
        exp["tres_alloc"] = sc["TRES"] if job.started else ABSENT
    return exp


def _eligible(sc: dict[str, str]) -> str:
    return ABSENT if sc["EligibleTime"] in ("Unknown", "None") else sc["EligibleTime"]


def expected_start(job: Job) -> dict[str, Any]:
    sc = job.scontrol
    user, uid = _owner(sc["UserId"])
    group, gid = _owner(sc["GroupId"])
    exp: dict[str, Any] = {
        "jobid": job.job_id,
        "username": user,
        "user_id": uid,
        "groupname": group,
        "group_id": gid,
        "partition": sc["Partition"],
        "nodes": sc["NodeList"],
        "total_cpus": int(sc["NumCPUs"]),
        "total_nodes": int(sc["NumNodes"]),
        "state": None,
        "job_name": sc["JobName"],
        "work_dir": sc["WorkDir"],
        "@end": ABSENT,
        "exit_code": ABSENT,
        "elapsed": ABSENT,
        **_array_ids(sc),
    }
    return exp


def _array_ids(sc: dict[str, str]) -> dict[str, Any]:
    if "ArrayJobId" not in sc:
        return {"array_job_id": ABSENT, "array_task_id": ABSENT}
    return {"array_job_id": int(sc["ArrayJobId"]), "array_task_id": int(sc["ArrayTaskId"])}


def compare(what: str, job: Job, got: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    return [f"{job.round} {job.label} (job {job.job_id}) {what}: {key} is "
            f"{got.get(key, ABSENT)!r}, scontrol says {value!r}"
            for key, value in expected.items() if got.get(key, ABSENT) != value]


def check_end(job: Job, msg: dict[str, Any]) -> list[str]:
    expected = expected_end(job)
    if "@eligible" in msg:  # jobcomp/script passes ELIGIBLE since Slurm 24.05
        expected["@eligible"] = _eligible(job.scontrol)
    problems = compare("end", job, msg, expected)
    if job.started:
        allowed = {job.scontrol["NodeList"]}
    elif job.round == "elasticsearch":
        allowed = {""}  # what Slurm's own serializer writes for a job never allocated
    else:
        # jobcomp/script passes NODES= for it, which cannot tell "" from unset: jobcompd
        # writes null there, where Slurm's own serializer writes "".
        allowed = {"", None}
    if "nodes" not in msg or msg["nodes"] not in allowed:
        problems.append(f"{job.round} {job.label} (job {job.job_id}) end: nodes is "
                        f"{msg.get('nodes', ABSENT)!r}, scontrol says "
                        f"{job.scontrol['NodeList']!r}")
    return problems


def check_start(job: Job, msg: dict[str, Any]) -> list[str]:
    problems = compare("start", job, msg, expected_start(job))
    # Slurm 22.05's PrologSlurmctld passes no start time: the hook's clock stands in for it,
    # a moment after the StartTime slurmctld set when it allocated the job.
    started = _epoch(job.scontrol["StartTime"])
    got = msg.get("@start")
    if got is None or not started - 1 <= _epoch(got) <= started + 15:
        problems.append(f"{job.round} {job.label} start: @start {got!r}, scontrol StartTime "
                        f"{job.scontrol['StartTime']}")
    return problems


def check_scenario(job: Job) -> list[str]:
    """The job did what it was submitted to do (else the comparison proves little)."""
    want = {
        "success": ("COMPLETED", "0:0"), "exit-3": ("FAILED", "3:0"),
        "weird-name": ("COMPLETED", "0:0"), "cancelled-pending": ("CANCELLED", "0:0"),
        # A job killed by scancel or at its time limit shows 0:15, or 143:0 when its shell
        # reported the SIGTERM as an exit status (seen when cancelled the moment it started,
        # and for a time limit after a slurmctld restart): the exit code is not checked.
        "cancelled-running": ("CANCELLED", None), "time-limit": ("TIMEOUT", None),
        "array-task-1": ("COMPLETED", "0:0"), "array-task-2": ("FAILED", "5:0"),
        "array-task-3": ("COMPLETED", "0:0"),
    }[job.label]
    got = (job.scontrol["JobState"], job.scontrol["ExitCode"] if want[1] else None)
    return [] if got == want else [f"{job.round} {job.label}: scontrol shows {got}, the job "
                                   f"was made for {want}"]


# ------------------------------------------------------------------------------------------
# The test


def install_hooks(slurm: ClusterBase, spool: Path, build_dir: Path) -> tuple[str, str]:
    """The shell hook and the compiled one in the cluster's hooks folder, each behind a wrapper
    naming the spool (slurmctld runs hooks with a clean environment); returns the wrappers'
    paths as slurmctld sees them: (shell, compiled)."""
    hooks = slurm.base / "hooks"
    shutil.copy(HOOK, hooks / "jobcompd-spool")
    if isinstance(slurm, ChrootCluster):
        c_hook = _build_static_c_hook(hooks / "jobcompd-spool-c")
    else:
        c_hook = shutil.copy(build_c_hook(build_dir), hooks / "jobcompd-spool-c")
    return (write_hook_wrapper(slurm, hooks / "jobcompd-hook", spool, hooks / "jobcompd-spool"),
            write_hook_wrapper(slurm, hooks / "jobcompd-hook-c", spool, Path(c_hook)))


def _build_static_c_hook(out: Path) -> Path:
    """The compiled hook with the README's flags, linked statically: it runs in a root whose
    C library may be older than the one it was compiled against."""
    cc = shutil.which("cc")
    assert cc is not None, "no C compiler (cc): run `make sysdeps`"
    done = subprocess.run([cc, *C_HOOK_CFLAGS, "-Werror", "-static", "-o", str(out),
                           str(C_HOOK_SOURCE)], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, ("linking the hook statically failed (the static C library, "
                                  f"libc.a, is in libc6-dev / glibc-static):\n"
                                  f"{done.stderr.decode(errors='replace')}")  # fmt: skip
    return out


def write_hook_wrapper(slurm: ClusterBase, path: Path, spool: Path, hook: Path) -> str:
    """A wrapper at ``path`` that names the spool, then execs the hook; returns its path as
    slurmctld sees it."""
    path.write_text("#!/bin/sh\n"
                    f"JOBCOMPD_SPOOL={shlex.quote(slurm.inside(spool))}\n"
                    "export JOBCOMPD_SPOOL\n"
                    f"exec {shlex.quote(slurm.inside(hook))}\n")
    path.chmod(0o755)
    return slurm.inside(path)


def test_real_slurm_jobs_arrive_in_kafka_with_scontrols_values(slurm, broker, tmp_path):
    t0 = time.monotonic()
    http_port = free_port()
    # In the cluster's folder: a root's slurmctld runs the hooks, which write to the spool.
    dut = DaemonUnderTest(root=slurm.base / "jobcompd", bootstrap=broker.bootstrap,
                          cluster=slurm.cluster, params={"enable_job_start": None})
    if INTAKE_IN_DAEMON:
        dut.extra_conf["HttpListen"] = f"127.0.0.1:{http_port}"
        dut.write_config()
    dut.start()
    intake: HttpIntake | None = None
    try:
        # jobcomp/script runs the shell hook, PrologSlurmctld the compiled one: both under
        # slurmscriptd.
        hook, c_hook = install_hooks(slurm, dut.spool, tmp_path)
        script_settings = {"jobcomp_type": "jobcomp/script", "jobcomp_loc": hook,
                           "prolog": c_hook}
        es_settings = {**script_settings, "jobcomp_type": "jobcomp/elasticsearch",
                       "jobcomp_loc": f"http://127.0.0.1:{http_port}/slurm/jobcomp"}
        slurm.start(**script_settings)

        # Round 1, jobcomp/script. Both time-limit jobs first: they take longest.
        timeout1 = Job("time-limit", "script",
                       slurm.sbatch("-J", "script-timeout", "-t", "1", "--wrap", "sleep 300"))
        timeout2 = Job("time-limit", "elasticsearch",
                       slurm.sbatch("-J", "es-timeout", "-t", "2", "--wrap", "sleep 300"))
        jobs1, running1, array1 = submit_battery(slurm, "script")
        cancel_when_running(slurm, running1)
        jobs1 += [timeout1, Job("cancelled-running", "script", running1)]
        wait_all_done(slurm, [j.job_id for j in jobs1] + [array1], timeout=150)
        jobs1 += array_tasks(slurm, array1, "script")
        record_scontrol(slurm, jobs1)
        wait_for_state(slurm, timeout2.job_id, {"RUNNING"}, 10)  # through the restart
        t_round1 = time.monotonic() - t0

        # Round 2, jobcomp/elasticsearch into the HTTP intake.
        if not INTAKE_IN_DAEMON:
            spool = Spool(dut.spool, max_record_bytes=1 << 20, allowed_uids=None)
            intake = HttpIntake(spool, ("127.0.0.1", http_port), max_body=1 << 20,
                                cluster=slurm.cluster)
            intake.start()
        slurm.restart_ctld(**es_settings)
        # Its end record must come from jobcomp/elasticsearch: it must outlive the restart.
        assert slurm.job_state(timeout2.job_id) == "RUNNING", (
            f"the -t 2 job ended before slurmctld restarted with jobcomp/elasticsearch "
            f"({time.monotonic() - t0:.0f} s into the test); round 1 was too slow")
        jobs2, running2, array2 = submit_battery(slurm, "elasticsearch")
        cancel_when_running(slurm, running2)
        jobs2 += [timeout2, Job("cancelled-running", "elasticsearch", running2)]
        wait_all_done(slurm, [j.job_id for j in jobs2] + [array2], timeout=200)
        jobs2 += array_tasks(slurm, array2, "elasticsearch")
        record_scontrol(slurm, jobs2)

        jobs = jobs1 + jobs2
        started = [j for j in jobs if j.started]
        # The elasticsearch plugin of 22.05 sends nothing during its first 30 s.
        ends = dut.consume(len(jobs), timeout=90, settle=1.0)
        starts = dut.consume(len(started), topic=dut.start_topic, timeout=30, settle=0.5)
    finally:
        if intake is not None:
            intake.stop()
        dut.stop()
    elapsed = time.monotonic() - t0

    problems = [p for job in jobs for p in check_scenario(job)]
    end_by_id: dict[int, list[Any]] = {}
    for r in ends:
        end_by_id.setdefault(r.json["jobid"], []).append(r)
    start_by_id: dict[int, list[Any]] = {}
    for r in starts:
        start_by_id.setdefault(r.json["jobid"], []).append(r)
    for job in jobs:
        got = end_by_id.get(job.job_id, [])
        if len(got) != 1:
            problems.append(f"{job.round} {job.label} (job {job.job_id}): {len(got)} end "
                            "messages, expected 1")
            continue
        problems += check_end(job, got[0].json)
        if got[0].key != f"{slurm.cluster}:{job.job_id}".encode():
            problems.append(f"{job.round} {job.label}: key {got[0].key!r}")
        if got[0].headers.get("event") != b"job_end":
            problems.append(f"{job.round} {job.label}: event header {got[0].headers}")
        starts_of_job = start_by_id.get(job.job_id, [])
        if len(starts_of_job) != (1 if job.started else 0):
            problems.append(f"{job.round} {job.label} (job {job.job_id}): "
                            f"{len(starts_of_job)} start messages, expected "
                            f"{1 if job.started else 0}")
        elif job.started:
            problems += check_start(job, starts_of_job[0].json)
    unknown = set(end_by_id) - {j.job_id for j in jobs}
    if unknown:
        problems.append(f"end messages for jobs nobody submitted: {sorted(unknown)}")
    assert dut.failed_files() == [], [
        (dut.spool / "failed" / n).read_text(errors="replace") for n in dut.failed_files()]
    assert not problems, "\n".join(problems) + "\n\n" + _dump(jobs, ends, starts)
    print(f"slurm e2e ({how_it_runs(slurm)}): round 1 done after {t_round1:.0f} s, all after "
          f"{elapsed:.0f} s; {len(ends)} end and {len(starts)} start messages checked")


def _dump(jobs: list[Job], ends: list[Any], starts: list[Any]) -> str:
    lines = [f"{j.round} {j.label} {j.job_id}: {json.dumps(j.scontrol, ensure_ascii=False)}"
             for j in jobs]
    lines += [f"end {r.value.decode(errors='replace')}" for r in ends]
    lines += [f"start {r.value.decode(errors='replace')}" for r in starts]
    return "\n".join(lines)
