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
from jobcompd.service.spoolmetrics import SpoolGauges
from jobcompd.service.statusfile import Role
from jobcompd.service.throttle import LogThrottle

log = structlog.get_logger("jobcompd")

#: How often the gauges, STATUS= and the status file are brought up to date.
TICK_S = 2.0


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
    spool_free_bytes: int | None = None  # free on the spool's file system (None: not known)
    spool_bytes: int | None = None  # disk space the records in new/ take (None: not known)


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
        self._throttle = LogThrottle()  # files that cannot be written: a line a minute
        self.role_gauges = RoleGauges()
        metrics.registry.register(self.role_gauges)
        metrics.http_registry.register(self.role_gauges)
        self.spool_gauges = SpoolGauges()
        metrics.registry.register(self.spool_gauges)
        metrics.http_registry.register(self.spool_gauges)
        #: whether the spool was below SpoolMinFreeBytes at the last snapshot (None: unknown)
        self.spool_low: bool | None = None

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
        self._spool_space(snap)
        self.metrics.set_state(
            backlog=snap.backlog, in_flight=snap.in_flight,
            oldest_pending_ns=snap.oldest_pending_ns, broker_up=snap.broker_up,
            backlog_truncated=snap.backlog_truncated, dead_letters=snap.dead_letters,
            unreadable=snap.unreadable, restart_needed=bool(snap.restart_needed))
        try:
            statusmod.write_status(snap.config.state_dir, self.status_document(snap))
        except OSError as e:
            if self._throttle.admit(("status_file_unwritable", e.errno)) is not None:
                log.warning("status_file_unwritable", path=str(snap.config.state_dir),
                            error=str(e))
        if textfile and snap.config.metrics_textfile is not None:
            try:
                self.metrics.write_textfile(snap.config.metrics_textfile)
            except metricsmod.MetricsError as e:
                if self._throttle.admit("metrics_textfile_unwritable") is not None:
                    log.warning("metrics_textfile_unwritable", error=str(e))

    def _spool_space(self, snap: Snapshot) -> None:
        """The capacity gauges, and one log line each time the spool's file system falls
        below SpoolMinFreeBytes (every writer refuses records then) or is back above it."""
        threshold = snap.config.spool_min_free_bytes
        self.spool_gauges.set(free_bytes=snap.spool_free_bytes, new_bytes=snap.spool_bytes,
                              min_free_bytes=threshold)
        if snap.spool_free_bytes is None:
            return
        low = snap.spool_free_bytes < threshold
        if low and self.spool_low is not True:
            message = (f"{snap.spool_free_bytes} bytes free on the spool's file system, less "
                       f"than SpoolMinFreeBytes={threshold}")
            self.note_error(message)
            log.error("spool_nearly_full", free_bytes=snap.spool_free_bytes,
                      min_free_bytes=threshold, new_bytes=snap.spool_bytes,
                      spool=str(snap.config.spool_dir),
                      detail="the hooks refuse new records (exit 74; a PrologSlurmctld start "
                      "record is lost, see journalctl -t jobcompd-spool) and the HTTP intake "
                      "answers 503 until there is room: bring the broker back so the backlog "
                      "drains, or free space on that file system")
        elif not low and self.spool_low:
            log.warning("spool_space_recovered", free_bytes=snap.spool_free_bytes,
                        min_free_bytes=threshold, detail="records are accepted again")
        self.spool_low = low

    def status_document(self, snap: Snapshot) -> dict[str, Any]:
        return statusmod.build_status(
            state=snap.phase, started_at=self.started_at, backlog=snap.backlog,
            in_flight=snap.in_flight, oldest_pending_ns=snap.oldest_pending_ns,
            broker_up=snap.broker_up, counters=self.counters,
            config=statusmod.config_summary(snap.config), last_error=self.last_error,
            last_error_at=self.last_error_at, backlog_truncated=snap.backlog_truncated,
            dead_letters=snap.dead_letters, interval_s=TICK_S, unreadable=snap.unreadable,
            restart_needed=snap.restart_needed, role=snap.role,
            spool_free_bytes=snap.spool_free_bytes, spool_bytes=snap.spool_bytes,
            spool_min_free_bytes=snap.config.spool_min_free_bytes,
        )
