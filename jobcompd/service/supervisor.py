"""The producer's health: when to replace it, and whether a broker answers.

A producer is replaced when librdkafka says it is beyond repair (a fatal error), when a
delivery report says so (see outcomes), or when it stalls: no report has come for
``stall_timeout``, the oldest record waiting for one was produced longer ago than
``stall_timeout`` plus the producer's ``linger.ms`` (librdkafka holds a record that long on
purpose before it sends it), and a broker answers a metadata request. The last one is real: an
idempotent producer whose broker lost its producer state raises no error and times out every
message for ever, while a new producer delivers at once. A stall while no broker answers is
an outage, not a wedge: the probe is asked again only after another ``stall_timeout``.

The supervisor decides; the daemon replaces the producer and re-sends (it owns the window).
It also keeps the broker's state and logs Kafka's errors, once per distinct error a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from confluent_kafka import KafkaError

from jobcompd.service.producer import Producer
from jobcompd.service.throttle import LogThrottle, broker_of

log = structlog.get_logger("jobcompd")

#: Timeout of the metadata request that tells a stalled producer from an unreachable broker.
PROBE_TIMEOUT_S = 3.0


class Supervisor:
    """Watches one producer after another; ``check`` says when to replace the current one."""

    def __init__(self, note_error: Callable[[str], None]) -> None:
        self._note_error = note_error
        #: repeats of one Kafka error reach the log once a minute, with their count.
        self.throttle = LogThrottle()
        self.broker_up: bool | None = None
        self._broker_down_at = 0.0
        self._progress_at = time.monotonic()
        self._next_probe = 0.0
        self._rebuild_reason: str | None = None
        self._last_error: str | None = None

    def progress(self) -> None:
        """A delivery report came, or a record went to an idle producer: not stalled."""
        self._progress_at = time.monotonic()

    def want_rebuild(self, reason: str) -> None:
        """Replace the producer at the next check (a delivery report or produce() said so)."""
        self._rebuild_reason = reason

    def rebuilt(self) -> None:
        """A new producer: its stall is measured from now, and probed at once if due."""
        self._progress_at = time.monotonic()
        self._next_probe = 0.0

    def check(self, producer: Producer, *, oldest_sent_at: Callable[[], float | None],
              stall_timeout_s: float, linger_s: float, now: float) -> str | None:
        """Log what the error callback saw, and return why the producer must be replaced
        (None: it may stay). ``oldest_sent_at``: when the record that has waited longest for
        its report was produced (asked only when no report came for ``stall_timeout_s``)."""
        health = producer.health
        for err in health.errors:
            self._last_error = err.str()
            self._note_error(err.str())
            self._log_kafka_error(err)
            if err.code() == KafkaError._ALL_BROKERS_DOWN:
                self.set_broker_up(False)
        health.errors.clear()
        if health.fatal is not None and self._rebuild_reason is None:
            self._rebuild_reason = f"fatal producer error: {health.fatal.str()}"
        if self._rebuild_reason is None and self._stalled(oldest_sent_at, stall_timeout_s,
                                                          linger_s, now):
            up = producer.probe(PROBE_TIMEOUT_S)
            self.set_broker_up(up)
            if up:
                self._rebuild_reason = (f"no delivery report for {stall_timeout_s:g} s while "
                                        "the broker answers")
            else:
                self._next_probe = time.monotonic() + stall_timeout_s
        reason, self._rebuild_reason = self._rebuild_reason, None
        return reason

    def _stalled(self, oldest_sent_at: Callable[[], float | None], stall_timeout_s: float,
                 linger_s: float, now: float) -> bool:
        if now < self._next_probe or now - self._progress_at < stall_timeout_s:
            return False
        oldest = oldest_sent_at()
        return oldest is not None and now - oldest >= stall_timeout_s + linger_s

    def probe(self, producer: Producer) -> bool:
        """Does a broker answer right now? (Recorded as the broker's state.)"""
        up = producer.probe(PROBE_TIMEOUT_S)
        self.set_broker_up(up)
        return up

    def set_broker_up(self, up: bool) -> None:
        """Whether a broker answers; the changes are logged, not every report."""
        was, self.broker_up = self.broker_up, up
        if up == was:
            return
        now = time.monotonic()
        if not up:
            self._broker_down_at = now
            log.warning("broker_unreachable", error=self._last_error,
                        detail="records stay in the spool and are sent once a broker answers")
            return
        held = self.throttle.reset()
        if was is False:
            log.info("broker_reachable", down_s=round(now - self._broker_down_at, 1),
                     repeats_not_logged=held)

    def _log_kafka_error(self, err: KafkaError) -> None:
        """One line per distinct error (code and broker) per minute, fatal ones always."""
        held = 0
        if not err.fatal():
            held = self.throttle.admit(("kafka_error", err.name(), broker_of(err.str())))
            if held is None:
                return
        fields = {"repeated": held} if held else {}
        log.warning("kafka_error", error=err.str(), code=err.name(), fatal=err.fatal(), **fields)
