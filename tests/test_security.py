"""Security: secrets stay out of every output, a readable secret is warned about, and the daemon
speaks TLS to the broker (and refuses a broker it cannot verify, keeping the records).

TLS needs socat and the openssl CLI: the test installs socat with apt-get or dnf when it is
missing (the Makefile's sysdeps should install it too), and is skipped only if that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.broker import Tansu, free_port, wait_for
from tests.faults.common import end_env
from tests.support import DaemonUnderTest

pytestmark = pytest.mark.broker

SECRETS = {
    "sasl.password": "s3cr3t-SASL-pw-8f1e",
    "ssl.key.password": "s3cr3t-KEY-pw-77aa",
    "ssl.keystore.password": "s3cr3t-KEYSTORE-pw-0c3d",
    "sasl.oauthbearer.client.secret": "s3cr3t-OAUTH-cs-5b9e",
}


def _run_cli(*args: str, timeout: float = 30) -> str:
    res = subprocess.run([sys.executable, "-m", "jobcompd", *args], capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return res.stdout + res.stderr


def test_secrets_never_reach_the_log_or_any_output(daemon: DaemonUnderTest):
    """sasl.password and friends set, librdkafka's debug=all and DebugFlags=JobComp on, the
    password really used in a SASL handshake, a reload that changes it, a reload that fails on
    a secret-looking property: not one secret value in any log line, state or status file, or
    in what `jobcompd check` prints."""
    daemon.kafka.update(SECRETS)
    daemon.kafka.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                         "sasl.username": "jobcompd", "debug": "all",
                         "message.timeout.ms": "3000"})
    daemon.extra_conf["DebugFlags"] = "JobComp"
    metrics = daemon.root / "jobcompd.prom"
    daemon.extra_conf["MetricsTextfile"] = str(metrics)
    daemon.write_config()
    os.chmod(daemon.rdkafka, 0o600)
    daemon.start()
    daemon.hook(end_env(13_000_000))
    daemon.wait_log("librdkafka", count=200)  # debug=all is talking: the handshake was tried
    daemon.wait_log("deliveries_retrying", timeout=30)  # the broker refused SASL: records wait

    secrets = dict(SECRETS)
    secrets["sasl.password"] = "s3cr3t-SASL-pw-CHANGED-41"
    daemon.kafka.update(secrets)
    daemon.write_config()
    os.chmod(daemon.rdkafka, 0o600)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded")
    daemon.wait_log("producer_rebuilt")

    bad = dict(daemon.kafka)
    bad["sasl.passwd.typo"] = "s3cr3t-TYPO-pw-9d2c"
    daemon.rdkafka.write_text("".join(f"{k}={v}\n" for k, v in bad.items()))
    os.chmod(daemon.rdkafka, 0o600)
    daemon.signal(signal.SIGHUP)
    (line,) = daemon.wait_log("reload_failed")
    assert "sasl.passwd.typo: No such configuration property" in line
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(20) == 0

    outputs = {"daemon log": daemon.log_text(since_start=False)}
    for path in daemon.state.iterdir():
        if path.is_file():
            outputs[f"state dir file {path.name}"] = path.read_text(errors="replace")
    if metrics.exists():  # once the metrics textfile is wired
        outputs["metrics textfile"] = metrics.read_text(errors="replace")
    outputs["jobcompd check"] = _run_cli("check", "-c", str(daemon.conf))
    daemon.kafka.pop("sasl.passwd.typo", None)
    daemon.write_config()
    os.chmod(daemon.rdkafka, 0o600)
    outputs["jobcompd check --connect"] = _run_cli("check", "--connect", "-c", str(daemon.conf))
    status = _run_cli("status", "-c", str(daemon.conf))
    if "invalid choice" not in status:
        outputs["jobcompd status"] = status
    all_values = [*SECRETS.values(), secrets["sasl.password"], "s3cr3t-TYPO-pw-9d2c"]
    assert len(outputs["daemon log"].splitlines()) > 200
    for where, text in outputs.items():
        for value in all_values:
            assert value not in text, f"a secret in the {where}"
        assert "s3cr3t" not in text, f"part of a secret in the {where}"
    print(f"SECRETS searched {', '.join(outputs)}; "
          f"{sum(len(t.splitlines()) for t in outputs.values())} lines: 0 hits")


def test_world_readable_jobcomploc_with_a_secret_is_warned_about(daemon: DaemonUnderTest):
    daemon.kafka["sasl.password"] = SECRETS["sasl.password"]
    daemon.write_config()
    os.chmod(daemon.rdkafka, 0o644)
    daemon.start()
    lines = [ln for ln in daemon.log_lines("config_warning") if "readable by every" in ln]
    assert len(lines) == 1, daemon.log_text()
    assert str(daemon.rdkafka) in lines[0] and "sasl.password" in lines[0]
    assert SECRETS["sasl.password"] not in daemon.log_text()
    daemon.stop()

    os.chmod(daemon.rdkafka, 0o600)  # fixed: no warning any more
    daemon.start()
    assert not [ln for ln in daemon.log_lines("config_warning") if "readable by every" in ln]


# -- TLS ------------------------------------------------------------------------------------


def _socat() -> str:
    found = shutil.which("socat")
    if found:
        return found
    if os.geteuid() == 0:
        if shutil.which("apt-get"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            cmd = ["apt-get", "install", "-y", "-q", "socat"]
            if subprocess.run(cmd, capture_output=True, env=env).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
                subprocess.run(cmd, capture_output=True, env=env)
        elif shutil.which("dnf"):
            subprocess.run(["dnf", "install", "-y", "-q", "socat"], capture_output=True)
    found = shutil.which("socat")
    if not found:
        pytest.skip("socat is missing and could not be installed (apt-get install socat)")
    return found


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=jobcompd test {name}", cwd=d)


@pytest.fixture
def tls_broker(tmp_path):
    """Tansu behind a socat TLS endpoint; clients are told to come back through TLS."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is missing")
    socat = _socat()
    d = tmp_path / "pki"
    d.mkdir()
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
             cwd=d)
    tls_port = free_port()
    tansu = Tansu(log_path=tmp_path / "tansu.log", advertised_port=tls_port).start()
    proxy = subprocess.Popen(
        [socat, f"OPENSSL-LISTEN:{tls_port},fork,reuseaddr,bind=127.0.0.1,"
                f"cert={d / 'server.pem'},key={d / 'server.key'},verify=0",
         f"TCP:127.0.0.1:{tansu.port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import socket

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", tls_port)) == 0

    wait_for(listening, 10, what="socat TLS endpoint")
    yield f"127.0.0.1:{tls_port}", d
    os.killpg(proxy.pid, signal.SIGKILL)
    proxy.wait(10)
    tansu.stop()


def _consume_tls(bootstrap: str, ca: Path, topic: str, count: int, timeout: float = 30):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}",
                  "security.protocol": "SSL", "ssl.ca.location": str(ca),
                  "enable.auto.commit": False})
    out = []
    try:
        def parts():
            t = c.list_topics(topic, timeout=5).topics.get(topic)
            return list(t.partitions) if t is not None and t.error is None and t.partitions \
                else []
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                  for p in wait_for(parts, timeout, what=f"topic {topic}")])
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            out += [m for m in c.consume(100, 0.2) if not m.error()]
    finally:
        c.close()
    return out


