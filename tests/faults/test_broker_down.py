"""Fault 1: the broker is down for longer than message.timeout.ms while records keep arriving.

Two kinds of outage: a broker that hangs (SIGSTOP: connections stay open, nothing answers) and
one that is gone (killed: connections refused) and comes back as a new process on the same port.
The backlog waits on disk, memory stays bounded, and with the defaults nothing is
dead-lettered: a record librdkafka gave up on stays in new/ and is sent again (an outage of
three message timeouts here; ten minutes in ``make soak``). With ``dead_letter_after`` a record
that waited longer goes to failed/ as ``timeout``.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from jobcompd.service import statusfile as status
from tests.broker import wait_for
from tests.faults.common import Stream, assert_alive, drain, drop, scaled, tally
from tests.support import rss_kib

pytestmark = [pytest.mark.broker, pytest.mark.faults]

#: The stated bound on the daemon's resident memory during an outage (the spool holds the
#: backlog; only the in-flight window is in memory).
RSS_BOUND_MIB = 150
MESSAGE_TIMEOUT_MS = 2000


@pytest.mark.parametrize("outage", ["hung", "gone"])
def test_broker_down_longer_than_message_timeout(dut, own_broker, outage):
    down_s = scaled(3 * MESSAGE_TIMEOUT_MS // 1000, 600)
    dut.params.update(max_inflight="200", retry_backoff_max="2", stall_timeout="5")
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
        assert dut.log_lines("deliveries_retrying"), dut.log_text()[-3000:]
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


def _retried(dut) -> int:
    try:
        doc = json.loads((dut.state / status.STATUS_FILE).read_text())
    except (OSError, ValueError):
        return 0
    return int(doc.get("counters", {}).get("retried", 0))


def _outage_with_records(dut, broker, first_id: int, count: int, **params: str) -> list[int]:
    """A daemon started with no broker to reach (message.timeout.ms of 1 s, retries every
    second), and ``count`` records in its spool."""
    dut.params.update(retry_backoff_max="1", **params)
    dut.kafka["message.timeout.ms"] = "1000"
    dut.write_config()
    broker.stop()
    dut.start()
    sent = [first_id + i for i in range(count)]
    for job_id in sent:
        drop(dut.spool, job_id)
    return sent


_KEY = re.compile(r"\bmsg=(\S+).*?\b(?:code|facility)=(\S+)")


def test_an_unreachable_broker_logs_each_error_once_a_minute(dut, own_broker):
    """Refused connections and timed-out records repeat every second or so; the journal gets
    one line per distinct error (by source and code, not by text) per minute, no line per
    record, one line when the broker is lost and one when it answers again."""
    sent = _outage_with_records(dut, own_broker, 5_000_000, 20)
    # Twenty records timing out and retried every second or two: repeats by the dozen.
    wait_for(lambda: _retried(dut) >= 60, 60, interval=0.2, what="60 retries in the outage")
    lines = dut.log_lines()
    kafka = [ln for ln in lines
             if re.search(r"\bmsg=(kafka_error|librdkafka|deliveries_retrying) ", ln)]
    keys = [_KEY.search(ln).groups() for ln in kafka]
    assert len(keys) == len(set(keys)), "\n".join(kafka)  # each distinct error once
    assert {k for k, _ in keys} >= {"kafka_error", "deliveries_retrying"}, "\n".join(kafka)
    assert not dut.log_lines("delivery_retry")  # per record only with DebugFlags=JobComp
    assert len(dut.log_lines("broker_unreachable")) == 1

    own_broker.start()  # the same port: the broker answers again
    got = drain(dut, sent)
    (back,) = dut.wait_log("broker_reachable")
    held = int(re.search(r"repeats_not_logged=(\d+)", back).group(1))
    assert held > 0, back
    t = tally("outage_log_volume", sent, got, dut, log_lines=len(dut.log_lines()))
    assert t.lost == 0 and t.dead_lettered == 0
    assert dut.stop() == 0


def test_dead_letter_after_moves_records_that_waited_longer_to_failed(dut, own_broker):
    """The operator's own limit: a record that times out again more than dead_letter_after
    after it was first sent goes to failed/ as timeout."""
    sent = _outage_with_records(dut, own_broker, 5_100_000, 5, dead_letter_after="3")
    wait_for(lambda: len(dut.failed_files()) == 2 * len(sent), 60, interval=0.2,
             what="every record dead-lettered as timeout")
    for name in dut.failed_files():
        if name.endswith(".reason"):
            info = json.loads((dut.spool / "failed" / name).read_text())
            assert info["reason"] == "timeout" and info["attempts"] >= 1, info
    assert dut.new_files() == []
    assert dut.stop() == 0
