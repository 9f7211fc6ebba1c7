"""Fault 1: the broker is down for longer than message.timeout.ms while records keep arriving.

Two kinds of outage: a broker that hangs (SIGSTOP: connections stay open, nothing answers) and
one that is gone (killed: connections refused) and comes back as a new process on the same port.
The backlog waits on disk, memory stays bounded, and with requeue_on_msg_timeout nothing is
dead-lettered.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.common import Stream, assert_alive, drain, scaled, tally
from tests.support import rss_kib

pytestmark = [pytest.mark.broker, pytest.mark.faults]

#: The stated bound on the daemon's resident memory during an outage (the spool holds the
#: backlog; only the in-flight window is in memory).
RSS_BOUND_MIB = 150
MESSAGE_TIMEOUT_MS = 3000


@pytest.mark.parametrize("outage", ["hung", "gone"])
def test_broker_down_longer_than_message_timeout(dut, own_broker, outage):
    down_s = scaled(8, 180)
    dut.params.update(requeue_on_msg_timeout=None, max_inflight="200", retry_backoff_max="2",
                      stall_timeout="5")
    dut.kafka["message.timeout.ms"] = str(MESSAGE_TIMEOUT_MS)
    dut.write_config()
    dut.start()
    before: list = []
    if outage == "gone":
        # A killed Tansu takes what it stored along: read what it acknowledged first.
        first = Stream(dut, 900_000, rate=400, hook_every=20).start()
        first.wait_sent(200)
        first_sent = first.stop()
        before = drain(dut, first_sent, settle=0.2)
        own_broker.stop()
    stream = Stream(dut, 1_000_000, rate=400, hook_every=20).start()
    try:
        if outage == "hung":
            stream.wait_sent(200)  # paused with records in flight
            own_broker.pause()
        went_down = time.monotonic()
        backlog_before = len(dut.new_files())
        rss_max = 0
        while time.monotonic() - went_down < down_s:
            rss_max = max(rss_max, rss_kib(dut.proc.pid))
            assert_alive(dut)
            time.sleep(0.2)
        # The outage outlasted message.timeout.ms: records timed out and wait for a retry.
        assert dut.log_lines("delivery_retry"), dut.log_text()[-3000:]
        backlog = len(dut.new_files())
        assert backlog > backlog_before, "records arriving during the outage pile up on disk"
        if outage == "hung":
            own_broker.resume()
        else:
            own_broker.start()
        came_up = time.monotonic()
        stream.wait_sent(len(stream.sent) + 400)
    finally:
        sent = stream.stop()
        if own_broker.proc is not None:
            own_broker.resume()
    got = drain(dut, sent, timeout=scaled(90, 300))
    if outage == "gone":
        sent, got = first_sent + sent, before + got
    recovered_s = time.monotonic() - came_up
    assert not stream.hook_failures, stream.hook_failures[:3]
    t = tally(f"broker_down_{outage}", sent, got, dut, down_s=down_s,
              backlog_at_peak=backlog, rss_max_mib=rss_max // 1024,
              drained_after_s=f"{recovered_s:.1f}")
    assert t.lost == 0, f"lost {t.missing[:20]}"
    assert t.dead_lettered == 0, dut.failed_files()[:10]
    assert rss_max < RSS_BOUND_MIB * 1024, f"RSS {rss_max // 1024} MiB during the outage"
    assert_alive(dut)
    assert dut.stop() == 0
