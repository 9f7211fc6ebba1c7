"""A one-node Slurm cluster of another Debian release, run from a chroot (tests/slurm/chroot.py).

munged, slurmctld and slurmd of the root run under ``chroot`` with the host's network; their
files live in ``<root>/srv/jobcompd-e2e`` (``/srv/jobcompd-e2e`` inside), which is emptied at
the start of each run and kept afterwards for inspection. Each daemon is started in its
foreground mode in a session of its own and stopped by its PID; what else runs in the root
at the start or end of a run (the jobs of a killed run) is killed. A lock beside the root
keeps two runs on one root apart.

Used by tests/test_slurm_kafka_plugin.py (Slurm 24.11 from a trixie root, always) and by
tests/test_slurm_e2e.py (Slurm 22.05 from a bookworm root where the host's Slurm is not 22.05:
``slurm22_cluster()``).
"""

from __future__ import annotations

import contextlib
import json
import os
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
from tests.slurm.cluster import CONF_TEMPLATE as HOST_CONF_TEMPLATE
from tests.slurm.cluster import (
    LOCK_WAIT_S,
    ClusterBase,
    ClusterError,
    Daemon,
    SlurmCluster,
    ensure_installed,
    host_slurm_version,
    release_lock,
    slurm22_root_reason,
    take_lock,
)

HERE = Path(__file__).resolve().parent
CONF_TEMPLATE = HERE / "slurm-chroot.conf.in"
INSIDE = Path("/srv/jobcompd-e2e")
#: Slurm 23.02+ refuses to start slurmd without cgroups here unless told there are none.
NO_CGROUPS = "CgroupPlugin=disabled\n"
#: 22.05 has no "disabled" and its autodetection fails on the root's /sys (no cgroup file
#: system there): naming cgroup/v1 skips it, and with proctrack/linuxproc and task/none the
#: plugin touches no cgroup (the host's 22.05 autodetects v1 here and runs the same way).
CGROUP_V1 = "CgroupPlugin=cgroup/v1\n"


@dataclass
class ChrootCluster(ClusterBase):
    """The cluster in ``root``; ``start()`` brings it up, ``stop()`` takes it down.

    ``template`` is the slurm.conf template (string.Template, ``base`` is ``INSIDE``);
    ``cgroup_conf`` the root's /etc/slurm/cgroup.conf (None: none); ``why``
    says, in messages, why this Slurm runs from a root.
    """

    root: Path
    cluster: str = "kafkacluster"
    template: Path = CONF_TEMPLATE
    cgroup_conf: str | None = NO_CGROUPS
    why: str = ""
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    ctld_port: int = field(default_factory=free_port)
    slurmd_port: int = field(default_factory=free_port)
    daemons: dict[str, Daemon] = field(default_factory=dict)
    lock_wait: float = LOCK_WAIT_S
    _lock_fd: int | None = None

    def outside(self, inside: Path | str) -> Path:
        """The host's path of a path inside the root."""
        return self.root / str(inside).lstrip("/")

    def inside(self, path: Path) -> str:
        return "/" + str(Path(path).relative_to(self.root))

    @property
    def _lock_path(self) -> Path:
        return self.root.with_name(self.root.name + ".run.lock")

    @property
    def base(self) -> Path:  # type: ignore[override]
        return self.outside(INSIDE)

    @property
    def jobs_dir(self) -> Path:
        return self.base / "jobs"

    def describe(self) -> str:
        return f"Slurm in the root {self.root}" + (f", as {self.why}" if self.why else "")

    def prepare(self) -> None:
        """Take the root's lock, mount its file systems, kill what a killed run left running
        in it, make clean folders."""
        self._lock_fd = take_lock(self._lock_path, f"Slurm in {self.root}", self.lock_wait)
        try:
            chroot.mount(self.root)
            self._kill_leftovers()
            shutil.rmtree(self.base, ignore_errors=True)
            for sub in ("etc", "run", "log", "state", "spool/slurmd", "jobs", "hooks"):
                (self.base / sub).mkdir(parents=True, exist_ok=True)
            cgroup = self.outside("/etc/slurm/cgroup.conf")
            if self.cgroup_conf is None:
                cgroup.unlink(missing_ok=True)
            else:
                cgroup.write_text(self.cgroup_conf)
        except BaseException:
            chroot.unmount(self.root)
            self._release()
            raise

    def _kill_leftovers(self) -> None:
        """SIGKILL every process whose root is ours (daemons and jobs of a killed run): under
        the lock nothing else can run there."""
        ours = self.root.resolve()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "root")) == ours:
                    os.kill(int(entry.name), signal.SIGKILL)

    def start_munge(self) -> None:
        self.chroot_run("install", "-d", "-o", "munge", "-g", "munge", "-m", "755", "/run/munge")
        self._start_daemon("munged", ["chroot", str(self.root), "setpriv", "--reuid=munge",
                                      "--regid=munge", "--init-groups", "munged",
                                      "--foreground", "--force"])  # fmt: skip
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
        text = Template(self.template.read_text()).substitute(values)
        self.outside("/etc/slurm/slurm.conf").write_text(text)

    def _argv(self, daemon: str) -> list[str]:
        args = ["-D", "-i"] if daemon == "slurmctld" else ["-D", "-N", self.host]
        return ["chroot", str(self.root), daemon, *args]

    def stop(self) -> None:
        """Cancel every job, stop every daemon by PID and what is left in the root, unmount,
        release the lock."""
        if self._lock_fd is None:
            return  # prepare() never got the lock: nothing in the root is ours
        try:
            self._stop_daemons()
            self._kill_leftovers()
        finally:
            chroot.unmount(self.root)
            self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            release_lock(self._lock_path, self._lock_fd)
            self._lock_fd = None

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

    def jobs_json(self, job_id: int) -> list[dict[str, Any]]:
        """``scontrol show job --json ID``'s jobs (an array: every task; Slurm 23.02+)."""
        res = self.run("scontrol", "show", "job", "--json", str(job_id), check=False)
        return json.loads(res.stdout).get("jobs", []) if res.returncode == 0 else []


def slurm22_cluster() -> ClusterBase:
    """A Slurm 22.05 cluster, not started: the host's (installed when missing) where its Slurm
    is 22.05, else one from a Debian 12 root (slurm22_root_reason). Raises ClusterError or
    chroot.RootError, saying why."""
    reason = slurm22_root_reason()
    if reason is None:
        ensure_installed()
        return SlurmCluster()
    try:
        root = chroot.ensure_root("bookworm")
    except chroot.RootError as e:
        raise chroot.RootError(f"Slurm 22.05 runs from a Debian 12 root here ({reason}), "
                               f"and {e}") from None
    return ChrootCluster(root, cluster="testcluster", template=HOST_CONF_TEMPLATE,
                         cgroup_conf=CGROUP_V1, why=reason)  # fmt: skip


def how_it_runs(c: ClusterBase) -> str:
    """One line for the test's output: which Slurm, and why from a root."""
    if isinstance(c, ChrootCluster):
        version = c.chroot_run("slurmctld", "-V", check=False).stdout.strip()
        return f"{version} from {c.root} ({c.why or 'asked for'})"
    return f"the host's Slurm {host_slurm_version()}"
