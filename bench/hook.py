"""Benchmark 5: what the hook costs slurmctld per record.

jobcomp/script runs its script serially: fork, execve with only Slurm's variables, no shell,
cwd /tmp, stdin/stdout/stderr on /dev/null, wait. So the hook's wall time per record bounds the
rate at which Slurm can finish jobs through it. Goal: median <= 5 ms, judged for each hook: the
POSIX sh script (jobcompd/hook/jobcompd-spool) and the compiled C one
(jobcompd/hook/jobcompd-spool.c, built here with cc the way the README says; a row says so if
there is no compiler).

The anatomy row measures, the same way, each program the hook starts (and the shell alone), so
the table shows where the milliseconds go: on most machines the fork+exec of each program costs
more than the two fsyncs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from bench import workload
from bench.harness import Context, Row, median, percentile, remove_tree
from tests.support import C_HOOK_CFLAGS as CFLAGS
from tests.support import C_HOOK_SOURCE as C_SOURCE
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
        if (spool / sub).is_dir():
            for e in os.scandir(spool / sub):
                os.unlink(e.path)


def build_c_hook(out_dir: Path) -> Path:
    """Compile the C hook into ``out_dir``; raises with the compiler's words if it cannot."""
    cc = shutil.which("cc")
    if cc is None:
        raise FileNotFoundError("no C compiler (cc) on PATH: run `make sysdeps`")
    out = out_dir / "jobcompd-spool"
    done = subprocess.run(
        [cc, *CFLAGS, "-o", str(out), str(C_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cc failed on {C_SOURCE}: {done.stderr.strip()}")
    return out


def hook_ms(spawner: Spawner, hook: Path, spool: Path, n: int) -> list[float]:
    """Wall time of ``n`` serial runs of ``hook``, in ms."""
    times = []
    cwd = os.getcwd()
    os.chdir("/tmp")  # slurmctld runs its scripts in /tmp
    try:
        for i in range(n):
            env = {**workload.slurm_env(workload.FIRST_JOB_ID + i), "JOBCOMPD_SPOOL": str(spool)}
            times.append(spawner.run([str(hook)], env) * 1e3)
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


def cost_row(which: str, times: list[float], env_size: int, note: str = "") -> Row:
    """The judged row of one hook: median ms per record against the goal."""
    med = median(times)
    return Row(
        f"5. hook cost, {which}",
        f"ms per record, median of {len(times)} serial execs ({env_size} variables)",
        f"{med:.2f}",
        goal=f"<= {GOAL_MS:g} ms",
        met=med <= GOAL_MS,
        note=f"p90 {percentile(times, 90):.2f} ms; at most {1000 / med:,.0f} jobs/s "
        f"through jobcomp/script{note}",
    )


def run(ctx: Context) -> list[Row]:
    n = 50 if ctx.quick else 300
    root = ctx.scratch(NAME)
    spool = workload.make_spool(root / "spool")
    env_size = len(workload.slurm_env(workload.FIRST_JOB_ID))
    spawner = Spawner()
    try:
        try:
            c_hook: Path | None = build_c_hook(root)
            c_error = ""
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            c_hook, c_error = None, str(exc)
        _clear(spool)
        hook_ms(spawner, HOOK, spool, 5)  # page cache warm
        sh_times = hook_ms(spawner, HOOK, spool, n)
        c_times: list[float] = []
        if c_hook is not None:
            hook_ms(spawner, c_hook, spool, 5)
            c_times = hook_ms(spawner, c_hook, spool, n)
        parts = anatomy_ms(spawner, spool, max(20, n // 3))
    finally:
        spawner.close()
        remove_tree(root)
    rows = [cost_row("sh", sh_times, env_size, note="; six program starts, see anatomy")]
    if c_hook is not None:
        rows.append(cost_row("C", c_times, env_size,
                             note="; one program, no starts"))
    else:
        rows.append(
            Row(
                "5. hook cost, C",
                "ms per record",
                "-",
                goal=f"<= {GOAL_MS:g} ms",
                note=f"not built: {c_error}",
            )
        )
    rows.append(
        Row(
            "5. hook anatomy",
            "sh hook: ms per exec, median, started like the hook",
            " / ".join(f"{v:.2f}" for v in parts.values()),
            note=" / ".join(parts),
        )
    )
    return rows
