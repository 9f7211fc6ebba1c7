"""The in-flight window's state machine: queued, sent, backing off, held; stale reports."""

from __future__ import annotations

from jobcompd.service.producer import Message, Report
from jobcompd.service.window import BACKING_OFF, HELD, QUEUED, SENT, Window


def msg(n: int) -> Message:
    return Message(name=f"{n}.{n}.end.env", job_id=n, event="job_end", key=b"k", value=b"v",
                   record_id=str(n), arrived_ns=1000 + n)


def send(w: Window, generation: int) -> list[Message]:
    """Everything queued, as the daemon's produce loop hands it to a producer."""
    out = []
    while (m := w.next_queued()) is not None:
        m.generation = generation
        w.sent(m)
        out.append(m)
    return out


def test_records_are_produced_in_the_order_they_came():
    w = Window()
    for n in (1, 2, 3):
        w.admit(msg(n))
    assert [m.job_id for m in send(w, 0)] == [1, 2, 3]
    assert all(m.state == SENT for m in w) and len(w) == 3
    assert w.oldest_sent_at() is not None and w.oldest_arrived_ns() == 1001


def test_a_record_put_back_is_first_in_line():
    w = Window()
    a, b = msg(1), msg(2)
    w.admit(a)
    w.admit(b)
    first = w.next_queued()
    w.put_back(first)  # librdkafka's queue was full
    assert [m.job_id for m in send(w, 0)] == [1, 2]


def test_a_report_settles_only_the_record_as_it_was_sent():
    w = Window()
    a = msg(1)
    w.admit(a)
    send(w, 0)
    assert w.current(Report(a, 0, None)) is a
    assert w.current(Report(a, 1, None)) is None  # another producer's report
    w.requeue(a)
    assert w.current(Report(a, 0, None)) is None  # queued again since: stale
    send(w, 1)
    assert w.current(Report(a, 1, None)) is a
    w.remove(a)
    assert w.current(Report(a, 1, None)) is None and len(w) == 0 and "1.1.end.env" not in w


def test_backoffs_join_the_queue_when_due_and_only_then():
    w = Window()
    a, b = msg(1), msg(2)
    for m in (a, b):
        w.admit(m)
    send(w, 0)
    w.back_off(b, retry_at=20.0)
    w.back_off(a, retry_at=10.0)
    assert a.state == b.state == BACKING_OFF and w.next_retry_at() == 10.0
    w.release_due(5.0)
    assert not w.has_queued()
    w.release_due(15.0)
    assert a.state == QUEUED and a.retry_at == 0.0 and b.state == BACKING_OFF
    assert [m.job_id for m in send(w, 0)] == [1]
    w.remove(b)
    w.release_due(25.0)  # a record that left meanwhile does not come back
    assert not w.has_queued() and w.next_retry_at() is None


def test_a_replaced_producers_records_are_sent_again_first():
    w = Window()
    ms = [msg(n) for n in (1, 2, 3, 4)]
    for m in ms[:3]:
        w.admit(m)
    send(w, 0)
    w.admit(ms[3])  # queued, never on producer 0
    resend = w.sent_on(0)
    assert [m.job_id for m in resend] == [1, 2, 3]
    w.resend_first(resend)
    assert [m.job_id for m in send(w, 1)] == [1, 2, 3, 4]
    assert w.sent_on(0) == [] and len(w.sent_on(1)) == 4


def test_held_records_are_neither_sent_nor_counted_in_flight():
    w = Window()
    a = msg(1)
    w.admit(a)
    send(w, 0)
    w.hold(a)
    assert a.state == HELD and w.oldest_sent_at() is None and w.sent_on(0) == []
    assert w.names() == {"1.1.end.env"}


def test_attempts_for_the_state_file():
    w = Window()
    a, b = msg(1), msg(2)
    w.admit(a)
    w.admit(b)
    a.attempts = 3
    assert w.attempts() == {"1.1.end.env": 3}
