"""Logging set-up: structlog, one event per line, with job fields.

Every module logs through ``structlog.get_logger()``; this module decides where the lines go and in
which format. It is named ``log`` (not ``logging``) so it never shadows the standard library.

Field conventions, so that one job's journey can be followed with a single filter:

- the message is the short event name (``delivered``, ``dead_lettered`` …), rendered as ``msg``;
- ``job_id``, ``event`` (``job_end``/``job_start``, passed as ``job_event=`` because structlog
  reserves the ``event`` argument for the message), ``file``, and on delivery ``topic``,
  ``partition``, ``offset``; ``error`` for what went wrong.

Per-record events are logged at debug level and only reach the output with ``DebugFlags=JobComp``:
structlog's filtering bound logger makes a disabled level cost one method call, nothing more.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog


def _render_job_event(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename structlog's message key to ``msg`` and ``job_event`` to ``event``."""
    event_dict["msg"] = event_dict.pop("event", "")
    job_event = event_dict.pop("job_event", None)
    if job_event is not None:
        event_dict["event"] = job_event
    return event_dict


def _first_keys(*keys: str) -> structlog.typing.Processor:
    """Put the keys a reader scans for first, in a fixed order, then the rest as logged."""

    def reorder(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        ordered = {k: event_dict.pop(k) for k in keys if k in event_dict}
        ordered.update(event_dict)
        return ordered

    return reorder


def configure(
    *,
    debug: bool = False,
    log_format: str = "logfmt",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the whole process; safe to call again on reload."""
    stream = stream or sys.stderr
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.processors.LogfmtRenderer(bool_as_flag=False)
    processors: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _render_job_event,
        _first_keys("ts", "level", "msg", "job_id", "event"),
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if debug else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(debug)


def _route_stdlib_logging(debug: bool) -> None:
    """Send warnings of libraries that use :mod:`logging` (watchdog) through structlog."""

    class _ToStructlog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            level = record.levelname.lower()
            log = structlog.get_logger(record.name)
            getattr(log, level if level in ("debug", "info", "warning", "error") else "error")(
                record.getMessage(), logger=record.name
            )

    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)


class KafkaLogAdapter:
    """Receives librdkafka's log lines (confluent-kafka's ``logger`` property).

    confluent-kafka forwards librdkafka's log queue from ``poll()`` (so on the main loop's thread)
    as ``logger.log(python_level, "%s [%s] %s", facility, client, message)``; this forwards into
    structlog with the facility as a field.
    """

    def __init__(self) -> None:
        self._log = structlog.get_logger("librdkafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility, client, message = (*args, "", "", "")[:3] if args else ("", "", fmt)
        if level >= logging.ERROR:
            emit = self._log.error
        elif level >= logging.WARNING:
            emit = self._log.warning
        elif level >= logging.INFO:
            emit = self._log.info
        else:
            emit = self._log.debug
        emit("librdkafka", facility=facility, client=client, detail=str(message))


def under_journald() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)
