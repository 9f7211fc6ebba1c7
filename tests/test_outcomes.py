"""A delivery report's outcome, for every kind of error librdkafka gives."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from jobcompd.service import outcomes


def of(code: int | None, *, answers: bool = False, waited: float = 0.0, after: float = 0.0,
       fatal: bool = False, retriable: bool = False) -> outcomes.Outcome:
    asked: list[bool] = []

    def broker_answers() -> bool:
        asked.append(True)
        return answers

    err = None if code is None else KafkaError(code, fatal=fatal, retriable=retriable)
    out = outcomes.of_report(err, broker_answers=broker_answers, waited_s=waited,
                             dead_letter_after_s=after)
    if code != KafkaError._MSG_TIMED_OUT:
        assert not asked, "the broker is asked only about a timeout"
    return out


def test_delivered():
    assert of(None).action == outcomes.DELIVERED


def test_a_timeout_while_the_broker_answers_means_a_wedged_producer():
    out = of(KafkaError._MSG_TIMED_OUT, answers=True)
    assert out.action == outcomes.REBUILD and out.maybe_arrived


@pytest.mark.parametrize(("waited", "after", "action"), [
    (86400 * 7, 0, outcomes.RETRY),  # the default: a week's outage is waited out
    (59, 60, outcomes.RETRY),
    (61, 60, outcomes.DEAD_LETTER),  # dead_letter_after=60, and it has waited longer
])
def test_a_timeout_while_no_broker_answers_waits_unless_dead_letter_after_passed(
        waited, after, action):
    out = of(KafkaError._MSG_TIMED_OUT, waited=waited, after=after)
    assert out.action == action and out.maybe_arrived
    if action == outcomes.DEAD_LETTER:
        assert out.reason == "timeout"


@pytest.mark.parametrize("code", [KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT])
def test_purged_records_are_held(code):
    assert of(code).action == outcomes.HOLD


@pytest.mark.parametrize("code", [KafkaError.PRODUCER_FENCED, KafkaError.UNKNOWN_PRODUCER_ID,
                                  KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER])
def test_producer_state_errors_rebuild_and_mark_a_redelivery(code):
    out = of(code)
    assert out.action == outcomes.REBUILD and out.maybe_arrived and "producer error" in out.reason


def test_a_fatal_error_rebuilds():
    assert of(KafkaError._TRANSPORT, fatal=True).action == outcomes.REBUILD


@pytest.mark.parametrize("code", [KafkaError.MSG_SIZE_TOO_LARGE,
                                  KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                  KafkaError._UNKNOWN_TOPIC])
def test_permanent_errors_dead_letter_with_the_error_name(code):
    out = of(code)
    assert out.action == outcomes.DEAD_LETTER
    assert out.reason == f"kafka:{KafkaError(code).name()}"


def test_unknown_errors_retry_when_retriable_else_dead_letter():
    assert of(KafkaError.NOT_ENOUGH_REPLICAS, retriable=True).action == outcomes.RETRY
    assert of(KafkaError.NOT_ENOUGH_REPLICAS).action == outcomes.DEAD_LETTER


def test_a_produce_error_never_counts_as_maybe_arrived():
    for code in (KafkaError.PRODUCER_FENCED, KafkaError.MSG_SIZE_TOO_LARGE,
                 KafkaError._QUEUE_FULL):
        assert not outcomes.of_produce_error(KafkaError(code)).maybe_arrived
    assert (outcomes.of_produce_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)).action
            == outcomes.DEAD_LETTER)
