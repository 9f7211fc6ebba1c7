"""What a SIGHUP changes: the plan of a reload, worked out before anything is touched.

Every key applies on reload, except the two that name where the daemon lives: SpoolDir (the
spool the hooks write into) and StateSaveLocation (the lock, the state and status files).
Moving either under a running daemon would split it between two places, so both stay as they
run until a restart, and the plan says which configured values wait for it.
"""

from __future__ import annotations

import dataclasses
import os

from jobcompd.config import Config

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
