"""What every fault test needs: records to send, a steady stream, and the tally that proves
nothing was lost."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobcompd.spool import make_name
from tests.broker import wait_for
from tests.support import DATA, DaemonUnderTest, Received, read_env_fixture

#: ``JOBCOMPD_SOAK=1``: the long versions of the fault tests (``make soak``).
SOAK = os.environ.get("JOBCOMPD_SOAK", "") not in ("", "0")

_TEMPLATE = read_env_fixture(DATA / "records" / "end-4.env")


def scaled(quick: int, soak: int) -> int:
    """A count for the quick run (``make test``) or the soak run."""
    return soak if SOAK else quick


def end_env(job_id: int) -> dict[str, str]:
    """A realistic jobcomp/script environment (a real capture) for a made-up job id."""
    env = dict(_TEMPLATE)
    env["JOBID"] = str(job_id)
    env["JOBNAME"] = f"job-{job_id}"
    return env


def end_env_bytes(job_id: int) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in end_env(job_id).items())


_last_ns = 0
_ns_lock = threading.Lock()


def next_name(job_id: int) -> str:
    """A spool name for a job end record; strictly increasing, so names never collide and
    keep the writing order."""
    global _last_ns
    with _ns_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return make_name(_last_ns, job_id, "end", "env")


def drop(spool: Path, job_id: int) -> str:
    """Write one record the way the hook does (tmp/, then rename into new/), but without a
    process per record: fast enough for tens of thousands. No fsync: these tests kill the
    daemon, never the machine."""
    name = next_name(job_id)
    tmp = spool / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(end_env_bytes(job_id))
    os.rename(tmp, spool / "new" / name)
    return name


class Stream:
    """A steady stream of records in a background thread: every ``hook_every``-th record goes
    through the real hook, the others through :func:`drop`, at about ``rate`` records/s.

    ``sent`` holds the job ids whose record reached new/ (a hook that failed is not counted).
    """

    def __init__(self, dut: DaemonUnderTest, first_id: int, *, rate: float = 500,
                 hook_every: int = 10, limit: int | None = None) -> None:
        self.dut = dut
        self.next_id = first_id
        self.rate = rate
        self.hook_every = hook_every
        self.limit = limit
        self.sent: list[int] = []
        self.hook_failures: list[str] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the writer thread hangs"
        if self.error is not None:
            raise AssertionError(f"the writer failed: {self.error!r}") from self.error
        return self.sent

    def wait_sent(self, count: int, timeout: float = 60) -> None:
        def done() -> bool:
            if self.error is not None:
                raise AssertionError(f"the writer failed: {self.error!r}") from self.error
            return len(self.sent) >= count
        wait_for(done, timeout, what=f"{count} records written")

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as e:
            self.error = e

    def _write(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set() and (self.limit is None or n < self.limit):
            job_id = self.next_id
            self.next_id += 1
            n += 1
            if n % self.hook_every == 0:
                res = self.dut.hook(end_env(job_id), check=False)
                if res.returncode == 0:
                    self.sent.append(job_id)
                else:
                    self.hook_failures.append(res.stderr.decode(errors="replace"))
            else:
                drop(self.dut.spool, job_id)
                self.sent.append(job_id)
            ahead = n / self.rate - (time.monotonic() - start)
            if ahead > 0:
                self._stop.wait(ahead)


@dataclass
class Tally:
    """The figures of one fault test."""

    name: str
    sent: int
    arrived: int
    lost: int
    duplicates: int
    dead_lettered: int
    extra: dict[str, object] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    #: duplicate copies without the ``redelivery`` header (librdkafka's own retries, which the
    #: daemon never sees, carry none)
    unmarked: int = 0

    def line(self) -> str:
        more = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (f"FAULT {self.name} sent={self.sent} arrived={self.arrived} lost={self.lost} "
                f"duplicates={self.duplicates} dead_lettered={self.dead_lettered}{more}")


def job_id_of(r: Received) -> int:
    return json.loads(r.value)["jobid"]


def tally(name: str, sent: list[int], received: list[Received], dut: DaemonUnderTest,
          **extra: object) -> Tally:
    """Count what arrived against what was sent, check that every duplicate is recognisable
    (same key, same jobcompd-id header, same value as its first copy, by offset), count the
    copies that lack the ``redelivery`` header, print the FAULT line."""
    first: dict[int, Received] = {}
    duplicates = unmarked = 0
    for r in sorted(received, key=lambda m: (m.topic, m.partition, m.offset)):
        job = job_id_of(r)
        if job in first:
            prev = first[job]
            assert r.key == prev.key, f"job {job}: duplicate with another key"
            assert r.headers["jobcompd-id"] == prev.headers["jobcompd-id"], (
                f"job {job}: duplicate with another jobcompd-id")
            assert r.value == prev.value, f"job {job}: duplicate with another value"
            duplicates += 1
            if r.headers.get("redelivery") != b"1":
                unmarked += 1
        else:
            first[job] = r
    wanted = set(sent)
    assert len(wanted) == len(sent), "the test sent a job id twice"
    missing = sorted(wanted - first.keys())
    strangers = sorted(first.keys() - wanted)
    assert not strangers, f"records nobody sent arrived: {strangers[:10]}"
    dead = [n for n in dut.failed_files() if not n.endswith(".reason")]
    extra = {"unmarked_duplicates": unmarked, **extra} if duplicates else extra
    result = Tally(name, len(sent), len(wanted) - len(missing), len(missing), duplicates,
                   len(dead), dict(extra), missing)
    result.unmarked = unmarked
    report(result.line())
    return result


def report(line: str) -> None:
    """Print a figure line (shown by ``pytest -rP``), and append it to $JOBCOMPD_FAULT_LOG."""
    print(line)
    path = os.environ.get("JOBCOMPD_FAULT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def drain(dut: DaemonUnderTest, sent: list[int], *, timeout: float = 120,
          settle: float = 1.0) -> list[Received]:
    """Wait until the daemon has retired every record from new/, then read the topic from its
    beginning (with ``settle`` seconds more to catch late duplicates)."""
    wait_empty(dut, timeout)
    return dut.consume(len(sent), timeout=max(30.0, timeout / 2), settle=settle)


def wait_empty(dut: DaemonUnderTest, timeout: float = 120) -> None:
    """Wait until the daemon has retired every record from new/."""
    try:
        wait_for(lambda: new_is_empty(dut), timeout, interval=0.2, what="new/ emptied")
    except TimeoutError as e:
        raise AssertionError(f"{e}: {len(dut.new_files())} left; log tail:\n"
                             f"{dut.log_text()[-3000:]}") from None


def new_is_empty(dut: DaemonUnderTest) -> bool:
    """Cheaper than listing a directory of 100,000 names: stop at the first one."""
    with os.scandir(dut.spool / "new") as it:
        return not any(True for _ in it)


def assert_alive(dut: DaemonUnderTest) -> None:
    assert dut.proc is not None
    assert dut.proc.poll() is None, (
        f"the daemon exited with {dut.proc.returncode}:\n{dut.log_text()[-4000:]}")


def rng(request_name: str) -> random.Random:
    """A seeded random generator; the seed is printed so a failing run can be repeated with
    JOBCOMPD_FAULT_SEED."""
    seed = int(os.environ.get("JOBCOMPD_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{request_name}: JOBCOMPD_FAULT_SEED={seed}")
    return random.Random(seed)


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` for the test (needs root, as in CI)."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs",
                          str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system that holds ``directory``; return the filler."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    assert shutil.disk_usage(directory).free < 4096
    return filler
