"""A real one-node Slurm cluster for the end-to-end test: packages, munged, slurmctld, slurmd.

Everything runs on loopback as root, each daemon in its foreground mode in a session of its
own, its PID in ``<base>/run/<name>.pid``. ``<base>`` is a fixed folder so that the next run can
find (by those PID files) and stop what a killed run left behind; a lock file keeps two runs on
one machine apart. Client commands get ``SLURM_CONF`` in their environment, so nothing is
written to /etc/slurm. Outside ``<base>`` only what munge needs is touched: its key (created
when missing) and /run/munge.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from tests.broker import free_port, wait_for

HERE = Path(__file__).resolve().parent
CONF_TEMPLATE = HERE / "slurm.conf.in"
BASE = Path("/tmp/jobcompd-slurm-e2e")
LOCK = Path("/tmp/jobcompd-slurm-e2e.lock")

APT_PACKAGES = ["slurm-wlm", "slurm-wlm-elasticsearch-plugin", "munge"]
# EPEL's names (RHEL-family); Fedora has them in its own repositories.
DNF_PACKAGES = ["slurm", "slurm-slurmctld", "slurm-slurmd", "munge"]
PROGRAMS = ["slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "munged", "munge"]
ES_PLUGIN_GLOBS = ["/usr/lib*/slurm*/jobcomp_elasticsearch.so",
                   "/usr/lib*/*/slurm*/jobcomp_elasticsearch.so"]

MUNGE_SOCKET_DIR = Path("/run/munge")
MUNGE_KEY = Path("/etc/munge/munge.key")


class ClusterError(Exception):
    """The cluster cannot be set up; the message says why (the test fails with it)."""


# ------------------------------------------------------------------------------------------
# Packages


def _missing() -> list[str]:
    missing = [p for p in PROGRAMS if shutil.which(p, path=_SBIN_PATH) is None]
    if not any(glob.glob(g) for g in ES_PLUGIN_GLOBS):
        missing.append("jobcomp_elasticsearch.so")
    return missing


_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def ensure_installed() -> str:
    """Install Slurm and munge when missing; returns what was done. Raises ClusterError."""
    missing = _missing()
    if not missing:
        return "Slurm and munge already installed"
    if os.geteuid() != 0:
        raise ClusterError(f"missing {', '.join(missing)} and not root: cannot install "
                           "slurm-wlm and munge (run the Slurm test as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-q", *APT_PACKAGES]
        res = _run_quiet(install, env)
        if res.returncode != 0:  # stale package lists: update once and try again
            _run_quiet(["apt-get", "update", "-q"], env)
            res = _run_quiet(install, env)
    elif shutil.which("dnf"):
        _run_quiet(["dnf", "install", "-y", "-q", "epel-release"], env)  # not on Fedora: fine
        res = _run_quiet(["dnf", "install", "-y", "-q", *DNF_PACKAGES], env)
    else:
        raise ClusterError(f"missing {', '.join(missing)}, and neither apt-get nor dnf is "
                           "here to install Slurm and munge")
    if res.returncode != 0:
        raise ClusterError(f"installing Slurm failed ({' '.join(res.args)} exited with "
                           f"{res.returncode}):\n{res.stdout[-3000:]}")
    still = _missing()
    if still:
        raise ClusterError(f"installed {' '.join(res.args[3:])} but still missing: "
                           f"{', '.join(still)}")
    return f"installed: {' '.join(res.args)}"


def _run_quiet(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)


# ------------------------------------------------------------------------------------------
# Processes by PID file


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our(pid: int, program: str) -> bool:
    """The PID is alive and runs ``program`` (a reused PID of something else is not ours)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(a.decode(errors="replace")).name == program for a in argv[:2])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not _alive(pid), timeout, interval=0.1, what=f"PID {pid} to exit")
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 10, interval=0.1, what=f"PID {pid} killed")


@dataclass
class Daemon:
    name: str  # also the program name checked in /proc
    argv: list[str]
    pidfile: Path
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        self.pidfile.write_text(f"{self.proc.pid}\n")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()


# ------------------------------------------------------------------------------------------
# The cluster


_KEY = re.compile(r"(?:^| )([A-Za-z][A-Za-z0-9_/:]*)=")


