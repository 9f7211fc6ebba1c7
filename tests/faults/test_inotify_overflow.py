"""Fault 6: inotify overflow. A burst of 100,000 files lands in new/ faster than the daemon reads
its events, with the kernel's event queue lowered (fs.inotify.max_queued_events, restored at
once) so that it overflows for certain. The rescan finds every file: all of them are shipped."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.common import (
    assert_alive,
    drain,
    end_env,
    end_env_bytes,
    next_name,
    scaled,
    small_filesystem,
    tally,
)

pytestmark = [pytest.mark.broker, pytest.mark.faults]

MAX_QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")
#: The queue size the daemon's inotify instance gets (the kernel's default is 16384).
LOWERED = 256


@contextlib.contextmanager
def lowered_inotify_queue() -> Iterator[bool]:
    """Lower max_queued_events while the block runs (it applies to inotify instances created
    meanwhile); yields whether that was allowed. The old value is always restored."""
    try:
        old = MAX_QUEUED_EVENTS.read_text()
        MAX_QUEUED_EVENTS.write_text(f"{LOWERED}\n")
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        MAX_QUEUED_EVENTS.write_text(old)


def stage(spool: Path, job_id: int) -> Path:
    """A complete record in tmp/, ready to be renamed into new/."""
    path = spool / "tmp" / next_name(job_id)
    path.write_bytes(end_env_bytes(job_id))
    return path


def test_a_burst_that_overflows_inotify_is_shipped_whole(dut):
    total = scaled(100_000, 300_000)
    with contextlib.ExitStack() as stack:
        # A tmpfs spool: the test is about lost events, and writing 100,000 files to disk
        # would only make it slower.
        stack.enter_context(small_filesystem(dut.spool, "2g"))
        with lowered_inotify_queue() as lowered:
            dut.start()  # its inotify instance gets the small queue
        run_burst(dut, total, lowered)


def run_burst(dut, total: int, lowered: bool) -> None:
    hooked = 50
    sent = []
    for i in range(hooked):  # some through the real hook, as slurmctld would
        dut.hook(end_env(6_000_000 + i))
        sent.append(6_000_000 + i)
    # Written to tmp/ first, then renamed into new/ in one tight loop: the burst itself is
    # nothing but renames, far faster than the daemon can read the files.
    staged = [stage(dut.spool, 6_000_000 + i) for i in range(hooked, total)]
    t0 = time.monotonic()
    new = dut.spool / "new"
    for tmp in staged:
        os.rename(tmp, new / tmp.name)
    burst_s = time.monotonic() - t0
    sent += range(6_000_000 + hooked, 6_000_000 + total)
    if lowered:
        dut.wait_log("inotify_overflow", timeout=30)  # the fault did happen
    overflowed = bool(dut.log_lines("inotify_overflow"))
    got = drain(dut, sent, timeout=scaled(240, 900), settle=0.5)
    took = time.monotonic() - t0
    assert_alive(dut)
    t = tally("inotify_overflow", sent, got, dut, burst_s=f"{burst_s:.1f}",
              all_shipped_s=f"{took:.1f}", overflowed=overflowed,
              max_queued_events=LOWERED if lowered else "default")
    assert t.lost == 0, f"lost {t.missing[:20]}"
    assert t.dead_lettered == 0
    assert dut.stop() == 0
