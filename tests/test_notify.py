"""sd_notify: the datagrams systemd would receive, read from a socket the test binds."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from jobcompd.service import notify
from tests.broker import wait_for
from tests.support import DATA, DaemonUnderTest, read_env_fixture


class NotifySocket:
    """What systemd does for Type=notify: an AF_UNIX datagram socket named in NOTIFY_SOCKET."""

    def __init__(self) -> None:
        # A short folder: socket paths are limited to 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="jcd-notify-", dir="/tmp"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def receive(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            fields["_at"] = str(time.monotonic())
            self.messages.append(fields)

    def wait(self, predicate, timeout: float = 30, what: str = "a notification") -> dict:
        def found():
            return next((m for m in self.receive() if predicate(m)), None)
        return wait_for(found, timeout, what=what)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


@pytest.fixture
def notify_socket():
    ns = NotifySocket()
    yield ns
    ns.close()


def end_env(job_id: int) -> dict[str, str]:
    env = read_env_fixture(DATA / "records" / "end-4.env")
    env["JOBID"] = str(job_id)
    return env


# --------------------------------------------------------------------------- the module alone


def test_messages_reach_the_socket_in_sd_notify_format(notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    notify.ready("backlog 0")
    notify.reloading()
    notify.status("backlog 3")
    notify.watchdog()
    notify.stopping(flush_timeout_ms=2500)
    got = wait_for(lambda: len(notify_socket.receive()) >= 5 and notify_socket.messages, 5)
    ready, reloading, status, watchdog, stopping = got[:5]
    assert ready["READY"] == "1" and ready["STATUS"] == "backlog 0"
    assert reloading["RELOADING"] == "1"
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 < now_usec - int(reloading["MONOTONIC_USEC"]) < 5_000_000
    assert status == {"STATUS": "backlog 3", "_at": status["_at"]}
    assert watchdog["WATCHDOG"] == "1"
    assert stopping["STOPPING"] == "1"
    # flush_timeout plus a margin for saving the state file.
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) == 2_500_000 + int(notify.STOP_MARGIN_S * 1e6)


def test_stopping_without_a_flush_timeout_asks_for_no_extension(notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    notify.stopping()
    notify.stopping(flush_timeout_ms=-1)  # wait forever: only TimeoutStopSec= can say how long
    got = wait_for(lambda: len(notify_socket.receive()) >= 2 and notify_socket.messages, 5)
    assert all("EXTEND_TIMEOUT_USEC" not in m for m in got)


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify.ready("x")
    notify.watchdog()
    assert notify.watchdog_interval() is None


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),  # half of WatchdogSec=30s
        ("30000000", "self", 15.0),
        ("30000000", "other", None),  # set for another process (inherited environment)
        ("", None, None),
        ("0", None, None),
        ("abc", None, None),
        ("1000000", "notanumber", None),
    ],
)
def test_watchdog_interval_is_half_the_period_and_only_for_us(monkeypatch, usec, pid, expected):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", {"self": str(os.getpid()),
                                            "other": str(os.getpid() + 1)}.get(pid, pid))
    assert notify.watchdog_interval() == expected


def test_watchdog_timer_pings_once_per_interval(notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    timer = notify.WatchdogTimer(2.0)
    assert timer.maybe_ping(100.0)
    assert not timer.maybe_ping(101.0)
    assert timer.time_left(101.0) == pytest.approx(1.0)
    assert timer.maybe_ping(102.0)
    pings = wait_for(lambda: len(notify_socket.receive()) >= 2 and notify_socket.messages, 5)
    assert [m["WATCHDOG"] for m in pings] == ["1", "1"]
    off = notify.WatchdogTimer(None)
    assert not off.maybe_ping(100.0)
    assert off.time_left(100.0) == float("inf")


def test_status_line_says_what_an_operator_looks_for():
    line = notify.format_status(backlog=12000, backlog_truncated=True, in_flight=500,
                                delivered=7, failed=2, broker_up=False,
                                last_error="broker:9092/1: Connect failed:\n Connection refused")
    assert line == ("backlog 12000+, in flight 500, delivered 7, failed 2, broker down; "
                    "last error: broker:9092/1: Connect failed: Connection refused")
    long = notify.format_status(backlog=0, in_flight=0, delivered=0, failed=0, broker_up=None,
                                last_error="x" * 500)
    assert "broker unknown" in long
    assert len(long) < 200 and long.endswith("…")


# --------------------------------------------------------------------------- the real daemon


@pytest.mark.broker
def test_ready_comes_after_the_startup_scan(daemon: DaemonUnderTest, notify_socket):
    # Three records are waiting before the daemon starts: READY=1 must count them.
    new = daemon.spool / "new"
    new.mkdir(parents=True)
    for i in range(3):
        (new / f"{time.time_ns():019d}.{900 + i}.end.env").write_bytes(
            b"".join(f"{k}={v}".encode() + b"\0" for k, v in end_env(900 + i).items()))
    daemon.start(extra_env={"NOTIFY_SOCKET": str(notify_socket.path)})
    ready = notify_socket.wait(lambda m: m.get("READY") == "1", what="READY=1")
    assert ready["STATUS"].startswith("backlog 3,"), ready
    assert len(daemon.consume(3)) == 3


@pytest.mark.broker
def test_reload_and_stop_are_announced(daemon: DaemonUnderTest, notify_socket):
    daemon.start(extra_env={"NOTIFY_SOCKET": str(notify_socket.path)})
    notify_socket.wait(lambda m: m.get("READY") == "1", what="READY=1")
    daemon.signal(signal.SIGHUP)
    reloading = notify_socket.wait(lambda m: m.get("RELOADING") == "1", what="RELOADING=1")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    ready_again = notify_socket.wait(
        lambda m: m.get("READY") == "1" and float(m["_at"]) >= float(reloading["_at"]),
        what="READY=1 after the reload")
    assert ready_again is not reloading
    daemon.signal(signal.SIGTERM)
    notify_socket.wait(lambda m: m.get("STOPPING") == "1", what="STOPPING=1")
    assert daemon.wait_exit() == 0


@pytest.mark.broker
def test_stopping_asks_for_the_flush_timeout(daemon: DaemonUnderTest, notify_socket):
    """A flush_timeout longer than TimeoutStopSec= must not be cut short by SIGKILL."""
    daemon.params["flush_timeout"] = "30000"
    daemon.write_config()
    daemon.start(extra_env={"NOTIFY_SOCKET": str(notify_socket.path)})
    notify_socket.wait(lambda m: m.get("READY") == "1", what="READY=1")
    daemon.signal(signal.SIGTERM)
    stopping = notify_socket.wait(lambda m: m.get("STOPPING") == "1", what="STOPPING=1")
    assert daemon.wait_exit() == 0
    assert int(stopping.get("EXTEND_TIMEOUT_USEC", 0)) >= 30_000_000, stopping


@pytest.mark.broker
def test_status_is_kept_current_without_any_signal(daemon: DaemonUnderTest, notify_socket):
    """STATUS= follows the numbers as they change, not only at READY=1."""
    daemon.start(extra_env={"NOTIFY_SOCKET": str(notify_socket.path)})
    notify_socket.wait(lambda m: m.get("READY") == "1", what="READY=1")
    for i in range(5):
        daemon.hook(end_env(950 + i))
    (daemon.spool / "new" / f"{time.time_ns():019d}.960.end.json").write_bytes(b"{broken")
    assert len(daemon.consume(5)) == 5
    status = notify_socket.wait(
        lambda m: "delivered 5," in m.get("STATUS", "") and "failed 1," in m.get("STATUS", ""),
        timeout=30, what="STATUS= with delivered 5 and failed 1")
    assert "broker up" in status["STATUS"]
    assert "backlog 0," in status["STATUS"]
    assert "last error" in status["STATUS"]  # the malformed record


@pytest.mark.broker
def test_watchdog_pings_while_the_loop_runs(daemon: DaemonUnderTest, notify_socket):
    """WATCHDOG=1 at half the period, even while the daemon has nothing to do."""
    daemon.start(extra_env={"NOTIFY_SOCKET": str(notify_socket.path),
                            "WATCHDOG_USEC": "1000000"})  # WatchdogSec=1s: a ping every 0.5 s
    notify_socket.wait(lambda m: m.get("READY") == "1", what="READY=1")
    t0 = time.monotonic()
    wait_for(lambda: sum(m.get("WATCHDOG") == "1" and float(m["_at"]) >= t0
                         for m in notify_socket.receive()) >= 4,
             timeout=10, what="4 WATCHDOG=1 pings")
    pings = [float(m["_at"]) for m in notify_socket.messages if m.get("WATCHDOG") == "1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 1.0, gaps  # never as late as the watchdog period itself
