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

Two destinations (LogTarget): stderr, one logfmt or JSON line per event; or journald, one entry
per event with structured fields (``journalctl SLURM_JOB_ID=4242`` shows one job's journey):
MESSAGE (the event name and its fields on one line), PRIORITY (from the level),
SYSLOG_IDENTIFIER=jobcompd, JOBCOMPD_MSG (the event name), SLURM_JOB_ID, JOBCOMPD_EVENT,
KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET, ERROR, KAFKA_FACILITY (librdkafka's lines),
CODE_FILE/CODE_LINE/CODE_FUNC, and every other field under its own name in upper case.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.processors import CallsiteParameter
from systemd import journal

from jobcompd.service.throttle import LogThrottle, broker_of


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


def _containers_as_json(fields: dict[str, Any]) -> dict[str, Any]:
    """Dicts, lists, tuples and sets as compact JSON text, so that a logfmt line carries
    ``kafka={"acks":"all"}`` rather than a Python repr."""
    for key, value in fields.items():
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            if isinstance(value, (set, frozenset)):
                value = sorted(value, key=str)
            fields[key] = json.dumps(value, default=str, ensure_ascii=False,
                                     separators=(",", ":"))
    return fields


def _json_containers(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return _containers_as_json(event_dict)


TARGETS = ("auto", "journal", "stderr")


def configure(
    *,
    debug: bool = False,
    log_format: str = "logfmt",
    target: str = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the whole process; safe to call again on reload.

    ``target`` is LogTarget: ``journal`` sends every event to journald with structured fields,
    ``stderr`` writes one line per event (``log_format``: logfmt or json) to ``stream``
    (default stderr), ``auto`` picks journal when stderr is already connected to the journal
    (systemd sets JOURNAL_STREAM) and stderr otherwise.
    """
    if target not in TARGETS:
        raise ValueError(f"log target {target!r}: expected one of {', '.join(TARGETS)}")
    stream = stream or sys.stderr
    if target == "journal" or (target == "auto" and under_journald()):
        processors = _journal_processors()
        factory: Any = JournalLoggerFactory(stream)
    else:
        processors = _stream_processors(log_format)
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if debug else logging.INFO
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging()


def _stream_processors(log_format: str) -> list[structlog.typing.Processor]:
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.processors.LogfmtRenderer(bool_as_flag=False)
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        _render_job_event,
        _first_keys("ts", "level", "msg", "job_id", "event"),
        *([] if log_format == "json" else [_json_containers]),
        renderer,
    ]


# --------------------------------------------------------------------------- journald

#: syslog priorities (sd-daemon(3)) of structlog's level names.
PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4,
              "info": 6, "debug": 7}
SYSLOG_IDENTIFIER = "jobcompd"
#: Journal field names of the fields every module logs (see the module docstring); any other
#: field is sent under its own name in upper case.
JOURNAL_FIELDS = {
    "job_id": "SLURM_JOB_ID",
    "event": "JOBCOMPD_EVENT",
    "msg": "JOBCOMPD_MSG",
    "topic": "KAFKA_TOPIC",
    "partition": "KAFKA_PARTITION",
    "offset": "KAFKA_OFFSET",
    "error": "ERROR",
    "facility": "KAFKA_FACILITY",
    "client": "KAFKA_CLIENT",
}
# Fields this module sets itself: a logged field that maps onto one of them is renamed.
_OWN_FIELDS = frozenset({"MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE",
                         "CODE_LINE", "CODE_FUNC", *JOURNAL_FIELDS.values()})
_CALLSITE = {"pathname": "CODE_FILE", "lineno": "CODE_LINE", "func_name": "CODE_FUNC"}
_NOT_A_FIELD_CHAR = re.compile(r"[^A-Z0-9_]")
_logfmt = structlog.processors.LogfmtRenderer(bool_as_flag=False)


def journal_field_name(key: str) -> str:
    """A logged key as a journal field name: upper case letters, digits and ``_``, not
    starting with ``_`` (trusted fields) or a digit, at most 64 characters."""
    name = JOURNAL_FIELDS.get(key)
    if name is not None:
        return name
    name = _NOT_A_FIELD_CHAR.sub("_", key.upper())
    if not name or name[0] == "_" or name[0].isdigit() or name in _OWN_FIELDS:
        name = "JOBCOMPD_" + name.lstrip("_")
    return name[:64]


def _journal_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)


def _human_line(msg: str, fields: dict[str, Any]) -> str:
    """MESSAGE: what ``journalctl`` shows on one line, the event name then its fields."""
    if msg == "librdkafka":
        return f"librdkafka {fields.get('facility') or '-'}: {fields.get('detail', '')}"
    shown = {k: fields[k] for k in ("job_id", "event") if fields.get(k) is not None}
    shown.update((k, v) for k, v in fields.items() if v is not None and k not in shown)
    return f"{msg} {_logfmt(None, '', _containers_as_json(shown))}" if shown else msg


def _to_journal(_logger: Any, _name: str, event_dict: dict[str, Any]) -> tuple[tuple, dict]:
    """Turn an event into journal fields (``KEY=value`` strings for sd_journal_sendv)."""
    level = event_dict.pop("level", "info")
    msg = str(event_dict.pop("msg", ""))
    code = {field: event_dict.pop(key, None) for key, field in _CALLSITE.items()}
    message = _human_line(msg, event_dict)
    lines = [
        f"MESSAGE={message}",
        f"PRIORITY={PRIORITIES.get(level, 6)}",
        f"SYSLOG_IDENTIFIER={SYSLOG_IDENTIFIER}",
        f"JOBCOMPD_MSG={msg}",
    ]
    lines += [f"{field}={value}" for field, value in code.items() if value is not None]
    for key, value in event_dict.items():
        if value is not None:
            lines.append(f"{journal_field_name(key)}={_journal_value(value)}")
    return (lines, level, message), {}


def _journal_processors() -> list[structlog.typing.Processor]:
    return [
        structlog.processors.add_log_level,
        structlog.processors.CallsiteParameterAdder(
            [CallsiteParameter.PATHNAME, CallsiteParameter.LINENO, CallsiteParameter.FUNC_NAME]
        ),
        structlog.processors.format_exc_info,
        _render_job_event,
        _to_journal,
    ]


class JournalLogger:
    """Sends each event to journald (native protocol, through systemd-python).

    If journald cannot be reached (not running, socket missing) the line goes to ``fallback``
    (stderr) instead, so that nothing is lost silently; the next event tries journald again.
    """

    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback
        self._failing = False

    def _send(self, lines: list[str], level: str, message: str) -> None:
        # A field may hold bytes that are not UTF-8 (a spool file name is any bytes, decoded
        # with surrogateescape): sendv would refuse the whole entry. Backslash escapes keep it
        # readable and the entry whole.
        lines = [ln.encode("utf-8", "backslashreplace").decode("utf-8") for ln in lines]
        try:
            journal.sendv(*lines)
        except (OSError, ValueError) as e:
            if not self._failing:
                self._failing = True
                self._write(f"level=error msg=journal_unreachable error={str(e)!r} "
                            "detail=\"logging to stderr until journald answers\"")
            self._write(f"level={level} msg={message}")
            return
        self._failing = False

    def _write(self, line: str) -> None:
        try:
            self._fallback.write(line + "\n")
            self._fallback.flush()
        except (OSError, ValueError):
            pass

    # structlog calls the method named after the level; every level goes the same way (the
    # priority is already among the fields).
    msg = log = debug = info = warn = warning = _send
    err = error = critical = exception = fatal = failure = _send


class JournalLoggerFactory:
    """structlog logger factory for :class:`JournalLogger` (one shared instance)."""

    def __init__(self, fallback: TextIO) -> None:
        self._logger = JournalLogger(fallback)

    def __call__(self, *_args: Any) -> JournalLogger:
        return self._logger


def _route_stdlib_logging() -> None:
    """Send warnings of libraries that use :mod:`logging` (watchdog) through structlog.

    Only warnings and errors, even with DebugFlags=JobComp: watchdog's debug output is one line
    per inotify event, which would bury the records' own journey.
    """

    class _ToStructlog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            level = record.levelname.lower()
            log = structlog.get_logger(record.name)
            getattr(log, level if level in ("debug", "info", "warning", "error") else "error")(
                record.getMessage(), logger=record.name
            )

    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(logging.WARNING)


class KafkaLogAdapter:
    """Receives librdkafka's log lines (confluent-kafka's ``logger`` property).

    confluent-kafka forwards librdkafka's log queue from ``poll()`` (so on the main loop's thread)
    as ``logger.log(python_level, "%s [%s] %s", facility, client, message)``; this forwards into
    structlog with the facility as a field. With a ``throttle``, a warning or error repeats at
    most once per its interval for one facility and broker, with the count held back; debug
    lines (librdkafka's ``debug`` property) all pass.
    """

    def __init__(self, throttle: LogThrottle | None = None) -> None:
        self._log = structlog.get_logger("librdkafka")
        self._throttle = throttle

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility, client, message = (*args, "", "", "")[:3] if args else ("", "", fmt)
        detail = str(message)
        repeated = 0
        if level >= logging.WARNING and self._throttle is not None:
            held = self._throttle.admit(("librdkafka", facility, broker_of(detail)))
            if held is None:
                return
            repeated = held
        if level >= logging.ERROR:
            emit = self._log.error
        elif level >= logging.WARNING:
            emit = self._log.warning
        elif level >= logging.INFO:
            emit = self._log.info
        else:
            emit = self._log.debug
        if repeated:
            emit("librdkafka", facility=facility, client=client, detail=detail,
                 repeated=repeated)
        else:
            emit("librdkafka", facility=facility, client=client, detail=detail)


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
