"""The standby: with ``Standby=yes``, a daemon that finds the spool lock held waits for it.

Two controllers of a Slurm pair write into one spool on shared storage, and each runs jobcompd;
the one that holds ``SpoolDir/.jobcompd.lock`` drains the spool, the other stands by. The
standby asks for the lock every ``POLL_S`` and never breaks it: the holder's kernel releases it
when the holder exits or dies, and the file system when the holder's host dies (NFS v4 when its
lease ends, GPFS when it expels the node). So the takeover comes at most ``POLL_S`` after the
release. A hung holder keeps the lock: systemd's watchdog kills a daemon whose loop stops
(``WatchdogSec=``), and a hung host is for the operator to fence (README, "Controller pairs").

While it waits the standby is a running service: READY=1 with ``STATUS=standby, waiting for the
lock held by <host:pid>``, watchdog pings, the status file and the metrics say so, SIGTERM stops
it, and a SIGHUP is applied once it takes over.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from os import EX_CANTCREAT, EX_CONFIG, EX_OK, EX_TEMPFAIL
from pathlib import Path

import structlog

from jobcompd.config import Config
from jobcompd.service import mounts
from jobcompd.service.spoollock import SpoolLock, identity
from jobcompd.service.statusfile import Role
from jobcompd.service.telemetry import TICK_S

log = structlog.get_logger("jobcompd")

#: How often the standby asks for the lock (one lock request: an RPC on a network file
#: system). It bounds the takeover after the holder's lock is released.
POLL_S = 1.0
#: How often the active daemon lists new/ while nothing waits, when the spool is shared or on a
#: network file system (inotify sees only this host's writes): what a record written on the
#: other controller may wait before it is read.
SHARED_RESCAN_S = 1.0


class SpoolNotShareable(Exception):
    """Standby=yes on a mount whose locks other hosts cannot see."""


def check_mount(spool_dir: Path, standby: bool) -> mounts.Mount | None:
    """The spool's mount. Raises SpoolNotShareable when ``standby`` and a lock taken there
    stays on this host (both controllers' daemons would be active at once)."""
    mount = mounts.mount_of(spool_dir)
    problem = mounts.local_lock_problem(mount) if mount is not None else None
    if problem is None:
        return mount
    if standby:
        raise SpoolNotShareable(
            f"SpoolDir {spool_dir}: {problem}. With Standby=yes the spool lock must be seen by "
            "the other controller's jobcompd, or both would drain the spool at once")
    log.warning("spool_lock_local", spool=str(spool_dir), detail=problem)
    return mount


def shared_rescan(config: Config, mount: mounts.Mount | None) -> float | None:
    """The idle rescan interval for this spool, or None when inotify sees every writer."""
    if config.standby or (mount is not None and mount.network):
        return SHARED_RESCAN_S
    return None


@dataclass
class Hooks:
    """What the standby needs from the daemon: whether to stop, a wait that a signal cuts
    short, the watchdog ping, and publishing its role (status file, STATUS=, metrics)."""

    stopping: Callable[[], bool]
    pause: Callable[[float], None]
    ping: Callable[[float], object]
    publish: Callable[[Role], None]
    #: called once before the wait: signals, metrics endpoint, READY=1 as the standby
    begin: Callable[[Role], None]


@dataclass(frozen=True)
class Held:
    """The spool lock is this daemon's: its role, the idle rescan interval this spool needs,
    and whose lock it waited for (None when it took a free lock)."""

    role: Role
    rescan_s: float | None
    previous: str | None = None


def hold_spool(cfg: Config, lock: SpoolLock, hooks: Hooks) -> Held | int:
    """Take the spool lock, or with Standby=yes wait for it as the standby. Held once it is
    this daemon's; else the exit code (78: a spool where the lock would not exclude the other
    host; 73: no lock file; 75: held by another daemon; 0: stopped while waiting)."""
    try:
        rescan_s = shared_rescan(cfg, check_mount(cfg.spool_dir, cfg.standby))
        with contextlib.suppress(FileExistsError):
            os.mkdir(cfg.spool_dir, 0o750)
        if lock.try_acquire():
            return Held(Role(active=True, holder=identity()), rescan_s)
        if not cfg.standby:
            log.error("already_running", error=f"another jobcompd ({lock.holder()}) "
                      f"already runs on SpoolDir {cfg.spool_dir} (it holds {lock.path}); "
                      "stop it first, or set Standby=yes to wait as its standby")
            return EX_TEMPFAIL
        wait = Standby(lock, hooks)
        hooks.begin(Role(active=False, holder=wait.holder))
        waited = wait.wait()
        if waited is None:
            return EX_OK
        return Held(Role(active=True, holder=identity(), waited_s=waited), rescan_s,
                    previous=wait.holder)
    except SpoolNotShareable as e:
        log.error("start_failed", error=str(e))
        return EX_CONFIG
    except OSError as e:
        log.error("start_failed", error=f"cannot lock the spool: {e.strerror}: "
                  f"{e.filename or lock.path}", detail="SpoolDir must be writable by "
                  "jobcompd's user, who keeps its lock file .jobcompd.lock there")
        return EX_CANTCREAT


class Standby:
    """The wait for the spool lock."""

    def __init__(self, lock: SpoolLock, hooks: Hooks, poll_s: float = POLL_S) -> None:
        self.lock = lock
        self.hooks = hooks
        self.poll_s = poll_s
        self.holder = lock.holder()

    def wait(self) -> float | None:
        """Ask for the lock until it is this daemon's: the seconds waited, or None when the
        daemon was asked to stop first. OSError when the lock file cannot be used."""
        start = time.monotonic()
        next_publish = 0.0
        log.info("standby", holder=self.holder, lock=str(self.lock.path),
                 detail=f"another jobcompd drains the spool; asking for its lock every "
                 f"{self.poll_s:g} s, to take over when it is released")
        while not self.hooks.stopping():
            now = time.monotonic()
            if self.lock.try_acquire():
                return now - start
            self._note_holder()
            self.hooks.ping(now)
            if now >= next_publish:
                self.hooks.publish(Role(active=False, holder=self.holder, waited_s=now - start))
                next_publish = now + TICK_S
            self.hooks.pause(self.poll_s)
        return None

    def _note_holder(self) -> None:
        holder = self.lock.holder()
        if holder != self.holder:
            log.info("standby_holder_changed", holder=holder, previous=self.holder)
            self.holder = holder