def test_delivers_over_tls(tmp_path, tls_broker):
    bootstrap, pki = tls_broker
    dut = DaemonUnderTest(root=tmp_path / "jobcompd", bootstrap=bootstrap)
    dut.kafka.update({"security.protocol": "SSL", "ssl.ca.location": str(pki / "ca.pem")})
    dut.write_config()
    try:
        dut.start()
        for i in range(10):
            dut.hook(end_env(13_100_000 + i))
        got = _consume_tls(bootstrap, pki / "ca.pem", dut.topic, 10)
        assert sorted(json.loads(m.value())["jobid"] for m in got) == list(
            range(13_100_000, 13_100_010))
        wait_for(lambda: not dut.new_files(), 10, what="records retired")
        assert dut.stop() == 0
    finally:
        if dut.proc is not None and dut.proc.poll() is None:
            dut.kill()


def test_a_broker_it_cannot_verify_gets_nothing_and_the_records_stay(tmp_path, tls_broker):
    bootstrap, pki = tls_broker
    dut = DaemonUnderTest(root=tmp_path / "jobcompd", bootstrap=bootstrap)
    dut.kafka.update({"security.protocol": "SSL", "ssl.ca.location": str(pki / "other-ca.pem"),
                      "message.timeout.ms": "3000"})
    dut.write_config()
    try:
        dut.start()
        for i in range(10):
            dut.hook(end_env(13_200_000 + i))
        # A clear error that says what is wrong, as a kafka_error line.
        wait_for(lambda: [ln for ln in dut.log_lines("kafka_error")
                          if "certificate verify failed" in ln], 30,
                 what="a kafka_error about the certificate")
        dut.wait_log("deliveries_retrying", timeout=30)  # past message.timeout.ms
        assert len(dut.new_files()) == 10
        assert dut.failed_files() == []
        assert dut.proc.poll() is None
        try:
            leaked = _consume_tls(bootstrap, pki / "ca.pem", dut.topic, 1, timeout=3)
        except TimeoutError:
            leaked = []  # the topic was never even created
        assert leaked == []
        assert dut.stop() == 0
        assert len(dut.new_files()) == 10  # kept for when the CA is fixed

        dut.kafka["ssl.ca.location"] = str(pki / "ca.pem")  # the operator fixes the CA
        dut.write_config()
        dut.start()
        got = _consume_tls(bootstrap, pki / "ca.pem", dut.topic, 10)
        assert len({json.loads(m.value())["jobid"] for m in got}) == 10
    finally:
        if dut.proc is not None and dut.proc.poll() is None:
            dut.kill()
