"""Reach the broker the way the daemon would, and say in one sentence why it failed.

For ``jobcompd check --connect`` and ``jobcompd consume``: a librdkafka client whose own log
lines are kept (not printed: unreachable, librdkafka logs a line per reconnect, hundreds in
ten seconds) and whose error callback is collected, so that the operator gets one verdict with
the real cause, e.g. ``cannot reach the broker at 127.0.0.1:9: Connection refused``.
"""

from __future__ import annotations

import re
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from jobcompd import config as configmod

#: How long check and consume wait for a broker's first answer (README: "within 10 s").
REACH_TIMEOUT_S = 10.0

# "sasl_ssl://host:9093/bootstrap: Connect to ipv4#1.2.3.4:9093 failed: Connection refused
#  (after 0ms in state CONNECT, 3 identical error(s) suppressed)"
_BROKER_ERROR = re.compile(r"^(?:[a-z_]+://)?(?P<broker>.+?)/(?:bootstrap|-?\d+): (?P<text>.*)$")
_AFTER = re.compile(r"\s*\(after \d+ms in state [A-Z_]+"
                    r"(?:, \d+ identical error\(s\) suppressed)?\)$")
_CONNECT = re.compile(r"^Connect to \S+ failed: (?P<why>.*)$")

#: Errors that waiting does not cure: the verdict is given at once.
_FINAL = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION, KafkaError._SSL})


def bootstrap(cfg: configmod.Config) -> tuple[str, str]:
    """bootstrap.servers and where it is set (key, file and line), for messages."""
    prop = configmod.last_property(cfg.kafka, "bootstrap.servers")
    if prop is None:
        return "", f"bootstrap.servers in {cfg.job_comp_loc}"
    return prop.value, f"{prop.key}, {cfg.job_comp_loc}:{prop.line}"


class QuietLog:
    """A ``logger`` for librdkafka that keeps its lines (the last 200) instead of printing."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=200)

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self.lines.append(" ".join(str(a) for a in args) if args else fmt)


@dataclass
class Errors:
    """librdkafka's ``error_cb``: every error, in order."""

    seen: list[KafkaError] = field(default_factory=list)

    def __call__(self, err: KafkaError) -> None:
        self.seen.append(err)


def quiet_conf(conf: dict[str, str]) -> tuple[dict[str, Any], Errors, QuietLog]:
    """``conf`` plus a collecting error callback and a logger that prints nothing."""
    errors, quiet = Errors(), QuietLog()
    full: dict[str, Any] = dict(conf)
    full["error_cb"] = errors
    full["logger"] = quiet
    return full, errors, quiet


@dataclass(frozen=True)
class Reached:
    """What one metadata request told: the brokers (id -> (host, port)) and the topics."""

    brokers: dict[int, tuple[str, int]]
    topics: dict[str, Any]


def reach(list_topics: Callable[..., Any], serve: Callable[[float], Any], errors: Errors,
          timeout: float = REACH_TIMEOUT_S) -> Reached | None:
    """Ask for the cluster's metadata until it comes or ``timeout`` passes; None when no broker
    answered (``errors`` then holds why). ``serve`` is the client's poll, which runs the error
    callback; it stops early on an error that waiting does not cure (every bootstrap broker
    down, authentication, TLS)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            md = list_topics(timeout=max(0.1, min(1.0, left)))
        except KafkaException:
            serve(0)
            if time.monotonic() >= deadline or any(e.code() in _FINAL for e in errors.seen):
                return None
            continue
        serve(0)
        brokers = {b.id: (b.host, b.port) for b in md.brokers.values()}
        return Reached(brokers, dict(md.topics))


def _reason(text: str) -> tuple[str | None, str]:
    """(broker, cause) of one librdkafka error string; broker None for a cluster-wide one."""
    m = _BROKER_ERROR.match(text)
    if not m:
        return None, _AFTER.sub("", text)
    cause = _AFTER.sub("", m["text"])
    connect = _CONNECT.match(cause)
    return m["broker"], connect["why"] if connect else cause


def _hint(err: KafkaError, cause: str, conf: dict[str, str]) -> str:
    code = err.code()
    protocol = conf.get("security.protocol", "plaintext")
    if code == KafkaError._RESOLVE:
        return "check the host name in bootstrap.servers"
    if code == KafkaError._AUTHENTICATION:
        return "check sasl.mechanism, sasl.username and sasl.password"
    if code == KafkaError._SSL:
        return "check ssl.ca.location and that the listener speaks TLS"
    if "Connection refused" in cause:
        return "is the broker running, and listening on that address and port?"
    if "Invalid response size" in cause or code == KafkaError._BAD_MSG:
        return (f"that port does not speak Kafka with security.protocol={protocol}: is it the "
                "broker's port, and does the listener expect TLS or SASL?")
    return ""


def verdict(errors: Errors, servers: str, where: str, conf: dict[str, str],
            timeout: float = REACH_TIMEOUT_S) -> str:
    """One sentence: which broker could not be reached and why, and what to check.

    ``where`` names the setting (``bootstrap.servers, /etc/jobcompd/rdkafka.conf:3``)."""
    causes: dict[str, tuple[str, KafkaError]] = {}
    cluster: list[str] = []
    for err in errors.seen:
        broker, cause = _reason(err.str())
        if broker is None:
            if err.code() != KafkaError._ALL_BROKERS_DOWN and cause not in cluster:
                cluster.append(cause)
        else:
            causes[broker] = (cause, err)  # the latest word per broker
    listed = [s.strip() for s in servers.split(",") if s.strip()]
    if causes:
        hints = [h for h in (_hint(e, c, conf) for c, e in causes.values()) if h]
        if len(causes) == 1 and len(listed) == 1:
            ((broker, (cause, _)),) = causes.items()
            text = f"cannot reach the broker at {broker}: {cause}"
        else:
            each = "; ".join(f"{b}: {c}" for b, (c, _) in causes.items())
            text = f"cannot reach any broker of {servers}: {each}"
        hint = f"; {hints[0]}" if hints else ""
        return f"{text} ({where}){hint}"
    if cluster:
        return f"cannot reach the broker at {servers} ({where}): {'; '.join(cluster)}"
    protocol = conf.get("security.protocol", "plaintext")
    return (f"no broker answered at {servers} within {timeout:g} s ({where}), and no error "
            "came back: packets dropped by a firewall, a wrong address, or a listener that "
            f"does not speak security.protocol={protocol}")


def unreachable_advertised(brokers: dict[int, tuple[str, int]],
                           timeout: float = 3.0) -> list[str]:
    """The brokers a bootstrap server named (advertised listeners) that this host cannot
    open a TCP connection to: librdkafka sends records to those, not to the bootstrap
    address, so a wrong advertised.listeners leaves every record waiting."""
    bad = []
    for broker_id, (host, port) in sorted(brokers.items()):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as e:
            why = e.strerror or (str(e) if str(e) else type(e).__name__)
            bad.append(f"broker {broker_id} at {host}:{port}: {why}")
    return bad
