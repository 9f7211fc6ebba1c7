"""The ``jobcompd`` command line: one entry point, one subcommand per job.

Exit codes follow sysexits(3): 0 ok, 64 usage, 65 bad input data, 69 broker unavailable,
75 temporary failure (another instance runs), 78 bad configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from jobcompd import __version__
from jobcompd import config as configmod

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_CONFIG = 78


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help=f"configuration file (default: ${configmod.CONFIG_ENV} or "
        f"{configmod.DEFAULT_CONFIG_PATH})",
    )


def _load(args: argparse.Namespace) -> configmod.Config:
    return configmod.load(configmod.config_path(args.config))


def cmd_run(args: argparse.Namespace) -> int:
    from jobcompd import daemon

    return daemon.run(configmod.config_path(args.config))


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args)
    except configmod.ConfigError as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return EX_CONFIG
    print(f"configuration {cfg.path}: ok")
    print(f"  ClusterName      {cfg.cluster_name}")
    print(f"  JobCompLoc       {cfg.job_comp_loc} ({len(cfg.kafka)} librdkafka properties)")
    print(f"  SpoolDir         {cfg.spool_dir}")
    print(f"  StateSaveLocation {cfg.state_dir}")
    print(f"  topic            {cfg.params.topic}")
    start = cfg.params.topic_job_start if cfg.params.enable_job_start else "(start events off)"
    print(f"  topic_job_start  {start}")
    for warning in cfg.warnings:
        print(f"warning: {warning}")
    if not args.connect:
        return EX_OK
    return _check_connect(cfg)


def _check_connect(cfg: configmod.Config) -> int:
    """Reach the broker with the daemon's own producer settings and look up the topics."""
    from confluent_kafka import KafkaException

    from jobcompd.delivery import Producer

    try:
        producer = Producer(cfg.producer_config())
    except KafkaException as e:
        print(f"jobcompd: {cfg.job_comp_loc}: librdkafka refused the properties: {e}",
              file=sys.stderr)
        return EX_CONFIG
    servers = cfg.producer_config().get("bootstrap.servers", "")
    if not producer.probe(10.0):
        print(f"jobcompd: no broker answered at {servers} within 10 s "
              f"(last error: {producer.health.last_error or 'none'})", file=sys.stderr)
        producer.abandon()
        return EX_UNAVAILABLE
    print(f"broker {servers}: reachable")
    topics = [cfg.params.topic]
    if cfg.params.enable_job_start:
        topics.append(cfg.params.topic_job_start)
    status = EX_OK
    for topic in topics:
        found = producer.topic_exists(topic, 10.0)
        if found:
            print(f"topic {topic}: exists")
        elif found is None:
            print(f"topic {topic}: the broker did not answer", file=sys.stderr)
            status = EX_UNAVAILABLE
        else:
            print(f"topic {topic}: missing (the broker may create it on first use when "
                  "auto.create.topics.enable is on)")
    producer.abandon()
    return status


def cmd_consume(args: argparse.Namespace) -> int:
    """Print what arrived on the topics, one JSON line per message (a debugging aid)."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        OFFSET_END,
        Consumer,
        KafkaException,
        TopicPartition,
    )

    try:
        cfg = _load(args)
    except configmod.ConfigError as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return EX_CONFIG
    topics = args.topic or [cfg.params.topic] + (
        [cfg.params.topic_job_start] if cfg.params.enable_job_start else []
    )
    conf = {p.key: p.value for p in cfg.kafka if not _producer_only(p.key)}
    conf.update({"group.id": "jobcompd-consume", "enable.auto.commit": "false"})
    consumer = Consumer(conf)
    try:
        assignment = []
        for topic in topics:
            md = consumer.list_topics(topic, timeout=10)
            parts = md.topics[topic].partitions if topic in md.topics else {}
            start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
            assignment += [TopicPartition(topic, p, start) for p in parts]
        consumer.assign(assignment)
        seen = 0
        deadline = time.monotonic() + args.timeout if args.timeout else None
        while (args.count is None or seen < args.count) and (
            deadline is None or time.monotonic() < deadline
        ):
            m = consumer.poll(0.5)
            if m is None:
                continue
            if m.error():
                print(f"jobcompd: {m.error()}", file=sys.stderr)
                continue
            seen += 1
            headers = {k: (v or b"").decode(errors="replace") for k, v in (m.headers() or [])}
            value = m.value() or b""
            try:
                shown = json.loads(value)
            except ValueError:
                shown = value.decode(errors="replace")
            print(json.dumps({
                "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
                "key": (m.key() or b"").decode(errors="replace"), "headers": headers,
                "value": shown,
            }, ensure_ascii=False), flush=True)
    except KafkaException as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return EX_OK


def _producer_only(key: str) -> bool:
    return key in {
        "enable.idempotence", "acks", "request.required.acks", "linger.ms",
        "queue.buffering.max.ms",
        "message.timeout.ms", "delivery.timeout.ms", "compression.type", "compression.codec",
        "batch.num.messages", "batch.size", "retries", "message.send.max.retries",
        "queue.buffering.max.messages", "queue.buffering.max.kbytes", "partitioner",
        "enable.gapless.guarantee", "transactional.id", "max.in.flight.requests.per.connection",
        "max.in.flight", "retry.backoff.ms", "request.timeout.ms",
    }


def build_parser(*, all_commands: bool = True) -> argparse.ArgumentParser:
    """The command line; without ``all_commands``, only the commands of this module."""
    parser = argparse.ArgumentParser(
        prog="jobcompd",
        description="Ship Slurm job records from a spool directory to Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"jobcompd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the daemon in the foreground (as systemd does)")
    _add_config_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate the configuration files")
    _add_config_arg(p)
    p.add_argument("--connect", action="store_true",
                   help="also reach the broker and look up the topics")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("consume", help="print the messages that arrive on jobcompd's topics")
    _add_config_arg(p)
    p.add_argument("--topic", action="append", help="topic to read (repeatable; default: "
                   "the configured topic, and topic_job_start when start events are on)")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest message instead of the newest")
    p.add_argument("-n", "--count", type=int, help="stop after this many messages")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_consume)

    # Commands that live in modules of their own: each module has ``register(subparsers)``.
    if all_commands:
        for module in _command_modules():
            module.register(sub)
    return parser


def _command_modules() -> list:
    """The modules that add subcommands (imported here, so ``--help`` lists them all)."""
    from jobcompd import backfill, opscli, schema_cmd

    return [opscli, schema_cmd, backfill]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The daemon does not import the other commands' modules: 30-40 ms of its 0.45 s from
    # exec to READY=1 (bench/), which a restart on a backlog waits through.
    args = build_parser(all_commands=argv[:1] != ["run"]).parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `jobcompd failed list | head`: the reader left; say nothing more.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return EX_OK


if __name__ == "__main__":
    sys.exit(main())
