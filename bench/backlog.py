"""Benchmark 4: a big backlog -- 1,000,000 files in new/ when the daemon starts.

Measures the time from exec to READY=1 (heard on a NOTIFY_SOCKET, as systemd would; goal
<= 10 s), the peak RSS while draining (VmHWM; goal <= 150 MB: the in-flight window bounds the
memory, not the backlog), and the drain rate. Creating a million files takes minutes on a slow
disk, so the drain runs for a fixed window (60 s, or until new/ is empty) and the rate is what
was acknowledged in it; the creation time is reported too.
"""

from __future__ import annotations

import os
import time

from bench import workload
from bench.harness import (
    Context,
    Row,
    arrivals,
    broker,
    children_peak_kib,
    daemon,
    memory_kib,
    new_is_empty,
    remove_tree,
    settle,
    stop_daemon,
)

NAME = "backlog"
GOAL_READY_S = 10.0
GOAL_PEAK_MB = 150.0


def count(ctx: Context) -> int:
    if ctx.backlog is not None:
        return ctx.backlog
    return 50_000 if ctx.quick else 1_000_000


def run(ctx: Context) -> list[Row]:
    n = count(ctx)
    window = 15.0 if ctx.quick else 60.0
    root = ctx.scratch(NAME)
    spool = workload.make_spool(root / "spool")
    try:
        t0 = time.monotonic()
        workload.fill_new_parallel(spool, n)
        created_s = time.monotonic() - t0
        settle()
        with broker(ctx, NAME) as tansu:
            with daemon(ctx, root, tansu.bootstrap) as d:
                ready = d.wait_ready(timeout=300)
                ready_rss_kib, _ = memory_kib(d.pid)
                drain_start = time.monotonic()
                deadline = drain_start + window
                while time.monotonic() < deadline and not new_is_empty(spool):
                    time.sleep(0.5)
                drained_s = time.monotonic() - drain_start
                _, own_peak_kib = memory_kib(d.pid)
                worker_kib = children_peak_kib(d.pid)
                peak_kib = own_peak_kib + worker_kib
                stop_daemon(d)
                topic = d.dut.topic
            left = sum(1 for e in os.scandir(spool / "new") if not e.name.startswith("."))
            dead = sum(1 for e in os.scandir(spool / "failed"))
            delivered = n - left - dead
            with arrivals(tansu.bootstrap, topic) as got:
                got.wait_for(delivered, timeout=300)
        rate = delivered / drained_s
    finally:
        remove_tree(root)
    peak_mb = peak_kib * 1024 / 1e6
    size = f"{n:,} files"
    return [
        Row(
            "4. big backlog: start-up",
            f"s exec to READY=1, {size}",
            f"{ready:.2f}",
            goal=f"<= {GOAL_READY_S:g} s",
            met=ready <= GOAL_READY_S,
            note=f"creating the files took {created_s:.0f} s",
        ),
        Row(
            "4. big backlog: memory",
            f"MB peak RSS (VmHWM) draining {size}, parsing worker included",
            f"{peak_mb:.0f}",
            goal=f"<= {GOAL_PEAK_MB:g} MB",
            met=peak_mb <= GOAL_PEAK_MB,
            note=f"daemon {own_peak_kib * 1024 / 1e6:.0f} MB ({ready_rss_kib * 1024 / 1e6:.0f} "
            f"MB at READY), its child processes {worker_kib * 1024 / 1e6:.0f} MB",
        ),
        Row(
            "4. big backlog: drain",
            f"records/s over {drained_s:.0f} s of {size}",
            f"{rate:,.0f}",
            note=f"{delivered:,} delivered, {dead} dead-lettered",
        ),
    ]
