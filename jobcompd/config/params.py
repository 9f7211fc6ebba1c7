"""``JobCompParams``: Slurm's jobcomp/kafka options plus jobcompd's own, as one table.

Each :class:`Option` carries its name, kind, default, range and one-line doc; the parser, the
:class:`Params` it fills, the README's tables and the check of ``etc/jobcompd.conf`` all read
this table. Slurm's options keep Slurm's names, defaults and ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from jobcompd.config.source import C_SPACE, ConfigError, clip, decimal, suggest


@dataclass(frozen=True, slots=True)
class Params:
    """JobCompParams: Slurm's jobcomp/kafka options plus jobcompd's own additions."""

    flush_timeout_ms: int
    poll_interval_s: int
    topic: str
    topic_job_start: str
    enable_job_start: bool
    send_script: bool
    send_comment: bool
    max_inflight: int
    max_record_bytes: int
    rescan_interval_s: float
    stall_timeout_s: float
    retry_backoff_max_s: float
    dead_letter_after_s: float


Kind = Literal["number", "flag", "ignored", "topic"]


@dataclass(frozen=True, slots=True)
class Option:
    """One JobCompParams option.

    ``attr`` is its Params field (None for an ignored flag); ``default`` is a number's or a
    flag's default, or for a topic the words that say how it derives from ClusterName;
    ``low``..``high`` bound a number, in ``unit``; ``placeholder`` names a value in the docs
    (``flush_timeout=<ms>``); ``note`` adds to the range in the docs; ``real`` makes the
    Params field a float; ``slurm`` tells Slurm's options from jobcompd's own."""

    name: str
    kind: Kind
    attr: str | None
    doc: str
    slurm: bool
    default: int | bool | str | None = None
    low: int = 0
    high: int = 0
    unit: str = ""
    placeholder: str = ""
    note: str = ""
    real: bool = False

    def usage(self) -> str:
        """How the option is written: ``name=<placeholder>`` or the flag's name."""
        return f"{self.name}=<{self.placeholder}>" if self.placeholder else self.name


_IGNORED_DOC = "accepted and ignored, with a warning: jobcompd never discards a record"

OPTIONS: tuple[Option, ...] = (
    Option("topic", "topic", "topic", "topic of job end records", True,
           default="ClusterName", placeholder="name"),
    Option("enable_job_start", "flag", "enable_job_start",
           "also send job start records (from PrologSlurmctld)", True, default=False),
    Option("topic_job_start", "topic", "topic_job_start", "topic of job start records", True,
           default="<ClusterName>-job-start", placeholder="name"),
    Option("flush_timeout", "number", "flush_timeout_ms",
           "at shutdown, how long in-flight messages get to be acknowledged (-1 waits for "
           "ever, 0 not at all); what is left stays in the spool", True,
           default=500, low=-1, high=2147483647, unit="milliseconds", placeholder="ms"),
    Option("poll_interval", "number", "poll_interval_s",
           "the longest the idle main loop sleeps; jobcompd serves delivery reports "
           "continuously", True,
           default=2, low=0, high=4294967295, unit="seconds", placeholder="s"),
    Option("requeue_on_msg_timeout", "ignored", None,
           "accepted and ignored, with a warning: a record that timed out always stays in "
           "`new/` and is sent again (see `dead_letter_after`)", True),
    Option("send_script", "flag", "send_script",
           "include the batch script (the `script` field) when the source carries it", True,
           default=False),
    Option("send_comment", "flag", "send_comment",
           "include the job comment (the `comment` field) when the source carries it", True,
           default=False),
    Option("purge_in_flight", "ignored", None, _IGNORED_DOC, True),
    Option("purge_non_blocking", "ignored", None, _IGNORED_DOC, True),
    Option("requeue_purge_in_flight", "ignored", None, _IGNORED_DOC, True),
    Option("max_inflight", "number", "max_inflight",
           "records handed to librdkafka at once; the rest wait on disk", False,
           default=10000, low=1, high=1000000, unit="records", placeholder="n"),
    Option("max_record_bytes", "number", "max_record_bytes",
           "larger spool files go to `failed/` unread", False,
           default=524288, low=1024, high=16777216, unit="bytes", placeholder="n",
           note="and at least 1024 below the producer's `message.max.bytes`"),
    Option("rescan_interval", "number", "rescan_interval_s",
           "full scan of `new/` besides inotify", False,
           default=30, low=1, high=86400, unit="seconds", placeholder="s", real=True),
    Option("stall_timeout", "number", "stall_timeout_s",
           "no delivery report for this long while the broker answers: a new producer, "
           "everything unacknowledged sent again", False,
           default=30, low=5, high=86400, unit="seconds", placeholder="s", real=True),
    Option("retry_backoff_max", "number", "retry_backoff_max_s",
           "longest wait before sending a failed record again", False,
           default=60, low=1, high=3600, unit="seconds", placeholder="s", real=True),
    Option("dead_letter_after", "number", "dead_letter_after_s",
           "a record that times out again more than this long after it was first sent goes "
           "to `failed/` as `timeout`; 0 (the default): never, it waits in `new/` for the "
           "broker however long the outage", False,
           default=0, low=0, high=31536000, unit="seconds", placeholder="s", real=True),
)
OPTION_BY_NAME = {o.name: o for o in OPTIONS}
_NAMES = tuple(OPTION_BY_NAME)

