"""A real one-node Slurm cluster for the end-to-end test: packages, munged, slurmctld, slurmd.

Everything runs on loopback as root, each daemon in its foreground mode in a session of its
own, its PID in ``<base>/run/<name>.pid``. ``<base>`` is a fixed folder so that the next run can
find (by those PID files) and stop what a killed run left behind; a lock file keeps two runs on
one machine apart. Client commands get ``SLURM_CONF`` in their environment, so nothing is
written to /etc/slurm. Outside ``<base>`` only what munge needs is touched: its key (created
when missing) and /run/munge.

``ClusterBase`` is what this cluster shares with one run from a Debian root
(tests/slurm/chroot_cluster.py); ``slurm22_root_reason`` says which of the two the 22.05 test
takes.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from tests.broker import free_port, wait_for
from tests.slurm import chroot

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


def host_slurm_version() -> str | None:
    """The host's Slurm release (``22.05.8``), or None when slurmctld is not installed."""
    path = shutil.which("slurmctld", path=_SBIN_PATH)
    if path is None:
        return None
    res = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=30, check=False)
    found = re.search(r"\b(\d+\.\d+\.\d+)", res.stdout + res.stderr)
    return found.group(1) if found else "(unknown: slurmctld -V says " \
        f"{(res.stdout + res.stderr).strip()!r})"


#: ``1``: run Slurm 22.05 from the bookworm root whatever the host is (what a Debian 13 host
#: does); ``0``: the host's Slurm whatever its release; unset: decide (slurm22_root_reason).
SLURM22_ROOT_ENV = "JOBCOMPD_TEST_SLURM22_ROOT"


def slurm22_root_reason() -> str | None:
    """Why the 22.05 test runs Slurm from a Debian 12 (bookworm) root, or None when the host's
    own Slurm is 22.05 or installs as 22.05 (Debian 12's slurm-wlm; a RHEL-family host's
    EPEL slurm, whatever its release, as before). Raises ClusterError on a bad override."""
    forced = os.environ.get(SLURM22_ROOT_ENV, "")
    if forced not in ("", "0", "1"):
        raise ClusterError(f"{SLURM22_ROOT_ENV}={forced!r}: 1 (bookworm root), 0 (the "
                           "host's Slurm) or unset (decide by the host)")
    if forced:
        return f"{SLURM22_ROOT_ENV}=1" if forced == "1" else None
    version = host_slurm_version()
    if version is not None:
        return None if version.startswith("22.05.") else \
            f"the host's Slurm is {version}, not 22.05"  # fmt: skip
    codename = chroot.host_codename()
    if shutil.which("apt-get") and codename != "bookworm":
        return f"the host is {codename or 'not Debian 12'}: its slurm-wlm is not 22.05"
    return None


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


