"""The state file as the daemon uses it: restored at start, saved at start and at stop.

It lives beside the spool when a standby may take the spool over (the next daemon to drain it
must find it), else in StateSaveLocation. An unusable state file is moved aside and the daemon
goes on from the spool: nothing is lost, only the redelivery annotations of that run.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from jobcompd.config import Config
from jobcompd.service import statefile
from jobcompd.service.intake import Carryover

log = structlog.get_logger("jobcompd")


def location(config: Config) -> tuple[Path, str]:
    """The state file's folder and name: beside the spool when a standby may take it over."""
    if config.standby:
        return config.spool_dir, statefile.SHARED_STATE_FILE
    return config.state_dir, statefile.STATE_FILE


def restore(config: Config) -> tuple[dict[str, int], Carryover] | None:
    """The saved counters and what the last run left in flight, or None when there is no
    usable state file. After an unclean stop the first ``max_inflight`` records are suspects:
    they may have reached Kafka, so they are re-sent with the redelivery header."""
    try:
        saved = statefile.load(*location(config))
    except statefile.StateError as e:
        moved = statefile.move_aside(*location(config))
        log.error("state_file_unusable", error=str(e), moved_to=str(moved),
                  detail="continuing from the spool; nothing is lost, re-sends are not "
                  "annotated")
        return None
    if saved is None:
        return None
    suspects = 0 if saved.clean else config.params.max_inflight
    if not saved.clean:
        log.warning("unclean_stop", suspects=suspects,
                    detail="the last run did not stop cleanly; its in-flight records are "
                    "re-sent with the redelivery header")
    return dict(saved.counters), Carryover(saved.attempts, set(saved.in_flight), suspects)


def save(config: Config, *, clean: bool, attempts: dict[str, int], counters: dict[str, int],
         pending: list[str] | None = None, in_flight: list[str] | None = None) -> None:
    """Write the state file; a failure is logged (the spool still holds every record)."""
    state = statefile.State(clean=clean, pending=pending or [], in_flight=in_flight or [],
                            attempts=attempts, counters=dict(counters))
    folder, name = location(config)
    try:
        statefile.save(folder, state, name)
    except OSError as e:
        log.error("state_save_failed", path=str(folder), error=str(e))
