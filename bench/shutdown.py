"""Benchmark 6: SIGTERM with 10,000 records in flight and the broker frozen (SIGSTOP).

The daemon gets its records while the broker is paused, so none can be acknowledged; once it
has produced all of them (its JobComp debug log says so), it gets SIGTERM. The time to exit
should follow ``flush_timeout`` (how long Slurm's plugin, too, waits for in-flight messages),
plus the purge and the state file, whatever the backlog: a frozen broker must not hold up a
shutdown (systemd would kill the daemon after TimeoutStopSec).
"""

from __future__ import annotations

import re

from bench import workload
from bench.harness import Context, Row, broker, daemon, remove_tree, stop_daemon, wait_until

NAME = "shutdown"
#: librdkafka must not time the messages out while the daemon is still taking them in.
MESSAGE_TIMEOUT_MS = "120000"


def _count(text: str, msg: str) -> int:
    return text.count(f"msg={msg} ")


def shutdown_once(ctx: Context, n: int, flush_timeout_ms: int) -> dict[str, float | str]:
    root = ctx.scratch(NAME)
    spool = workload.make_spool(root / "spool")
    try:
        with (
            broker(ctx, f"{NAME}-{flush_timeout_ms}") as tansu,
            daemon(
                ctx,
                root,
                tansu.bootstrap,
                params={"flush_timeout": str(flush_timeout_ms)},
                kafka={"message.timeout.ms": MESSAGE_TIMEOUT_MS},
                extra_conf={"DebugFlags": "JobComp"},
            ) as d,
        ):
            d.wait_ready()
            workload.fill_new(spool, 1, first_job=1, via_tmp=True)  # producer and topic warm
            wait_until(
                lambda: _count(d.dut.log_text(), "delivered") >= 1,
                30,
                what="the warm-up record to be delivered",
            )
            tansu.pause()
            try:
                workload.fill_new(spool, n, via_tmp=True)
                wait_until(
                    lambda: _count(d.dut.log_text(), "produced") >= n + 1,
                    timeout=max(60, n / 200),
                    interval=0.1,
                    what=f"{n:,} records produced to the paused broker",
                )
                exit_s = stop_daemon(d, timeout=120)
            finally:
                tansu.resume()
            stopped = d.dut.log_lines("stopped")
    finally:
        remove_tree(root)
    fields = dict(re.findall(r"(\w+)=(\S+)", stopped[-1])) if stopped else {}
    return {
        "exit": exit_s,
        "in_flight": fields.get("in_flight", "?"),
        "pending": fields.get("pending", "?"),
    }


def run(ctx: Context) -> list[Row]:
    n = 2_000 if ctx.quick else 10_000
    timeouts = [500] if ctx.quick else [0, 500, 2_000]
    rows = []
    for ft in timeouts:
        r = shutdown_once(ctx, n, ft)
        exit_s = float(r["exit"])
        rows.append(
            Row(
                f"6. shutdown, flush_timeout={ft} ms",
                f"s from SIGTERM to exit, {n:,} records unacknowledged",
                f"{exit_s:.2f}",
                goal="about flush_timeout",
                note=f"state file: {r['in_flight']} in flight, {r['pending']} never sent; "
                f"{exit_s - ft / 1000:+.2f} s beyond flush_timeout",
            )
        )
    return rows
