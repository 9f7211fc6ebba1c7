"""Window to Kafka and back: producing the queued records, acting on delivery reports,
replacing the producer when the supervisor says so.

The record's file stays the durable copy until a ``NO_ERROR`` report: then it is handed to the
retirer. Every other outcome (service/outcomes.py) leaves it in new/ (sent again, now or after
a backoff) or moves it to failed/. Replacing the producer sends everything it held again,
marked ``redelivery`` when it may have arrived already.
"""

from __future__ import annotations

import time

import structlog
from confluent_kafka import KafkaError, KafkaException

from jobcompd import records
from jobcompd.config import Config
from jobcompd.service import outcomes
from jobcompd.service.intake import DeadLetters
from jobcompd.service.metrics import Metrics
from jobcompd.service.producer import Message, Producer, Report, is_timeout
from jobcompd.service.supervisor import Supervisor
from jobcompd.service.telemetry import Telemetry
from jobcompd.service.window import Window
from jobcompd.spool.retirer import Retirer

log = structlog.get_logger("jobcompd")

#: librdkafka statistics interval when metrics are on and JobCompLoc sets none.
STATS_INTERVAL_MS = 30_000
#: First retry delay after a failed delivery; doubles up to retry_backoff_max.
RETRY_BACKOFF_MIN_S = 1.0


def linger_s(conf: dict[str, str]) -> float:
    """How long librdkafka holds a record before sending it (linger.ms, alias
    queue.buffering.max.ms; librdkafka's default 5 ms)."""
    value = conf.get("linger.ms", conf.get("queue.buffering.max.ms", "5"))
    try:
        return float(value) / 1000.0
    except ValueError:
        return 0.005


