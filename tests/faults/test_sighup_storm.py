"""Fault 9: a SIGHUP storm under load. 100 reloads in a few seconds, half of them with changed
librdkafka properties (each one replaces the producer and re-sends what it held): nothing is
lost, and no producer, thread or file descriptor is left behind."""

from __future__ import annotations

import signal
import time

import pytest

from tests.broker import wait_for
from tests.faults.common import Stream, assert_alive, drain, fds_of, scaled, tally, threads_of

pytestmark = [pytest.mark.broker, pytest.mark.faults]


def test_sighup_storm_under_load(dut):
    hups = scaled(100, 1000)
    dut.start()
    pid = dut.proc.pid
    stream = Stream(dut, 9_000_000, rate=300, hook_every=10).start()
    try:
        stream.wait_sent(300)
        dut.consume(1)  # the producer is connected and delivering
        threads_before, fds_before = threads_of(pid), fds_of(pid)
        t0 = time.monotonic()
        for i in range(hups):
            dut.kafka["linger.ms"] = str(5 + (i // 2) % 2)  # changes every second reload
            dut.write_config()
            dut.signal(signal.SIGHUP)
            time.sleep(0.03)  # the storm's pace: 100 signals in about 3 s
        storm_s = time.monotonic() - t0
        assert_alive(dut)
        stream.wait_sent(len(stream.sent) + 300)
    finally:
        sent = stream.stop()
    got = drain(dut, sent, timeout=90)
    assert_alive(dut)
    # Old producers are gone with their threads once their purge is done.
    try:
        wait_for(lambda: threads_of(pid) <= threads_before and fds_of(pid) <= fds_before, 20,
                 interval=0.2, what="threads and descriptors back to their number")
    except TimeoutError:
        pytest.fail(f"leak: threads {threads_before} -> {threads_of(pid)}, "
                    f"fds {fds_before} -> {fds_of(pid)}")
    reloads = len(dut.log_lines("reloaded"))
    t = tally("sighup_storm", sent, got, dut, hups=hups, storm_s=f"{storm_s:.1f}",
              reloads=reloads, reload_failed=len(dut.log_lines("reload_failed")),
              rebuilds=len(dut.log_lines("producer_rebuilt")),
              threads=f"{threads_before}->{threads_of(pid)}",
              fds=f"{fds_before}->{fds_of(pid)}")
    assert t.lost == 0, f"lost {t.missing[:20]}"
    assert t.dead_lettered == 0, dut.failed_files()[:10]
    assert reloads >= 10, "the signals were not acted on"
    assert dut.stop() == 0
