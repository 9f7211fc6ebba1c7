"""Fault 12: a controller pair on one shared spool, the active daemon lost while records arrive.

Two daemons (``Standby=yes``, each with a StateSaveLocation and a host name of its own) share
one spool; the first is active, the second stands by. While a stream of records arrives (every
tenth through the real hook), the active one is SIGKILLed, SIGSTOPped (a hung host), or stopped
cleanly, at a random moment. The standby must take over within the documented bound, and every
record must arrive, duplicates only from the in-flight window, marked ``redelivery`` and with
the same ``jobcompd-id``.

A SIGSTOPped daemon keeps its lock: the file system does not break a lock whose holder lives.
What breaks it is systemd's watchdog (WatchdogSec=), played here by the test: the stopped loop
sends no WATCHDOG=1, and once the interval passes the watchdog kills it. The standby must not
take over before that.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from jobcompd.service import standby
from tests.broker import wait_for
from tests.faults.common import Stream, assert_alive, drain, report, rng, tally
from tests.support import DaemonUnderTest
from tests.test_notify import NotifySocket

pytestmark = [pytest.mark.broker, pytest.mark.faults]

#: From the lock's release to ``took_over``: one poll of the standby, then its start (the
#: producer, the scan of new/); the margin is for a loaded CI machine.
TAKEOVER_BOUND_S = standby.POLL_S + 9.0
#: The watchdog interval the test gives the active daemon (WATCHDOG_USEC).
WATCHDOG_S = 2.0


def _hostname_prefix(name: str) -> list[str]:
    """Run the daemon with a host name of its own (a UTS namespace), so that the lock holder
    reads ctl1:<pid> and ctl2:<pid>; nothing else is separated. Where that is not allowed,
    both share this host's name."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True)
    if probe.returncode != 0:
        return []
    return ["unshare", "--uts", "sh", "-c", f'hostname {name} && exec "$@"', "sh"]


@pytest.fixture
def pair(tmp_path, own_broker):
    """ctl1 (to be started first: active) and ctl2 (its standby) on ctl1's spool."""
    ctl1 = DaemonUnderTest(root=tmp_path / "ctl1", bootstrap=own_broker.bootstrap,
                           extra_conf={"Standby": "yes"}, command_prefix=_hostname_prefix("ctl1"))
    ctl2 = DaemonUnderTest(root=tmp_path / "ctl2", bootstrap=own_broker.bootstrap,
                           topic=ctl1.topic, extra_conf={"Standby": "yes"},
                           command_prefix=_hostname_prefix("ctl2"))
    ctl2.spool = ctl1.spool
    ctl2.write_config()
    yield ctl1, ctl2
    for d in (ctl1, ctl2):
        if d.proc is not None and d.proc.poll() is None:
            d.kill()  # SIGKILL ends a stopped process too


