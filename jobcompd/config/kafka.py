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

from jobcompd.config.source import C_SPACE, ConfigError, clip, read_text, suggest

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

#: librdkafka's documented properties (CONFIGURATION.md) whose values are safe to show, and
#: that an operator needs to see to diagnose a failure: addresses, sizes, timeouts, modes,
#: names, paths, public certificates. Every other value is shown as ``***``.
NON_SECRET = frozenset({
    # global
    "builtin.features", "client.id", "client.software.name", "client.software.version",
    "metadata.broker.list", "bootstrap.servers", "message.max.bytes",
    "message.copy.max.bytes", "receive.message.max.bytes",
    "max.in.flight.requests.per.connection", "max.in.flight", "metadata.recovery.strategy",
    "metadata.recovery.rebootstrap.trigger.ms", "metadata.request.timeout.ms",
    "topic.metadata.refresh.interval.ms", "metadata.max.age.ms",
    "topic.metadata.refresh.fast.interval.ms", "topic.metadata.refresh.fast.cnt",
    "topic.metadata.refresh.sparse", "topic.metadata.propagation.max.ms", "topic.blacklist",
    "debug", "socket.timeout.ms", "socket.blocking.max.ms", "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes", "socket.keepalive.enable", "socket.nagle.disable",
    "socket.max.fails", "broker.address.ttl", "broker.address.family",
    "socket.connection.setup.timeout.ms", "connections.max.idle.ms",
    "enable.sparse.connections", "reconnect.backoff.jitter.ms", "reconnect.backoff.ms",
    "reconnect.backoff.max.ms", "statistics.interval.ms", "enabled_events", "log_level",
    "log.queue", "log.thread.name", "enable.random.seed", "log.connection.close",
    "internal.termination.signal", "api.version.request", "api.version.request.timeout.ms",
    "api.version.fallback.ms", "broker.version.fallback", "allow.auto.create.topics",
    "security.protocol", "ssl.cipher.suites", "ssl.curves.list", "ssl.sigalgs.list",
    "ssl.key.location", "ssl.certificate.location", "ssl.certificate.pem", "ssl.ca.location",
    "ssl.ca.pem", "ssl.ca.certificate.stores", "ssl.crl.location", "ssl.keystore.location",
    "ssl.engine.location", "ssl.engine.id", "enable.ssl.certificate.verification",
    "ssl.endpoint.identification.algorithm", "sasl.mechanisms", "sasl.mechanism",
    "sasl.kerberos.service.name", "sasl.kerberos.principal", "sasl.kerberos.keytab",
    "sasl.kerberos.min.time.before.relogin", "sasl.username", "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id", "sasl.oauthbearer.scope",
    "sasl.oauthbearer.token.endpoint.url", "sasl.oauthbearer.sub.claim.name",
    "sasl.oauthbearer.grant.type", "sasl.oauthbearer.assertion.algorithm",
    "sasl.oauthbearer.assertion.private.key.file", "sasl.oauthbearer.assertion.claim.aud",
    "sasl.oauthbearer.assertion.claim.exp.seconds", "sasl.oauthbearer.assertion.claim.iss",
    "sasl.oauthbearer.assertion.claim.jti.include",
    "sasl.oauthbearer.assertion.claim.nbf.seconds", "sasl.oauthbearer.assertion.claim.sub",
    "sasl.oauthbearer.assertion.file", "sasl.oauthbearer.assertion.jwt.template.file",
    "sasl.oauthbearer.metadata.authentication.type", "enable.sasl.oauthbearer.unsecure.jwt",
    "plugin.library.paths", "client.rack", "client.dns.lookup", "enable.metrics.push",
    # producer
    "transactional.id", "transaction.timeout.ms", "enable.idempotence",
    "enable.gapless.guarantee", "queue.buffering.max.messages", "queue.buffering.max.kbytes",
    "queue.buffering.max.ms", "linger.ms", "message.send.max.retries", "retries",
    "retry.backoff.ms", "retry.backoff.max.ms", "queue.buffering.backpressure.threshold",
    "compression.codec", "compression.type", "batch.num.messages", "batch.size",
    "delivery.report.only.error", "sticky.partitioning.linger.ms",
    # consumer (jobcompd consume reads the same file)
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "group.protocol", "group.remote.assignor",
    "coordinator.query.interval.ms", "max.poll.interval.ms", "enable.auto.commit",
    "auto.commit.interval.ms", "enable.auto.offset.store", "queued.min.messages",
    "queued.max.messages.kbytes", "fetch.wait.max.ms", "fetch.queue.backoff.ms",
    "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes",
    "fetch.min.bytes", "fetch.error.backoff.ms", "isolation.level", "enable.partition.eof",
    "check.crcs",
})
#: Topic-level properties, which a global configuration also takes with a "topic." prefix.
NON_SECRET_TOPIC = frozenset({
    "request.required.acks", "acks", "request.timeout.ms", "message.timeout.ms",
    "delivery.timeout.ms", "queuing.strategy", "produce.offset.report", "partitioner",
    "compression.codec", "compression.type", "compression.level", "auto.commit.enable",
    "enable.auto.commit", "auto.commit.interval.ms", "auto.offset.reset",
    "consume.callback.max.messages",
})
#: librdkafka's documented properties whose values grant access or may carry tokens; named
#: for suggestions ("did you mean sasl.password?"), never shown.
SECRET = frozenset({
    "sasl.password", "ssl.key.password", "ssl.key.pem", "ssl_key", "ssl.keystore.password",
    "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.extensions", "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.assertion.private.key.passphrase", "sasl.kerberos.kinit.cmd",
})
KNOWN = NON_SECRET | NON_SECRET_TOPIC | SECRET