def kill_processes(part: str, matches: Callable[[list[bytes]], bool]) -> None:
    """SIGKILL every other process whose ``/proc/<pid>/<part>`` (``environ``, ``cmdline``:
    NUL-separated) ``matches``: what a killed run left without a PID file."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / part).read_bytes().split(b"\0")
        except OSError:
            continue
        if matches(fields):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


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


#: How long a Slurm test waits for another one's lock: under ``make test`` (xdist, one module
#: per worker) the pair test (tests/test_slurm_pair.py) and the end-to-end test may start
#: together on one machine's cluster folder; the end-to-end test takes about 3 minutes.
LOCK_WAIT_S = 420.0


#: The locks this process holds (path → what holds it): a second cluster in one process
#: would wait for itself.
_HELD: dict[Path, str] = {}


def take_lock(path: Path, what: str, wait: float = 0.0) -> int:
    """An exclusive lock on ``path`` (its fd), waiting up to ``wait`` seconds for another run
    to release it; ClusterError when it still holds it. Release it with ``release_lock``."""
    if path in _HELD:
        raise ClusterError(f"this process holds {path} already (for {_HELD[path]}): a cluster "
                           "of an earlier test is not stopped yet (a session-scoped fixture "
                           "stops it only when the session ends)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def locked() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    try:
        wait_for(locked, wait, interval=0.5, what=f"the lock {path}")
    except TimeoutError:
        os.close(fd)
        raise ClusterError(f"another Slurm test holds {path} (waited {wait:g} s): it runs "
                           f"{what}; wait for it to finish") from None
    _HELD[path] = what
    return fd


def release_lock(path: Path, fd: int) -> None:
    """Release what ``take_lock(path, ...)`` returned."""
    _HELD.pop(path, None)
    os.close(fd)


class ClusterBase:
    """What the host's cluster (SlurmCluster) and a Debian root's (ChrootCluster,
    tests/slurm/chroot_cluster.py) share: slurmctld and slurmd started and stopped by PID,
    the waits for them, the client commands the tests use.

    A subclass says where the cluster's folders are (``base``, as the host sees it, and
    ``inside()``, as slurmctld and the jobs see it), how a daemon's command line looks
    (``_argv``) and how a client command runs (``run``).
    """

    cluster: str
    host: str
    daemons: dict[str, Daemon]
    base: Path

    def inside(self, path: Path) -> str:
        """``path`` (the host's) as slurmctld, its hooks and the jobs see it."""
        raise NotImplementedError

    def describe(self) -> str:
        """Which Slurm runs, for messages."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Take the cluster's lock, stop what a killed run left, make clean folders."""
        raise NotImplementedError

    def start_munge(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop everything started (by PID), release the lock; harmless after a failed
        prepare()."""
        raise NotImplementedError

    def write_conf(self, **settings: str) -> None:
        raise NotImplementedError

    def _argv(self, daemon: str) -> list[str]:
        """The command line that runs ``daemon`` (slurmctld, slurmd) in its foreground mode."""
        raise NotImplementedError

    def run(self, *argv: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        """A client command (sbatch, scontrol, ...) in the cluster's jobs folder."""
        raise NotImplementedError

    # -- daemons ---------------------------------------------------------------------------

    def _start_daemon(self, name: str, argv: list[str]) -> None:
        d = Daemon(name, argv, self.base / "run" / f"{name}.pid",
                   self.base / "log" / f"{name}.out")
        d.start()
        self.daemons[name] = d

    def start(self, **settings: str) -> None:
        """Write slurm.conf and start slurmctld and slurmd; wait until the node is idle."""
        self.write_conf(**settings)
        self._start_ctld()
        self._start_daemon("slurmd", self._argv("slurmd"))
        self._wait_node_idle()

    def restart_ctld(self, **settings: str) -> None:
        """New slurm.conf, new slurmctld (JobCompType needs a restart); jobs keep running."""
        self.daemons.pop("slurmctld").stop()
        self.write_conf(**settings)
        self._start_ctld()
        self._wait_node_idle(allow_busy=True)

    def _start_ctld(self) -> None:
        self._start_daemon("slurmctld", self._argv("slurmctld"))
        try:
            wait_for(lambda: "is UP" in self.run("scontrol", "ping", check=False).stdout,
                     30, interval=0.2, what="slurmctld to answer")
        except TimeoutError:
            raise ClusterError(f"slurmctld ({self.describe()}) does not answer:\n"
                               f"{self.log_tail('slurmctld')}") from None

    def _wait_node_idle(self, allow_busy: bool = False) -> None:
        good = {"idle"} | ({"mixed", "allocated", "completing"} if allow_busy else set())

        def ready() -> bool:
            for name in ("slurmctld", "slurmd"):
                if not self.daemons[name].running():
                    raise ClusterError(f"{name} ({self.describe()}) exited:\n"
                                       f"{self.log_tail(name)}")
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
            return state.rstrip("*~#!%$@^-") in good
        try:
            wait_for(ready, 40, interval=0.2, what="the node to be idle")
        except TimeoutError:
            raise ClusterError(f"the node does not come up ({self.describe()}):\n"
                               f"{self.log_tail('slurmd')}\n{self.log_tail('slurmctld')}"
                               ) from None

    def _stop_daemons(self) -> None:
        """Cancel every job, stop slurmd and slurmctld (in parallel), then munged."""
        if self.daemons.get("slurmctld") and self.daemons["slurmctld"].running():
            self.run("scancel", "--user=root", check=False)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not self.run("squeue", "-h", check=False).stdout.strip(),
                         20, interval=0.2, what="jobs to end")
        for name in ("slurmd", "slurmctld"):
            d = self.daemons.get(name)
            if d is not None and d.running():
                d.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for name in ("slurmd", "slurmctld", "munged"):
            d = self.daemons.pop(name, None)
            if d is not None:
                d.stop()

    # -- clients -------------------------------------------------------------------------

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


@dataclass
class SlurmCluster(ClusterBase):
    """The host's Slurm, its folders in ``base``; ``start()`` brings it up, ``stop()`` takes
    it down."""

    base: Path = BASE
    cluster: str = "testcluster"
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    ctld_port: int = field(default_factory=free_port)
    slurmd_port: int = field(default_factory=free_port)
    daemons: dict[str, Daemon] = field(default_factory=dict)
    #: the slurm.conf template (string.Template; tests/slurm/pair.py brings its own)
    template: Path = CONF_TEMPLATE
    lock_wait: float = LOCK_WAIT_S
    _lock_fd: int | None = None

    @property
    def conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    @property
    def jobs_dir(self) -> Path:
        return self.base / "jobs"

    def inside(self, path: Path) -> str:
        return str(path)

    def describe(self) -> str:
        return f"the host's Slurm {host_slurm_version() or '?'}"

    # -- set-up and tear-down ----------------------------------------------------------

    def prepare(self) -> None:
        """Take the machine-wide lock, stop a killed run's leftovers, make clean folders."""
        self._lock_fd = take_lock(LOCK, f"the host's Slurm in {self.base}", self.lock_wait)
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
        kill_processes("environ", lambda environ: marker in environ)

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
        self.conf.write_text(Template(self.template.read_text()).substitute(values))

    def _argv(self, daemon: str) -> list[str]:
        return [_which(daemon), "-D", "-f", str(self.conf)]

    def stop(self) -> None:
        """Cancel every job, stop every daemon we started (by PID), release the lock."""
        if self._lock_fd is None:
            return  # prepare() never got the lock: nothing here is ours
        try:
            self._stop_daemons()
            self._kill_job_processes()
        finally:
            if self._lock_fd is not None:
                release_lock(LOCK, self._lock_fd)
                self._lock_fd = None

    # -- clients -------------------------------------------------------------------------

    def client_env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), "TZ": "UTC"}

    def run(self, *argv: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        res = subprocess.run(list(argv), env=self.client_env(), cwd=self.jobs_dir,
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited with {res.returncode}: "
                                 f"{res.stderr.strip()}")
        return res


def _which(program: str) -> str:
    path = shutil.which(program, path=_SBIN_PATH)
    if path is None:
        raise ClusterError(f"{program} not found")
    return path


def wait_for_state(cluster: ClusterBase, job_id: int, states: set[str], timeout: float
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


def wait_all_done(cluster: ClusterBase, job_ids: list[int], timeout: float) -> None:
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
