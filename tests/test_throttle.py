"""The log throttle: one line per distinct error per interval, with the count held back."""

from __future__ import annotations

from jobcompd.service.throttle import LogThrottle, broker_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeats_within_the_interval_are_held_back_and_counted():
    clock = Clock()
    t = LogThrottle(60, clock=clock)
    assert t.admit(("kafka_error", "_TRANSPORT", "b1")) == 0
    for _ in range(5):
        clock.now += 1
        assert t.admit(("kafka_error", "_TRANSPORT", "b1")) is None
    assert t.admit(("kafka_error", "_TRANSPORT", "b2")) == 0  # another broker: its own line
    assert t.admit(("kafka_error", "_ALL_BROKERS_DOWN", "")) == 0  # another code too
    assert t.held_back() == 5
    clock.now += 60
    assert t.admit(("kafka_error", "_TRANSPORT", "b1")) == 5  # the next line tells the count
    assert t.admit(("kafka_error", "_TRANSPORT", "b1")) is None


def test_reset_forgets_every_key_and_reports_what_was_held_back():
    clock = Clock()
    t = LogThrottle(60, clock=clock)
    t.admit("a")
    t.admit("a")
    t.admit("a")
    assert t.reset() == 2
    assert t.admit("a") == 0  # a new outage logs its first error at once


def test_the_number_of_keys_is_bounded():
    clock = Clock()
    t = LogThrottle(60, clock=clock)
    for i in range(5000):
        clock.now += 0.001
        t.admit(i)
    assert len(t._seen) <= 1024


def test_broker_of_librdkafka_texts():
    assert broker_of("[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to "
                     "ipv4#127.0.0.1:9 failed") == "127.0.0.1:9/bootstrap"
    assert broker_of("127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection "
                     "refused (after 0ms in state CONNECT)") == "127.0.0.1:9/bootstrap"
    assert broker_of("1/1 brokers are down") == ""
    assert broker_of("Local: Message timed out") == ""
