"""``jobcompd check --connect``, ``jobcompd consume`` and the commands' help, against the
real broker where one is involved."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from tests.broker import Tansu, free_port
from tests.faults.common import end_env
from tests.support import ROOT, DaemonUnderTest


def jobcompd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobcompd", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(), cwd=ROOT)


@pytest.fixture(autouse=True)
def no_unit(tmp_path_factory, monkeypatch):
    """A systemctl that knows no jobcompd.service: the check must not depend on this host's."""
    stub = tmp_path_factory.mktemp("bin")
    (stub / "systemctl").write_text("#!/bin/sh\necho LoadState=not-found\n")
    (stub / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JOBCOMPD_CONFIG", None)
    return env


def ready(dut: DaemonUnderTest) -> DaemonUnderTest:
    """The folders `jobcompd run` needs, as the tmpfiles entry would make them."""
    for sub in ("tmp", "new", "failed"):
        (dut.spool / sub).mkdir(parents=True, exist_ok=True)
    return dut


def produce(bootstrap: str, topic: str, *values: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        p.produce(topic, value=value, key=b"testcluster:1", headers=[("event", b"job_end")])
    assert p.flush(30) == 0


# --------------------------------------------------------------------------- check --connect


@pytest.mark.broker
def test_check_connect_reaches_the_broker_and_reports_the_topics(daemon: DaemonUnderTest):
    daemon.start()
    daemon.hook({"JOBID": "7", "UID": "0", "GID": "0", "START": "1", "END": "2", "PROCS": "1",
                 "NODECNT": "1", "EXITCODE": "0:0", "DERIVED_EC": "0:0"})
    assert len(daemon.consume(1)) == 1  # the topic exists now
    res = jobcompd("check", "--connect", "-c", str(daemon.conf))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"broker {daemon.bootstrap}: reachable (1 broker in the cluster)" in res.stdout
    assert f"topic {daemon.topic}: exists" in res.stdout
    assert res.stderr == ""


@pytest.mark.broker
def test_check_connect_without_a_broker_gives_one_verdict_with_the_cause(tmp_path):
    """Not ~200 librdkafka lines on stdout ending in "last error: none": one sentence that
    names the broker, the cause, and the file and line that set it, before the 10 s."""
    port = free_port()
    dut = ready(DaemonUnderTest(root=tmp_path, bootstrap=f"127.0.0.1:{port}"))
    started = time.monotonic()
    res = jobcompd("check", "--connect", "-c", str(dut.conf))
    took = time.monotonic() - started
    assert res.returncode == 69, res.stdout + res.stderr
    assert res.stderr.splitlines() == [
        f"jobcompd: cannot reach the broker at 127.0.0.1:{port}: Connection refused "
        f"(bootstrap.servers, {dut.rdkafka}:1); is the broker running, and listening on that "
        "address and port?"]
    assert "rdkafka#producer" not in res.stdout and "Connect to ipv4" not in res.stdout
    assert "last error" not in res.stdout + res.stderr
    assert len(res.stdout.splitlines()) < 20
    assert took < 9, f"took {took:.1f} s: a refused connection needs no 10 s wait"


@pytest.mark.broker
def test_check_connect_names_the_host_in_a_resolve_failure(tmp_path):
    dut = ready(DaemonUnderTest(root=tmp_path, bootstrap="no-such-host.invalid:9092"))
    res = jobcompd("check", "--connect", "-c", str(dut.conf))
    assert res.returncode == 69
    (line,) = res.stderr.splitlines()
    assert line.startswith("jobcompd: cannot reach the broker at no-such-host.invalid:9092: "
                           "Failed to resolve 'no-such-host.invalid:9092': ")
    assert line.endswith("check the host name in bootstrap.servers")


@pytest.mark.broker
def test_check_connect_finds_a_broker_that_advertises_an_unreachable_address(tmp_path):
    """The bootstrap address answers, but the broker names itself at an address nobody
    listens on: every record would wait there. The check says so."""
    advertised = free_port()
    tansu = Tansu(advertised_port=advertised).start()
    try:
        dut = ready(DaemonUnderTest(root=tmp_path, bootstrap=f"127.0.0.1:{tansu.port}"))
        res = jobcompd("check", "--connect", "-c", str(dut.conf))
    finally:
        tansu.stop()
    assert res.returncode == 69, res.stdout + res.stderr
    assert f"broker 127.0.0.1:{tansu.port}: reachable" in res.stdout
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"jobcompd: 127.0.0.1:{tansu.port} answered, but records go to the "
                           "brokers it names, and this host cannot connect to broker ")
    assert line.endswith(f" at 127.0.0.1:{advertised}: Connection refused: set the broker's "
                         "advertised.listeners to an address this host reaches")


def test_check_without_connect_needs_no_broker(tmp_path):
    dut = ready(DaemonUnderTest(root=tmp_path, bootstrap=f"127.0.0.1:{free_port()}"))
    res = jobcompd("check", "-c", str(dut.conf))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[0] == f"configuration {dut.conf}: ok"


# --------------------------------------------------------------------------- consume


@pytest.mark.broker
def test_consume_prints_what_arrived(daemon: DaemonUnderTest):
    daemon.start()
    daemon.hook({"JOBID": "8", "UID": "0", "GID": "0", "START": "1", "END": "2", "PROCS": "1",
                 "NODECNT": "1", "EXITCODE": "0:0", "DERIVED_EC": "0:0"})
    (sent,) = daemon.consume(1)
    res = jobcompd("consume", "-c", str(daemon.conf), "--from-beginning", "-n", "1",
                   "--timeout", "30")
    assert res.returncode == 0, res.stderr
    line = res.stdout.splitlines()[0]
    got = json.loads(line)
    assert got["key"] == "testcluster:8"
    assert got["headers"]["event"] == "job_end"
    assert got["value"]["jobid"] == 8
    assert line.endswith(f', "value": {sent.value.decode()}}}')  # the bytes Kafka holds


@pytest.mark.broker
def test_consume_shows_the_value_byte_for_byte_and_stops_at_the_end(broker, tmp_path):
    """json-c's \\/ and a float's digits as sent, not as Python would write them again; and
    --from-beginning ends by itself at the end of the topic."""
    dut = DaemonUnderTest(root=tmp_path, bootstrap=broker.bootstrap)
    first = b'{"jobid":1,"std_out":"\\/home\\/u\\/out","cpu_hours":1.50,"x":1e2}'
    produce(broker.bootstrap, dut.topic, first, b"not json", b'{"a":\n1}')
    res = jobcompd("consume", "-c", str(dut.conf), "--from-beginning")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(', "value": ' + first.decode() + "}")
    assert [json.loads(ln)["offset"] for ln in lines] == [0, 1, 2]
    assert json.loads(lines[1])["value"] == "not json"
    assert json.loads(lines[2])["value"] == '{"a":\n1}'  # one message, one line
    assert f"3 messages: the end of {dut.topic}" in res.stderr

    raw = subprocess.run([sys.executable, "-m", "jobcompd", "consume", "-c", str(dut.conf),
                          "--from-beginning", "--value-only", "-n", "1"],
                         capture_output=True, timeout=60, env=_env(), cwd=ROOT)
    assert raw.returncode == 0
    assert raw.stdout == first + b"\n"


@pytest.mark.broker
def test_consume_waits_for_the_next_message_or_says_it_did_not_come(broker, tmp_path):
    dut = DaemonUnderTest(root=tmp_path, bootstrap=broker.bootstrap)
    produce(broker.bootstrap, dut.topic, b'{"old":1}')
    proc = subprocess.Popen([sys.executable, "-m", "jobcompd", "consume", "-c", str(dut.conf),
                             "-n", "1", "--timeout", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    try:
        waiting = _stderr_line(proc, "waiting for new messages", timeout=30)
        assert waiting == f"jobcompd consume: waiting for new messages on {dut.topic}\n"
        produce(broker.bootstrap, dut.topic, b'{"new":2}')
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert out.decode().endswith(', "value": {"new":2}}\n')

    res = jobcompd("consume", "-c", str(dut.conf), "-n", "1", "--timeout", "1")
    assert res.returncode == 75
    assert res.stdout == ""
    assert "jobcompd consume: 0 of 1 message arrived within 1 s" in res.stderr


@pytest.mark.broker
def test_consume_waits_for_a_topic_that_does_not_exist_yet(broker, tmp_path):
    """Before the first job ends the topic may not exist: consume says so, and prints the
    records once the broker creates it."""
    dut = DaemonUnderTest(root=tmp_path, bootstrap=broker.bootstrap)
    proc = subprocess.Popen([sys.executable, "-m", "jobcompd", "consume", "-c", str(dut.conf),
                             "-n", "2", "--timeout", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    try:
        _stderr_line(proc, f"topic {dut.topic} does not exist yet; waiting for it", timeout=30)
        produce(broker.bootstrap, dut.topic, b'{"a":1}', b'{"b":2}')
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert [json.loads(ln)["value"] for ln in out.decode().splitlines()] == [{"a": 1}, {"b": 2}]


def _stderr_line(proc: subprocess.Popen, text: str, timeout: float) -> str:
    """The first line of the process's stderr holding ``text``, within ``timeout``."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        if not sel.select(max(0.0, deadline - time.monotonic())):
            continue
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        for line in buffer.decode(errors="replace").splitlines(keepends=True):
            if text in line and line.endswith("\n"):
                return line
    raise AssertionError(f"no {text!r} on stderr within {timeout} s: {buffer!r}")


@pytest.mark.broker
def test_consume_from_the_beginning_reads_the_topics_that_exist(broker, tmp_path):
    """The quick start: job start events on, an end record sent, no start topic yet. consume
    prints the end record, says the start topic has nothing yet, and exits 0."""
    dut = DaemonUnderTest(root=tmp_path, bootstrap=broker.bootstrap,
                          params={"enable_job_start": None})
    dut.start()
    try:
        dut.hook(end_env(77))
        dut.consume(1)  # delivered
        res = jobcompd("consume", "-c", str(dut.conf), "--from-beginning")
    finally:
        dut.stop()
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    assert json.loads(line)["topic"] == dut.topic
    assert f"topic {dut.start_topic} does not exist yet: nothing there to read" in res.stderr


@pytest.mark.broker
def test_consume_of_a_missing_topic_and_of_no_broker(broker, tmp_path):
    dut = DaemonUnderTest(root=tmp_path, bootstrap=broker.bootstrap)
    res = jobcompd("consume", "-c", str(dut.conf), "--from-beginning", "--topic", "no-such")
    assert res.returncode == 66
    assert res.stderr.startswith("jobcompd: topic no-such does not exist on the broker at "
                                 f"{broker.bootstrap}")
    port = free_port()
    down = DaemonUnderTest(root=tmp_path / "down", bootstrap=f"127.0.0.1:{port}")
    res = jobcompd("consume", "-c", str(down.conf), "-n", "1")
    assert res.returncode == 69
    assert res.stderr.splitlines() == [
        f"jobcompd: cannot reach the broker at 127.0.0.1:{port}: Connection refused "
        f"(bootstrap.servers, {down.rdkafka}:1); is the broker running, and listening on that "
        "address and port?"]


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize(("command", "says", "codes"), [
    ("run", "Run the daemon in the foreground", [0, 69, 73, 75, 78]),
    ("check", "as the user the daemon runs as", [0, 67, 69, 73, 77, 78]),
    ("consume", "The value is put in exactly as Kafka holds it", [0, 66, 69, 75, 78]),
])
def test_help_describes_the_command_and_its_exit_status(command, says, codes):
    res = jobcompd(command, "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert says in text
    listed = res.stdout.split("exit status:\n", 1)[1]
    assert [int(m[1]) for m in re.finditer(r"^  (\d+) ", listed, re.MULTILINE)] == codes


def test_consume_counts_must_be_positive():
    res = jobcompd("consume", "-n", "0")
    assert res.returncode == 2
    assert "argument -n/--count: 0 is not 1 or more" in res.stderr


_IMPORTED_BY_RUN = """
import sys
from jobcompd.cli.main import main
code = main(["run", "-c", sys.argv[1]])
print(code, *sorted(m for m in sys.modules if m.startswith("jobcompd.")))
"""


def test_run_starts_without_the_other_commands_modules(tmp_path):
    """What a restart on a backlog waits for: ``run`` leaves backfill & co. unimported,
    while ``--help`` still lists every command."""
    res = subprocess.run([sys.executable, "-c", _IMPORTED_BY_RUN, str(tmp_path / "none.conf")],
                         capture_output=True, text=True, timeout=60)
    code, *modules = res.stdout.split()
    assert code == "78", res.stderr  # no such configuration file
    assert "jobcompd.service.daemon" in modules
    assert not {"jobcompd.backfill", "jobcompd.cli.check", "jobcompd.cli.consume",
                "jobcompd.cli.ops", "jobcompd.cli.schema", "jobcompd.cli.preflight",
                "jobcompd.cli.brokercheck"} & set(modules)
    listed = jobcompd("--help").stdout
    assert all(command in listed for command in ("run", "backfill", "failed", "schema"))
