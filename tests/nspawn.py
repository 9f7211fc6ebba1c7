"""A throw-away machine with a real systemd as PID 1, for testing the unit the way it runs.

The host's own systemd boots in ``systemd-nspawn`` over a copy-on-write overlay of ``/`` (a tmpfs
takes every write and is discarded at the end), sharing the host's network so that services
inside reach a broker on the host's loopback. It works where the host's PID 1 is not systemd:
nspawn runs with ``--register=no --keep-unit`` (no machined, no system bus) and commands enter
the container with ``nsenter``. Boot takes about half a second.

Root only; needs systemd-nspawn (``make sysdeps`` installs systemd-container) and nsenter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.broker import wait_for

INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class ContainerError(RuntimeError):
    """The container could not be booted; the message says why and what to install."""


def preflight() -> None:
    """Fail early, with the reason, on a host that cannot boot the container."""
    if os.geteuid() != 0:
        raise ContainerError("booting systemd in systemd-nspawn needs root")
    for tool, package in (("systemd-nspawn", "systemd-container (make sysdeps)"),
                          ("nsenter", "util-linux"), ("systemctl", "systemd")):
        if shutil.which(tool) is None:
            raise ContainerError(f"{tool} is not installed: install {package}")


def _cgroup_dirs(name: str) -> list[Path]:
    """This run's own cgroup in each hierarchy nspawn uses, so parallel runs never share one.

    A pure cgroup v2 host has one; a hybrid host (v1 controllers, named ``systemd`` v1
    hierarchy plus ``unified`` v2) has two.
    """
    if _fs_type(CGROUP_ROOT) == "cgroup2":
        return [CGROUP_ROOT / name]
    return [CGROUP_ROOT / h / name for h in ("systemd", "unified")
            if _fs_type(CGROUP_ROOT / h) in ("cgroup", "cgroup2")]


def _fs_type(path: Path) -> str:
    """The file system type mounted at ``path`` ("" when nothing is)."""
    found = ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(path):
            found = fields[2]  # the last mount on a path is the visible one
    return found


@dataclass
class Container:
    """One booted container; ``run`` executes shell commands inside as root."""

    work: Path
    name: str = field(default_factory=lambda: f"jcd-test-{os.getpid()}")
    binds: list[tuple[Path, str]] = field(default_factory=list)
    nspawn: subprocess.Popen | None = None
    inner_pid: int = 0
    cgroups: list[Path] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """Where the overlay is mounted: the container's /."""
        return self.work / "root"

    @property
    def console_log(self) -> Path:
        """The container's console (boot messages), quoted when the boot fails."""
        return self.work / "console.log"

    # -- lifecycle ----------------------------------------------------------------------

    def boot(self, timeout: float = 60) -> Container:
        """Mount the overlay, start nspawn and wait until the inner systemd has booted."""
        preflight()
        try:
            self._mount_root()
            self._disable_host_units()
            self._start_nspawn()
            self.inner_pid = wait_for(self._inner_systemd, timeout, interval=0.05,
                                      what="the container's systemd")
            self._wait_booted(timeout)
        except (ContainerError, TimeoutError, OSError, subprocess.SubprocessError) as e:
            console = self.console_log.read_text(errors="replace")[-3000:] \
                if self.console_log.exists() else ""
            self.shutdown()
            raise ContainerError(f"the container did not boot: {e}\n{console}") from e
        return self

    def _mount_root(self) -> None:
        """A tmpfs upper layer over the host's /: nspawn refuses to boot / itself."""
        ovl = self.work / "ovl"
        for d in (self.root, ovl):
            d.mkdir(parents=True, exist_ok=True)
        _mount("-t", "tmpfs", "-o", "mode=755,size=4G", f"{self.name}-ovl", str(ovl))
        (ovl / "upper").mkdir()
        (ovl / "work").mkdir()
        _mount("-t", "overlay", "-o",
               f"lowerdir=/,upperdir={ovl / 'upper'},workdir={ovl / 'work'}",
               f"{self.name}-root", str(self.root))

    def _disable_host_units(self) -> None:
        """Services the host enabled (a database, slurmctld, timers) do not start inside."""
        for link in (self.root / "etc/systemd/system").glob("*.wants/*"):
            if link.is_symlink():
                link.unlink()

    def _start_nspawn(self) -> None:
        """nspawn in a cgroup of its own (``--keep-unit`` keeps the caller's, which parallel
        runs would share), with the host's network: the broker is on the host's loopback."""
        self.cgroups = _cgroup_dirs(self.name)
        for d in self.cgroups:
            d.mkdir(exist_ok=True)
        join = "".join(f"echo $$ > {d / 'cgroup.procs'}; " for d in self.cgroups)
        binds = [f"--bind-ro={src}:{dst}" for src, dst in self.binds]
        args = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
                "--link-journal=no", f"--directory={self.root}", f"--machine={self.name}",
                "--system-call-filter=bpf", *binds, "--console=pipe", "--boot"]
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        with open(self.console_log, "wb") as log:
            self.nspawn = subprocess.Popen(
                ["/bin/sh", "-c", f'{join}exec "$@"', "sh", *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)

    def _inner_systemd(self) -> int | None:
        """The container's PID 1 (host pid) once its private bus socket exists."""
        assert self.nspawn is not None
        if self.nspawn.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited with {self.nspawn.returncode}")
        pid = self.nspawn.pid
        with contextlib.suppress(OSError, ValueError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            inner = int(children[0]) if children else 0
            if inner and Path(f"/proc/{inner}/comm").read_text().strip() == "systemd":
                probe = subprocess.run(["nsenter", "-t", str(inner), "-m", "test", "-S",
                                        "/run/systemd/private"], check=False)
                return inner if probe.returncode == 0 else None
        return None

    def _wait_booted(self, timeout: float) -> None:
        """Until boot is over; a "degraded" boot (some host unit failed inside) is fine."""
        res = self.run("systemctl is-system-running --wait", timeout=timeout, check=False)
        state = res.stdout.strip()
        if state not in ("running", "degraded"):
            raise ContainerError(f"boot ended in state {state!r}: "
                                 + self.run("systemctl --failed --no-pager", check=False).stdout)

    def shutdown(self) -> None:
        """Power off inside, then unmount and remove everything the boot made."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            if self.inner_pid:
                self.run("systemctl poweroff --no-block", check=False, timeout=10)
            try:
                self.nspawn.wait(30)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(10)
        for mnt in (self.root, self.work / "ovl"):
            _unmount(mnt)
        for d in self.cgroups:
            _remove_cgroup(d)
        with contextlib.suppress(OSError):
            Path(f"/run/systemd/nspawn/propagate/{self.name}").rmdir()

    # -- commands inside ----------------------------------------------------------------

    def run(self, command: str, *, input: str | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """``sh -c command`` as root in every namespace of the container, clean environment."""
        argv = ["nsenter", "-t", str(self.inner_pid), "-a", "env", "-i", f"PATH={INNER_PATH}",
                "LANG=C.UTF-8", "HOME=/root", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
                "/bin/sh", "-c", command]
        res = subprocess.run(argv, input=input, capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"inside the container, `{command}` exited {res.returncode}:\n"
                                 f"{res.stdout[-3000:]}{res.stderr[-3000:]}")
        return res

    def write(self, path: str, text: str) -> None:
        """Replace a file's content inside, keeping its owner and mode when it exists."""
        self.run(f"cat > {path}", input=text)


def _mount(*args: str) -> None:
    """mount(8), its error message in the exception."""
    res = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise ContainerError(f"mount {' '.join(args)}: {res.stderr.strip()}")


def _unmount(path: Path) -> None:
    """Unmount, lazily when something inside is still busy."""
    if os.path.ismount(path):
        res = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _remove_cgroup(path: Path) -> None:
    """Remove a cgroup and what nspawn made below it, deepest first (once emptied)."""
    if not path.is_dir():
        return
    for d in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()

