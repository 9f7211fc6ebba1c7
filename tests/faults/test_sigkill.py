"""Fault 2: SIGKILL of the daemon at random moments under a steady stream of records.

Half of the kills land at a random moment after the process was started (during imports, the
lock, the state file, the start-up scan), the other half at a random moment after it logged
``started`` (while records are read, produced and retired). After the last round a daemon runs
to the end: every record arrives, and every duplicate is recognisable.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.common import Stream, assert_alive, drain, rng, scaled, tally

pytestmark = [pytest.mark.broker, pytest.mark.faults]


def test_sigkill_at_random_moments_loses_nothing(dut, request):
    """Nine records in ten are dropped into new/ directly, the tenth goes through the hook."""
    rounds = scaled(20, 200)
    random = rng(request.node.name)
    dut.start()
    stream = Stream(dut, 2_000_000, rate=300, hook_every=10).start()
    kills_after_start = 1  # the first kill hits the daemon started above
    try:
        for i in range(rounds):
            if i == 0:
                pass
            elif i % 2 == 0:
                dut.start(wait_ready=False)
            else:
                dut.start()
                kills_after_start += 1
            # The fault itself: a random moment, not a wait for a condition.
            time.sleep(random.uniform(0.0, 1.5))
            dut.kill()
        dut.start()  # the lock of the killed process is gone with it
        stream.wait_sent(len(stream.sent) + 300)
    finally:
        sent = stream.stop()
    got = drain(dut, sent, timeout=120, settle=2.0)
    assert not stream.hook_failures, stream.hook_failures[:3]
    t = tally("sigkill", sent, got, dut, rounds=rounds,
              kills_after_started=kills_after_start)
    assert t.lost == 0, f"lost {t.missing[:20]}"
    assert t.dead_lettered == 0, dut.failed_files()[:10]
    # After an unclean stop the first window of sends is marked as possible duplicates.
    assert t.unmarked == 0, f"{t.unmarked} duplicates without the redelivery header"
    assert_alive(dut)
    assert dut.stop() == 0
