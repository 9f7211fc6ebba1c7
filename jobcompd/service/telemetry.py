"""What the daemon tells the outside: counters, the last error, and one snapshot of its state
that feeds systemd's STATUS=, the Prometheus gauges, the status file and the node_exporter
textfile alike, so that the four never disagree.

Each event is counted once here: in the lifetime counters (kept in the state file across
restarts, shown by ``jobcompd status``) and in the Prometheus counters (this process only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from jobcompd.config import Config
from jobcompd.service import metrics as metricsmod
from jobcompd.service import notify
from jobcompd.service import statusfile as statusmod
from jobcompd.service.rolemetrics import RoleGauges

log = structlog.get_logger("jobcompd")

#: How often the gauges, STATUS= and the status file are brought up to date.
TICK_S = 2.0


@dataclass(frozen=True, slots=True)
class Role:
    """Whether this daemon drains the spool (holds its lock) or stands by for it."""

    active: bool
    holder: str  # host:pid of the spool lock's holder (this daemon's own when active)
    waited_s: float = 0.0  # how long this daemon waited for the lock (so far, when standby)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The daemon's state at one moment, as every output shows it."""

    phase: str  # one of status.STATES
    backlog: int  # records in new/ known and not yet read
    backlog_truncated: bool  # backlog is a lower bound (more names than the queue holds)
    in_flight: int  # records in the window
    oldest_pending_ns: int | None  # spool time stamp of the oldest unacknowledged record
    broker_up: bool | None
    dead_letters: int | None  # records in failed/ (None: not counted)
    unreadable: int  # records in new/ the daemon may not open
    restart_needed: dict[str, str]  # keys a reload could not apply -> configured values
    config: Config  # the configuration in force
    role: Role | None = None  # None: a daemon that holds its spool's lock since it started


class Telemetry:
    """Counters, the last error, and the publishing of snapshots."""

    def __init__(self, metrics: metricsmod.Metrics, counters: dict[str, int] | None = None
                 ) -> None:
        self.metrics = metrics
        self.counters: dict[str, int] = dict(counters or {})
        self.started_at = time.time()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.status_text = ""
        self.role_gauges = RoleGauges()
        metrics.registry.register(self.role_gauges)
        metrics.http_registry.register(self.role_gauges)

    # -- events ---------------------------------------------------------------------------

    def _add(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def ingested(self) -> None:
        self._add("ingested")
        self.metrics.ingested()

    def delivered(self, arrived_ns: int) -> None:
        self._add("delivered")
        self.metrics.delivered(arrived_ns)

    def retried(self) -> None:
        self._add("retried")
        self.metrics.retried()

    def dead_lettered(self, reason: str) -> None:
        self._add(f"dead_lettered:{reason}")
        self.metrics.dead_lettered(reason)

    def rebuilt(self) -> None:
        """A producer replaced because it was in trouble (not one a reload asked for)."""
        self._add("producer_rebuilds")
        self.metrics.rebuilt()

    def reloaded(self, ok: bool) -> None:
        if ok:
            self._add("reloads")
        self.metrics.reloaded(ok)

    def note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()

    def dead_lettered_total(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("dead_lettered"))

    # -- publishing -----------------------------------------------------------------------

    def publish(self, snap: Snapshot, *, textfile: bool = False) -> None:
        """Bring STATUS=, the gauges and the status file up to date with ``snap`` (and the
        node_exporter textfile when ``textfile``); a file that cannot be written is logged."""
        text = notify.format_status(
            backlog=snap.backlog, in_flight=snap.in_flight,
            delivered=self.counters.get("delivered", 0), failed=self.dead_lettered_total(),
            broker_up=snap.broker_up, last_error=self.last_error,
            backlog_truncated=snap.backlog_truncated,
        )
        if snap.role is not None and not snap.role.active:
            text = notify.standby_status(snap.role.holder)
        if snap.role is not None:
            self.role_gauges.set(active=snap.role.active, waited_s=snap.role.waited_s)
        if text != self.status_text:
            self.status_text = text
            notify.status(text)
        self.metrics.set_state(
            backlog=snap.backlog, in_flight=snap.in_flight,
            oldest_pending_ns=snap.oldest_pending_ns, broker_up=snap.broker_up,
            backlog_truncated=snap.backlog_truncated, dead_letters=snap.dead_letters,
            unreadable=snap.unreadable, restart_needed=bool(snap.restart_needed))
        try:
            statusmod.write_status(snap.config.state_dir, self.status_document(snap))
        except OSError as e:
            log.warning("status_file_unwritable", path=str(snap.config.state_dir), error=str(e))
        if textfile and snap.config.metrics_textfile is not None:
            try:
                self.metrics.write_textfile(snap.config.metrics_textfile)
            except metricsmod.MetricsError as e:
                log.warning("metrics_textfile_unwritable", error=str(e))

    def status_document(self, snap: Snapshot) -> dict[str, Any]:
        return statusmod.build_status(
            state=snap.phase, started_at=self.started_at, backlog=snap.backlog,
            in_flight=snap.in_flight, oldest_pending_ns=snap.oldest_pending_ns,
            broker_up=snap.broker_up, counters=self.counters,
            config=statusmod.config_summary(snap.config), last_error=self.last_error,
            last_error_at=self.last_error_at, backlog_truncated=snap.backlog_truncated,
            dead_letters=snap.dead_letters, interval_s=TICK_S, unreadable=snap.unreadable,
            restart_needed=snap.restart_needed, role=snap.role,
        )