class Watchdog(threading.Thread):
    """systemd's WatchdogSec= for one daemon: once no WATCHDOG=1 came for ``interval``, kill it
    (systemd sends WatchdogSignal, then SIGKILL after TimeoutAbortSec; a stopped process acts
    only on the SIGKILL, which the test sends at once)."""

    def __init__(self, sock: NotifySocket, interval: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.interval = sock, interval
        self.pid: int | None = None
        self.killed_at: float | None = None
        self._done = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self._done.wait(0.05):
            pings = [m for m in self.sock.receive() if m.get("WATCHDOG") == "1"]
            if pings:
                last = max(last, float(pings[-1]["_at"]))
            if self.pid is not None and time.monotonic() - last > self.interval:
                os.kill(self.pid, signal.SIGKILL)
                self.killed_at = time.monotonic()
                return

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(5)


def _takeover(ctl2: DaemonUnderTest, since: float) -> float:
    ctl2.wait_log("took_over", timeout=60)
    return time.monotonic() - since


def _run_fault(pair, request, fault, name: str) -> None:
    """Stream records, apply ``fault`` to the active daemon at a random moment, let the
    standby take over, count. ``fault(ctl1)`` returns the moment the lock was released and
    the moment the fault began."""
    ctl1, ctl2 = pair
    random = rng(request.node.name)
    ctl1.start()
    ctl2.start(wait_ready=False)
    ctl2.wait_log("standby")
    stream = Stream(ctl1, 8_000_000, rate=300, hook_every=10).start()
    try:
        stream.wait_sent(300)
        time.sleep(random.uniform(0.0, 1.5))  # the fault itself: a random moment
        released, began = fault(ctl1)
        took = _takeover(ctl2, released)
        since_fault = _takeover(ctl2, began)
        stream.wait_sent(len(stream.sent) + 300)
    finally:
        sent = stream.stop()
    got = drain(ctl2, sent, timeout=120, settle=2.0)
    assert not stream.hook_failures, stream.hook_failures[:3]
    t = tally(f"controller_pair_{name}", sent, got, ctl2,
              takeover_s=round(took, 2), from_fault_s=round(since_fault, 2))
    assert t.lost == 0, f"lost {t.missing[:20]}"
    assert t.dead_lettered == 0, ctl2.failed_files()[:10]
    assert t.unmarked == 0, f"{t.unmarked} duplicates without the redelivery header"
    assert took <= TAKEOVER_BOUND_S, f"took over {took:.1f} s after the release"
    assert_alive(ctl2)
    line = ctl2.log_lines("took_over")[0]
    assert f"previous={'ctl1' if ctl1.command_prefix else ''}" in line, line
    assert ctl2.stop() == 0


def _kill(ctl1: DaemonUnderTest) -> tuple[float, float]:
    ctl1.kill()
    now = time.monotonic()
    return now, now


def _stop_cleanly(ctl1: DaemonUnderTest) -> tuple[float, float]:
    began = time.monotonic()
    assert ctl1.stop() == 0
    return time.monotonic(), began


@pytest.mark.parametrize("fault", [_kill, _stop_cleanly], ids=["sigkill", "sigterm"])
def test_the_standby_takes_over_from_a_dead_or_stopped_active(pair, request, fault):
    _run_fault(pair, request, fault, request.node.callspec.id)


def test_a_hung_active_keeps_the_lock_until_the_watchdog_kills_it(pair, request):
    """SIGSTOP: the standby waits (the lock is held, its holder alive); the watchdog kills
    the hung daemon WATCHDOG_S after its last ping, and only then does the standby take over."""
    ctl1, ctl2 = pair
    sock = NotifySocket()
    dog = Watchdog(sock, WATCHDOG_S)
    usec = str(int(WATCHDOG_S * 1_000_000))
    real_start = ctl1.start

    def start_watched(wait_ready: bool = True, extra_env: dict | None = None):
        proc = real_start(wait_ready, {"NOTIFY_SOCKET": str(sock.path), "WATCHDOG_USEC": usec})
        dog.pid = proc.pid
        dog.start()
        return proc

    def hang(d: DaemonUnderTest) -> tuple[float, float]:
        d.signal(signal.SIGSTOP)
        began = time.monotonic()
        def killed() -> bool:  # the standby must wait as long as the holder lives
            assert not ctl2.log_lines("took_over"), "the standby took a held lock"
            return d.proc.poll() is not None

        wait_for(killed, WATCHDOG_S + 30, interval=0.05, what="the watchdog's kill")
        assert dog.killed_at is not None
        report(f"FAULT controller_pair_sigstop watchdog_kill_after_s="
               f"{dog.killed_at - began:.2f}")
        return dog.killed_at, began

    ctl1.start = start_watched  # type: ignore[method-assign]
    try:
        _run_fault(pair, request, hang, "sigstop")
    finally:
        dog.stop()
        sock.close()


def test_local_spools_a_dead_controllers_spool_is_drained_from_here(tmp_path, own_broker,
                                                                    request):
    """The default layout: each controller's daemon drains the spool its own hook writes.
    ctl1 dies (SIGKILL) while its hook still writes; its spool, as if its disk were mounted
    here, is moved by ``jobcompd drain-spool`` into ctl2's, and ctl2 sends it."""
    random = rng(request.node.name)
    ctl1 = DaemonUnderTest(root=tmp_path / "ctl1", bootstrap=own_broker.bootstrap)
    ctl2 = DaemonUnderTest(root=tmp_path / "ctl2", bootstrap=own_broker.bootstrap,
                           topic=ctl1.topic)
    ctl1.start()
    ctl2.start()
    one = Stream(ctl1, 9_000_000, rate=200, hook_every=10).start()
    two = Stream(ctl2, 9_500_000, rate=200, hook_every=10).start()
    try:
        one.wait_sent(200)
        time.sleep(random.uniform(0.0, 1.5))  # the fault itself: a random moment
        ctl1.kill()
        one.wait_sent(len(one.sent) + 100)  # what the hook wrote after the daemon died
        one.stop()
        left = len(ctl1.new_files())
        res = subprocess.run([sys.executable, "-m", "jobcompd", "drain-spool", "-c",
                              str(ctl2.conf), str(ctl1.spool)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"moved {left} records" in res.stdout
        two.wait_sent(len(two.sent) + 200)
    finally:
        sent = one.stop() + two.stop()
    got = drain(ctl2, sent, timeout=120, settle=2.0)
    assert not one.hook_failures and not two.hook_failures
    t = tally("controller_pair_local_spools", sent, got, ctl2, drained=left)
    assert t.lost == 0, f"lost {t.missing[:20]}"
    assert t.dead_lettered == 0
    assert ctl1.new_files() == []
    assert ctl2.stop() == 0
