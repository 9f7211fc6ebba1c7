"""Slurm 24.11's own jobcomp/kafka beside jobcompd: the reference the project answers to.

A one-node Slurm 24.11 cluster (Debian 13's packages, run from a root cached in
/var/cache/jobcompd-tests, tests/slurm/chroot.py) runs a battery of real jobs twice:

1. ``JobCompType=jobcomp/kafka`` sending to the test broker, with PrologSlurmctld and
   EpilogSlurmctld running jobcompd's hook. Each job's message from the plugin is compared,
   key by key, with jobcompd's rendering of ``scontrol show job --json`` of the same job
   through ``jobcompd backfill``'s loop;
2. ``JobCompType=jobcomp/script`` running the hook as it is installed (the production path),
   the daemon shipping its records: each job's record is compared with the plugin's message
   of the same job of round 1 on every key that does not depend on the run's times and ids.

Every difference allowed below is listed, with its reason, in docs/differences.md.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from jobcompd import backfill as bf
from tests.broker import wait_for
from tests.slurm import chroot
from tests.slurm.chroot_cluster import INSIDE, ChrootCluster
from tests.slurm.cluster import ClusterError
from tests.support import HOOK, DaemonUnderTest, consume

pytestmark = [pytest.mark.slurm, pytest.mark.broker]

UNICODE = 'ünïcødé ✓ 日本 "q"'
#: Keys jobcompd leaves out of a record rendered from 24.11's ``scontrol show job --json``,
#: where the plugin sends them (docs/differences.md, "scontrol/squeue job objects").
NOT_IN_SCONTROL = {
    "script",  # not in job objects; 24.11's plugin sends it for every batch job
    "ntasks",  # `tasks` is the node count when none was requested: the request is unknown
    "std_out",  # v0.0.42 prints the path expanded (or Slurm's default), not as submitted
    "std_err",
}
#: Keys the jobcomp/script environment does not carry (null where Slurm always writes the
#: key, else left out), and keys that differ between two runs of the same job.
NOT_IN_SCRIPT_ENV = {
    "container", "alloc_node", "failed_node", "priority", "ntasks", "ntasks_per_node",
    "ntasks_per_tres", "cpus_per_task", "excluded_nodes", "wc_key", "tres_req_raw",
    "tres_req", "tres_alloc_raw", "tres_alloc", "admin_comment", "comment", "script",
    "parent_accounts",
}  # fmt: skip
RUN_SPECIFIC = {"jobid", "@start", "@end", "@submit", "@eligible", "@queue_wait", "elapsed",
                "cpu_hours", "array_job_id", "array_task_id"}  # fmt: skip
#: Keys that depend on which scheduler started the job, which differs between runs: the
#: backfill scheduler gives a job without a limit (on a partition without MaxTime) the limit
#: it planned with, 365 days, the main scheduler leaves it unlimited. Observed: round 1's batch
#: jobs were started by backfill (time_limit 31536000), round 2's by the main scheduler (LIMIT
#: UNLIMITED, no time_limit). The jobcomp/script record is compared with the same job's
#: scontrol object (rendered by jobcompd, which round 1 holds equal to the plugin) instead.
SCHEDULER_SPECIFIC = {"time_limit"}


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.fail("the Slurm 24.11 test builds a Debian root and runs slurmctld, slurmd and "
                    "munged from it: run it as root", pytrace=False)
    try:
        root = chroot.ensure_root("trixie")
    except chroot.RootError as e:
        pytest.fail(f"cannot run Slurm 24.11 with jobcomp/kafka: {e}", pytrace=False)
    c = ChrootCluster(root)
    try:
        c.prepare()
        c.start_munge()
    except (ClusterError, chroot.RootError) as e:
        c.stop()
        pytest.fail(f"cannot run Slurm 24.11 with jobcomp/kafka: {e}", pytrace=False)
    yield c
    c.stop()


def install_hook(c: ChrootCluster, spool_inside: Path) -> str:
    """The hook as installed (a copy of jobcompd-spool), behind a wrapper naming the spool;
    returns the wrapper's path inside the root."""
    hooks = c.base / "hooks"
    shutil.copy(HOOK, hooks / "jobcompd-spool")
    wrapper = hooks / "jobcompd-hook"
    wrapper.write_text(f"#!/bin/sh\nJOBCOMPD_SPOOL={shlex.quote(str(spool_inside))}\n"
                       f"export JOBCOMPD_SPOOL\nexec {INSIDE}/hooks/jobcompd-spool\n")  # fmt: skip
    wrapper.chmod(0o755)
    return f"{INSIDE}/hooks/jobcompd-hook"


