"""Benchmark 2: drain a backlog -- 100,000 realistic jobcomp/script dumps already in new/.

The clock starts just before the daemon is exec'd and stops when new/ is empty: every record
was acknowledged by the broker and its file unlinked. Afterwards a consumer checks that every
record arrived (and counts duplicates). Goal: at least 10,000 records/s, and at least half of
ceiling (b), the bare read+unlink loop on the same number of files.

With ``--profile DIR``, one extra run is recorded with py-spy (not counted in the table): the
folded stacks (``drain-profile.folded``, for flamegraph tools) and a summary of the hottest
functions of the main thread (``drain-profile.txt``) are written into DIR.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import ceilings, workload
from bench.harness import (
    Context,
    Row,
    arrivals,
    broker,
    cpu_seconds,
    daemon,
    median,
    memory_kib,
    new_is_empty,
    remove_tree,
    settle,
    spread,
    stop_daemon,
    wait_until,
)
from tests.broker import Tansu

NAME = "drain"
GOAL_RATE = 10_000
GOAL_RATIO = 0.5


def count(ctx: Context) -> int:
    if ctx.drain is not None:
        return ctx.drain
    return 10_000 if ctx.quick else 100_000


def drain_once(
    ctx: Context, tansu: Tansu, n: int, profile_to: Path | None = None
) -> dict[str, float]:
    """One drain of ``n`` records in new/; its rate, start-up time, peak RSS, CPU and
    duplicates."""
    root = ctx.scratch(NAME)
    try:
        spool = workload.make_spool(root / "spool")
        workload.fill_new_parallel(spool, n)
        settle()
        with daemon(ctx, root, tansu.bootstrap) as d:
            ready = d.wait_ready()
            cpu_at_ready = cpu_seconds(d.pid)
            spy = _start_py_spy(d.pid, profile_to) if profile_to else None
            wait_until(
                lambda: new_is_empty(spool),
                timeout=max(120, n / 200),
                interval=0.05,
                what=f"{n:,} records to drain",
            )
            elapsed = time.monotonic() - d.started_at
            if spy is not None:
                _stop_py_spy(spy)
            _, peak_kib = memory_kib(d.pid)
            cpu = cpu_seconds(d.pid) - cpu_at_ready
            dead = [f for f in os.listdir(spool / "failed") if not f.endswith(".reason")]
            stop_daemon(d)
            topic = d.dut.topic
        with arrivals(tansu.bootstrap, topic) as got:
            got.wait_for(n, timeout=120)
            time.sleep(0.5)  # let duplicates, if any, arrive too
            dups = got.count - got.unique
        if dead:
            raise RuntimeError(f"{len(dead)} records were dead-lettered, e.g. {dead[0]}")
        return {
            "rate": n / elapsed,
            "elapsed": elapsed,
            "ready": ready,
            "peak_mib": peak_kib / 1024,
            "dups": dups,
            "cpu_us": cpu / n * 1e6,
        }
    finally:
        remove_tree(root)


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise FileNotFoundError(
            f"--profile needs py-spy beside {sys.executable}: "
            f"{Path(sys.executable).with_name('pip')} install py-spy"
        )
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--threads",
            "--idle",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_py_spy(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def _function(frame: str) -> str:
    """``name (file.py:123)`` -> ``name (file.py)``: samples of one function add up."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0]})" if where else name


def summarize_profile(folded: Path, top: int = 25) -> str:
    """The hottest functions of a py-spy raw (folded, ``--threads --idle``) profile: share of
    wall-clock samples per thread, then self and inclusive shares in the main thread."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        thread, *frames = stack.split(";")
        samples = int(n)
        name = thread.rpartition(": ")[2] or thread
        threads[name] += samples
        leaf = _function(frames[-1]) if frames else ""
        if not leaf.startswith(("Condition.wait", "InotifyFD._check_inotify_fd", "_wait ")):
            busy[name] += samples
        if name != "MainThread" or not frames:
            continue
        total += samples
        own[leaf] += samples
        for f in {_function(f) for f in frames}:
            inclusive[f] += samples
    lines = ["samples per thread (all / not waiting on a condition or inotify):"]
    lines += [f"  {t}: {c} / {busy[t]}" for t, c in threads.most_common()]
    lines += ["", f"main thread, {total} samples", "self %   function"]
    lines += [f"{100 * c / total:6.1f}   {f}" for f, c in own.most_common(top)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * c / total:6.1f}   {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


def _notes(results: list[dict[str, float]]) -> str:
    rates = [r["rate"] for r in results]
    notes = [
        f"READY after {median([r['ready'] for r in results]):.2f} s",
        f"peak RSS {max(r['peak_mib'] for r in results):.0f} MiB",
        f"daemon CPU {median([r['cpu_us'] for r in results]):.0f} us/record",
    ]
    if any(r["dups"] for r in results):
        notes.append(f"duplicates {max(r['dups'] for r in results):.0f}")
    if len(rates) > 1:
        notes.append(spread(rates))
    return "; ".join(notes)


def run(ctx: Context) -> list[Row]:
    n = count(ctx)
    results = []
    with broker(ctx, NAME) as tansu:
        for _ in range(ctx.runs):
            results.append(drain_once(ctx, tansu, n))
        if ctx.profile is not None:
            ctx.profile.mkdir(parents=True, exist_ok=True)
            folded = ctx.profile / "drain-profile.folded"
            drain_once(ctx, tansu, n, profile_to=folded)
            summary = folded.with_suffix(".txt")
            summary.write_text(summarize_profile(folded) + "\n")
            print(f"drain profile: {folded} (folded stacks), {summary} (summary)")
    if "ceiling_b" not in ctx.shared or ctx.shared.get("ceiling_b_n") != n:
        ctx.shared["ceiling_b"] = median(
            [ceilings.read_unlink_rate(ctx, n) for _ in range(ctx.runs)]
        )
        ctx.shared["ceiling_b_n"] = n
    rate = median([r["rate"] for r in results])
    ceiling_b = ctx.shared["ceiling_b"]
    ratio = rate / ceiling_b
    return [
        Row(
            "2. drain backlog",
            f"records/s, {n:,} files, exec to new/ empty",
            f"{rate:,.0f}",
            goal=f">= {GOAL_RATE:,}",
            met=rate >= GOAL_RATE,
            note=_notes(results),
        ),
        Row(
            "2. drain vs ceiling (b)",
            "drain rate / rate of the bare read+unlink loop",
            f"{ratio:.2f}",
            goal=f">= {GOAL_RATIO:g}",
            met=ratio >= GOAL_RATIO,
            note=f"ceiling (b) {ceiling_b:,.0f} files/s in this run",
        ),
    ]
