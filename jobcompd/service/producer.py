"""The Kafka side: one confluent-kafka Producer at a time, and what it reported.

librdkafka's queue is used as a bounded window, never as a store: the daemon decides what to
produce and when (back-pressure), and the spool file stays the durable copy until a delivery
report says ``NO_ERROR``. Callbacks here only *record* outcomes (calling producer methods from
inside a callback has crashed confluent-kafka); the daemon's main loop acts on them.

A producer can be replaced at any time (fatal error, a producer that stopped delivering while the
broker answers, changed properties on reload). Every produced message carries the generation of the
producer it went through, so reports that straggle in from a discarded producer are recognised.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import confluent_kafka
import structlog
from confluent_kafka import KafkaError, KafkaException

from jobcompd.log import KafkaLogAdapter
from jobcompd.service.throttle import LogThrottle

#: Value of the ``schema`` header: the version of the payload format (Slurm's jobcomp JSON).
SCHEMA_VERSION = b"1"

log = structlog.get_logger("jobcompd.producer")


@dataclass(slots=True, eq=False)
class Message:
    """One spool record on its way to Kafka; lives in the window until acknowledged."""

    name: str  # spool file name: the record's identity in the window
    job_id: int
    event: str  # "job_end" | "job_start"
    key: bytes
    value: bytes
    record_id: str
    arrived_ns: int  # when the hook wrote it (from the file name), for drop-to-ack latency
    topic: str = ""
    redelivery: bool = False  # it may already have reached the broker once
    attempts: int = 0
    generation: int = -1  # producer generation it was last produced on; -1 = not on a producer
    produced_at: float = 0.0  # monotonic
    first_produced_at: float = 0.0  # monotonic, in this run; 0 = not produced yet
    retry_at: float = 0.0  # monotonic; 0 = not waiting for a retry
    state: str = ""  # where it stands in the window (service/window.py)

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("event", self.event.encode()),
            ("jobcompd-id", self.record_id.encode()),
            ("schema", SCHEMA_VERSION),
        ]
        if self.redelivery:
            headers.append(("redelivery", b"1"))
        return headers


class Report(NamedTuple):
    """A delivery report, as recorded by the callback (a named tuple: one is made per
    record, and a frozen dataclass costs four times as much to build)."""

    message: Message
    generation: int
    error: KafkaError | None
    partition: int = -1
    offset: int = -1


@dataclass(slots=True)
class ProducerHealth:
    """What the error callback saw; read and cleared by the main loop."""

    fatal: KafkaError | None = None
    last_error: str | None = None
    errors: list[KafkaError] = field(default_factory=list)


class Producer:
    """Owns the current confluent-kafka Producer and rebuilds it on demand."""

    def __init__(self, conf: dict[str, str],
                 stats: Callable[[str], None] | None = None,
                 throttle: LogThrottle | None = None) -> None:
        self._stats = stats
        self._throttle = throttle
        self.generation = 0
        self.health = ProducerHealth()
        self._reports: list[Report] = []
        self._conf = dict(conf)
        self._p = self._build(self._conf)

    @property
    def conf(self) -> dict[str, str]:
        """The properties the current producer was built with."""
        return dict(self._conf)

    # -- building -------------------------------------------------------------------------

    def _build(self, conf: dict[str, str]) -> confluent_kafka.Producer:
        full: dict[str, Any] = dict(conf)
        full["error_cb"] = self._on_error
        full["logger"] = KafkaLogAdapter(self._throttle)
        if self._stats is not None and int(conf.get("statistics.interval.ms", "0") or 0) > 0:
            full["stats_cb"] = self._stats  # served from poll(), on the main loop's thread
        return confluent_kafka.Producer(full)

    def rebuild(self, conf: dict[str, str] | None = None) -> list[Report]:
        """Replace the producer; return the reports the old one gave while being purged.

        The new producer is built first, so a configuration librdkafka refuses leaves the old one
        in place (KafkaException propagates). The old one is purged (queue and in-flight) and
        its purge reports collected: ``_PURGE_QUEUE`` means never sent, ``_PURGE_INFLIGHT`` means
        it may have arrived. It is then dropped without ``flush()``/``close()``, which could wait
        forever for a broker that does not answer.
        """
        new_conf = dict(conf) if conf is not None else self._conf
        new = self._build(new_conf)
        old, self._p = self._p, new
        self._conf = new_conf
        old.purge(in_queue=True, in_flight=True, blocking=False)
        with contextlib.suppress(KafkaException):  # its fatal error is why it is replaced
            old.poll(0)
        reports, self._reports = self._reports, []
        del old
        self.generation += 1
        self.health = ProducerHealth()
        return reports

    # -- producing ------------------------------------------------------------------------

    def produce(self, msg: Message) -> None:
        """Hand one message to librdkafka. Raises BufferError when its queue is full."""
        self._p.produce(
            msg.topic,
            value=msg.value,
            key=msg.key,
            headers=msg.headers(),
            on_delivery=functools.partial(self._on_delivery, msg, self.generation),
        )
        msg.generation = self.generation
        msg.produced_at = time.monotonic()
        if not msg.first_produced_at:
            msg.first_produced_at = msg.produced_at

    def _on_delivery(
        self, msg: Message, generation: int, err: KafkaError | None, kmsg: Any
    ) -> None:
        if err is None:
            self._reports.append(Report(msg, generation, None, kmsg.partition(), kmsg.offset()))
        else:
            self._reports.append(Report(msg, generation, err))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.health.fatal = err
        self.health.last_error = err.str()
        self.health.errors.append(err)

    def poll(self, timeout: float) -> list[Report]:
        """Serve callbacks for up to ``timeout`` seconds; return the reports recorded."""
        self._serve(self._p.poll, timeout)
        reports, self._reports = self._reports, []
        return reports

    def _serve(self, call: Callable[..., Any], *args: float) -> None:
        """Call poll()/flush(), recording a fatal error the way the error callback would.

        confluent-kafka (2.16) raises a fatal producer error as a KafkaException out of poll()
        and flush() instead of calling error_cb; the main loop must see it, not crash on it.
        """
        try:
            call(*args)
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if err is None:
                raise
            self._on_error(err)

    def outstanding(self) -> int:
        """Messages librdkafka still holds (queued or in flight)."""
        return len(self._p)

    def probe(self, timeout: float) -> bool:
        """Does a broker answer a metadata request right now?"""
        try:
            self._p.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    def topic_exists(self, topic: str, timeout: float) -> bool | None:
        """True/False when the broker answered, None when it did not."""
        try:
            md = self._p.list_topics(topic=topic, timeout=timeout)
        except KafkaException:
            return None
        t = md.topics.get(topic)
        return t is not None and t.error is None

    # -- shutting down --------------------------------------------------------------------

    def shutdown(self, flush_timeout_ms: int) -> list[Report]:
        """Purge what was never sent, give in-flight messages ``flush_timeout`` to be
        acknowledged, and return every report served meanwhile.

        ``flush_timeout`` -1 waits for every in-flight message (Slurm's meaning); 0 does not wait.
        """
        self._p.purge(in_queue=True, in_flight=False, blocking=True)
        if flush_timeout_ms < 0:
            self._serve(self._p.flush)
        else:
            self._serve(self._p.flush, flush_timeout_ms / 1000.0)
        self._serve(self._p.poll, 0)
        reports, self._reports = self._reports, []
        return reports

    def abandon(self) -> None:
        """Drop what is still in flight so the process can exit without waiting for it."""
        self._p.purge(in_queue=True, in_flight=True, blocking=False)
        self._serve(self._p.poll, 0)
        self._reports = []


def is_timeout(err: KafkaError) -> bool:
    return err.code() == KafkaError._MSG_TIMED_OUT


def is_purge(err: KafkaError) -> bool:
    return err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


#: Errors about the producer's own state (idempotence bookkeeping, fencing): the message is fine,
#: a new producer with a new producer id delivers it. Seen in practice: a broker that was paused
#: past message.timeout.ms answers PRODUCER_FENCED after librdkafka bumped its epoch.
_PRODUCER_ERRORS = frozenset({
    KafkaError._FATAL,
    KafkaError._FENCED,
    KafkaError._INCONSISTENT,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.INVALID_PRODUCER_ID_MAPPING,
    KafkaError.DUPLICATE_SEQUENCE_NUMBER,
})

#: Errors about the message or its topic that another attempt will not fix: dead-letter it.
_PERMANENT_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
    KafkaError.POLICY_VIOLATION,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._INVALID_ARG,
    KafkaError.INVALID_REQUIRED_ACKS,
})

PRODUCER = "producer"
PERMANENT = "permanent"
RETRY = "retry"


def classify(err: KafkaError) -> str:
    """What to do about a failed delivery (other than a timeout or our own purge).

    ``PRODUCER``: replace the producer and send again; ``PERMANENT``: dead-letter;
    ``RETRY``: send again after a backoff. An error jobcompd does not know is retried when
    librdkafka calls it retriable, else dead-lettered (``jobcompd failed retry`` brings it back).
    """
    code = err.code()
    if code in _PRODUCER_ERRORS or err.fatal():
        return PRODUCER
    if code in _PERMANENT_ERRORS:
        return PERMANENT
    return RETRY if err.retriable() else PERMANENT
