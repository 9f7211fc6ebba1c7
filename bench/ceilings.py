"""Benchmark 1: the ceilings of this machine, measured in the same run as the daemon.

(a) a bare confluent-kafka loop producing the same pre-encoded messages (same value, key and
headers) with the daemon's producer settings (``Config.producer_config()``), until every one is
acknowledged: what the broker and librdkafka allow;
(b) a bare Python loop that lists, reads and unlinks the same number of spool files: what the
file system allows a single Python thread;
(c) the record parser alone on the same dumps (``records.parse_record``): what parsing costs;
(d) unlinking the same number of files on two threads and nothing else: what removing one file
per record costs, the one step no design that keeps one file per record can skip.

(a) bounds any daemon on this broker. (b) is what one Python thread gets from the file system;
a daemon that reads and unlinks on several threads can pass it. The drain is judged against (b).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import confluent_kafka

from bench import workload
from bench.harness import Context, Row, broker, median, remove_tree, settle, spread
from jobcompd import config as configmod
from jobcompd import records
from jobcompd.service.producer import SCHEMA_VERSION
from tests.support import DaemonUnderTest

NAME = "ceilings"


def count(ctx: Context) -> int:
    if ctx.drain is not None:
        return ctx.drain
    return 10_000 if ctx.quick else 100_000


def messages(n: int, cluster: str) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(value, key, headers) for ``n`` records, encoded the way the daemon encodes them."""
    out = []
    for i in range(n):
        job = workload.FIRST_JOB_ID + i
        rec = records.parse_record(workload.dump(job), "env", cluster=cluster, event_hint="end")
        headers = [
            ("event", rec.event.encode()),
            ("jobcompd-id", rec.record_id.encode()),
            ("schema", SCHEMA_VERSION),
        ]
        out.append((rec.value, f"{cluster}:{rec.job_id}".encode(), headers))
    return out


def producer_config(root: Path, bootstrap: str) -> dict[str, str]:
    """The daemon's effective producer settings for a benchmark installation."""
    dut = DaemonUnderTest(root=root, bootstrap=bootstrap)
    return configmod.load(dut.conf).producer_config()


def produce_rate(
    conf: dict[str, str], topic: str, msgs: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> float:
    """Records per second for producing ``msgs`` until all are acknowledged."""
    p = confluent_kafka.Producer(conf)
    outcome = {"ok": 0, "failed": 0}

    def on_delivery(err: object, _msg: object) -> None:
        outcome["failed" if err is not None else "ok"] += 1

    # The topic is created and its metadata known before the clock starts.
    p.produce(topic, value=b"{}", key=b"warm-up", on_delivery=on_delivery)
    if p.flush(30) != 0 or outcome["ok"] != 1:
        raise RuntimeError(f"warm-up message to {topic} was not acknowledged")
    outcome["ok"] = 0
    t0 = time.perf_counter()
    for value, key, headers in msgs:
        while True:
            try:
                p.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.005)
        p.poll(0)
    left = p.flush(120)
    elapsed = time.perf_counter() - t0
    if left or outcome["failed"] or outcome["ok"] != len(msgs):
        raise RuntimeError(
            f"bare producer: {outcome['ok']} acknowledged, "
            f"{outcome['failed']} failed, {left} left of {len(msgs)}"
        )
    return len(msgs) / elapsed


def read_unlink_rate(ctx: Context, n: int) -> float:
    """Files per second for a bare loop that lists, reads and unlinks ``n`` spool files."""
    spool = workload.make_spool(ctx.scratch("ceiling-b"))
    try:
        workload.fill_new_parallel(spool, n)
        settle()
        new = spool / "new"
        t0 = time.perf_counter()
        for name in sorted(os.listdir(new)):
            path = new / name
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.read(fd, 1 << 20)
            finally:
                os.close(fd)
            os.unlink(path)
        return n / (time.perf_counter() - t0)
    finally:
        remove_tree(spool)


def unlink_rate(ctx: Context, n: int, threads: int = 2) -> float:
    """Files per second for unlinking ``n`` spool files on ``threads`` threads and nothing
    else, the way the daemon's retirer does (relative to a descriptor of new/): what the file
    system allows any daemon that removes one file per record."""
    spool = workload.make_spool(ctx.scratch("ceiling-d"))
    try:
        workload.fill_new_parallel(spool, n)
        settle()
        new = spool / "new"
        names = sorted(os.listdir(new))
        dir_fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:

            def unlink(part: list[str]) -> None:
                for name in part:
                    os.unlink(name, dir_fd=dir_fd)

            workers = [
                threading.Thread(target=unlink, args=(names[i::threads],)) for i in range(threads)
            ]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return n / (time.perf_counter() - t0)
        finally:
            os.close(dir_fd)
    finally:
        remove_tree(spool)


def parse_rate(n: int) -> float:
    dumps = [workload.dump(workload.FIRST_JOB_ID + i) for i in range(n)]
    t0 = time.perf_counter()
    for data in dumps:
        records.parse_record(data, "env", cluster="bench", event_hint="end")
    return n / (time.perf_counter() - t0)


def run(ctx: Context) -> list[Row]:
    n = count(ctx)
    produce, files, parse, unlinks = [], [], [], []
    with broker(ctx, NAME) as tansu:
        conf = producer_config(ctx.scratch("ceiling-a"), tansu.bootstrap)
        msgs = messages(n, "bench")
        for i in range(ctx.runs):
            produce.append(produce_rate(conf, f"ceiling-{i}-{time.time_ns()}", msgs))
    for _ in range(ctx.runs):
        files.append(read_unlink_rate(ctx, n))
        parse.append(parse_rate(n))
        unlinks.append(unlink_rate(ctx, n))
    ctx.shared["ceiling_b"] = median(files)
    ctx.shared["ceiling_b_n"] = n
    size = len(msgs[0][0])
    return [
        Row(
            "1a. ceiling: bare producer",
            f"records/s, {n:,} x {size} B, acked",
            f"{median(produce):,.0f}",
            note=spread(produce),
        ),
        Row(
            "1b. ceiling: read+unlink loop",
            f"files/s, {n:,} files",
            f"{median(files):,.0f}",
            note=spread(files),
        ),
        Row(
            "1c. ceiling: parse_record alone",
            f"records/s, {n:,} dumps",
            f"{median(parse):,.0f}",
            note=spread(parse),
        ),
        Row(
            "1d. ceiling: unlink alone",
            f"files/s, {n:,} files, 2 threads",
            f"{median(unlinks):,.0f}",
            note=spread(unlinks),
        ),
    ]
