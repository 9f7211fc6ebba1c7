"""What every benchmark needs: result rows, statistics, and real parts that clean up after
themselves -- a Tansu broker, the daemon as a real process, a consumer that counts what arrived,
a systemd notify socket that hears READY=1.

Everything here is started inside a ``with`` block (or an ExitStack) so that a benchmark that
fails half-way still stops its broker and its daemon.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from tests.broker import Tansu
from tests.support import DaemonUnderTest


@dataclass
class Row:
    """One line of the result table."""

    bench: str
    metric: str
    value: str
    goal: str = ""
    met: bool | None = None  # None: no goal, or not comparable
    note: str = ""


@dataclass
class Context:
    """Options and shared results of one ``python -m bench`` run."""

    workdir: Path
    quick: bool
    runs: int
    backlog: int | None = None  # files in the big-backlog benchmark
    drain: int | None = None  # files in the drain benchmark and the ceilings
    profile: Path | None = None  # write a py-spy profile of one drain here
    #: a directory holding another copy of the jobcompd package for the daemon to run
    #: (PYTHONPATH), to measure a change before it is made in the tree
    daemon_path: Path | None = None
    #: results one benchmark leaves for another (ceiling (b) for the drain ratio)
    shared: dict[str, float] = field(default_factory=dict)

    def scratch(self, name: str) -> Path:
        """A fresh directory for one run of one benchmark."""
        path = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path


def compile_daemon(ctx: Context) -> Path:
    """Write the bytecode of the package the daemon runs, as an installed package has it.

    Python reads __pycache__ even where PYTHONDONTWRITEBYTECODE (set on some build machines)
    keeps it from writing it; without it each start of the daemon, and of its parsing
    worker, compiles its 11,000 lines again: a sixth of the time from exec to READY=1.
    """
    package = (ctx.daemon_path or Path(__file__).resolve().parents[1]) / "jobcompd"
    if not compileall.compile_dir(package, quiet=1):
        raise RuntimeError(f"{package}: could not compile the daemon's modules")
    return package


# -- numbers -------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``; ``p`` in 0..100."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """``min..max`` of several runs, for the note column."""
    if len(values) < 2:
        return ""
    return f"runs {fmt.format(min(values))}..{fmt.format(max(values))}"


def wait_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def io_pressure() -> float | None:
    """The share of the last 10 s in which some task waited for I/O (/proc/pressure/io), in
    percent; None where the kernel has no PSI."""
    try:
        with open("/proc/pressure/io") as f:
            first = f.readline().split()
    except OSError:
        return None
    return float(dict(part.split("=") for part in first[1:])["avg10"])


def settle(limit_pct: float = 2.0, timeout: float = 180.0) -> tuple[float | None, float]:
    """Flush dirty data and wait until the disk is quiet: removing a benchmark's hundreds of
    thousands of files leaves the file system trimming and writing back for minutes (ext4
    with ``discard`` most of all), which would fall on the next benchmark. Returns the I/O
    pressure reached and the seconds waited."""
    t0 = time.monotonic()
    os.sync()
    pressure = io_pressure()
    while pressure is not None and pressure > limit_pct and time.monotonic() - t0 < timeout:
        time.sleep(2)
        pressure = io_pressure()
    return pressure, time.monotonic() - t0


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB: now, and the peak since it started."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def children_peak_kib(pid: int) -> int:
    """Sum of VmHWM of a process's children (the parsing worker, multiprocessing's resource
    tracker), in KiB: memory the daemon uses in other processes."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                with contextlib.suppress(FileNotFoundError):  # it ended meanwhile
                    total += memory_kib(int(child))[1]
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def new_is_empty(spool: Path) -> bool:
    """True when spool/new holds no record; reads only until the first entry."""
    with os.scandir(spool / "new") as it:
        return not any(not e.name.startswith(".") for e in it)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- real parts ----------------------------------------------------------------------------


@contextlib.contextmanager
def broker(ctx: Context, name: str) -> Iterator[Tansu]:
    """A fresh in-memory Tansu for one benchmark (a million records need not stay around)."""
    tansu = Tansu(log_path=ctx.workdir / f"tansu-{name}.log").start()
    try:
        yield tansu
    finally:
        tansu.stop()