_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def check_topic(value: str, what: str) -> None:
    """A Kafka topic name, or a ConfigError prefixed with ``what``."""
    if not value:
        raise ConfigError(f"{what}: the topic name is empty")
    if not _TOPIC_RE.fullmatch(value) or value in (".", ".."):
        raise ConfigError(
            f"{what}: {clip(value)!r} is not a valid Kafka topic name (1 to 249 ASCII "
            "letters, digits, '.', '_' or '-')"
        )


def _number(option: Option, value: str, where: str) -> int:
    accepted = (f"accepted: a whole number in base 10, {option.low}..{option.high} "
                f"{option.unit}")
    number = decimal(value)
    if number is None:
        raise ConfigError(f"{where}: {option.name}={clip(value)} is not a number ({accepted})")
    if not option.low <= number <= option.high:
        raise ConfigError(f"{where}: {option.name}={clip(value)} is out of range ({accepted})")
    return number


def _token(token: str, where: str, seen: set[str], values: dict[str, int | bool | str],
           warnings: list[str]) -> None:
    """One comma-separated item of JobCompParams into ``values`` (by option name)."""
    name, sep, value = token.partition("=")
    name = name.strip(C_SPACE).lower()
    value = value.strip(C_SPACE)
    option = OPTION_BY_NAME.get(name)
    if option is None:
        raise ConfigError(
            f"{where}: unknown option {clip(name)!r}{suggest(name, _NAMES)} "
            f"(known: {', '.join(_NAMES)})"
        )
    if name in seen:
        raise ConfigError(f"{where}: {name} is given twice")
    seen.add(name)
    if option.kind in ("flag", "ignored"):
        if sep:
            raise ConfigError(
                f"{where}: {name} is a flag and takes no value (got {name}={clip(value)}); "
                f"write just {name} to turn it on, leave it out to keep it off"
            )
        if option.kind == "ignored":
            warnings.append(
                f"{where}: {name} is accepted for compatibility with Slurm and ignored: "
                "jobcompd never discards a record; everything unacknowledged stays in "
                "the spool and is sent again"
            )
        else:
            values[name] = True
        return
    if not sep:
        raise ConfigError(f"{where}: {name} needs a value ({name}=...)")
    if option.kind == "topic":
        check_topic(value, f"{where}: {name}")
        values[name] = value
    else:
        values[name] = _number(option, value, where)


def parse_params(text: str, cluster_name: str, where: str) -> tuple[Params, list[str]]:
    """Parse JobCompParams into Params plus warnings; ``where`` prefixes every message.

    Unlike Slurm (substring search, silent junk), the text is split on commas and each
    token must be a known flag or ``name=value`` with a valid value. Option names are
    case-insensitive.
    """
    values: dict[str, int | bool | str] = {}
    seen: set[str] = set()
    warnings: list[str] = []
    for raw in text.split(","):
        token = raw.strip(C_SPACE)
        if token:
            _token(token, where, seen, values, warnings)

    topic = str(values.get("topic", cluster_name))
    topic_job_start = str(values.get("topic_job_start", f"{cluster_name}-job-start"))
    if "topic" not in values:
        check_topic(topic, f"{where}: topic (default: ClusterName)")
    if "topic_job_start" not in values:
        check_topic(topic_job_start,
                    f"{where}: topic_job_start (default: <ClusterName>-job-start)")
    if values.get("enable_job_start") and topic == topic_job_start:
        warnings.append(
            f"{where}: topic and topic_job_start are both {topic!r}: start and end records "
            "share one topic and consumers must tell them apart by the 'event' header"
        )
    fields: dict[str, Any] = {"topic": topic, "topic_job_start": topic_job_start}
    for option in OPTIONS:
        if option.kind == "flag":
            fields[str(option.attr)] = bool(values.get(option.name, False))
        elif option.kind == "number":
            number = int(values.get(option.name, option.default or 0))
            fields[str(option.attr)] = float(number) if option.real else number
    return Params(**fields), warnings
