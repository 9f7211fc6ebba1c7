"""Fault 7: the broker restarts mid-stream, and connections are cut under the producer's feet.

A new Tansu process on the same port has forgotten the idempotent producer: librdkafka then
times out every message without raising an error, while a new producer delivers at once. The
daemon must notice the silence, rebuild the producer and send everything again.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.broker import Tansu
from tests.faults.common import Stream, assert_alive, drain, scaled, tally, wait_empty
from tests.faults.proxy import TcpProxy
from tests.support import DaemonUnderTest

pytestmark = [pytest.mark.broker, pytest.mark.faults]

STALL_TIMEOUT_S = 5


def test_broker_restart_mid_stream(dut, own_broker):
    dut.params.update(stall_timeout=str(STALL_TIMEOUT_S))
    dut.kafka["message.timeout.ms"] = "60000"  # far beyond the stall timeout
    dut.write_config()
    dut.start()
    restarts = scaled(1, 5)
    sent: list[int] = []
    got = []
    unread: list[int] = []  # acknowledged by the running broker, not read yet
    recover: list[float] = []
    next_id = 7_000_000
    for _ in range(restarts):
        stream = Stream(dut, next_id, rate=300, hook_every=10).start()
        stream.wait_sent(300)
        part = stream.stop()
        next_id = stream.next_id
        sent += part
        unread += part
        # A restarted Tansu forgets what it stored: read what it acknowledged first.
        got += drain(dut, unread, settle=0.2)
        unread = []
        own_broker.restart()
        t0 = time.monotonic()
        wall0 = time.time()
        stream = Stream(dut, next_id, rate=300, hook_every=10).start()
        try:
            stream.wait_sent(600)
        finally:
            part = stream.stop()
        next_id = stream.next_id
        sent += part
        unread += part
        wait_empty(dut, timeout=60)
        recover.append(time.monotonic() - t0)
        rebuilt = [ln for ln in dut.log_lines("producer_rebuilt") if _ts(ln) >= wall0]
        assert rebuilt, "the wedged producer was not rebuilt"
    got += drain(dut, unread, settle=0.5)
    assert_alive(dut)
    t = tally("broker_restart", sent, got, dut, restarts=restarts,
              recover_s="/".join(f"{r:.1f}" for r in recover),
              rebuilds=len(dut.log_lines("producer_rebuilt")))
    assert t.lost == 0, f"lost {t.missing[:20]}"
    assert t.dead_lettered == 0, dut.failed_files()[:10]
    assert max(recover) < STALL_TIMEOUT_S + 15, recover
    assert dut.stop() == 0


def _ts(line: str) -> float:
    """The time stamp of a log line, in epoch seconds."""
    text = line.split(" ", 1)[0].removeprefix("ts=")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_connections_cut_by_a_proxy(tmp_path):
    """Every connection between daemon and broker is reset, again and again, mid-stream."""
    proxy = TcpProxy(target_port=0)
    tansu = Tansu(log_path=tmp_path / "tansu.log", advertised_port=proxy.port).start()
    proxy.target_port = tansu.port
    proxy.start()
    dut = DaemonUnderTest(root=tmp_path / "jobcompd", bootstrap=f"127.0.0.1:{proxy.port}")
    dut.params.update(stall_timeout=str(STALL_TIMEOUT_S))
    dut.write_config()
    cuts = scaled(10, 100)
    try:
        dut.start()
        stream = Stream(dut, 7_500_000, rate=400, hook_every=10).start()
        try:
            for i in range(cuts):
                stream.wait_sent(200 * (i + 1))
                proxy.wait_connected(timeout=30)
                proxy.sever()
                assert_alive(dut)
        finally:
            sent = stream.stop()
        got = drain(dut, sent, timeout=90)
        assert_alive(dut)
        t = tally("proxy_cut", sent, got, dut, cuts=cuts, connections_cut=proxy.severed,
                  rebuilds=len(dut.log_lines("producer_rebuilt")))
        assert t.lost == 0, f"lost {t.missing[:20]}"
        assert t.dead_lettered == 0, dut.failed_files()[:10]
        assert proxy.severed >= cuts
        assert dut.stop() == 0
    finally:
        if dut.proc is not None and dut.proc.poll() is None:
            dut.kill()
        proxy.stop()
        tansu.stop()
