"""Fault 4b: a long outage fills the spool's file system (which may be slurmctld's own), and
SpoolMinFreeBytes stops every writer before the disk is full.

A small tmpfs is mounted on the spool (root only, as in CI) and the broker is paused while the
hook keeps writing. The hooks refuse once less than the threshold is free (exit 74, nothing
partial; exit 0 as PrologSlurmctld), the HTTP intake answers 503, the daemon says so in its log
and its gauges; the file system never runs full. Once the broker is back the backlog drains,
space returns and every writer is accepted again. Every record a writer accepted arrives.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess

import pytest

from tests.broker import free_port, wait_for
from tests.faults.common import assert_alive, drain, end_env, small_filesystem, tally
from tests.support import DATA, build_c_hook
from tests.test_metrics import scrape, value

pytestmark = [pytest.mark.broker, pytest.mark.faults]

MIN_FREE = 1 << 20
#: A variable of 60 KiB in each hook record, so that a few dozen records fill the file system.
PAD = "x" * 60_000


def post(port: int, job_id: int) -> tuple[int, dict]:
    """A jobcomp/elasticsearch body for ``job_id``, POSTed as Slurm does."""
    body = json.loads((DATA / "records" / "elasticsearch" / "es-0001-job36.json").read_text())
    body["jobid"] = job_id
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/slurm/jobcomp", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def free(dut) -> int:
    st = os.statvfs(dut.spool / "new")
    return st.f_bavail * st.f_frsize


def test_a_spool_filling_up_refuses_records_before_the_disk_is_full(dut, own_broker, tmp_path):
    metrics_port, http_port = free_port(), free_port()
    dut.extra_conf.update(SpoolMinFreeBytes=str(MIN_FREE), HttpListen=f"127.0.0.1:{http_port}",
                          MetricsListen=f"127.0.0.1:{metrics_port}")
    dut.params.update(rescan_interval="1")
    dut.write_config()
    c_hook = build_c_hook(tmp_path)
    sent: list[int] = []
    with small_filesystem(dut.spool, "4m"):
        dut.start()
        assert (dut.spool / ".min-free-bytes").read_text() == f"{MIN_FREE}\n"
        own_broker.pause()
        try:
            refused = fill_until_refused(dut, sent)
            check_every_writer_refuses(dut, c_hook, http_port)
            wait_for(lambda: low_gauges(metrics_port, len(sent) * 60_000), 30,
                     what="the gauges: free below the threshold, new/ holding the backlog")
            (line,) = dut.wait_log("spool_nearly_full")
            assert f"min_free_bytes={MIN_FREE}" in line
        finally:
            own_broker.resume()
        got = drain(dut, sent)
        dut.wait_log("spool_space_recovered", timeout=30)
        status, reply = post(http_port, 4_399_999)
        assert (status, reply["result"]) == (201, "created"), reply
        sent.append(4_399_999)
        for i in range(5):
            dut.hook({**end_env(4_390_000 + i), "PAD": PAD})
            sent.append(4_390_000 + i)
        got = drain(dut, sent)
        assert_alive(dut)
        t = tally("spool_capacity", sent, got, dut, refused=refused)
        assert t.lost == 0 and t.dead_lettered == 0, t.missing[:20]
        assert dut.stop() == 0


def fill_until_refused(dut, sent: list[int]) -> int:
    """Hook records until the hook refuses one; the file system is then still far from full.
    Returns how many records were refused (one)."""
    for i in range(200):
        job = 4_300_000 + i
        res = dut.hook({**end_env(job), "PAD": PAD}, check=False)
        if res.returncode == 0:
            sent.append(job)
            continue
        assert res.returncode == 74, res
        assert res.stderr.decode().rstrip("\n") == (
            f"jobcompd-spool: spool nearly full: {dut.spool}/new has {free(dut)} bytes free, "
            f"less than SpoolMinFreeBytes={MIN_FREE}; job {job} end not recorded")
        assert not [n for n in dut.new_files() if f".{job}." in n]
        assert os.listdir(dut.spool / "tmp") == []
        # Refused before the last record's worth of the threshold was used up.
        assert MIN_FREE - 70_000 < free(dut) < MIN_FREE
        assert len(sent) > 20
        return 1
    pytest.fail(f"the hook never refused; {free(dut)} bytes free")


def check_every_writer_refuses(dut, c_hook, http_port: int) -> None:
    """The C hook, PrologSlurmctld (exit 0, still said) and the HTTP intake (503) too."""
    before = sorted(dut.new_files())
    env = {**end_env(4_300_900), "JOBCOMPD_SPOOL": str(dut.spool)}
    res = dut_run(c_hook, env)
    assert res.returncode == 74 and b"spool nearly full" in res.stderr, res
    prolog = {"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_ID": "4300901",
              "JOBCOMPD_SPOOL": str(dut.spool)}
    for hook in (c_hook, None):
        res = dut_run(hook, prolog) if hook else dut.hook(prolog, check=False)
        assert res.returncode == 0, res
        assert b"spool nearly full" in res.stderr and b"job 4300901 start not recorded" in \
            res.stderr, res
    status, reply = post(http_port, 4_300_902)
    assert status == 503 and "spool nearly full" in reply["error"], (status, reply)
    assert sorted(dut.new_files()) == before
    assert os.listdir(dut.spool / "tmp") == []
    assert shutil.disk_usage(dut.spool).free > MIN_FREE // 2


def dut_run(hook, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A hook run as slurmctld runs it: no arguments, only the environment given."""
    return subprocess.run([str(hook)], env=env, capture_output=True, cwd="/tmp", timeout=30,
                          check=False)


def low_gauges(port: int, backlog_bytes: int) -> str | None:
    """The scrape once it shows the spool below its threshold and new/ holding the backlog."""
    text = scrape("127.0.0.1", port)
    low = value(text, "jobcompd_spool_free_bytes")
    held = value(text, "jobcompd_spool_bytes")
    ok = (low is not None and low < MIN_FREE and held is not None and held >= backlog_bytes
          and value(text, "jobcompd_spool_min_free_bytes") == MIN_FREE)
    return text if ok else None