def parse_scontrol_line(line: str) -> dict[str, str]:
    """One ``scontrol show job -o`` line as a dict. Values may hold spaces (JobName), so a
    value runs up to the next `` Key=``; job names used with this must not contain ``=``."""
    matches = list(_KEY.finditer(line))
    out: dict[str, str] = {}
    for m, nxt in zip(matches, [*matches[1:], None], strict=True):
        end = nxt.start() if nxt is not None else len(line)
        out[m.group(1)] = line[m.end():end].rstrip(" ")
    return out


@dataclass
class SlurmCluster:
    """The test cluster in ``base``; ``start()`` brings it up, ``stop()`` takes it down."""

    base: Path = BASE
    cluster: str = "testcluster"
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    ctld_port: int = field(default_factory=free_port)
    slurmd_port: int = field(default_factory=free_port)
    daemons: dict[str, Daemon] = field(default_factory=dict)
    _lock_fd: int | None = None

    @property
    def conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    @property
    def jobs_dir(self) -> Path:
        return self.base / "jobs"

    # -- set-up and tear-down ----------------------------------------------------------

    def prepare(self) -> None:
        """Take the machine-wide lock, stop a killed run's leftovers, make clean folders."""
        LOCK.touch()
        fd = os.open(LOCK, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClusterError(f"another Slurm end-to-end test holds {LOCK} on this machine; "
                               "wait for it to finish") from None
        self._lock_fd = fd
        self._stop_leftovers()
        if self.base.exists():
            shutil.rmtree(self.base)
        for sub in ("etc", "run", "log", "state", "spool/slurmd", "jobs", "hooks"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)

    def _stop_leftovers(self) -> None:
        for pidfile in sorted((self.base / "run").glob("*.pid")):
            program = pidfile.name.split(".")[0]
            pid = _read_pid(pidfile)
            if pid is not None and _is_our(pid, program):
                stop_pid(pid)
        self._kill_job_processes()

    def _kill_job_processes(self) -> None:
        """Kill what is left of our jobs (slurmstepd and the job scripts under it).

        They outlive slurmd when it stops before them, and have no PID file; they are ours
        when their environment names our slurm.conf (slurmd sets SLURM_CONF for its steps,
        sbatch passes ours to the job).
        """
        marker = f"SLURM_CONF={self.conf}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def start_munge(self) -> None:
        """Use a munged that answers already; else start our own."""
        if self._munge_works():
            return
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(os.urandom(128))
        for path, mode in ((MUNGE_KEY, 0o600), (MUNGE_SOCKET_DIR, 0o755),
                           (Path("/var/lib/munge"), 0o700), (Path("/var/log/munge"), 0o700)):
            if path != MUNGE_KEY:
                path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "munge", "munge")
            path.chmod(mode)
        self._start_daemon("munged", [
            "setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
            _which("munged"), "--foreground", "--force"])
        try:
            wait_for(self._munge_works, 20, interval=0.1, what="munged to answer")
        except TimeoutError:
            raise ClusterError(f"munged does not answer:\n{self.log_tail('munged')}") from None

    @staticmethod
    def _munge_works() -> bool:
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
            if cred.returncode != 0:
                return False
            res = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return res.returncode == 0

    def write_conf(self, **settings: str) -> None:
        values = {"cluster": self.cluster, "host": self.host, "base": str(self.base),
                  "ctld_port": str(self.ctld_port), "slurmd_port": str(self.slurmd_port),
                  **settings}
        self.conf.write_text(Template(CONF_TEMPLATE.read_text()).substitute(values))

    def start(self, **settings: str) -> None:
        """Write slurm.conf and start slurmctld and slurmd; wait until the node is idle."""
        self.write_conf(**settings)
        self._start_ctld()
        self._start_daemon("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf)])
        self._wait_node_idle()

    def restart_ctld(self, **settings: str) -> None:
        """New slurm.conf, new slurmctld (JobCompType needs a restart); jobs keep running."""
        self.daemons["slurmctld"].stop()
        self.write_conf(**settings)
        self._start_ctld()
        self._wait_node_idle(allow_busy=True)

    def _start_ctld(self) -> None:
        self._start_daemon("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        try:
            wait_for(lambda: "is UP" in self.run("scontrol", "ping", check=False).stdout,
                     30, interval=0.2, what="slurmctld to answer")
        except TimeoutError:
            raise ClusterError(f"slurmctld does not answer:\n{self.log_tail('slurmctld')}"
                               ) from None

    def _wait_node_idle(self, allow_busy: bool = False) -> None:
        good = {"idle"} | ({"mixed", "allocated", "completing"} if allow_busy else set())

        def ready() -> bool:
            for name in ("slurmctld", "slurmd"):
                if not self.daemons[name].running():
                    raise ClusterError(f"{name} exited:\n{self.log_tail(name)}")
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
            return state.rstrip("*~#!%$@^-") in good
        try:
            wait_for(ready, 30, interval=0.2, what="the node to be idle")
        except TimeoutError:
            raise ClusterError(f"the node does not come up:\n{self.log_tail('slurmd')}\n"
                               f"{self.log_tail('slurmctld')}") from None

    def _start_daemon(self, name: str, argv: list[str]) -> None:
        d = Daemon(name, argv, self.base / "run" / f"{name}.pid",
                   self.base / "log" / f"{name}.out")
        d.start()
        self.daemons[name] = d

    def stop(self) -> None:
        """Cancel every job, stop every daemon we started (by PID), release the lock."""
        if self._lock_fd is None:
            return  # prepare() never got the lock: nothing here is ours
        try:
            if self.daemons.get("slurmctld") and self.daemons["slurmctld"].running():
                self.run("scancel", "--user=root", check=False)
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: not self.run("squeue", "-h", check=False).stdout.strip(),
                             20, interval=0.2, what="jobs to end")
            # slurmd and slurmctld shut down in parallel; munged last.
            for name in ("slurmd", "slurmctld"):
                d = self.daemons.get(name)
                if d is not None and d.running():
                    d.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            for name in ("slurmd", "slurmctld", "munged"):
                d = self.daemons.pop(name, None)
                if d is not None:
                    d.stop()
            self._kill_job_processes()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- clients -------------------------------------------------------------------------

    def client_env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), "TZ": "UTC"}

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(list(argv), env=self.client_env(), cwd=self.jobs_dir,
                             capture_output=True, text=True, timeout=30)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited with {res.returncode}: "
                                 f"{res.stderr.strip()}")
        return res

    def sbatch(self, *args: str) -> int:
        out = self.run("sbatch", "--parsable", *args).stdout.strip()
        return int(out.split(";")[0])

    def show_job(self, job_id: int) -> list[dict[str, str]]:
        """``scontrol -d show job -o ID``: one dict per job (an array: one per task)."""
        res = self.run("scontrol", "-d", "show", "job", "-o", str(job_id), check=False)
        if res.returncode != 0:
            return []
        return [parse_scontrol_line(line) for line in res.stdout.splitlines() if line.strip()]

    def job_state(self, job_id: int) -> str | None:
        jobs = self.show_job(job_id)
        return jobs[0]["JobState"] if len(jobs) == 1 else None

    def log_tail(self, name: str, lines: int = 40) -> str:
        chunks = []
        for path in (self.base / "log" / f"{name}.log", self.base / "log" / f"{name}.out"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(chunks) or f"(no log of {name})"


def _which(program: str) -> str:
    path = shutil.which(program, path=_SBIN_PATH)
    if path is None:
        raise ClusterError(f"{program} not found")
    return path


def wait_for_state(cluster: SlurmCluster, job_id: int, states: set[str], timeout: float
                   ) -> str:
    """Wait until the job (not an array) is in one of ``states``; returns that state."""
    seen: list[str | None] = [None]

    def reached() -> str | None:
        seen[0] = cluster.job_state(job_id)
        return seen[0] if seen[0] in states else None
    try:
        return wait_for(reached, timeout, interval=0.3, what=f"job {job_id} in {states}")
    except TimeoutError:
        raise AssertionError(f"job {job_id} still {seen[0]} after {timeout:g} s, not in "
                             f"{sorted(states)}\n{cluster.log_tail('slurmctld', 15)}") from None


def wait_all_done(cluster: SlurmCluster, job_ids: list[int], timeout: float) -> None:
    """Wait until none of the jobs (arrays included) is pending, running or completing."""
    active = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
              "RESIZING", "SIGNALING", "STAGE_OUT"}
    left: list[int] = []

    def done() -> bool:
        left[:] = [j for j in job_ids
                   if not (jobs := cluster.show_job(j))
                   or any(job["JobState"] in active for job in jobs)]
        return not left
    deadline = time.monotonic() + timeout
    try:
        wait_for(done, max(0.0, deadline - time.monotonic()), interval=0.5,
                 what="jobs to finish")
    except TimeoutError:
        raise AssertionError(f"jobs {left} not finished after {timeout:g} s\n"
                             f"{cluster.log_tail('slurmctld', 15)}") from None