class NotifyListener:
    """A NOTIFY_SOCKET: records when each systemd notification arrived (monotonic time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.ready_at: float | None = None
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            text = data.decode(errors="replace")
            self.messages.append((now, text))
            if self.ready_at is None and "READY=1" in text.splitlines():
                self.ready_at = now

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@dataclass
class RunningDaemon:
    dut: DaemonUnderTest
    notify: NotifyListener
    started_at: float  # monotonic, just before the exec

    @property
    def pid(self) -> int:
        assert self.dut.proc is not None
        return self.dut.proc.pid

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from exec to READY=1."""

        def ready() -> bool:
            proc = self.dut.proc
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {proc.returncode} before READY=1:\n"
                    + self.dut.log_text()[-3000:]
                )
            return self.notify.ready_at is not None

        wait_until(ready, timeout, what="READY=1")
        assert self.notify.ready_at is not None
        return self.notify.ready_at - self.started_at


@contextlib.contextmanager
def daemon(
    ctx: Context,
    root: Path,
    bootstrap: str,
    *,
    params: dict[str, str | None] | None = None,
    kafka: dict[str, str] | None = None,
    extra_conf: dict[str, str] | None = None,
    spool: Path | None = None,
) -> Iterator[RunningDaemon]:
    """The daemon as a real process (``python -m jobcompd run``) in ``root``, with the test
    suite's configuration (spool in root/spool unless ``spool`` is given), producing to
    ``bootstrap``; killed on exit if still running."""
    dut = DaemonUnderTest(
        root=root,
        bootstrap=bootstrap,
        params=dict(params or {}),
        kafka=dict(kafka or {}),
        extra_conf=dict(extra_conf or {}),
    )
    if spool is not None:
        dut.spool = spool
    dut.write_config()
    notify = NotifyListener(root / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path)}
    if ctx.daemon_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ctx.daemon_path), os.environ.get("PYTHONPATH")) if p
        )
    try:
        started = time.monotonic()
        dut.start(wait_ready=False, extra_env=env)
        yield RunningDaemon(dut, notify, started)
    finally:
        if dut.proc is not None and dut.proc.poll() is None:
            dut.proc.kill()
            dut.proc.wait(10)
        notify.close()


def stop_daemon(run: RunningDaemon, timeout: float = 60) -> float:
    """SIGTERM; seconds until the process exited."""
    proc = run.dut.proc
    assert proc is not None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise
    return time.monotonic() - t0


class Arrivals:
    """A consumer on one topic, in a thread: counts what arrives and, on request, when.

    ``times`` maps each key to the wall-clock time (ns) it was first received, so latency can
    be computed against the drop time in the spool file's name.
    """

    def __init__(self, bootstrap: str, topic: str, *, keep_times: bool = False) -> None:
        self.topic = topic
        self.keep_times = keep_times
        self.count = 0
        self.keys: set[bytes] = set()
        self.times: dict[bytes, int] = {}
        self.error: BaseException | None = None
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrivals", daemon=True)
        self._thread.start()

    @property
    def unique(self) -> int:
        return len(self.keys)

    def _partitions(self) -> list[int]:
        md = self._consumer.list_topics(self.topic, timeout=5)
        t = md.topics.get(self.topic)
        if t is None or t.error is not None or not t.partitions:
            return []
        return list(t.partitions)

    def _run(self) -> None:
        try:
            parts: list[int] = []
            while not parts and not self._stop.is_set():
                try:
                    parts = self._partitions()
                except KafkaException:
                    parts = []
                if not parts:
                    self._stop.wait(0.2)
            self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            while not self._stop.is_set():
                if self.keep_times:
                    # poll() returns as soon as one message is there; consume() would wait
                    # for a full batch or its timeout, which adds up to that to a latency.
                    m = self._consumer.poll(0.1)
                    batch = [m] if m is not None else []
                else:
                    batch = self._consumer.consume(10_000, 0.1)
                now = time.time_ns()
                for m in batch:
                    if m.error():
                        continue
                    key = m.key()
                    self.count += 1
                    if key not in self.keys:
                        self.keys.add(key)
                        if self.keep_times:
                            self.times[key] = now
        except BaseException as e:  # reported by wait_for(), never lost in the thread
            self.error = e

    def wait_for(self, count: int, timeout: float) -> None:
        """Until ``count`` distinct records arrived."""

        def enough() -> bool:
            if self.error is not None:
                raise RuntimeError(f"consumer failed: {self.error}")
            return self.unique >= count

        wait_until(enough, timeout, interval=0.05, what=f"{count} records on {self.topic}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@contextlib.contextmanager
def arrivals(bootstrap: str, topic: str, *, keep_times: bool = False) -> Iterator[Arrivals]:
    a = Arrivals(bootstrap, topic, keep_times=keep_times)
    try:
        yield a
    finally:
        a.close()


def job_of_key(key: bytes) -> int:
    """The job id in a message key ``<cluster>:<jobid>``."""
    return int(key.rsplit(b":", 1)[1])
