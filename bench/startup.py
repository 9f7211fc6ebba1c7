"""Benchmark 7: start-up -- exec to READY=1 with a backlog waiting, measured alone.

The big-backlog benchmark times one start on a disk that is busy writing back the files it
has just created, so its figure moves with the disk. Here the daemon starts ``runs`` times on
one spool of N files (1,000,000 by default, the ``--backlog`` count) with its broker address
closed: nothing is delivered, so every start finds the same backlog, and the median is the
figure. Each start has a state folder of its own, so no run inherits another's state file.
What a start does before READY=1 (scan new/, the first status) grows with the backlog; what
it does after (the first sum of new/'s bytes, the producer's connection) is not counted.
"""

from __future__ import annotations

from bench import backlog, workload
from bench.harness import (
    Context,
    Row,
    daemon,
    median,
    memory_kib,
    remove_tree,
    settle,
    spread,
    stop_daemon,
)
from tests.broker import free_port

NAME = "startup"


def run(ctx: Context) -> list[Row]:
    n = backlog.count(ctx)  # the big backlog's count: --backlog, or its default
    root = ctx.scratch(NAME)
    spool = workload.make_spool(root / "spool")
    readies: list[float] = []
    rss_mib: list[float] = []
    try:
        workload.fill_new_parallel(spool, n)
        settle()
        closed = f"127.0.0.1:{free_port()}"
        for i in range(ctx.runs):
            run_root = root / f"run-{i}"
            run_root.mkdir()
            with daemon(ctx, run_root, closed, spool=spool,
                        params={"flush_timeout": "0"}) as d:
                readies.append(d.wait_ready(timeout=300))
                rss_mib.append(memory_kib(d.pid)[0] / 1024)
                stop_daemon(d)
    finally:
        remove_tree(root)
    return [
        Row(
            "7. start-up with a backlog",
            f"s exec to READY=1, {n:,} files waiting, no broker, median of {len(readies)}",
            f"{median(readies):.2f}",
            note=", ".join(filter(None, [spread(readies, "{:.2f}"),
                                         f"RSS at READY {median(rss_mib):.0f} MiB"])),
        ),
    ]
