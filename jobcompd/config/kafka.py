"""The ``JobCompLoc`` file: librdkafka properties, read as Slurm reads them and checked by
librdkafka itself, and the rule that keeps their secret values out of every message.

The file is parsed exactly as Slurm's jobcomp/kafka parses it, so one file serves both, and
every property is offered to librdkafka (through ctypes, before any producer exists) so that a
typo is reported with its line. jobcompd adds its own defaults for the producer and refuses
what it cannot run with (no brokers, transactions).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobcompd.config.source import C_SPACE, ConfigError, clip, read_text

#: librdkafka's own default for message.max.bytes, used when the operator does not set it.
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
#: Room left beside a record in one Kafka message for its key, headers and batch framing.
MESSAGE_OVERHEAD_BYTES = 1024
#: jobcompd's defaults for the producer; the operator's properties override each of them.
PRODUCER_DEFAULTS: dict[str, str] = {
    "enable.idempotence": "true",
    "message.timeout.ms": "300000",
    "acks": "all",
}
WHAT = "librdkafka properties file (JobCompLoc)"


@dataclass(frozen=True, slots=True)
class KafkaProperty:
    """One librdkafka property from the JobCompLoc file, with its line for messages."""

    key: str
    value: str
    line: int


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
    k = key.strip(C_SPACE).lower()
    return any(w in k for w in _SECRET_WORDS) or k.endswith("key.pem") or k in _SECRET_KEYS


def shown(prop: KafkaProperty) -> str:
    """The property's value as messages, logs and the status file may show it."""
    return "***" if is_secret(prop.key) else prop.value


def redacted(conf: dict[str, str]) -> dict[str, str]:
    """``conf`` with every value :func:`shown` would hide replaced by ``***``."""
    return {k: "***" if is_secret(k) else v for k, v in conf.items()}


# --------------------------------------------------------------------------- reading


def parse_kafka_file(path: Path) -> tuple[KafkaProperty, ...]:
    """Read the JobCompLoc file line by line exactly as Slurm's jobcomp/kafka does."""
    text, _ = read_text(Path(path), WHAT)
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
        props.append(KafkaProperty(key.strip(C_SPACE), value.strip(C_SPACE), lineno))
    return tuple(props)


def read_kafka(path: Path) -> tuple[tuple[KafkaProperty, ...], list[str]]:
    """The JobCompLoc file's properties, checked by librdkafka and by jobcompd's own rules,
    and the warnings they draw. Raises ConfigError."""
    text, st = read_text(path, WHAT)
    props = parse_kafka_text(text)
    check_kafka_properties(props, path)
    check_kafka_semantics(props, path)
    return props, kafka_warnings(props, path, st)


# --------------------------------------------------------------------------- librdkafka


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
            where = f"{path}:{prop.line}: {clip(prop.key)}={clip(shown(prop))}"
            if "\0" in prop.key or "\0" in prop.value:
                raise ConfigError(f"{where}: contains a NUL character")
            errstr = ctypes.create_string_buffer(512)
            rc = lib.rd_kafka_conf_set(
                conf, prop.key.encode(), prop.value.encode(), errstr, len(errstr)
            )
            if rc != 0:  # RD_KAFKA_CONF_OK
                msg = errstr.value.decode("utf-8", "replace").strip(C_SPACE)
                if is_secret(prop.key) and prop.value:
                    msg = msg.replace(prop.value, "***")
                raise ConfigError(f"{where}: {clip(msg, 600) or 'rejected by librdkafka'}")
    finally:
        lib.rd_kafka_conf_destroy(conf)


# --------------------------------------------------------------------------- jobcompd's rules

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


def last_property(props: Sequence[KafkaProperty], canonical: str) -> KafkaProperty | None:
    """The operator's effective setting of a property under any of its names (``canonical``
    is one of the names jobcompd reasons about, such as ``bootstrap.servers``)."""
    found = None
    for prop in props:
        if _canonical(prop.key) == canonical:
            found = prop
    return found


def _acks_all(value: str) -> bool:
    return value.strip(C_SPACE).lower() in ("all", "-1")


def producer_config(props: Sequence[KafkaProperty]) -> dict[str, str]:
    """jobcompd's defaults, then the operator's properties in file order (so the later of
    two aliases wins, as in librdkafka)."""
    user: dict[str, str] = {}
    for prop in props:
        user.pop(prop.key, None)  # re-insert: dict order must follow the file's last word
        user[prop.key] = prop.value
    set_by_user = {_canonical(k) for k in user}
    acks = last_property(props, "acks")
    config: dict[str, str] = {}
    for key, value in PRODUCER_DEFAULTS.items():
        if key in set_by_user:
            continue
        if key == "enable.idempotence" and acks is not None and not _acks_all(acks.value):
            continue  # librdkafka refuses idempotence without acks=all
        config[key] = value
    config.update(user)
    return config


def kafka_warnings(props: Sequence[KafkaProperty], path: Path, st: os.stat_result) -> list[str]:
    """What jobcompd runs with but the operator should know: weak acks, a readable secret."""
    warnings = []
    acks = last_property(props, "acks")
    if acks is not None and not _acks_all(acks.value):
        warnings.append(
            f"{path}:{acks.line}: {acks.key}={shown(acks)}: a record the leader alone "
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


def check_kafka_semantics(props: Sequence[KafkaProperty], path: Path) -> None:
    """What librdkafka accepts but jobcompd cannot run with."""
    servers = last_property(props, "bootstrap.servers")
    if servers is None:
        raise ConfigError(
            f"{path}: bootstrap.servers is not set; add a line such as "
            "bootstrap.servers=broker1:9092,broker2:9092"
        )
    if not servers.value:
        raise ConfigError(f"{path}:{servers.line}: {servers.key} is empty")
    txn = last_property(props, "transactional.id")
    if txn is not None and txn.value:
        raise ConfigError(
            f"{path}:{txn.line}: {txn.key}: jobcompd does not use Kafka transactions "
            "(idempotence gives it ordered, de-duplicated delivery); remove this line"
        )


def _c_integer(text: str) -> int | None:
    """An integer as librdkafka reads it (strtol base 0: decimal, 0x hex, 0 octal)."""
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m or len(text) > 40:
        return None
    digits = m.group(2)
    if digits[:2].lower() == "0x":
        value = int(digits[2:], 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    return -value if m.group(1) == "-" else value


def message_max_bytes(props: Sequence[KafkaProperty], path: Path) -> tuple[int, str]:
    """The producer's message.max.bytes and where it comes from, for messages."""
    prop = last_property(props, "message.max.bytes")
    limit = _c_integer(prop.value) if prop else None
    if prop is None or limit is None:
        limit = LIBRDKAFKA_MESSAGE_MAX_BYTES
        return limit, f"librdkafka's default message.max.bytes={limit}"
    return limit, f"{prop.key}={prop.value} ({path}:{prop.line})"
