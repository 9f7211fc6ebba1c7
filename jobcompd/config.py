"""Read and check jobcompd's configuration: jobcompd.conf, the librdkafka file, slurm.conf.

Everything an operator can get wrong is caught here, at start and on reload, with a message
that names the file, the line, the key and the accepted values, so that a bad edit never
reaches the running daemon (a reload keeps the old config on ConfigError).

Three files are involved:

- ``jobcompd.conf`` (slurm.conf syntax): ``Key=Value`` per line, keys case-insensitive.
- the ``JobCompLoc`` file: librdkafka ``key=value`` lines, parsed exactly as Slurm's
  jobcomp/kafka parses them, and every property offered to librdkafka itself (through
  ctypes) so that a typo is reported with its line before any producer exists.
- ``slurm.conf`` (optional, ``SlurmConf``): only ``ClusterName`` and ``SlurmUser`` are read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import functools
import importlib.util
import ipaddress
import os
import pwd
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/jobcompd/jobcompd.conf")
CONFIG_ENV = "JOBCOMPD_CONFIG"

DEFAULT_SPOOL_DIR = Path("/var/spool/jobcompd")
DEFAULT_STATE_DIR = Path("/var/lib/jobcompd")

# librdkafka's own default for message.max.bytes, used when the operator does not set it.
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
# Room left beside a record in one Kafka message for its key, headers and batch framing.
MESSAGE_OVERHEAD_BYTES = 1024
# jobcompd's defaults for the producer; the operator's properties override each of them.
PRODUCER_DEFAULTS: dict[str, str] = {
    "enable.idempotence": "true",
    "message.timeout.ms": "300000",
    "acks": "all",
}

# Slurm trims with C isspace(); Python's str.strip() would also eat Unicode spaces.
_C_SPACE = " \t\n\v\f\r"
# A config file larger than this is not a config file (or is /dev/zero); refuse it.
_MAX_FILE_BYTES = 1 << 20


class ConfigError(Exception):
    """A configuration problem; ``str(e)`` is the complete message for the operator."""


@dataclass(frozen=True, slots=True)
class KafkaProperty:
    """One librdkafka property from the JobCompLoc file, with its line for messages."""

    key: str
    value: str
    line: int


@dataclass(frozen=True, slots=True)
class Params:
    """JobCompParams: Slurm's jobcomp/kafka options plus jobcompd's own additions."""

    flush_timeout_ms: int
    poll_interval_s: int
    requeue_on_msg_timeout: bool
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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, checked configuration. ``warnings`` are for the log, not errors."""

    path: Path
    cluster_name: str
    job_comp_loc: Path
    kafka: tuple[KafkaProperty, ...]
    params: Params
    spool_dir: Path
    state_dir: Path
    debug_flags: frozenset[str]
    slurm_conf: Path | None
    log_target: str
    log_format: str
    metrics_listen: tuple[str, int] | None
    metrics_textfile: Path | None
    http_listen: tuple[str, int] | None
    spool_owners: frozenset[int]
    warnings: tuple[str, ...]

    @property
    def debug_jobcomp(self) -> bool:
        """``DebugFlags=JobComp``: log every record's journey at debug level."""
        return "JobComp" in self.debug_flags

    def producer_config(self) -> dict[str, str]:
        """The librdkafka configuration for the producer: jobcompd's defaults, then the
        operator's properties in file order (so the later of two aliases wins, as in
        librdkafka). No callbacks: the delivery module owns them."""
        return _producer_config(self.kafka)

    def redacted_kafka(self) -> dict[str, str]:
        """The effective producer configuration with secret values shown as ``***``."""
        return {k: "***" if is_secret(k) else v for k, v in self.producer_config().items()}

    def kafka_changed(self, other: Config) -> bool:
        """True when ``other`` needs a new producer (its effective properties differ)."""
        return self.producer_config() != other.producer_config()


# --------------------------------------------------------------------------- secrets