def submit_battery(c: ChrootCluster, rnd: str) -> dict[str, int]:
    """The jobs of one round, by label (an array's tasks come later, from scontrol)."""
    sb = c.sbatch
    jobs = {
        "success": sb("-J", f"{rnd}-ok", "--wrap", "true"),
        "exit-3": sb("-J", f"{rnd}-fail", "--wrap", "exit 3"),
        "unicode": sb("-J", f"{UNICODE} {rnd}", "--wrap", "true"),
        "comment": sb("-J", f"{rnd}-comment", "--comment", "a comment", "--wrap", "true"),
        "streams": sb("-J", f"{rnd}-streams", "-o", "%x-%j.out", "-e", "%x-%j.err", "--wrap",
                      "echo out; echo err >&2"),
        "array": sb("-J", f"{rnd}-array", "--array=1-3",
                    "--wrap", '[ "$SLURM_ARRAY_TASK_ID" = 2 ] && exit 5; exit 0'),
    }
    jobs["cancelled-pending"] = sb("-J", f"{rnd}-cancel-pending", "--hold", "--wrap", "true")
    c.run("scancel", str(jobs["cancelled-pending"]))
    running = sb("-J", f"{rnd}-cancel-running", "--wrap", "sleep 300")
    wait_for(lambda: _state(c, running) == "RUNNING", 60, interval=0.2, what="job to run")
    c.run("scancel", str(running))
    jobs["cancelled-running"] = running
    c.run("srun", "-J", f"{rnd}-srun", "true", timeout=60)
    jobs["srun"] = int(c.run("squeue", "-h", "-t", "all", "-n", f"{rnd}-srun", "-o",
                             "%i").stdout.split()[0])  # fmt: skip
    return jobs


def _state(c: ChrootCluster, job_id: int) -> str | None:
    jobs = c.jobs_json(job_id)
    return jobs[0]["job_state"][0] if len(jobs) == 1 else None


def wait_done(c: ChrootCluster, ids: list[int]) -> dict[str, dict[str, Any]]:
    """Every job's (and array task's) scontrol object once all have ended, by label-ish key."""
    active = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}

    def done() -> bool:
        return all(j["job_state"][0] not in active for i in ids for j in c.jobs_json(i))
    wait_for(done, 90, interval=0.5, what="the jobs to end")
    return {str(j["job_id"]): j for i in ids for j in c.jobs_json(i)}


def label_of(obj: dict[str, Any], labels: dict[int, str]) -> str:
    task = obj["array_task_id"]
    if task.get("set"):
        return f"array-task-{task['number']}"
    return labels[obj["job_id"]]


