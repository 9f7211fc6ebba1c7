"""What a SIGHUP changes: the plan of a reload, worked out before anything is touched, and the
Reloader that carries it out.

Every key applies on reload, except the two that name where the daemon lives: SpoolDir (the
spool the hooks write into) and StateSaveLocation (the lock, the state and status files).
Moving either under a running daemon would split it between two places, so both stay as they
run until a restart, and the plan says which configured values wait for it.
"""

from __future__ import annotations

import dataclasses
import os

import structlog

from jobcompd import config as configmod
from jobcompd import log as logmod
from jobcompd.config import Config, ConfigError
from jobcompd.service.delivery import Delivery, producer_config
from jobcompd.service.intake import Intake
from jobcompd.service.listeners import Listeners
from jobcompd.service.telemetry import Telemetry
from jobcompd.spool import Spool

log = structlog.get_logger("jobcompd")

#: Config attributes a reload does not change, with what moving them would take.
RESTART_KEYS = ("spool_dir", "state_dir")


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """A reload to carry out. ``config``: the configuration to run with (the restart keys
    kept as they run); ``restart_needed``: those keys' configured values."""

    config: Config
    restart_needed: dict[str, str]
    kafka: bool  # librdkafka properties changed: a new producer
    metrics: bool  # MetricsListen changed: the endpoint moves
    http: bool  # HttpListen changed: the intake moves
    spool_limits: bool  # max_record_bytes or SpoolOwners changed: the spool's checks change


def plan(new: Config, running: Config) -> Plan:
    restart = {k: str(getattr(new, k)) for k in RESTART_KEYS
               if getattr(new, k) != getattr(running, k)}
    config = dataclasses.replace(new, **{k: getattr(running, k) for k in restart})
    return Plan(
        config=config,
        restart_needed=restart,
        kafka=config.kafka_changed(running),
        metrics=config.metrics_listen != running.metrics_listen,
        http=config.http_listen != running.http_listen,
        spool_limits=(config.params.max_record_bytes != running.params.max_record_bytes
                      or config.spool_owners != running.spool_owners),
    )


def spool_owners(config: Config) -> frozenset[int]:
    """The owners whose files the spool accepts: SpoolOwners, and the daemon's own user (its
    HTTP intake, ``jobcompd failed retry`` run as that user)."""
    return config.spool_owners | {os.geteuid()}


class Reloader:
    """Carries out a SIGHUP: loads the file again, plans, and applies the plan to the running
    parts. A refused configuration (bad file, librdkafka refusing the new properties) leaves
    everything as it runs and says so."""

    def __init__(self, spool: Spool, intake: Intake, listeners: Listeners,
                 telemetry: Telemetry) -> None:
        self.spool = spool
        self.intake = intake
        self.listeners = listeners
        self.telemetry = telemetry
        #: keys a reload changed but could not apply, with their configured values.
        self.restart_needed: dict[str, str] = {}

    def apply(self, running: Config, delivery: Delivery) -> Config:
        """Reload ``running``'s file; the configuration in force afterwards."""
        try:
            loaded = configmod.load(running.path)
        except ConfigError as e:
            return self._refused(str(e), running)
        todo = plan(loaded, running)
        new = todo.config
        if todo.kafka and not delivery.rebuild("librdkafka properties changed",
                                               producer_config(new), intended=True):
            return self._refused("the new librdkafka properties were refused", running)
        self.intake.config = delivery.config = new
        self._note_restart_needed(todo.restart_needed, running)
        logmod.configure(debug=new.debug_jobcomp, log_format=new.log_format,
                         target=new.log_target)
        if todo.spool_limits:
            self.spool.max_record_bytes = new.params.max_record_bytes
            self.spool.allowed_uids = spool_owners(new)
        for warning in self.spool.set_min_free(new.spool_min_free_bytes):
            log.warning("spool_warning", detail=warning)
        self.listeners.reconfigure(new, metrics_moved=todo.metrics, http_moved=todo.http)
        for warning in new.warnings:
            log.warning("config_warning", detail=warning)
        self.telemetry.reloaded(True)
        log.info("reloaded", topic=new.params.topic, topic_job_start=new.params.topic_job_start,
                 kafka=new.redacted_kafka())
        return new

    def _refused(self, error: str, running: Config) -> Config:
        self.telemetry.note_error(error)
        self.telemetry.reloaded(False)
        log.error("reload_failed", error=error, detail="the running configuration is kept")
        return running

    def _note_restart_needed(self, pending: dict[str, str], running: Config) -> None:
        """Say once which configured values wait for a restart, and keep them for the status."""
        if pending != self.restart_needed and pending:
            log.warning("reload_needs_restart", configured=pending,
                        running={k: str(getattr(running, k)) for k in pending},
                        detail="kept in force until jobcompd restarts "
                        "(systemctl restart jobcompd)")
        self.restart_needed = pending
