"""``jobcompd consume``: print what arrives on jobcompd's topics, one JSON line per message
(a debugging aid). It reads with the daemon's librdkafka properties, minus the producer's own,
and commits no offsets."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from jobcompd import config as configmod
from jobcompd.cli import brokercheck

#: librdkafka properties that only a producer takes: left out of the consumer's.
_PRODUCER_ONLY = frozenset({
    "enable.idempotence", "acks", "request.required.acks", "linger.ms",
    "queue.buffering.max.ms",
    "message.timeout.ms", "delivery.timeout.ms", "compression.type", "compression.codec",
    "batch.num.messages", "batch.size", "retries", "message.send.max.retries",
    "queue.buffering.max.messages", "queue.buffering.max.kbytes", "partitioner",
    "enable.gapless.guarantee", "transactional.id", "max.in.flight.requests.per.connection",
    "max.in.flight", "retry.backoff.ms", "request.timeout.ms",
})


def cmd_consume(args: argparse.Namespace) -> int:
    """Print what arrives on the topics, one JSON line per message (a debugging aid)."""
    try:
        cfg = configmod.load(configmod.config_path(args.config))
    except configmod.ConfigError as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return os.EX_CONFIG
    topics = args.topic or [cfg.params.topic] + (
        [cfg.params.topic_job_start] if cfg.params.enable_job_start else []
    )
    servers, where = brokercheck.bootstrap(cfg)
    conf = {p.key: p.value for p in cfg.kafka if p.key not in _PRODUCER_ONLY}
    conf.update({"group.id": "jobcompd-consume", "enable.auto.commit": "false",
                 "enable.partition.eof": "true"})
    full, errors, _ = brokercheck.quiet_conf(conf)
    try:
        consumer = Consumer(full)
    except KafkaException as e:
        print(f"jobcompd: {cfg.job_comp_loc}: librdkafka refused the properties: {e}",
              file=sys.stderr)
        return os.EX_CONFIG
    reader = _Reader(consumer, args, topics)
    try:
        reached = brokercheck.reach(consumer.list_topics, consumer.poll, errors)
        if reached is None:
            print(f"jobcompd: {brokercheck.verdict(errors, servers, where, conf)}",
                  file=sys.stderr)
            return os.EX_UNAVAILABLE
        if not reader.start(reached.topics, servers):
            return os.EX_NOINPUT
        stopped = reader.run()
    except KafkaException as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return os.EX_UNAVAILABLE
    except KeyboardInterrupt:
        return os.EX_OK
    finally:
        consumer.close()
    return reader.finish(stopped)


class _Reader:
    """One run of ``consume``: the consumer, its topics, and when it stops.

    --from-beginning stops once librdkafka has told, for every partition, that it reached the
    end (its end-of-partition event), not at watermarks read beforehand. A topic that does not
    exist yet is looked up again every second and read from its beginning once it appears.
    """

    def __init__(self, consumer: Consumer, args: argparse.Namespace, topics: list[str]) -> None:
        self.consumer = consumer
        self.args = args
        self.topics = topics
        self.follow = args.follow or not args.from_beginning
        self.deadline = time.monotonic() + args.timeout if args.timeout else None
        self.seen = 0
        self.unread: set[tuple[str, int]] = set()
        self.missing: list[str] = []

    def partitions(self, topic: str, metadata: dict) -> list[TopicPartition]:
        """The partitions of ``topic`` to read, each at the offset to start from."""
        t = metadata.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return []
        found = []
        for p in sorted(t.partitions):
            if self.args.from_beginning or topic in self.missing:
                self.unread.add((topic, p))
                found.append(TopicPartition(topic, p, OFFSET_BEGINNING))
            else:  # from its end now: what arrives from this moment on
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                              timeout=10)
                found.append(TopicPartition(topic, p, high))
        return found

    def start(self, metadata: dict, servers: str) -> bool:
        """Assign the partitions and say what happens next; False when a topic is missing
        and there is nothing to wait for."""
        assignment = []
        for topic in self.topics:
            parts = self.partitions(topic, metadata)
            if not parts:
                self.missing.append(topic)
            assignment += parts
        if self.missing and not self.follow:
            if len(self.missing) == len(self.topics):
                print(f"jobcompd: topic {', '.join(self.missing)} does not exist on the broker "
                      f"at {servers}: nothing to read (check --topic, or JobCompParams' topic)",
                      file=sys.stderr)
                return False
            # Some topics hold records (the job end topic, say) and others have none yet
            # (the job start topic before the first start record): read what is there.
            _note(f"topic {', '.join(self.missing)} does not exist yet: nothing there to read")
            self.topics = [t for t in self.topics if t not in self.missing]
            self.missing = []
        self.consumer.assign(assignment)
        for topic in self.missing:
            _note(f"topic {topic} does not exist yet; waiting for it (the broker creates it "
                  "with the first record when auto.create.topics.enable is on)")
        if not self.follow:
            _note(f"reading {', '.join(self.topics)} from the beginning to the end; --follow "
                  "keeps waiting for more")
        else:
            _note(f"waiting for new messages on {', '.join(self.topics)}" + (
                "" if self.args.count or self.deadline else
                "; Ctrl-C stops (-n N or --timeout SECONDS stop by themselves)"))
        return True

    def run(self) -> str:
        """Print messages until -n, --timeout or the end: which of them stopped it."""
        next_lookup = time.monotonic() + 1.0
        reported: set[str] = set()
        while True:
            now = time.monotonic()
            if self.args.count is not None and self.seen >= self.args.count:
                return "count"
            if self.deadline is not None and now >= self.deadline:
                return "timeout"
            if not self.follow and not self.unread:
                return "end"
            if self.missing and now >= next_lookup:
                next_lookup = now + 1.0
                self._look_up_missing()
            wait = 0.5 if self.deadline is None else max(0.0, min(0.5, self.deadline - now))
            m = self.consumer.poll(wait)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    self.unread.discard((m.topic(), m.partition()))
                elif m.error().str() not in reported:
                    reported.add(m.error().str())
                    print(f"jobcompd: {m.error().str()}", file=sys.stderr)
                continue
            self.seen += 1
            _print_message(m, self.args.value_only)

    def _look_up_missing(self) -> None:
        with contextlib.suppress(KafkaException):
            md = self.consumer.list_topics(timeout=5).topics
            for topic in list(self.missing):
                parts = self.partitions(topic, md)
                if parts:
                    self.missing.remove(topic)
                    self.consumer.incremental_assign(parts)

    def finish(self, stopped: str) -> int:
        """The closing note and the exit status."""
        args = self.args
        if stopped == "timeout" and args.count is not None:
            _note(f"{self.seen} of {args.count} message{'s' if args.count != 1 else ''} "
                  f"arrived within {args.timeout:g} s")
            return os.EX_TEMPFAIL
        if stopped == "end":
            _note(f"{self.seen} message{'s' if self.seen != 1 else ''}: the end of "
                  f"{', '.join(self.topics)} (--follow waits for more)")
        return os.EX_OK


def _value_text(value: bytes | None) -> str:
    """A message's value for the JSON line, exactly as received: JSON on one line is put in
    as it is (its escapes, digits and key order untouched); anything else as a JSON string."""
    if value is None:
        return "null"
    try:
        text = value.decode("utf-8")
        if "\n" not in text and "\r" not in text:
            json.loads(text)
            return text
    except ValueError:
        pass
    return json.dumps(value.decode("utf-8", "backslashreplace"), ensure_ascii=False)


def _print_message(m, value_only: bool) -> None:
    if value_only:
        out = sys.stdout.buffer
        out.write((m.value() or b"") + b"\n")
        out.flush()
        return
    ts_type, ts = m.timestamp()
    head = {
        "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
        "timestamp": ts if ts_type else None,
        "key": None if m.key() is None else m.key().decode("utf-8", "backslashreplace"),
        "headers": {k: None if v is None else v.decode("utf-8", "backslashreplace")
                    for k, v in (m.headers() or [])},
    }
    text = json.dumps(head, ensure_ascii=False)
    print(f'{text[:-1]}, "value": {_value_text(m.value())}}}', flush=True)


def _note(message: str) -> None:
    print(f"jobcompd consume: {message}", file=sys.stderr, flush=True)