def ours_from_scontrol(objects: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    written: list[bytes] = []
    reports: list[str] = []
    summary = bf.backfill(bf.read_jobs(json.dumps({"jobs": objects}).encode())[1],
                          lambda value, _: written.append(value), ids=bf.LocalIds(),
                          report=reports.append)  # fmt: skip
    assert not reports and summary.problems == 0, reports
    return {json.loads(v)["jobid"]: json.loads(v) for v in written}


def test_jobcomp_kafka_of_slurm_24_11_and_jobcompd_send_the_same(cluster, broker, tmp_path):
    t0 = time.monotonic()
    c = cluster
    plugin_topic = f"plugin-{os.getpid()}"
    dut = DaemonUnderTest(root=c.base / "jobcompd", bootstrap=broker.bootstrap,
                          cluster=c.cluster)  # fmt: skip
    hook = install_hook(c, INSIDE / "jobcompd" / "spool")
    dut.start()
    try:
        (c.base / "etc" / "kafka.conf").write_text(f"bootstrap.servers={broker.bootstrap}\n")
        c.start(jobcomp_type="jobcomp/kafka", jobcomp_loc=f"{INSIDE}/etc/kafka.conf",
                jobcomp_params=f"JobCompParams=topic={plugin_topic}",
                prolog=f"PrologSlurmctld={hook}", epilog=f"EpilogSlurmctld={hook}")
        labels_a = submit_battery(c, "kafka")
        objects_a = wait_done(c, list(labels_a.values()))
        by_label_a = {label_of(o, {v: k for k, v in labels_a.items()}): o
                      for o in objects_a.values()}  # fmt: skip
        plugin = {json.loads(m.value)["jobid"]: json.loads(m.value)
                  for m in consume(broker.bootstrap, plugin_topic, len(objects_a), 60, 1.0)}
        ours = ours_from_scontrol(list(objects_a.values()))
        t_round1 = time.monotonic() - t0

        c.restart_ctld(jobcomp_type="jobcomp/script", jobcomp_loc=hook, jobcomp_params="",
                       prolog=f"PrologSlurmctld={hook}")  # fmt: skip
        labels_b = submit_battery(c, "script")
        objects_b = wait_done(c, list(labels_b.values()))
        by_label_b = {label_of(o, {v: k for k, v in labels_b.items()}): o
                      for o in objects_b.values()}  # fmt: skip
        round_b = {int(i) for i in objects_b}
        ours_b = ours_from_scontrol(list(objects_b.values()))
        # The daemon's end records: round 1's from EpilogSlurmctld, which runs only for jobs
        # that got nodes, round 2's from jobcomp/script, every job (start events are off).
        # Asking for one more than come would wait the whole timeout.
        allocated_a = sum(1 for o in objects_a.values() if o.get("nodes"))
        received = dut.consume(allocated_a + len(objects_b), timeout=60, settle=2.0)
        script = {r.json["jobid"]: r.json for r in received
                  if r.json["jobid"] in round_b and r.json["state"] is not None}
    finally:
        dut.stop()
    problems = compare_plugin_and_backfill(by_label_a, plugin, ours)
    problems += compare_plugin_and_script(by_label_a, by_label_b, plugin, script, ours_b)
    assert dut.failed_files() == []
    assert not problems, "\n".join(problems)
    limits = [sorted(str(m.get("time_limit", "-")) for m in msgs.values())
              for msgs in (plugin, script)]
    print(f"slurm 24.11 kafka e2e: round 1 {t_round1:.0f} s, all {time.monotonic() - t0:.0f} s; "
          f"{len(plugin)} plugin messages, {len(script)} jobcomp/script records compared; "
          f"time_limit of the plugin's {limits[0]}, of jobcomp/script's {limits[1]}")


def compare_plugin_and_backfill(by_label, plugin, ours) -> list[str]:
    problems = []
    for label, obj in sorted(by_label.items()):
        job_id = obj["job_id"]
        theirs, mine = plugin.get(job_id), ours.get(job_id)
        if theirs is None or mine is None:
            problems.append(f"{label} (job {job_id}): plugin {theirs is not None}, "
                            f"jobcompd {mine is not None}")
            continue
        for key in sorted((set(theirs) | set(mine)) - NOT_IN_SCONTROL):
            if theirs.get(key, "(absent)") != mine.get(key, "(absent)"):
                problems.append(f"{label} (job {job_id}) {key}: plugin "
                                f"{theirs.get(key, '(absent)')!r}, jobcompd from scontrol "
                                f"{mine.get(key, '(absent)')!r}")
        if list(k for k in mine if k in theirs) != list(k for k in theirs if k in mine):
            problems.append(f"{label}: key order differs: {list(mine)} / {list(theirs)}")
    return problems


def compare_plugin_and_script(by_label_a, by_label_b, plugin, script, ours_b) -> list[str]:
    problems = []
    for label, obj in sorted(by_label_b.items()):
        theirs = plugin.get(by_label_a[label]["job_id"])
        mine = script.get(obj["job_id"])
        if theirs is None or mine is None:
            problems.append(f"{label}: plugin {theirs is not None}, jobcomp/script "
                            f"{mine is not None}")
            continue
        same_job = ours_b.get(obj["job_id"], {})
        for key in sorted(SCHEDULER_SPECIFIC):
            want, got = same_job.get(key, "(absent)"), mine.get(key, "(absent)")
            if want != got:
                problems.append(f"{label} {key}: scontrol of the same job {want!r}, jobcompd "
                                f"through jobcomp/script {got!r}")
        for key in sorted((set(theirs) | set(mine)) - NOT_IN_SCRIPT_ENV - RUN_SPECIFIC
                          - SCHEDULER_SPECIFIC):
            want, got = theirs.get(key, "(absent)"), mine.get(key, "(absent)")
            if key == "job_name":
                want = want.replace("kafka", "script")
            if want != got:
                problems.append(f"{label} {key}: plugin (round 1) {want!r}, jobcompd through "
                                f"jobcomp/script {got!r}")
    return problems
