"""``jobcompd check`` and ``jobcompd consume`` against the real broker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.broker import free_port
from tests.support import DaemonUnderTest

pytestmark = pytest.mark.broker


def jobcompd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobcompd", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_check_connect_reaches_the_broker_and_reports_the_topics(daemon: DaemonUnderTest):
    daemon.start()
    daemon.hook({"JOBID": "7", "UID": "0", "GID": "0", "START": "1", "END": "2", "PROCS": "1",
                 "NODECNT": "1", "EXITCODE": "0:0", "DERIVED_EC": "0:0"})
    assert len(daemon.consume(1)) == 1  # the topic exists now
    res = jobcompd("check", "--connect", "-c", str(daemon.conf))
    assert res.returncode == 0, res.stderr
    assert f"broker {daemon.bootstrap}: reachable" in res.stdout
    assert f"topic {daemon.topic}: exists" in res.stdout


def test_check_connect_without_a_broker_exits_69(tmp_path):
    dut = DaemonUnderTest(root=tmp_path, bootstrap=f"127.0.0.1:{free_port()}")
    res = jobcompd("check", "--connect", "-c", str(dut.conf))
    assert res.returncode == 69
    assert "no broker answered" in res.stderr


def test_check_without_connect_needs_no_broker(tmp_path):
    dut = DaemonUnderTest(root=tmp_path, bootstrap=f"127.0.0.1:{free_port()}")
    res = jobcompd("check", "-c", str(dut.conf))
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout.splitlines()[0]


def test_consume_prints_what_arrived(daemon: DaemonUnderTest):
    daemon.start()
    daemon.hook({"JOBID": "8", "UID": "0", "GID": "0", "START": "1", "END": "2", "PROCS": "1",
                 "NODECNT": "1", "EXITCODE": "0:0", "DERIVED_EC": "0:0"})
    assert len(daemon.consume(1)) == 1
    res = jobcompd("consume", "-c", str(daemon.conf), "--from-beginning", "-n", "1",
                   "--timeout", "30")
    assert res.returncode == 0, res.stderr
    line = json.loads(res.stdout.splitlines()[0])
    assert line["key"] == "testcluster:8"
    assert line["headers"]["event"] == "job_end"
    assert line["value"]["jobid"] == 8


_IMPORTED_BY_RUN = """
import sys
from jobcompd import cli
code = cli.main(["run", "-c", sys.argv[1]])
print(code, *sorted(m for m in sys.modules if m.startswith("jobcompd.")))
"""


def test_run_starts_without_the_other_commands_modules(tmp_path):
    """What a restart on a backlog waits for: ``run`` leaves backfill & co. unimported,
    while ``--help`` still lists every command."""
    res = subprocess.run([sys.executable, "-c", _IMPORTED_BY_RUN, str(tmp_path / "none.conf")],
                         capture_output=True, text=True, timeout=60)
    code, *modules = res.stdout.split()
    assert code == "78", res.stderr  # no such configuration file
    assert "jobcompd.daemon" in modules
    assert not {"jobcompd.backfill", "jobcompd.opscli", "jobcompd.schema_cmd"} & set(modules)
    listed = jobcompd("--help").stdout
    assert all(command in listed for command in ("run", "backfill", "failed", "schema"))
