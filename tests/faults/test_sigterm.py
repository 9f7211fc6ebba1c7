"""Fault 3: SIGTERM under load while the broker cannot be reached.

The daemon purges what it never sent, gives in-flight records ``flush_timeout`` to be
acknowledged, writes its state file and exits: within flush_timeout + 1 s, whatever the broker
does. Nothing is lost: the next run sends everything still in new/.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.faults.common import Stream, drain, tally

pytestmark = [pytest.mark.broker, pytest.mark.faults]

FLUSH_TIMEOUT_MS = 1000


@pytest.mark.parametrize("outage", ["hung", "gone"])
def test_sigterm_under_load_with_the_broker_unreachable(dut, own_broker, outage):
    dut.params["flush_timeout"] = str(FLUSH_TIMEOUT_MS)
    dut.extra_conf["DebugFlags"] = "JobComp"  # 'produced' lines show the window filling
    dut.write_config()
    dut.start()
    if outage == "gone":
        own_broker.stop()  # before any record: a killed Tansu forgets what it stored
    stream = Stream(dut, 3_000_000, rate=500, hook_every=10).start()
    try:
        stream.wait_sent(300)
        if outage == "hung":
            own_broker.pause()  # with records on the wire
        stream.wait_sent(len(stream.sent) + 1000)
        dut.wait_log("produced", count=500)
        t0 = time.monotonic()
        dut.signal(signal.SIGTERM)
        code = dut.wait_exit(FLUSH_TIMEOUT_MS / 1000 + 10)
        took = time.monotonic() - t0
        stream.wait_sent(len(stream.sent) + 200)  # records keep coming while it is down
    finally:
        sent = stream.stop()
    assert code == 0, dut.log_text()[-3000:]
    assert took < FLUSH_TIMEOUT_MS / 1000 + 1.0, f"exit took {took:.2f} s"
    state = json.loads((dut.state / "jobcompd_state").read_text())
    assert state["clean"] is True
    left = set(dut.new_files())
    assert set(state["pending"]) | set(state["in_flight"]) <= left
    assert state["pending"] or state["in_flight"], "SIGTERM came with nothing unacknowledged"

    if outage == "hung":
        own_broker.resume()
    else:
        own_broker.start()
    dut.start()
    got = drain(dut, sent, timeout=90)
    assert not stream.hook_failures, stream.hook_failures[:3]
    t = tally(f"sigterm_broker_{outage}", sent, got, dut, exit_s=f"{took:.2f}",
              unacknowledged_at_stop=len(state["pending"]) + len(state["in_flight"]))
    assert t.lost == 0, f"lost {t.missing[:20]}"
    assert t.dead_lettered == 0, dut.failed_files()[:10]
    assert dut.stop() == 0
