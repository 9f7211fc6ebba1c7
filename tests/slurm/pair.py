"""Two slurmctld on one machine, a primary and its backup, for tests/test_slurm_pair.py.

A controller pair is told apart by host name: slurmctld finds its own ``SlurmctldHost`` line
by ``gethostname()``. So each runs in a UTS namespace of its own (host name ``ctl1`` or
``ctl2``) and a mount namespace of its own, in which

- ``<base>/local`` is ``<base>/ctl1`` (or ``ctl2``): its "local disk", for its PID file and
  its log (with one PID file the second slurmctld would kill the first at its start);
- the hosts file says ``ctl1`` is 127.0.0.1 and ``ctl2`` 127.0.0.2, which
  ``CommunicationParameters=NoCtldInAddrAny`` makes each listen on (both would take
  SlurmctldPort on every address otherwise).

Everything else is shared as on a real pair: slurm.conf, StateSaveLocation
(``<base>/shared/slurm-state``), one slurmd, munged. The cluster underneath is the one
``slurm22_cluster()`` gives (the host's Slurm 22.05, or a Debian 12 root's): its lock, its
folder (a killed run's daemons are stopped by their PID files, ``slurmctld.ctl1.pid``...),
its munged and its client commands.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
from pathlib import Path

from tests.broker import wait_for
from tests.slurm.chroot_cluster import ChrootCluster
from tests.slurm.cluster import ClusterBase, ClusterError, kill_processes

HERE = Path(__file__).resolve().parent
PAIR_TEMPLATE = HERE / "slurm-pair.conf.in"

#: (host name, address) of the primary and of the backup, in SlurmctldHost order.
CONTROLLERS = (("ctl1", "127.0.0.1"), ("ctl2", "127.0.0.2"))
PRIMARY, BACKUP = (name for name, _ in CONTROLLERS)

#: Run ``$@`` with host name $1 and, in a private mount namespace, $2 bound on $3 and $4 on
#: $5 (the controller's local folder, its hosts file).
_NAMESPACED = ('hostname "$1" && mount --bind "$2" "$3" && mount --bind "$4" "$5" '
               '&& shift 5 && exec "$@"')

_PING = re.compile(r"Slurmctld\((?:primary|backup\d*)\) at (\S+) is (UP|DOWN)")


def uts_prefix(name: str) -> list[str]:
    """A command prefix that runs the rest with host name ``name`` (nothing else apart):
    jobcompd's lock then names its holder ``ctl1:<pid>``, as on two hosts."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name]