_SECRET_WORDS = ("password", "passwd", "secret", "passphrase", "jaas", "credential")
_SECRET_KEYS = frozenset({"sasl.oauthbearer.config", "sasl.oauthbearer.assertion.private.key"})


def is_secret(key: str) -> bool:
    """Whether a librdkafka property's value must never be shown.

    Secrets are values that grant access on their own: passwords and passphrases
    (``sasl.password``, ``ssl.key.password``, ``ssl.keystore.password``), client secrets
    (``sasl.oauthbearer.client.secret``), inline private keys (``ssl.key.pem``,
    ``*.private.key.pem``), ``sasl.oauthbearer.config`` (may carry tokens) and Java's
    ``sasl.jaas.config`` (holds a password; librdkafka rejects it, but the rejection is
    reported). Paths (``ssl.key.location``), user names and public certificates stay
    visible, because an operator needs them to diagnose a failure.
    """
    k = key.strip(_C_SPACE).lower()
    return any(w in k for w in _SECRET_WORDS) or k.endswith("key.pem") or k in _SECRET_KEYS


def _shown(prop: KafkaProperty) -> str:
    return "***" if is_secret(prop.key) else prop.value


# --------------------------------------------------------------------------- file reading


def _read_text(path: Path, what: str, fix: str = "") -> tuple[str, os.stat_result]:
    """Read a small regular text file; every failure is a ConfigError naming the file.
    ``fix`` says what to do when the file cannot be opened."""
    try:
        # O_NONBLOCK: a FIFO given by mistake must not hang the daemon at open().
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if not fix and isinstance(e, PermissionError):
            fix = ("; run this as root or as the daemon's user, and let that user read it "
                   "('jobcompd check' as root names the command)")
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror}{fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: {what} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {what} is larger than {_MAX_FILE_BYTES} bytes")
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ConfigError(f"{path}:{line}: {what} contains a NUL byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: {what} is not valid UTF-8") from None
    return text, st


def _resolve(value: str, base: Path) -> Path:
    """Paths in a config file are relative to that file's folder, not to the cwd."""
    p = Path(value)
    return p if p.is_absolute() else base / p


# --------------------------------------------------------------------------- librdkafka file


def parse_kafka_file(path: Path) -> tuple[KafkaProperty, ...]:
    """Read the JobCompLoc file line by line exactly as Slurm's jobcomp/kafka does."""
    text, _ = _read_text(Path(path), "librdkafka properties file (JobCompLoc)")
    return parse_kafka_text(text)


def parse_kafka_text(text: str) -> tuple[KafkaProperty, ...]:
    """Slurm's rules: skip lines without ``=``; split at the first ``=``; skip the line when
    the key holds ``#``; trim the key; cut the value at its first ``#``, then trim it.
    Empty keys and values pass through (librdkafka judges them)."""
    props = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        key, sep, value = line.partition("=")
        if not sep or "#" in key:
            continue
        value = value.split("#", 1)[0]
        props.append(KafkaProperty(key.strip(_C_SPACE), value.strip(_C_SPACE), lineno))
    return tuple(props)


@functools.cache
def _librdkafka() -> ctypes.CDLL:
    """The librdkafka that confluent-kafka uses, so both agree on what is valid."""
    candidates: list[str] = []
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is not None and spec.origin:
        libs = Path(spec.origin).parent.parent / "confluent_kafka.libs"
        candidates += [str(p) for p in sorted(libs.glob("librdkafka*.so*"))]
    system = ctypes.util.find_library("rdkafka")
    if system:
        candidates.append(system)
    errors = []
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
            continue
        lib.rd_kafka_conf_new.argtypes = []
        lib.rd_kafka_conf_new.restype = ctypes.c_void_p
        lib.rd_kafka_conf_set.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.rd_kafka_conf_set.restype = ctypes.c_int
        lib.rd_kafka_conf_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_conf_destroy.restype = None
        return lib
    detail = "; ".join(errors) or "no librdkafka next to confluent_kafka nor on the system"
    raise ConfigError(
        f"cannot load librdkafka to check the Kafka properties ({detail}): "
        "this is an installation problem, reinstall confluent-kafka"
    )


def check_kafka_properties(props: Sequence[KafkaProperty], path: Path) -> None:
    """Offer every property to librdkafka in file order, like Slurm's rd_kafka_conf_set
    loop; the first one it rejects (unknown name or invalid value) is a ConfigError."""
    lib = _librdkafka()
    conf = lib.rd_kafka_conf_new()
    if not conf:
        raise ConfigError("rd_kafka_conf_new() failed (out of memory?)")
    try:
        for prop in props:
            where = f"{path}:{prop.line}: {prop.key}={_shown(prop)}"
            if "\0" in prop.key or "\0" in prop.value:
                raise ConfigError(f"{where}: contains a NUL character")
            errstr = ctypes.create_string_buffer(512)
            rc = lib.rd_kafka_conf_set(
                conf, prop.key.encode(), prop.value.encode(), errstr, len(errstr)
            )
            if rc != 0:  # RD_KAFKA_CONF_OK
                msg = errstr.value.decode("utf-8", "replace").strip(_C_SPACE)
                if is_secret(prop.key) and prop.value:
                    msg = msg.replace(prop.value, "***")
                raise ConfigError(f"{where}: {msg or 'rejected by librdkafka'}")
    finally:
        lib.rd_kafka_conf_destroy(conf)


# librdkafka accepts several names for one property; these are the ones jobcompd reasons
# about (defaults and checks). "topic." prefixes a topic-level property in a global conf.
_ALIASES = {
    "acks": "acks",
    "request.required.acks": "acks",
    "message.timeout.ms": "message.timeout.ms",
    "delivery.timeout.ms": "message.timeout.ms",
    "enable.idempotence": "enable.idempotence",
    "bootstrap.servers": "bootstrap.servers",
    "metadata.broker.list": "bootstrap.servers",
    "message.max.bytes": "message.max.bytes",
    "transactional.id": "transactional.id",
}


_TOPIC_LEVEL = frozenset(
    {"acks", "request.required.acks", "message.timeout.ms", "delivery.timeout.ms"}
)


def _canonical(key: str) -> str:
    """One name for each property jobcompd reasons about, whatever alias the file uses."""
    name = key.removeprefix("topic.")
    if name != key and name not in _TOPIC_LEVEL:
        name = key
    return _ALIASES.get(name, name)


def _last(props: Sequence[KafkaProperty], canonical: str) -> KafkaProperty | None:
    """The operator's effective setting of a property under any of its names."""
    found = None
    for prop in props:
        if _canonical(prop.key) == canonical:
            found = prop
    return found


def _acks_all(value: str) -> bool:
    return value.strip(_C_SPACE).lower() in ("all", "-1")


def _producer_config(props: Sequence[KafkaProperty]) -> dict[str, str]:
    user: dict[str, str] = {}
    for prop in props:
        user.pop(prop.key, None)  # re-insert: dict order must follow the file's last word
        user[prop.key] = prop.value
    set_by_user = {_canonical(k) for k in user}
    acks = _last(props, "acks")
    config: dict[str, str] = {}
    for key, value in PRODUCER_DEFAULTS.items():
        if key in set_by_user:
            continue
        if key == "enable.idempotence" and acks is not None and not _acks_all(acks.value):
            continue  # librdkafka refuses idempotence without acks=all
        config[key] = value
    config.update(user)
    return config


def _kafka_warnings(props: Sequence[KafkaProperty], path: Path, st: os.stat_result) -> list[str]:
    warnings = []
    acks = _last(props, "acks")
    if acks is not None and not _acks_all(acks.value):
        warnings.append(
            f"{path}:{acks.line}: {acks.key}={acks.value}: a record the leader alone "
            "acknowledged is lost if that broker fails before replicating it, and jobcompd "
            "has already deleted its spool file; use acks=all unless you accept that"
        )
    secrets = [p for p in props if is_secret(p.key)]
    if secrets and st.st_mode & stat.S_IROTH:
        warnings.append(
            f"{path}: holds a secret ({secrets[0].key}, line {secrets[0].line}) and is "
            "readable by every user; chmod o-r it"
        )
    return warnings


def _c_integer(text: str) -> int | None:
    """An integer as librdkafka reads it (strtol base 0: decimal, 0x hex, 0 octal)."""
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m:
        return None
    digits = m.group(2)
    if digits[:2].lower() == "0x":
        value = int(digits[2:], 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    return -value if m.group(1) == "-" else value


def _check_kafka_semantics(props: Sequence[KafkaProperty], path: Path) -> None:
    """What librdkafka accepts but jobcompd cannot run with."""
    servers = _last(props, "bootstrap.servers")
    if servers is None:
        raise ConfigError(
            f"{path}: bootstrap.servers is not set; add a line such as "
            "bootstrap.servers=broker1:9092,broker2:9092"
        )
    if not servers.value:
        raise ConfigError(f"{path}:{servers.line}: {servers.key} is empty")
    txn = _last(props, "transactional.id")
    if txn is not None and txn.value:
        raise ConfigError(
            f"{path}:{txn.line}: {txn.key}: jobcompd does not use Kafka transactions "
            "(idempotence gives it ordered, de-duplicated delivery); remove this line"
        )


# --------------------------------------------------------------------------- JobCompParams


@dataclass(frozen=True, slots=True)
class _Number:
    default: int
    low: int
    high: int
    unit: str


# Slurm's options keep Slurm's names, defaults and ranges; the rest are jobcompd's own.
_NUMBERS: dict[str, _Number] = {
    "flush_timeout": _Number(500, -1, 2147483647, "milliseconds"),
    "poll_interval": _Number(2, 0, 4294967295, "seconds"),
    "max_inflight": _Number(10000, 1, 1000000, "records"),
    "max_record_bytes": _Number(524288, 1024, 16777216, "bytes"),
    "rescan_interval": _Number(30, 1, 86400, "seconds"),
    "stall_timeout": _Number(30, 5, 86400, "seconds"),
    "retry_backoff_max": _Number(60, 1, 3600, "seconds"),
}
_FLAGS = ("requeue_on_msg_timeout", "enable_job_start", "send_script", "send_comment")
_IGNORED_FLAGS = ("purge_in_flight", "purge_non_blocking", "requeue_purge_in_flight")
_STRINGS = ("topic", "topic_job_start")
_ALL_OPTIONS = (*_NUMBERS, *_FLAGS, *_IGNORED_FLAGS, *_STRINGS)

_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_INT_RE = re.compile(r"[+-]?[0-9]+")


def _suggest(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean X?"`` for the closest choice (compared case-insensitively), or ``""``."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[close[0]]}?" if close else ""


def _check_topic(value: str, what: str) -> None:
    if not value:
        raise ConfigError(f"{what}: the topic name is empty")
    if not _TOPIC_RE.fullmatch(value) or value in (".", ".."):
        raise ConfigError(
            f"{what}: {value!r} is not a valid Kafka topic name (1 to 249 ASCII letters, "
            "digits, '.', '_' or '-')"
        )


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
        token = raw.strip(_C_SPACE)
        if not token:
            continue
        name, sep, value = token.partition("=")
        name = name.strip(_C_SPACE).lower()
        value = value.strip(_C_SPACE)
        if name not in _ALL_OPTIONS:
            raise ConfigError(
                f"{where}: unknown option {name!r}{_suggest(name, _ALL_OPTIONS)} "
                f"(known: {', '.join(_ALL_OPTIONS)})"
            )
        if name in seen:
            raise ConfigError(f"{where}: {name} is given twice")
        seen.add(name)
        if name in _FLAGS or name in _IGNORED_FLAGS:
            if sep:
                raise ConfigError(
                    f"{where}: {name} is a flag and takes no value (got {name}={value}); "
                    f"write just {name} to turn it on, leave it out to keep it off"
                )
            if name in _IGNORED_FLAGS:
                warnings.append(
                    f"{where}: {name} is accepted for compatibility with Slurm and ignored: "
                    "jobcompd never discards a record; everything unacknowledged stays in "
                    "the spool and is sent again"
                )
            else:
                values[name] = True
            continue
        if not sep:
            raise ConfigError(f"{where}: {name} needs a value ({name}=...)")
        if name in _STRINGS:
            _check_topic(value, f"{where}: {name}")
            values[name] = value
            continue
        spec = _NUMBERS[name]
        accepted = f"accepted: a whole number in base 10, {spec.low}..{spec.high} {spec.unit}"
        if not _INT_RE.fullmatch(value):
            raise ConfigError(f"{where}: {name}={value} is not a number ({accepted})")
        number = int(value)
        if not spec.low <= number <= spec.high:
            raise ConfigError(f"{where}: {name}={value} is out of range ({accepted})")
        values[name] = number

    topic = str(values.get("topic", cluster_name))
    topic_job_start = str(values.get("topic_job_start", f"{cluster_name}-job-start"))
    if "topic" not in values:
        _check_topic(topic, f"{where}: topic (default: ClusterName)")
    if "topic_job_start" not in values:
        _check_topic(
            topic_job_start, f"{where}: topic_job_start (default: <ClusterName>-job-start)"
        )
    enable_job_start = bool(values.get("enable_job_start", False))
    if enable_job_start and topic == topic_job_start:
        warnings.append(
            f"{where}: topic and topic_job_start are both {topic!r}: start and end records "
            "share one topic and consumers must tell them apart by the 'event' header"
        )

    def number(name: str) -> int:
        return int(values.get(name, _NUMBERS[name].default))

    params = Params(
        flush_timeout_ms=number("flush_timeout"),
        poll_interval_s=number("poll_interval"),
        requeue_on_msg_timeout=bool(values.get("requeue_on_msg_timeout", False)),
        topic=topic,
        topic_job_start=topic_job_start,
        enable_job_start=enable_job_start,
        send_script=bool(values.get("send_script", False)),
        send_comment=bool(values.get("send_comment", False)),
        max_inflight=number("max_inflight"),
        max_record_bytes=number("max_record_bytes"),
        rescan_interval_s=float(number("rescan_interval")),
        stall_timeout_s=float(number("stall_timeout")),
        retry_backoff_max_s=float(number("retry_backoff_max")),
    )
    return params, warnings


# --------------------------------------------------------------------------- jobcompd.conf

_KEYS = (
    "ClusterName",
    "JobCompLoc",
    "JobCompParams",
    "SpoolDir",
    "StateSaveLocation",
    "DebugFlags",
    "SlurmConf",
    "LogTarget",
    "LogFormat",
    "MetricsListen",
    "MetricsTextfile",
    "HttpListen",
    "SpoolOwners",
)
_KEY_BY_LOWER = {k.lower(): k for k in _KEYS}
# Keys whose empty value is meaningful (an empty list); any other key needs a value.
_MAY_BE_EMPTY = frozenset({"JobCompParams", "DebugFlags"})
# What to do about a key written with no value: the default it falls back to when the line is
# removed, or, for a key that has none, what to write.
_EMPTY_HINTS = {
    "ClusterName": "set it (for example ClusterName=hpc), or remove the line and set "
    "SlurmConf= to the slurm.conf that names the cluster",
    "JobCompLoc": "it is required and has no default: set it to the librdkafka properties "
    "file, for example JobCompLoc=/etc/jobcompd/rdkafka.conf",
    "SpoolDir": f"remove the line to use the default {DEFAULT_SPOOL_DIR}",
    "StateSaveLocation": f"remove the line to use the default {DEFAULT_STATE_DIR}",
    "SlurmConf": "set it to slurm.conf's path, or remove the line to read no slurm.conf",
    "LogTarget": "remove the line to use the default (auto), or write journal or stderr",
    "LogFormat": "remove the line to use the default (logfmt), or write json",
    "MetricsListen": "set host:port (for example 127.0.0.1:9817), or remove the line to "
    "serve no metrics",
    "MetricsTextfile": "set the .prom file's path, or remove the line to write no textfile",
    "HttpListen": "set host:port (for example 127.0.0.1:9200), or remove the line to run no "
    "HTTP intake",
    "SpoolOwners": "list users (for example SpoolOwners=slurm), or remove the line to use the "
    "default (SlurmUser and root)",
}
_DEBUG_FLAGS = {"jobcomp": "JobComp", "elasticsearch": "JobComp"}  # Slurm's alias
_LOG_TARGETS = ("auto", "journal", "stderr")
_LOG_FORMATS = ("logfmt", "json")


@dataclass(frozen=True, slots=True)
class _Entry:
    value: str
    line: int


def _strip_comment(line: str) -> str:
    """Cut at the first ``#`` outside double quotes."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _parse_conf_text(text: str, path: Path) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = _strip_comment(raw).strip(_C_SPACE)
        if not line:
            continue
        key, sep, value = line.partition("=")
        key = key.strip(_C_SPACE)
        value = value.strip(_C_SPACE)
        if not sep or not key:
            raise ConfigError(f"{path}:{lineno}: expected Key=Value, got {line!r}")
        name = _KEY_BY_LOWER.get(key.lower())
        if name is None:
            raise ConfigError(f"{path}:{lineno}: unknown key {key!r}{_suggest(key, _KEYS)}")
        if name in entries:
            raise ConfigError(
                f"{path}:{lineno}: {name} is set twice (first on line {entries[name].line})"
            )
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"') or '"' in value[1:-1]:
                raise ConfigError(f"{path}:{lineno}: {name}: unbalanced double quote")
            value = value[1:-1]
        elif '"' in value:
            raise ConfigError(
                f"{path}:{lineno}: {name}: a double quote may only enclose the whole value"
            )
        if not value and name not in _MAY_BE_EMPTY:
            raise ConfigError(f"{path}:{lineno}: {name} has no value; {_EMPTY_HINTS[name]}")
        entries[name] = _Entry(value, lineno)
    return entries


def _parse_listen(value: str, where: str, purpose: str, warnings: list[str]) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; a non-loopback host is allowed with a warning."""
    usage = "write host:port or [IPv6]:port, for example 127.0.0.1:9817"
    if value.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", value)
        if not m:
            raise ConfigError(f"{where}: {value!r}: {usage}")
        host, port_text = m.groups()
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{where}: {host!r} is not an IPv6 address ({usage})") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{where}: {value!r}: {usage}")
        if ":" in host:
            raise ConfigError(f"{where}: {value!r}: put an IPv6 address in brackets ({usage})")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", host):
            raise ConfigError(f"{where}: {host!r} is not a host name or address ({usage})")
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise ConfigError(f"{where}: port {port_text!r} is not 0..65535 ({usage})")
    if not _is_loopback(host):
        warnings.append(f"{where}: {host} is not a loopback address: {purpose}")
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _uid(name: str, where: str) -> int:
    if re.fullmatch(r"[0-9]+", name):
        uid = int(name)
        if uid >= 2**32 - 1:
            raise ConfigError(f"{where}: uid {name} is out of range")
        return uid
    try:
        return pwd.getpwnam(name).pw_uid
    except (KeyError, ValueError):
        raise ConfigError(f"{where}: unknown user {name!r}") from None


@dataclass(frozen=True, slots=True)
class _SlurmConf:
    cluster_name: _Entry | None
    slurm_user: _Entry | None


_SLURM_KEY_RE = re.compile(r'(?:^|\s)(ClusterName|SlurmUser)\s*=\s*("[^"]*"|\S*)', re.IGNORECASE)


def _read_slurm_conf(path: Path) -> _SlurmConf:
    """Only ClusterName and SlurmUser; everything else (Include lines too) is Slurm's."""
    text, _ = _read_text(path, "slurm.conf (SlurmConf)")
    found: dict[str, _Entry] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = re.sub(r"(?<!\\)#.*", "", raw)  # Slurm: '#' starts a comment unless escaped
        for m in _SLURM_KEY_RE.finditer(line):
            found[m.group(1).lower()] = _Entry(m.group(2).strip('"'), lineno)  # last wins
    return _SlurmConf(found.get("clustername"), found.get("slurmuser"))


def _check_cluster_name(name: str, where: str) -> str:
    # Slurm maps ClusterName to lower case, so the default topic must too.
    if not name or re.search(r"[\s:\x00-\x1f\x7f]", name):
        raise ConfigError(
            f"{where}: ClusterName {name!r} must be a non-empty word without spaces, "
            "control characters or ':' (it forms the message key <ClusterName>:<jobid>)"
        )
    return name.lower()


def config_path(cli_value: str | None) -> Path:
    """``-c PATH`` if given, else ``$JOBCOMPD_CONFIG`` if set, else the default path."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load(path: str | Path) -> Config:
    """Read and check jobcompd.conf and the files it names. Raises ConfigError."""
    path = Path(path).absolute()
    text, _ = _read_text(
        path, "config file",
        "" if path.exists() else f"; give its path with -c PATH or ${CONFIG_ENV} (default "
        f"{DEFAULT_CONFIG_PATH})")
    entries = _parse_conf_text(text, path)
    base = path.parent
    warnings: list[str] = []

    def where(key: str) -> str:
        return f"{path}:{entries[key].line}: {key}"

    def get(key: str) -> str | None:
        entry = entries.get(key)
        return entry.value if entry is not None else None

    slurm_conf_path = _resolve(v, base) if (v := get("SlurmConf")) else None
    slurm = None
    if slurm_conf_path:
        try:
            slurm = _read_slurm_conf(slurm_conf_path)
        except ConfigError as e:
            # Name the line that pointed there too: the fix may be in either file.
            raise ConfigError(f"{e} (set by {where('SlurmConf')})") from None

    cluster_value = get("ClusterName")
    if cluster_value is not None:
        cluster_name = _check_cluster_name(cluster_value, where("ClusterName"))
        if slurm and slurm.cluster_name and slurm.cluster_name.value.lower() != cluster_name:
            warnings.append(
                f"{where('ClusterName')}: {cluster_name!r} differs from ClusterName="
                f"{slurm.cluster_name.value} in {slurm_conf_path}:{slurm.cluster_name.line}"
            )
    elif slurm and slurm.cluster_name:
        cluster_name = _check_cluster_name(
            slurm.cluster_name.value, f"{slurm_conf_path}:{slurm.cluster_name.line}"
        )
    else:
        raise ConfigError(
            f"{path}: ClusterName is not known: set ClusterName= here, or SlurmConf= to the "
            "slurm.conf that sets it (it names the default topic and prefixes message keys)"
        )

    loc = get("JobCompLoc")
    if loc is None:
        raise ConfigError(
            f"{path}: JobCompLoc is not set; point it at the librdkafka properties file, "
            "for example JobCompLoc=/etc/jobcompd/rdkafka.conf"
        )
    job_comp_loc = _resolve(loc, base)
    try:
        kafka_text, kafka_stat = _read_text(job_comp_loc,
                                            "librdkafka properties file (JobCompLoc)")
    except ConfigError as e:
        # Name the line that pointed there too: the fix may be in either file.
        raise ConfigError(f"{e} (set by {where('JobCompLoc')})") from None
    kafka = parse_kafka_text(kafka_text)
    check_kafka_properties(kafka, job_comp_loc)
    _check_kafka_semantics(kafka, job_comp_loc)
    warnings += _kafka_warnings(kafka, job_comp_loc, kafka_stat)

    params_where = (
        where("JobCompParams") if "JobCompParams" in entries else f"{path}: JobCompParams"
    )
    params, params_warnings = parse_params(get("JobCompParams") or "", cluster_name, params_where)
    warnings += params_warnings
    max_bytes = _last(kafka, "message.max.bytes")
    limit = _c_integer(max_bytes.value) if max_bytes else None
    if limit is None:
        max_bytes, limit = None, LIBRDKAFKA_MESSAGE_MAX_BYTES
    if params.max_record_bytes + MESSAGE_OVERHEAD_BYTES > limit:
        source = (
            f"{max_bytes.key}={max_bytes.value} ({job_comp_loc}:{max_bytes.line})"
            if max_bytes
            else f"librdkafka's default message.max.bytes={limit}"
        )
        raise ConfigError(
            f"{params_where}: max_record_bytes={params.max_record_bytes} does not fit in "
            f"{source} with {MESSAGE_OVERHEAD_BYTES} bytes for key and headers; lower "
            f"max_record_bytes to at most {limit - MESSAGE_OVERHEAD_BYTES} or raise "
            "message.max.bytes"
        )

    debug_flags: set[str] = set()
    for token in (get("DebugFlags") or "").split(","):
        flag = token.strip(_C_SPACE)
        if not flag:
            continue
        if flag.lower() not in _DEBUG_FLAGS:
            raise ConfigError(
                f"{where('DebugFlags')}: unknown flag {flag!r}{_suggest(flag, ['JobComp'])} "
                "(known: JobComp, or its Slurm alias Elasticsearch)"
            )
        debug_flags.add(_DEBUG_FLAGS[flag.lower()])

    log_target = _choice(get("LogTarget"), "auto", _LOG_TARGETS, entries, path, "LogTarget")
    log_format = _choice(get("LogFormat"), "logfmt", _LOG_FORMATS, entries, path, "LogFormat")

    metrics_listen = http_listen = None
    if (v := get("MetricsListen")) is not None:
        metrics_listen = _parse_listen(
            v, where("MetricsListen"), "anyone who can reach it can read the metrics", warnings
        )
    if (v := get("HttpListen")) is not None:
        http_listen = _parse_listen(
            v, where("HttpListen"), "anyone who can reach it can submit job records", warnings
        )
    metrics_textfile = _resolve(v, base) if (v := get("MetricsTextfile")) else None
    if metrics_textfile is not None and metrics_textfile.suffix != ".prom":
        warnings.append(
            f"{where('MetricsTextfile')}: node_exporter's textfile collector reads only "
            "files ending in .prom"
        )

    if (v := get("SpoolOwners")) is not None:
        names = [n.strip(_C_SPACE) for n in v.split(",")]
        owners = {_uid(n, where("SpoolOwners")) for n in names if n}
        if not owners:
            raise ConfigError(f"{where('SpoolOwners')}: lists no user")
    elif slurm is not None:
        user = slurm.slurm_user
        # Slurm's own default SlurmUser is root.
        owners = {_uid(user.value, f"{slurm_conf_path}:{user.line}: SlurmUser")} if user else set()
    else:
        try:
            owners = {pwd.getpwnam("slurm").pw_uid}
        except KeyError:
            owners = set()
    owners.add(0)  # root can write anything anyway; its files (backfill, retry) are trusted

    return Config(
        path=path,
        cluster_name=cluster_name,
        job_comp_loc=job_comp_loc,
        kafka=kafka,
        params=params,
        spool_dir=_resolve(v, base) if (v := get("SpoolDir")) else DEFAULT_SPOOL_DIR,
        state_dir=_resolve(v, base) if (v := get("StateSaveLocation")) else DEFAULT_STATE_DIR,
        debug_flags=frozenset(debug_flags),
        slurm_conf=slurm_conf_path,
        log_target=log_target,
        log_format=log_format,
        metrics_listen=metrics_listen,
        metrics_textfile=metrics_textfile,
        http_listen=http_listen,
        spool_owners=frozenset(owners),
        warnings=tuple(warnings),
    )


def _choice(
    value: str | None,
    default: str,
    choices: Sequence[str],
    entries: dict[str, _Entry],
    path: Path,
    key: str,
) -> str:
    if value is None:
        return default
    if value.lower() not in choices:
        raise ConfigError(
            f"{path}:{entries[key].line}: {key}={value}: accepted: {', '.join(choices)}"
        )
    return value.lower()
