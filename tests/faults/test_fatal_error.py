"""Fault 8: a fatal producer error, raised by librdkafka itself.

The broker is librdkafka's mock cluster (see mock_cluster.py), and it answers one ProduceRequest
with OUT_OF_ORDER_SEQUENCE_NUMBER: for an idempotent producer that is a fatal error (the
producer can no longer guarantee order without gaps), and librdkafka refuses every further
message. The daemon must replace the producer and send everything unacknowledged again.
"""

from __future__ import annotations

import pytest

from tests.faults.common import Stream, assert_alive, drain, end_env, tally
from tests.faults.mock_cluster import API_PRODUCE, OUT_OF_ORDER_SEQUENCE_NUMBER, MockCluster
from tests.support import DaemonUnderTest

pytestmark = [pytest.mark.broker, pytest.mark.faults]


@pytest.fixture
def mock_cluster():
    mc = MockCluster(brokers=1)
    yield mc
    mc.close()


def test_fatal_producer_error_rebuilds_the_producer(tmp_path, mock_cluster):
    dut = DaemonUnderTest(root=tmp_path / "jobcompd", bootstrap=mock_cluster.bootstrap)
    dut.params["stall_timeout"] = "5"
    dut.write_config()
    try:
        dut.start()
        sent = []
        for i in range(10):
            dut.hook(end_env(8_000_000 + i))
            sent.append(8_000_000 + i)
        assert len(dut.consume(10)) == 10  # the mock cluster works end to end

        mock_cluster.push_request_errors(API_PRODUCE, OUT_OF_ORDER_SEQUENCE_NUMBER)
        stream = Stream(dut, 8_000_100, rate=200, hook_every=5).start()
        try:
            stream.wait_sent(400)
        finally:
            sent += stream.stop()
        (line, *_) = dut.wait_log("producer_rebuilt", timeout=30)
        assert "fatal" in line.lower() or "OUT_OF_ORDER" in line, line
        got = drain(dut, sent, timeout=60)
        assert_alive(dut)
        t = tally("fatal_error", sent, got, dut, injection="mock_cluster:Produce:"
                  "OUT_OF_ORDER_SEQUENCE_NUMBER", rebuilds=len(dut.log_lines("producer_rebuilt")))
        assert t.lost == 0, f"lost {t.missing[:20]}"
        assert t.dead_lettered == 0, dut.failed_files()[:10]
        assert dut.stop() == 0
    finally:
        if dut.proc is not None and dut.proc.poll() is None:
            dut.kill()
