"""Fault 10: file descriptors exhausted, by idle connections to MetricsListen and HttpListen.

Hundreds of connections that say nothing once took every descriptor the daemon had (systemd's
default soft limit is 1,024), and the sd_notify call that followed raised EMFILE and killed it.
Now each endpoint holds a few connections at most, cutting the oldest idle one for each new
one. The test runs the daemon under systemd's notify protocol (a socket of the test's own, a
watchdog of 2 s) and attacks it twice:

1. at systemd's default limit, 300 idle connections to each endpoint while records stream in:
   every record is delivered, a scrape and a POST get through, the descriptors stay bounded;
2. with the limit lowered to a few descriptors above what the daemon holds, and connections
   renewed as they are cut: the process runs out (EMFILE) for its spool, state and status
   files; records wait in new/ (some get through whenever a cut connection frees a
   descriptor), nothing is dead-lettered, the daemon stays alive and keeps pinging the
   watchdog, and once the connections close everything is delivered.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import free_port, wait_for
from tests.faults.common import (
    Stream,
    assert_alive,
    drain,
    drop,
    fds_of,
    new_is_empty,
    tally,
    wait_empty,
)
from tests.support import DATA, DaemonUnderTest

pytestmark = [pytest.mark.broker, pytest.mark.faults]

ES_BODY = (DATA / "records" / "elasticsearch" / "es-0001-job36.json").read_bytes()
#: Descriptors each endpoint may hold: twice its 8 slots (connections being cut included), and
#: the refused connections lingering for their answer.
PER_ENDPOINT = 2 * 8 + 2 * 8


class Notifications:
    """systemd's side of sd_notify: a datagram socket, and the messages that reached it."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())

    def pings(self) -> int:
        return sum(1 for m in self.messages if "WATCHDOG=1" in m)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class Attacker:
    """Keeps ``count`` idle connections open to each address, opening a new one for each
    that the daemon cuts, until stopped."""

    def __init__(self, addresses: list[tuple[str, int]], count: int) -> None:
        self.addresses = addresses
        self.count = count
        self.opened = 0
        self._socks: dict[tuple[str, int], list[socket.socket]] = {a: [] for a in addresses}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Attacker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for address, socks in self._socks.items():
                socks[:] = [s for s in socks if not _closed_by_peer(s)]
                while len(socks) < self.count and not self._stop.is_set():
                    try:
                        socks.append(socket.create_connection(address, timeout=0.5))
                    except OSError:
                        break  # the listen queue is full: the daemon is out of descriptors
                    self.opened += 1
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for socks in self._socks.values():
            for s in socks:
                s.close()


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        s.setblocking(False)
        gone = s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        gone = True
    if gone:
        s.close()
    return gone


def open_idle(address: tuple[str, int], count: int) -> list[socket.socket]:
    return [socket.create_connection(address, timeout=10) for _ in range(count)]


def scrape(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read().decode()
    finally:
        conn.close()


def post(port: int, job_id: int) -> int:
    body = json.loads(ES_BODY)
    body["jobid"] = job_id
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/slurm/jobcomp", body=json.dumps(body).encode())
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def notified_dut(dut: DaemonUnderTest, tmp_path: Path) -> Iterator[tuple[DaemonUnderTest,
                                                                          Notifications]]:
    notes = Notifications(tmp_path / "notify.sock")
    dut.extra_conf.update(MetricsListen=f"127.0.0.1:{free_port()}",
                          HttpListen=f"127.0.0.1:{free_port()}")
    dut.write_config()
    dut.start(extra_env={"NOTIFY_SOCKET": str(notes.path), "WATCHDOG_USEC": "2000000"})
    yield dut, notes
    notes.close()


def _port(dut: DaemonUnderTest, key: str) -> int:
    return int(dut.extra_conf[key].rsplit(":", 1)[1])


def test_idle_connections_at_systemds_default_limit(notified_dut):
    dut, _ = notified_dut
    pid = dut.proc.pid
    metrics, http_in = _port(dut, "MetricsListen"), _port(dut, "HttpListen")
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))
    fds_before = fds_of(pid)
    stream = Stream(dut, 10_000_000, rate=200, hook_every=10).start()
    idle: list[socket.socket] = []
    try:
        stream.wait_sent(100)
        for address in (("127.0.0.1", metrics), ("127.0.0.1", http_in)):
            idle += open_idle(address, 300)
        most = fds_of(pid)
        assert most <= fds_before + 2 * PER_ENDPOINT, f"{fds_before} -> {most} descriptors"
        assert "jobcompd_records_delivered_total" in scrape(metrics)
        assert post(http_in, 10_999_999) == 201
        stream.wait_sent(len(stream.sent) + 200)
    finally:
        sent = stream.stop()
        for s in idle:
            s.close()
    sent.append(10_999_999)
    got = drain(dut, sent)
    assert_alive(dut)
    t = tally("fd_idle_connections", sent, got, dut, connections=len(idle),
              fds=f"{fds_before}->{most}")
    assert t.lost == 0 and t.dead_lettered == 0
    assert not dut.log_lines("sd_notify_failed")
    assert dut.stop() == 0


def test_descriptors_exhausted_nothing_is_lost_and_the_daemon_lives(notified_dut):
    dut, notes = notified_dut
    pid = dut.proc.pid
    metrics, http_in = _port(dut, "MetricsListen"), _port(dut, "HttpListen")
    sent = [10_100_000 + i for i in range(10)]
    for job in sent:
        drop(dut.spool, job)
    wait_for(lambda: new_is_empty(dut), 30, what="the first records delivered")
    spare = fds_of(pid) + 4
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (spare, spare))
    attacker = Attacker([("127.0.0.1", metrics), ("127.0.0.1", http_in)], 30).start()
    try:
        dut.wait_log("metrics_connections_waiting", timeout=30)  # accept() got EMFILE

        def one_more() -> None:  # until one cannot be read (a descriptor may free up a moment)
            sent.append(sent[-1] + 1)
            drop(dut.spool, sent[-1])

        wait_for(lambda: dut.log_lines("spool_read_failed") or one_more(), 30, interval=0.2,
                 what="a record the daemon has no descriptor to read")
        for _ in range(10):
            one_more()
        pings = notes.pings()
        wait_for(lambda: notes.pings() >= pings + 3, 30, what="watchdog pings while out of "
                 "descriptors")
        assert "Too many open files" in "".join(dut.log_lines("spool_read_failed"))
        assert dut.failed_files() == []
        assert_alive(dut)
        waiting = len(dut.new_files())
    finally:
        attacker.stop()
    closed = time.monotonic()
    wait_empty(dut, 60)  # the connections are closed: everything goes out
    recovered_s = time.monotonic() - closed
    assert_alive(dut)
    assert "jobcompd_records_delivered_total" in scrape(metrics)
    assert post(http_in, 10_199_999) == 201
    sent.append(10_199_999)
    got = drain(dut, sent, timeout=60)
    t = tally("fd_exhaustion", sent, got, dut, attack_connections=attacker.opened,
              limit=spare, pings=notes.pings(), waiting=waiting,
              recovered_s=f"{recovered_s:.1f}",
              throttled_lines=len(dut.log_lines("spool_read_failed")))
    assert t.lost == 0 and t.dead_lettered == 0
    # Each trouble is logged once a minute, however many times it happens.
    assert len(dut.log_lines("spool_read_failed")) <= 2
    assert len(dut.log_lines("metrics_connections_waiting")) <= 2
    assert dut.stop() == 0
