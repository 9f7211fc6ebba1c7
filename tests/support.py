"""Test helpers: a daemon under test as a real process, the real hook, a real consumer."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.broker import wait_for

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "jobcompd" / "hook" / "jobcompd-spool"
C_HOOK_SOURCE = ROOT / "jobcompd" / "hook" / "jobcompd-spool.c"
C_HOOK_CFLAGS = ["-O2", "-Wall", "-Wextra", "-std=c11", "-D_GNU_SOURCE"]
DATA = Path(__file__).resolve().parent / "data"


def build_c_hook(out_dir: Path) -> Path:
    """The compiled hook, built the way the README says; any compiler warning fails."""
    cc = shutil.which("cc")
    assert cc is not None, "no C compiler (cc): run `make sysdeps`"
    out = out_dir / "jobcompd-spool"
    done = subprocess.run([cc, *C_HOOK_CFLAGS, "-Werror", "-o", str(out), str(C_HOOK_SOURCE)],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    return out


def read_env_fixture(path: Path) -> dict[str, str]:
    """A NUL-separated ``env -0`` dump as a dict (the environment slurmctld gave the hook)."""
    env = {}
    for item in path.read_bytes().split(b"\0"):
        if not item:
            continue
        k, _, v = item.partition(b"=")
        env[k.decode()] = v.decode("utf-8", "surrogateescape")
    env.pop("PWD", None)  # added by dash, not by Slurm
    return env


@dataclass
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: dict[str, bytes]
    value: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.value)


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0,
            settle: float = 0.0) -> list[Received]:
    """Read a topic from the beginning until ``count`` messages arrived (then ``settle`` more
    seconds, to catch unexpected extra messages) or ``timeout`` passed."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}",
                  "enable.auto.commit": False})
    out: list[Received] = []
    try:
        def partitions():
            md = c.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            return list(t.partitions) if t is not None and t.error is None and t.partitions else []
        parts = wait_for(partitions, timeout, what=f"topic {topic}")
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            if len(out) >= count and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            for m in c.consume(1000, 0.2):
                if m.error():
                    continue
                out.append(Received(m.topic(), m.partition(), m.offset(), m.key(),
                                    {k: v for k, v in (m.headers() or [])}, m.value()))
    finally:
        c.close()
    return out


@dataclass
class DaemonUnderTest:
    """A jobcompd installation in a temporary folder: config files, spool, state, process."""

    root: Path
    bootstrap: str
    cluster: str = "testcluster"
    topic: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:12]}")
    params: dict[str, str | None] = field(default_factory=dict)
    kafka: dict[str, str] = field(default_factory=dict)
    extra_conf: dict[str, str] = field(default_factory=dict)
    #: run the daemon under this (setpriv, say): [*command_prefix, python, -m, jobcompd, run]
    command_prefix: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    _log_offset: int = 0

    def __post_init__(self) -> None:
        self.spool = self.root / "spool"
        self.state = self.root / "state"
        self.conf = self.root / "jobcompd.conf"
        self.rdkafka = self.root / "rdkafka.conf"
        self.log_path = self.root / "daemon.log"
        self.state.mkdir(parents=True, exist_ok=True)
        self.write_config()

    @property
    def start_topic(self) -> str:
        return str(self.params.get("topic_job_start") or f"{self.topic}-job-start")

    def write_config(self) -> None:
        kafka = {"bootstrap.servers": self.bootstrap, "message.timeout.ms": "10000",
                 **self.kafka}
        self.rdkafka.write_text("".join(f"{k}={v}\n" for k, v in kafka.items()))
        params = {"topic": self.topic, "topic_job_start": self.start_topic, **self.params}
        jcp = ",".join(k if v is None else f"{k}={v}" for k, v in params.items())
        lines = {
            "ClusterName": self.cluster,
            "JobCompLoc": str(self.rdkafka),
            "JobCompParams": jcp,
            "SpoolDir": str(self.spool),
            "StateSaveLocation": str(self.state),
            "SpoolOwners": "root",
            **self.extra_conf,
        }
        self.conf.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    # -- the process ----------------------------------------------------------------------

    def start(self, wait_ready: bool = True, extra_env: dict[str, str] | None = None
              ) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        env.update(extra_env or {})
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "jobcompd", "run", "-c", str(self.conf)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=self.root,
        )
        log.close()
        if wait_ready:
            self.wait_log("started", timeout=30)
        return self.proc

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(10)

    # -- its log --------------------------------------------------------------------------

    def log_text(self, since_start: bool = True) -> str:
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return data[self._log_offset if since_start else 0:].decode(errors="replace")

    def log_lines(self, msg: str | None = None) -> list[str]:
        lines = self.log_text().splitlines()
        return [ln for ln in lines if msg is None or f"msg={msg} " in ln + " "]

    def wait_log(self, msg: str, timeout: float = 30, count: int = 1) -> list[str]:
        def found():
            if self.proc is not None and self.proc.poll() is not None and not self.log_lines(msg):
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode} before logging {msg!r}:\n"
                    + self.log_text()[-4000:]
                )
            lines = self.log_lines(msg)
            return lines if len(lines) >= count else None
        try:
            return wait_for(found, timeout, what=f"log event {msg!r}")
        except TimeoutError as e:
            raise AssertionError(f"{e}; log so far:\n{self.log_text()[-4000:]}") from None

    # -- the spool ------------------------------------------------------------------------

    def hook(self, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
        """Run the real hook the way slurmctld does: execve, no shell, only Slurm's variables."""
        full = dict(env)
        full["JOBCOMPD_SPOOL"] = str(self.spool)
        res = subprocess.run([str(HOOK)], env=full, capture_output=True, cwd="/tmp")
        if check:
            assert res.returncode == 0, res.stderr.decode()
        return res

    def new_files(self) -> list[str]:
        d = self.spool / "new"
        return sorted(os.listdir(d)) if d.exists() else []

    def failed_files(self) -> list[str]:
        d = self.spool / "failed"
        return sorted(os.listdir(d)) if d.exists() else []

    def consume(self, count: int, topic: str | None = None, timeout: float = 30,
                settle: float = 0.0) -> list[Received]:
        return consume(self.bootstrap, topic or self.topic, count, timeout, settle)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
