"""``python -m bench``: run the benchmarks and print one table (``make bench``).

    python -m bench                  # everything, full size (several minutes)
    python -m bench --quick          # smaller counts, one run each: a smoke run
    python -m bench --only drain --only hook
    python -m bench --profile DIR    # also profile one drain with py-spy into DIR

A benchmark that fails prints its error in the table and the others still run; brokers and
daemons are stopped and the work directory removed whatever happens. The exit status is 0 unless
a benchmark failed: a slow result is reported, never a failure (docs/design.md, "Layout").
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench import backlog, ceilings, drain, hook, latency, machine, shutdown, startup, workload
from bench.harness import Context, Row, compile_daemon, loadavg, remove_tree, settle

#: In the order they run: ceilings first, so the drain is judged against them.
BENCHMARKS: dict[str, ModuleType] = {
    m.NAME: m for m in (ceilings, drain, latency, backlog, hook, shutdown, startup)
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="small counts and one run per benchmark (a smoke run)"
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per measurement, the median is reported (default 3, quick 1)",
    )
    p.add_argument(
        "--backlog",
        type=int,
        default=None,
        metavar="N",
        help="files for the big-backlog and start-up benchmarks (default 1,000,000; quick "
        "50,000)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to create spools (default: a new directory in /var/tmp); "
        "it must be on the disk whose speed you want to know, not a tmpfs",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="profile one extra drain with py-spy and write the result into DIR",
    )
    p.add_argument(
        "--daemon-path",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the daemon from the jobcompd package in DIR (put first on its "
        "PYTHONPATH): measure a change in a copy before making it in the tree",
    )
    p.add_argument(
        "--drain-count",
        type=int,
        default=None,
        metavar="N",
        help="files for the drain and the ceilings (default 100,000; quick 10,000)",
    )
    return p.parse_args(argv)


def _render(rows: list[Row]) -> str:
    """A Markdown table: readable in a terminal and pasteable into docs/performance.md."""
    header = ["benchmark", "measured", "value", "goal", "met", "notes"]
    body = [
        [r.bench, r.metric, r.value, r.goal, {True: "yes", False: "NO", None: ""}[r.met], r.note]
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(b) for b in body)])


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    base = args.dir or Path("/var/tmp")
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="jobcompd-bench-", dir=base))
    runs = args.runs or (1 if args.quick else 3)
    ctx = Context(
        workdir=workdir,
        quick=args.quick,
        runs=runs,
        backlog=args.backlog,
        drain=args.drain_count,
        profile=args.profile,
        daemon_path=args.daemon_path,
    )
    size, variables = workload.check()
    about = machine.describe(workdir)
    about.append(f"daemon: bytecode of {compile_daemon(ctx)} compiled first, as installed")
    about.append(
        f"records: jobcomp/script dumps of {size} B, {variables} variables; "
        f"{'quick mode, ' if args.quick else ''}median of {runs} run(s)"
    )
    if args.daemon_path is not None:
        about.append(f"daemon from {args.daemon_path} (not this tree)")
    print("\n".join(about), flush=True)
    rows: list[Row] = []
    loads: list[str] = []
    failed = False
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    try:
        for name in names:
            pressure, waited = settle()
            calm = "n/a" if pressure is None else f"{pressure:.1f} %"
            print(
                f"-- {name} (after {waited:.0f} s for the disk to settle; I/O pressure {calm}) ...",
                flush=True,
            )
            t0 = time.monotonic()
            load0 = loadavg()
            try:
                new = BENCHMARKS[name].run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one benchmark's failure must not hide the others
                failed = True
                traceback.print_exc()
                new = [Row(name, "error", type(e).__name__, note=str(e).splitlines()[0][:120])]
            for row in new:
                print(f"   {row.bench}: {row.value} {row.metric}", flush=True)
            took = time.monotonic() - t0
            print(f"   ({took:.0f} s)", flush=True)
            loads.append(
                f"{name} {load0} -> {loadavg()} ({took:.0f} s, I/O pressure {calm} at its start)"
            )
            rows.extend(new)
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}); cleaning up", file=sys.stderr)
        failed = True
    finally:
        remove_tree(workdir)
    print()
    print("\n".join(about))
    print()
    print(_render(rows))
    print()
    print(
        "1-minute load average at the start and end of each benchmark (other processes on "
        "the machine skew the numbers):"
    )
    print("; ".join(loads))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