def is_secret(key: str) -> bool:
    """Whether a librdkafka property's value must never be shown: every property but the
    documented non-secret ones (NON_SECRET, and NON_SECRET_TOPIC with or without "topic."),
    so that a misspelled ``sasl.pasword`` is as hidden as ``sasl.password``. Names are
    compared exactly, as librdkafka compares them."""
    name = key.strip(C_SPACE)
    if name in NON_SECRET:
        return False
    return name.removeprefix("topic.") not in NON_SECRET_TOPIC


def shown(prop: KafkaProperty) -> str:
    """The property's value as messages, logs and the status file may show it."""
    return "***" if is_secret(prop.key) else prop.value


def redacted(conf: dict[str, str]) -> dict[str, str]:
    """``conf`` with every value :func:`shown` would hide replaced by ``***``."""
    return {k: "***" if is_secret(k) else v for k, v in conf.items()}


def _masked(message: str, prop: KafkaProperty) -> str:
    """librdkafka's message about a secret property without its value: the value itself, and
    every quoted text but the property's names (an errstr cut at 512 bytes may hold only the
    start of the value)."""
    if prop.value:
        message = message.replace(prop.value, "***")
    return re.sub(r'"[^"]*("|$)', lambda m: m[0] if m[0].strip('"') in KNOWN | {prop.key}
                  else '"***"', message)


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
    loop; the first one it rejects (unknown name or invalid value) is a ConfigError. The
    message shows the value only of a documented non-secret property, and never for an
    unknown name (a misspelled secret)."""
    lib = _librdkafka()
    conf = lib.rd_kafka_conf_new()
    if not conf:
        raise ConfigError("rd_kafka_conf_new() failed (out of memory?)")
    try:
        for prop in props:
            _offer(lib, conf, prop, path)
    finally:
        lib.rd_kafka_conf_destroy(conf)


_CONF_UNKNOWN = -2


def _offer(lib: ctypes.CDLL, conf: int, prop: KafkaProperty, path: Path) -> None:
    """One rd_kafka_conf_set; a refusal is a ConfigError that names file, line and key."""
    key = f"{path}:{prop.line}: {clip(prop.key)}"
    if "\0" in prop.key or "\0" in prop.value:
        raise ConfigError(f"{key}={clip(shown(prop))}: contains a NUL character")
    errstr = ctypes.create_string_buffer(512)
    rc = lib.rd_kafka_conf_set(conf, prop.key.encode(), prop.value.encode(), errstr,
                               len(errstr))
    if rc == 0:  # RD_KAFKA_CONF_OK
        return
    msg = errstr.value.decode("utf-8", "replace").strip(C_SPACE) or "rejected by librdkafka"
    if rc == _CONF_UNKNOWN:
        raise ConfigError(f"{key}: {clip(msg, 600)}{suggest(prop.key, sorted(KNOWN))}")
    if is_secret(prop.key):
        msg = _masked(msg, prop)
    raise ConfigError(f"{key}={clip(shown(prop))}: {clip(msg, 600)}")


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
    "linger.ms": "linger.ms",
    "queue.buffering.max.ms": "linger.ms",
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
    _check_linger(props, path)


def _check_linger(props: Sequence[KafkaProperty], path: Path) -> None:
    """librdkafka refuses a producer whose records would time out while it holds them on
    purpose (linger.ms not below message.timeout.ms); say so here, where check sees it."""
    linger = last_property(props, "linger.ms")
    timeout = last_property(props, "message.timeout.ms")
    linger_ms = _c_integer(linger.value.strip(C_SPACE)) if linger is not None else None
    timeout_ms = _c_integer(
        timeout.value.strip(C_SPACE) if timeout is not None
        else PRODUCER_DEFAULTS["message.timeout.ms"])
    if linger is None or linger_ms is None or timeout_ms is None or timeout_ms == 0:
        return
    if linger_ms >= timeout_ms:
        where = (f"{timeout.key}={timeout.value} (line {timeout.line})" if timeout is not None
                 else f"jobcompd's default message.timeout.ms={timeout_ms}")
        raise ConfigError(
            f"{path}:{linger.line}: {linger.key}={linger.value} is not below {where}: every "
            "record would time out while librdkafka holds it back; lower linger.ms (a few "
            "milliseconds is plenty for jobcompd) or raise message.timeout.ms")


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
