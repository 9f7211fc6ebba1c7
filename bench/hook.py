"""Benchmark 5: what the hook costs slurmctld per record.

jobcomp/script runs its script serially: fork, execve with only Slurm's variables, no shell,
cwd /tmp, stdin/stdout/stderr on /dev/null, wait. So the hook's wall time per record bounds the
rate at which Slurm can finish jobs through it. Goal: median <= 5 ms.

The anatomy row measures, the same way, each program the hook starts (and the shell alone), so
the table shows where the milliseconds go: on most machines the fork+exec of each program costs
more than the two fsyncs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench import workload
from bench.harness import Context, Row, median, percentile, remove_tree
from tests.support import HOOK

NAME = "hook"
GOAL_MS = 5.0


class Spawner:
    """execve like slurmctld: argv, a fixed environment, /dev/null on 0-2, cwd /tmp."""

    def __init__(self) -> None:
        self._null = os.open(os.devnull, os.O_RDWR)
        self._actions = [(os.POSIX_SPAWN_DUP2, self._null, fd) for fd in (0, 1, 2)]

    def run(self, argv: list[str], env: dict[str, str]) -> float:
        """Seconds from spawn to exit; raises if the program failed."""
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=self._actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - t0
        if status != 0:
            raise RuntimeError(f"{argv[0]} exited with status {status}")
        return elapsed

    def close(self) -> None:
        os.close(self._null)


def tool(name: str) -> str:
    """The program the hook would run: /usr/bin/NAME, else /bin/NAME."""
    for d in ("/usr/bin", "/bin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    raise FileNotFoundError(f"{name} is in neither /usr/bin nor /bin")


def _clear(spool: Path) -> None:
    for sub in ("new", "tmp"):
        for e in os.scandir(spool / sub):
            os.unlink(e.path)


def hook_ms(spawner: Spawner, spool: Path, n: int) -> list[float]:
    """Wall time of ``n`` serial hook runs, in ms."""
    times = []
    cwd = os.getcwd()
    os.chdir("/tmp")  # slurmctld runs its scripts in /tmp
    try:
        for i in range(n):
            env = {**workload.slurm_env(workload.FIRST_JOB_ID + i), "JOBCOMPD_SPOOL": str(spool)}
            times.append(spawner.run([str(HOOK)], env) * 1e3)
            if i % 100 == 99:
                _clear(spool)
    finally:
        os.chdir(cwd)
        _clear(spool)
    return times


def anatomy_ms(spawner: Spawner, spool: Path, n: int) -> dict[str, float]:
    """Median ms of the shell alone and of each program the hook runs, started the same way."""
    env = {"PATH": "/usr/bin:/bin"}
    data = workload.dump(workload.FIRST_JOB_ID)
    steps: dict[str, list[float]] = {
        k: [] for k in ("sh", "date", "env", "sync file", "mv", "sync dir")
    }
    for i in range(n):
        tmp, new = spool / "tmp" / f"a{i}", spool / "new" / f"a{i}"
        tmp.write_bytes(data)
        steps["sh"].append(spawner.run(["/bin/sh", "-c", ":"], env))
        steps["date"].append(spawner.run([tool("date"), "+%s%N"], env))
        steps["env"].append(spawner.run([tool("env"), "-0"], env))
        steps["sync file"].append(spawner.run([tool("sync"), "--", str(tmp)], env))
        steps["mv"].append(spawner.run([tool("mv"), "-f", "-T", "--", str(tmp), str(new)], env))
        steps["sync dir"].append(spawner.run([tool("sync"), "--", str(spool / "new")], env))
    _clear(spool)
    return {k: median(v) * 1e3 for k, v in steps.items()}


def run(ctx: Context) -> list[Row]:
    n = 50 if ctx.quick else 300
    root = ctx.scratch(NAME)
    spool = workload.make_spool(root / "spool")
    spawner = Spawner()
    try:
        hook_ms(spawner, spool, 5)  # page cache warm
        times = hook_ms(spawner, spool, n)
        parts = anatomy_ms(spawner, spool, max(20, n // 3))
    finally:
        spawner.close()
        remove_tree(root)
    med = median(times)
    env_size = len(workload.slurm_env(workload.FIRST_JOB_ID))
    return [
        Row(
            "5. hook cost",
            f"ms per record, median of {n} serial execs ({env_size} variables)",
            f"{med:.2f}",
            goal=f"<= {GOAL_MS:g} ms",
            met=med <= GOAL_MS,
            note=f"p90 {percentile(times, 90):.2f} ms; at most {1000 / med:,.0f} jobs/s "
            "through jobcomp/script",
        ),
        Row(
            "5. hook anatomy",
            "ms per exec, median, started like the hook",
            " / ".join(f"{v:.2f}" for v in parts.values()),
            note=" / ".join(parts),
        ),
    ]