class Delivery:
    """The producing side of the pipeline, over one producer at a time."""

    def __init__(self, config: Config, producer: Producer, *, window: Window,
                 supervisor: Supervisor, telemetry: Telemetry, metrics: Metrics,
                 retirer: Retirer, dead_letters: DeadLetters) -> None:
        self.config = config
        self.producer = producer
        self.linger_s = linger_s(producer.conf)
        self._window = window
        self._supervisor = supervisor
        self._telemetry = telemetry
        self._metrics = metrics
        self._retirer = retirer
        self._dead_letters = dead_letters

    # -- producing ------------------------------------------------------------------------

    def produce_queued(self, now: float | None = None) -> None:
        """Produce the queued records in order (after releasing the backoffs due by ``now``),
        until librdkafka has no room."""
        if now is not None:
            self._window.release_due(now)
        while (msg := self._window.next_queued()) is not None:
            if not self._send(msg):
                return

    def _send(self, msg: Message) -> bool:
        """Produce one message; False when librdkafka's queue is full or the producer must be
        replaced (the message is first in line again)."""
        p = self.config.params
        msg.topic = p.topic_job_start if msg.event == records.EVENT_START else p.topic
        if self.producer.outstanding() == 0:
            self._supervisor.progress()
        try:
            self.producer.produce(msg)
        except BufferError:
            self._window.put_back(msg)
            return False
        except KafkaException as e:
            err: KafkaError = e.args[0]
            outcome = outcomes.of_produce_error(err)
            if outcome.action == outcomes.REBUILD:
                self._window.put_back(msg)
                self._supervisor.want_rebuild(outcome.reason)
                return False
            if outcome.action == outcomes.DEAD_LETTER:
                self._dead_letter(msg, outcome.reason, err.str())
            else:
                self._retry_later(msg, err)
            return True
        self._window.sent(msg)
        msg.attempts += 1
        if self.config.debug_jobcomp:
            log.debug("produced", job_id=msg.job_id, job_event=msg.event, file=msg.name,
                      topic=msg.topic, attempt=msg.attempts)
        return True

    # -- delivery reports -----------------------------------------------------------------

    def handle_reports(self, reports: list[Report]) -> None:
        if not reports:
            return
        gen = self.producer.generation
        probe: list[bool] = []

        def broker_answers() -> bool:
            if not probe:  # one metadata request per batch of reports, and only if asked
                probe.append(self._supervisor.probe(self.producer))
            return probe[0]

        patience = self.config.params.dead_letter_after_s
        for rep in reports:
            if rep.generation != gen:
                continue  # from a producer that was replaced: its message was sent again
            msg = self._window.current(rep)
            if msg is None:
                continue
            self._supervisor.progress()
            outcome = outcomes.of_report(
                rep.error, broker_answers=broker_answers,
                waited_s=time.monotonic() - msg.first_produced_at, dead_letter_after_s=patience)
            self._carry_out(msg, rep, outcome)

    def _carry_out(self, msg: Message, rep: Report, outcome: outcomes.Outcome) -> None:
        """Act on a delivery report's outcome for its record."""
        action, err = outcome.action, rep.error
        if action == outcomes.DELIVERED:
            self._delivered(msg, rep)
            return
        if action == outcomes.HOLD:
            self._window.hold(msg)  # only during shutdown: stays in the spool
            return
        assert err is not None
        if not is_timeout(err):
            self._telemetry.note_error(err.str())
        if outcome.maybe_arrived:
            msg.redelivery = True
        if action == outcomes.REBUILD:
            self._window.requeue(msg)
            self._supervisor.want_rebuild(outcome.reason)
        elif action == outcomes.DEAD_LETTER:
            self._dead_letter(msg, outcome.reason, err.str())
        else:
            self._retry_later(msg, err)

    def _delivered(self, msg: Message, rep: Report) -> None:
        self._window.remove(msg)
        self._retirer.retire(msg.name)
        if self._supervisor.broker_up is not True:
            self._supervisor.set_broker_up(True)
        self._telemetry.delivered(msg.arrived_ns)
        if self.config.debug_jobcomp:
            log.debug("delivered", job_id=msg.job_id, job_event=msg.event, file=msg.name,
                      topic=msg.topic, partition=rep.partition, offset=rep.offset,
                      attempts=msg.attempts)

    def _retry_later(self, msg: Message, err: KafkaError) -> None:
        """Send again after a backoff that doubles with each attempt."""
        delay = min(
            self.config.params.retry_backoff_max_s,
            RETRY_BACKOFF_MIN_S * 2 ** min(msg.attempts - 1, 16),
        )
        self._window.back_off(msg, time.monotonic() + delay)
        self._telemetry.retried()
        if self.config.debug_jobcomp:
            log.debug("delivery_retry", job_id=msg.job_id, job_event=msg.event, file=msg.name,
                      error=err.str(), retry_in=round(delay, 1), attempts=msg.attempts)
        held = self._supervisor.throttle.admit(("delivery_retry", err.name()))
        if held is not None:
            log.warning("deliveries_retrying", error=err.str(), code=err.name(),
                        retry_in=round(delay, 1), **({"repeated": held} if held else {}),
                        detail="the records stay in new/ and are sent again; "
                        "DebugFlags=JobComp logs each one")

    def _dead_letter(self, msg: Message, reason: str, message: str) -> None:
        self._window.remove(msg)
        self._dead_letters.put(msg.name, reason, message, msg.job_id, attempts=msg.attempts,
                               job_event=msg.event)

    # -- the producer ---------------------------------------------------------------------

    def check_producer(self, now: float) -> None:
        """Replace the producer when the supervisor finds it beyond repair or stalled."""
        reason = self._supervisor.check(self.producer,
                                        oldest_sent_at=self._window.oldest_sent_at,
                                        stall_timeout_s=self.config.params.stall_timeout_s,
                                        linger_s=self.linger_s, now=now)
        if reason is not None:
            self.rebuild(reason)

    def rebuild(self, reason: str, conf: dict[str, str] | None = None, *,
                intended: bool = False) -> bool:
        """Replace the producer and queue every unacknowledged record to be sent again.

        ``intended``: asked for by the operator (a reload with new librdkafka properties), so
        logged at info and not counted with the rebuilds that mean trouble (the churn alert).
        """
        old_gen = self.producer.generation
        try:
            reports = self.producer.rebuild(conf)
        except KafkaException as e:
            log.error("producer_rebuild_failed", reason=reason, error=str(e))
            return False
        self.linger_s = linger_s(self.producer.conf)
        if not intended:
            self._telemetry.rebuilt()
        self._metrics.forget_librdkafka_stats()
        unsent = self.settle(reports, old_gen)
        resend = self._window.sent_on(old_gen)
        for msg in resend:
            if msg.name not in unsent:
                msg.redelivery = True  # it was on the wire: it may have arrived
        self._window.resend_first(resend)
        self._supervisor.rebuilt()
        (log.info if intended else log.warning)(
            "producer_rebuilt", reason=reason, resent=len(resend),
            generation=self.producer.generation)
        return True

    def settle(self, reports: list[Report], generation: int) -> set[str]:
        """Act on what a purged producer reported: a delivery still counts. Returns the names
        purged from librdkafka's queue before they were ever sent (so not possibly delivered)."""
        unsent: set[str] = set()
        for rep in reports:
            msg = self._window.current(rep) if rep.generation == generation else None
            if msg is None:
                continue
            if rep.error is None:
                self._delivered(msg, rep)
            elif rep.error.code() == KafkaError._PURGE_QUEUE:
                unsent.add(msg.name)
        return unsent

    def shut_down(self) -> tuple[list[str], list[str]]:
        """Purge what was never sent, give the rest ``flush_timeout``; return the names still
        unacknowledged: (pending: never on the wire, in flight: may have arrived)."""
        gen = self.producer.generation
        reports = self.producer.shutdown(self.config.params.flush_timeout_ms)
        purged_queue = self.settle(reports, gen)
        sent = {m.name for m in self._window.sent_on(gen)} - purged_queue
        pending, in_flight = [], []
        for msg in self._window:
            (in_flight if msg.name in sent else pending).append(msg.name)
        self.producer.abandon()
        return sorted(pending), sorted(in_flight)


def producer_config(cfg: Config) -> dict[str, str]:
    """The Config's producer properties, plus librdkafka statistics every
    STATS_INTERVAL_MS when metrics are exported and the operator chose no interval."""
    conf = cfg.producer_config()
    metrics_on = cfg.metrics_listen is not None or cfg.metrics_textfile is not None
    if metrics_on and "statistics.interval.ms" not in conf:
        conf["statistics.interval.ms"] = str(STATS_INTERVAL_MS)
    return conf
