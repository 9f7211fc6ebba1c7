"""A one-node Slurm cluster of another Debian release, run from a chroot (tests/slurm/chroot.py).

munged, slurmctld and slurmd of the root run under ``chroot`` with the host's network; their
files live in ``<root>/srv/jobcompd-e2e`` (``/srv/jobcompd-e2e`` inside), which is emptied at
the start of each run and kept afterwards for inspection. Each daemon is started in its
foreground mode in a session of its own and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from tests.broker import free_port, wait_for
from tests.slurm import chroot
from tests.slurm.cluster import ClusterError, Daemon

HERE = Path(__file__).resolve().parent
CONF_TEMPLATE = HERE / "slurm-chroot.conf.in"
INSIDE = Path("/srv/jobcompd-e2e")


@dataclass
class ChrootCluster:
    """The cluster in ``root``; ``start()`` brings it up, ``stop()`` takes it down."""

    root: Path
    cluster: str = "kafkacluster"
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    ctld_port: int = field(default_factory=free_port)
    slurmd_port: int = field(default_factory=free_port)
    daemons: dict[str, Daemon] = field(default_factory=dict)

    def outside(self, inside: Path | str) -> Path:
        """The host's path of a path inside the root."""
        return self.root / str(inside).lstrip("/")

    @property
    def base(self) -> Path:
        return self.outside(INSIDE)

    def prepare(self) -> None:
        """Mount the root's file systems, stop a killed run's daemons, make clean folders."""
        chroot.mount(self.root)
        for pidfile in sorted((self.base / "run").glob("*.pid")):
            with contextlib.suppress(OSError, ValueError, ProcessLookupError):
                pid = int(pidfile.read_text())
                if Path(f"/proc/{pid}/root").resolve() == self.root.resolve():
                    subprocess.run(["kill", "-KILL", str(pid)], check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        for sub in ("etc", "run", "log", "state", "spool/slurmd", "jobs", "hooks"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.outside("/etc/slurm/cgroup.conf").write_text("CgroupPlugin=disabled\n")

    def start_munge(self) -> None:
        self.chroot_run("install", "-d", "-o", "munge", "-g", "munge", "-m", "755", "/run/munge")
        self._start("munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                               "munged", "--foreground", "--force"])  # fmt: skip
        try:
            wait_for(lambda: self.chroot_run("sh", "-c", "munge -n | unmunge",
                                             check=False).returncode == 0,
                     20, interval=0.1, what="munged in the root")  # fmt: skip
        except TimeoutError:
            raise ClusterError(f"munged in {self.root} does not answer:\n"
                               f"{self.log_tail('munged')}") from None

    def write_conf(self, **settings: str) -> None:
        values = {"cluster": self.cluster, "host": self.host, "base": str(INSIDE),
                  "ctld_port": str(self.ctld_port), "slurmd_port": str(self.slurmd_port),
                  "prolog": "", "epilog": "", "jobcomp_params": "",
                  **settings}  # fmt: skip
        text = Template(CONF_TEMPLATE.read_text()).substitute(values)
        self.outside("/etc/slurm/slurm.conf").write_text(text)

    def start(self, **settings: str) -> None:
        """Write slurm.conf, start slurmctld and slurmd, wait until the node is idle."""
        self.write_conf(**settings)
        self._start_ctld()
        self._start("slurmd", ["slurmd", "-D", "-N", self.host])
        self._wait_idle()

    def restart_ctld(self, **settings: str) -> None:
        """A new slurm.conf for a new slurmctld (JobCompType needs a restart)."""
        self.daemons.pop("slurmctld").stop()
        self.write_conf(**settings)
        self._start_ctld()
        self._wait_idle()

    def _start_ctld(self) -> None:
        self._start("slurmctld", ["slurmctld", "-D", "-i"])
        try:
            wait_for(lambda: "is UP" in self.run("scontrol", "ping", check=False).stdout,
                     30, interval=0.2, what="slurmctld to answer")  # fmt: skip
        except TimeoutError:
            raise ClusterError(f"slurmctld in {self.root} does not answer:\n"
                               f"{self.log_tail('slurmctld')}") from None

    def _wait_idle(self) -> None:
        def ready() -> bool:
            for name in ("slurmctld", "slurmd"):
                if not self.daemons[name].running():
                    raise ClusterError(f"{name} exited:\n{self.log_tail(name)}")
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
            return state.rstrip("*~#!%$@^-") == "idle"
        try:
            wait_for(ready, 40, interval=0.2, what="the node to be idle")
        except TimeoutError:
            raise ClusterError(f"the node does not come up:\n{self.log_tail('slurmd')}\n"
                               f"{self.log_tail('slurmctld')}") from None

    def _start(self, name: str, argv: list[str]) -> None:
        d = Daemon(name, ["chroot", str(self.root), *argv], self.base / "run" / f"{name}.pid",
                   self.base / "log" / f"{name}.out")  # fmt: skip
        d.start()
        self.daemons[name] = d

    def stop(self) -> None:
        """Cancel every job, stop every daemon by PID, unmount."""
        try:
            if self.daemons.get("slurmctld") and self.daemons["slurmctld"].running():
                self.run("scancel", "--user=root", check=False)
            for name in ("slurmd", "slurmctld"):
                d = self.daemons.get(name)
                if d is not None and d.running():
                    d.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            for name in ("slurmd", "slurmctld", "munged"):
                d = self.daemons.pop(name, None)
                if d is not None:
                    d.stop()
        finally:
            chroot.unmount(self.root)

    # -- clients -------------------------------------------------------------------------

    def chroot_run(self, *argv: str, check: bool = True, cwd: str = "/",
                   timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = ["chroot", str(self.root), "env", "TZ=UTC", "sh", "-c", 'cd "$0" && exec "$@"',
               cwd, *argv]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} (in {self.root}) exited with "
                                 f"{res.returncode}: {res.stderr.strip()}")
        return res

    def run(self, *argv: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        return self.chroot_run(*argv, check=check, cwd=str(INSIDE / "jobs"), timeout=timeout)

    def sbatch(self, *args: str) -> int:
        return int(self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0])

    def jobs_json(self, job_id: int) -> list[dict[str, Any]]:
        """``scontrol show job --json ID``'s jobs (an array: every task)."""
        res = self.run("scontrol", "show", "job", "--json", str(job_id), check=False)
        return json.loads(res.stdout).get("jobs", []) if res.returncode == 0 else []

    def log_tail(self, name: str, lines: int = 40) -> str:
        chunks = []
        for path in (self.base / "log" / f"{name}.log", self.base / "log" / f"{name}.out"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(chunks) or f"(no log of {name})"