def namespaces_work() -> str | None:
    """None, or why this machine cannot give a process a host name and mounts of its own."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--uts", "--mount", "sh", "-c",
                            "hostname ctl-probe && mount --bind / /mnt"],
                           capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        return f"`unshare --uts --mount` fails here: {probe.stderr.strip()}"
    return None


class ControllerPair:
    """ctl1 (primary) and ctl2 (backup) over ``cluster`` (prepared, munged started by the
    caller), one slurmd; ``start()`` brings them up, ``stop()`` takes everything down."""

    def __init__(self, cluster: ClusterBase) -> None:
        self.cluster = cluster
        cluster.template = PAIR_TEMPLATE  # type: ignore[attr-defined]
        self._made_hosts: Path | None = None  # a root's hosts file made to bind over

    # -- folders -------------------------------------------------------------------------

    @property
    def shared(self) -> Path:
        """The "shared file system" (as the host sees it): Slurm's state, jobcompd's spool."""
        return self.cluster.base / "shared"

    def local(self, ctl: str) -> Path:
        """Controller ``ctl``'s own folder (its PID file, its log, its hosts file)."""
        return self.cluster.base / ctl

    def _hosts_target(self) -> Path:
        """The hosts file the controllers' programs read (the root's, in a root)."""
        if isinstance(self.cluster, ChrootCluster):
            return self.cluster.outside("/etc/hosts")
        return Path("/etc/hosts")

    def _make_folders(self) -> None:
        target = self._hosts_target()
        if not target.exists():  # a bind mount needs a file to cover (removed by stop())
            target.write_text("127.0.0.1 localhost\n")
            self._made_hosts = target
        ours = "".join(f"{addr} {name}\n" for name, addr in CONTROLLERS)
        for name, _ in CONTROLLERS:
            self.local(name).mkdir(parents=True, exist_ok=True)
            (self.local(name) / "hosts").write_text(ours + target.read_text())
        (self.cluster.base / "local").mkdir(exist_ok=True)
        (self.shared / "slurm-state").mkdir(parents=True, exist_ok=True)

    # -- daemons ---------------------------------------------------------------------------

    def start(self, jobcomp_loc: str) -> None:
        """slurm.conf, then ctl1, ctl2 and slurmd, each once the one before answers."""
        self._make_folders()
        (ctl1, ctl1_addr), (ctl2, ctl2_addr) = CONTROLLERS
        self.cluster.write_conf(jobcomp_loc=jobcomp_loc, ctl1=ctl1, ctl1_addr=ctl1_addr,
                                ctl2=ctl2, ctl2_addr=ctl2_addr)
        for name, _ in CONTROLLERS:
            self._start_ctld(name)
        self.cluster._start_daemon("slurmd", self.cluster._argv("slurmd"))
        self._wait_node_idle()

    def _start_ctld(self, ctl: str) -> None:
        argv = ["unshare", "--uts", "--mount", "sh", "-c", _NAMESPACED, "sh", ctl,
                str(self.local(ctl)), str(self.cluster.base / "local"),
                str(self.local(ctl) / "hosts"), str(self._hosts_target()),
                *self.cluster._argv("slurmctld")]
        self.cluster._start_daemon(f"slurmctld.{ctl}", argv)
        try:
            wait_for(lambda: self.ping().get(ctl) == "UP" and self._alive(ctl), 30,
                     interval=0.2, what=f"slurmctld {ctl} to answer")
        except TimeoutError:
            raise ClusterError(f"slurmctld {ctl} ({self.cluster.describe()}) does not "
                               f"answer:\n{self.ctld_log(ctl)}") from None

    def _alive(self, ctl: str) -> bool:
        d = self.cluster.daemons.get(f"slurmctld.{ctl}")
        if d is None or not d.running():
            raise ClusterError(f"slurmctld {ctl} exited:\n{self.ctld_log(ctl)}")
        return True

    def running(self, ctl: str) -> bool:
        d = self.cluster.daemons.get(f"slurmctld.{ctl}")
        return d is not None and d.running()

    def _wait_node_idle(self) -> None:
        def idle() -> bool:
            if not self.cluster.daemons["slurmd"].running():
                raise ClusterError(f"slurmd exited:\n{self.cluster.log_tail('slurmd')}")
            state = self.cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout
            return state.strip().rstrip("*~#!%$@^-") == "idle"
        try:
            wait_for(idle, 40, interval=0.2, what="the node to be idle")
        except TimeoutError:
            raise ClusterError(f"the node does not come up:\n{self.cluster.log_tail('slurmd')}"
                               f"\n{self.ctld_log(PRIMARY)}") from None

    def ping(self) -> dict[str, str]:
        """``scontrol ping``: {controller: "UP" or "DOWN"}."""
        out = self.cluster.run("scontrol", "ping", check=False, timeout=30).stdout
        return dict(_PING.findall(out))

    def takeover(self, timeout: float = 60) -> None:
        """``scontrol takeover``; returns once ctl1 has exited and ctl2 runs as primary."""
        self.cluster.run("scontrol", "takeover", timeout=30)
        primary_log = self.local(BACKUP) / "slurmctld.log"

        def done() -> bool:
            log = primary_log.read_text(errors="replace") if primary_log.exists() else ""
            return (not self.running(PRIMARY) and "Running as primary controller" in log
                    and self.ping() == {PRIMARY: "DOWN", BACKUP: "UP"})
        try:
            wait_for(done, timeout, interval=0.2, what=f"{BACKUP} to take control")
        except TimeoutError:
            raise AssertionError(f"{BACKUP} did not take control after scontrol takeover "
                                 f"(ping: {self.ping()}, {PRIMARY} running: "
                                 f"{self.running(PRIMARY)}):\n{self.ctld_log(PRIMARY)}\n"
                                 f"{self.ctld_log(BACKUP)}") from None

    def ctld_log(self, ctl: str, lines: int = 30) -> str:
        """The end of controller ``ctl``'s log and of its stdout, for messages."""
        text = self.cluster.log_tail(f"slurmctld.{ctl}", lines)
        with contextlib.suppress(OSError):
            tail = (self.local(ctl) / "slurmctld.log").read_text(errors="replace")
            text += f"\n--- {ctl}'s slurmctld.log\n" + "\n".join(tail.splitlines()[-lines:])
        return text

    def stop(self) -> None:
        """Cancel every job, stop slurmd and both controllers, then the cluster (munged, job
        processes, its lock); harmless after a failed start."""
        names = [f"slurmctld.{ctl}" for ctl, _ in CONTROLLERS]
        try:
            if any(self.running(ctl) for ctl, _ in CONTROLLERS):
                self.cluster.run("scancel", "--user=root", check=False)
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: not self.cluster.run("squeue", "-h", check=False)
                             .stdout.strip(), 20, interval=0.2, what="jobs to end")
            daemons = [self.cluster.daemons.get(n) for n in ("slurmd", *names)]
            for d in daemons:  # all at once, then wait for each
                if d is not None and d.running():
                    d.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            for name in names:
                d = self.cluster.daemons.pop(name, None)
                if d is not None:
                    d.stop()
        finally:
            if self._made_hosts is not None:
                self._made_hosts.unlink(missing_ok=True)
            self.cluster.stop()

    def stop_leftover_jobcompd(self) -> None:
        """SIGKILL the jobcompd daemons a killed run left (they have no PID file): those
        whose command line names a configuration in the cluster's folder."""
        marker = f"{self.cluster.base}/jobcompd-".encode()
        kill_processes("cmdline", lambda argv: b"jobcompd" in argv
                       and any(a.startswith(marker) for a in argv))
