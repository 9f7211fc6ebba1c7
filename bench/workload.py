"""The records the benchmarks push through: realistic jobcomp/script dumps, written fast.

A record here is what the hook would have written for a job end under Slurm's jobcomp/script:
the NUL-separated environment (``env -0``) that slurmctld hands the script, plus the hook's
``JOBCOMPD_HOOK_TIME``. The values are those of a production cluster (long paths, a node range,
a dependency, a time zone) rather than the test fixtures' minimal ones, so one dump is about
1 KB and 40 variables, like the ones an operator would see.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from jobcompd import records
from jobcompd.spool import make_name

#: First job id of a run; every record of a run gets its own id from here up.
FIRST_JOB_ID = 4_200_000

# jobcomp/script's variables (jobcomp-facts §7.2) for a job component of a heterogeneous job
# (which carries all four HET/PACK variables), in the order slurmctld sets them.
_TEMPLATE = [
    ("JOBID", "%(job)d"),
    ("EXITCODE", "0:0"),
    ("DERIVED_EC", "0:0"),
    ("ARRAYJOBID", "0"),
    ("ARRAYTASKID", "4294967294"),
    ("HETJOBID", "%(job)d"),
    ("HETJOBOFFSET", "0"),
    ("PACKJOBID", "%(job)d"),
    ("PACKJOBOFFSET", "0"),
    ("UID", "20417"),
    ("GID", "20400"),
    ("USERNAME", "mkowalski"),
    ("GROUPNAME", "clim-dyn"),
    ("START", "%(start)d"),
    ("END", "%(end)d"),
    ("SUBMIT", "%(submit)d"),
    ("ELIGIBLE", "%(submit)d"),
    ("PROCS", "512"),
    ("NODECNT", "4"),
    ("DB_FLAGS", "SchedBackfill,StartReceived"),
    ("BATCH", "yes"),
    ("CLUSTER", "hpc-prod"),
    ("CONSTRAINTS", "cpu_gen:genoa&ib_hdr"),
    ("NODES", "cn[0412-0414,0518]"),
    ("ACCOUNT", "clim-dynamics-2024"),
    ("JOBNAME", "era5-regrid-2024-07-member-%(job)d"),
    ("QOS", "normal"),
    ("RESERVATION", ""),
    ("DEPENDENCY", "afterok:4199999_*"),
    ("JOBSTATE", "COMPLETED"),
    ("PARTITION", "compute"),
    ("WORK_DIR", "/scratch/projects/clim-dyn/era5/regrid/2024/07/member-%(job)d"),
    ("STATEREASONPREV", "Priority"),
    ("STDIN", "/dev/null"),
    ("STDOUT", "/scratch/projects/clim-dyn/era5/logs/%%x-%%j.out"),
    ("STDERR", "/scratch/projects/clim-dyn/era5/logs/%%x-%%j.err"),
    ("LIMIT", "1-00:00:00"),
    ("TZ", "Europe/Berlin"),
    ("PATH", "/usr/bin:/bin:/usr/sbin:/sbin"),
]
_DUMP = ("".join(f"{k}={v}\0" for k, v in _TEMPLATE) + records.HOOK_TIME_VAR
         + "=%(end)d\0").encode()
_END_EPOCH = 1_795_600_000


def dump(job_id: int) -> bytes:
    """One job end record as the hook writes it (``env -0`` plus the hook's time)."""
    end = _END_EPOCH + job_id % 86_400
    return _DUMP % {b"job": job_id, b"start": end - 3_600, b"end": end, b"submit": end - 7_200}


def slurm_env(job_id: int) -> dict[str, str]:
    """The environment slurmctld gives the hook for that job (no hook time, no PWD)."""
    entries = (e.partition(b"=") for e in dump(job_id).split(b"\0") if e)
    env = {k.decode(): v.decode() for k, _, v in entries}
    del env[records.HOOK_TIME_VAR]
    return env


def check() -> tuple[int, int]:
    """Parse one dump with the daemon's parser (so a benchmark never measures dead letters);
    return (size in bytes, number of variables)."""
    data = dump(FIRST_JOB_ID)
    rec = records.parse_record(data, "env", cluster="bench", event_hint="end")
    if rec.job_id != FIRST_JOB_ID:
        raise RuntimeError(f"workload record parsed as job {rec.job_id}, not {FIRST_JOB_ID}")
    return len(data), data.count(b"\0")


def name(ns: int, job_id: int) -> str:
    return make_name(ns, job_id, "end", "env")


def fill_new(
    spool: Path,
    count: int,
    first_job: int = FIRST_JOB_ID,
    base_ns: int | None = None,
    *,
    via_tmp: bool = False,
) -> list[str]:
    """Write ``count`` records into ``spool/new``: a backlog that is already there.

    No fsync: the files stand for records written long ago, and creating a million of them
    must take a minute, not an hour. Names are 1 µs apart, in the past. With ``via_tmp``
    each file is written in tmp/ and renamed into new/, so a running daemon never sees a
    half-written one.
    """
    new, tmp = spool / "new", spool / "tmp"
    base = base_ns if base_ns is not None else time.time_ns() - count * 1_000 - 10**9
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    names = []
    for i in range(count):
        job = first_job + i
        n = name(base + i * 1_000, job)
        fd = os.open((tmp if via_tmp else new) / n, flags, 0o600)
        try:
            os.write(fd, dump(job))
        finally:
            os.close(fd)
        if via_tmp:
            os.rename(tmp / n, new / n)
        names.append(n)
    return names


def fill_new_parallel(spool: Path, count: int, processes: int = 4) -> None:
    """``fill_new`` in several processes at once (a million files take minutes otherwise),
    then ``sync``: a backlog from an outage is on disk, not dirty in the page cache, and the
    write-back must not run during the measurement. Names keep one time order."""
    if count < 20_000 or processes < 2:
        fill_new(spool, count)
        os.sync()
        return
    base = time.time_ns() - count * 1_000 - 10**9
    share = -(-count // processes)
    jobs = [
        (spool, min(share, count - k * share), FIRST_JOB_ID + k * share, base + k * share * 1_000)
        for k in range(processes)
        if k * share < count
    ]
    with ProcessPoolExecutor(len(jobs)) as pool:
        for result in [pool.submit(fill_new, *job) for job in jobs]:
            result.result()
    os.sync()


def drop(spool: Path, job_id: int) -> tuple[int, int]:
    """Write one record the way the hook does -- tmp/, fsync, rename into new/, fsync new/.

    Returns the time stamp of its name (epoch ns, taken first, as the hook takes it with
    ``date``: when it was dropped) and the time it appeared in new/ (right after the rename).
    """
    ns = time.time_ns()
    n = name(ns, job_id)
    tmp = spool / "tmp" / n
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, dump(job_id))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, spool / "new" / n)
    visible = time.time_ns()
    dfd = os.open(spool / "new", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return ns, visible


def make_spool(root: Path) -> Path:
    """An empty spool (tmp/, new/, failed/) under ``root``."""
    for sub in ("tmp", "new", "failed"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root
