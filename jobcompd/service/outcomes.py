"""What a delivery report means for its record: one decision, in one place.

librdkafka reports every message once: delivered, or an error. The daemon's answer depends
only on the error and on two facts it knows (does a broker answer right now; does the
configuration keep records that timed out), so it is a pure function here and the daemon
carries it out: unlink the file, send the record again now on a new producer, send it again
after a backoff, keep it for the next start, or move it to failed/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from confluent_kafka import KafkaError

from jobcompd.service.producer import PERMANENT, PRODUCER, classify, is_purge, is_timeout

DELIVERED = "delivered"
#: The producer is at fault (wedged, fenced, fatal): send the record again on a new one.
REBUILD = "rebuild"
RETRY = "retry"
DEAD_LETTER = "dead_letter"
#: Purged at shutdown: it stays in the spool.
HOLD = "hold"


class Outcome(NamedTuple):
    action: str
    #: DEAD_LETTER: the reason code (``timeout``, ``kafka:<ERROR>``); REBUILD: why.
    reason: str = ""
    #: The broker may have written the record already: its next copy is marked redelivery.
    maybe_arrived: bool = False


_DELIVERED = Outcome(DELIVERED)
_HOLD = Outcome(HOLD)


def of_report(err: KafkaError | None, *, broker_answers: Callable[[], bool],
              waited_s: float = 0.0, dead_letter_after_s: float = 0.0) -> Outcome:
    """The outcome of a delivery report whose error is ``err`` (None: delivered).

    ``broker_answers`` is asked only for a timeout, since asking costs a metadata request: a
    record that timed out while a broker answers means the producer is wedged (an idempotent
    producer whose broker forgot its state does this), not that the broker is away. A record
    that timed out while no broker answers waits for it, however long, unless the operator
    set ``dead_letter_after`` (``dead_letter_after_s``, 0: never) and the record has waited
    longer than that since it was first sent (``waited_s``).
    """
    if err is None:
        return _DELIVERED
    if is_timeout(err):
        if broker_answers():
            return Outcome(REBUILD, "messages time out while the broker answers", True)
        if dead_letter_after_s and waited_s > dead_letter_after_s:
            return Outcome(DEAD_LETTER, "timeout", True)
        return Outcome(RETRY, maybe_arrived=True)
    if is_purge(err):
        return _HOLD
    kind = classify(err)
    if kind == PRODUCER:
        return Outcome(REBUILD, f"producer error: {err.str()}", True)
    if kind == PERMANENT:
        return Outcome(DEAD_LETTER, f"kafka:{err.name()}")
    return Outcome(RETRY, maybe_arrived=True)


def of_produce_error(err: KafkaError) -> Outcome:
    """The outcome of a produce() call that raised: the record never left, so it cannot
    have arrived."""
    kind = classify(err)
    if kind == PRODUCER:
        return Outcome(REBUILD, f"producer error: {err.str()}")
    if kind == PERMANENT:
        return Outcome(DEAD_LETTER, f"kafka:{err.name()}")
    return Outcome(RETRY)
