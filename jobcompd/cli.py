"""The ``jobcompd`` command line: one entry point, one subcommand per job.

Exit codes follow sysexits(3) (``os.EX_*``); each command's ``--help`` lists its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
import time

from jobcompd import __version__
from jobcompd import config as configmod

EX_OK = os.EX_OK
EX_USAGE = os.EX_USAGE
EX_DATAERR = os.EX_DATAERR
EX_NOINPUT = os.EX_NOINPUT
EX_UNAVAILABLE = os.EX_UNAVAILABLE
EX_TEMPFAIL = os.EX_TEMPFAIL
EX_CONFIG = os.EX_CONFIG


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, but paragraphs stay paragraphs and indented lines (the exit
    status tables, examples) stay as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.split("\n\n"):
            if para.startswith("  ") or "\n  " in para:
                out.append("\n".join(indent + line for line in para.splitlines()))
            else:
                out.append(super()._fill_text(para, width, indent))
        return "\n\n".join(out)


def exit_status(*rows: tuple[int, str], note: str = "") -> str:
    """An epilog that lists a command's exit codes (sysexits(3) numbers), wrapped; ``note``
    is a paragraph after the list."""
    lines = ["exit status:"]
    for code, text in rows:
        wrapped = textwrap.wrap(text, width=72)
        lines.append(f"  {code:<3} {wrapped[0]}")
        lines += [f"      {more}" for more in wrapped[1:]]
    if note:
        lines += [f"  {more}" for more in textwrap.wrap(note, width=76)]
    return "\n".join(lines)


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
    start = cfg.params.topic_job_start if cfg.params.enable_job_start else "(start events off)"
    rows = [
        ("ClusterName", cfg.cluster_name),
        ("JobCompLoc", f"{cfg.job_comp_loc} ({len(cfg.kafka)} librdkafka "
         f"propert{'y' if len(cfg.kafka) == 1 else 'ies'})"),
        ("SpoolDir", str(cfg.spool_dir)),
        ("StateSaveLocation", str(cfg.state_dir)),
        ("topic", cfg.params.topic),
        ("topic_job_start", start),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    for warning in cfg.warnings:
        print(f"warning: {warning}")

    from jobcompd import preflight

    try:
        unit = preflight.unit_info()
        account = preflight.choose_account(cfg, args.user, unit)
        report = preflight.check(cfg, account, unit)
    except preflight.PreflightError as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return e.code
    for line in preflight.render(report):
        print(line)
    status = report.code
    if args.connect:
        connected = _check_connect(cfg)
        status = status or connected
    problems = len(report.failures)
    if problems:
        print(f"jobcompd: {problems} problem{'s' if problems != 1 else ''} above (FAIL): "
              f"'jobcompd run' as {account.name} would stop with exit status {report.code}",
              file=sys.stderr)
    return status


def _bootstrap(cfg: configmod.Config) -> tuple[str, str]:
    """bootstrap.servers and where it is set (key, file and line), for messages."""
    prop = configmod.last_property(cfg.kafka, "bootstrap.servers")
    if prop is None:
        return "", f"bootstrap.servers in {cfg.job_comp_loc}"
    return prop.value, f"{prop.key}, {cfg.job_comp_loc}:{prop.line}"


def _check_connect(cfg: configmod.Config) -> int:
    """Reach the broker with the daemon's own producer settings and look up the topics:
    librdkafka's own log is kept quiet, and a failure is one sentence with its cause."""
    from confluent_kafka import KafkaException, Producer

    from jobcompd import brokercheck

    conf = cfg.producer_config()
    full, errors, _ = brokercheck.quiet_conf(conf)
    try:
        producer = Producer(full)
    except KafkaException as e:
        print(f"jobcompd: {cfg.job_comp_loc}: librdkafka refused the properties: {e}",
              file=sys.stderr)
        return EX_CONFIG
    servers, where = _bootstrap(cfg)
    reached = brokercheck.reach(producer.list_topics, producer.poll, errors)
    if reached is None:
        print(f"jobcompd: {brokercheck.verdict(errors, servers, where, conf)}", file=sys.stderr)
        return EX_UNAVAILABLE
    count = len(reached.brokers)
    print(f"broker {servers}: reachable ({count} broker{'s' if count != 1 else ''} in the "
          "cluster)")
    status = EX_OK
    unreachable = brokercheck.unreachable_advertised(reached.brokers)
    if unreachable:
        print(f"jobcompd: {servers} answered, but records go to the brokers it names, and "
              f"this host cannot connect to {'; '.join(unreachable)}: set the broker's "
              "advertised.listeners to an address this host reaches", file=sys.stderr)
        status = EX_UNAVAILABLE
    topics = [cfg.params.topic]
    if cfg.params.enable_job_start:
        topics.append(cfg.params.topic_job_start)
    for topic in topics:
        t = reached.topics.get(topic)
        if t is not None and t.error is None:
            print(f"topic {topic}: exists ({len(t.partitions)} partition"
                  f"{'s' if len(t.partitions) != 1 else ''})")
        elif t is not None:
            print(f"jobcompd: topic {topic}: {t.error.str()}", file=sys.stderr)
            status = EX_UNAVAILABLE
        else:
            print(f"topic {topic}: missing (the broker creates it with the first record when "
                  "auto.create.topics.enable is on; otherwise create it)")
    return status


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0 seconds")
    return value


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


def cmd_consume(args: argparse.Namespace) -> int:
    """Print what arrives on the topics, one JSON line per message (a debugging aid)."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    from jobcompd import brokercheck

    try:
        cfg = _load(args)
    except configmod.ConfigError as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return EX_CONFIG
    topics = args.topic or [cfg.params.topic] + (
        [cfg.params.topic_job_start] if cfg.params.enable_job_start else []
    )
    follow = args.follow or not args.from_beginning
    servers, where = _bootstrap(cfg)
    conf = {p.key: p.value for p in cfg.kafka if not _producer_only(p.key)}
    conf.update({"group.id": "jobcompd-consume", "enable.auto.commit": "false",
                 "enable.partition.eof": "true"})
    full, errors, _ = brokercheck.quiet_conf(conf)
    try:
        consumer = Consumer(full)
    except KafkaException as e:
        print(f"jobcompd: {cfg.job_comp_loc}: librdkafka refused the properties: {e}",
              file=sys.stderr)
        return EX_CONFIG
    deadline = time.monotonic() + args.timeout if args.timeout else None
    seen = 0
    stopped = "interrupted"
    try:
        reached = brokercheck.reach(consumer.list_topics, consumer.poll, errors)
        if reached is None:
            print(f"jobcompd: {brokercheck.verdict(errors, servers, where, conf)}",
                  file=sys.stderr)
            return EX_UNAVAILABLE
        # --from-beginning stops once librdkafka has told, for every partition, that it
        # reached the end (its end-of-partition event), not at watermarks read beforehand.
        unread: set[tuple[str, int]] = set()
        missing: list[str] = []

        def partitions(topic: str, metadata: dict) -> list[TopicPartition]:
            t = metadata.get(topic)
            if t is None or t.error is not None or not t.partitions:
                return []
            found = []
            for p in sorted(t.partitions):
                if args.from_beginning or topic in missing:
                    unread.add((topic, p))
                    found.append(TopicPartition(topic, p, OFFSET_BEGINNING))
                else:  # from its end now: what arrives from this moment on
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                             timeout=10)
                    found.append(TopicPartition(topic, p, high))
            return found

        assignment = []
        for topic in topics:
            parts = partitions(topic, reached.topics)
            if not parts:
                missing.append(topic)
            assignment += parts
        if missing and not follow:
            print(f"jobcompd: topic {', '.join(missing)} does not exist on the broker at "
                  f"{servers}: nothing to read (check --topic, or JobCompParams' topic)",
                  file=sys.stderr)
            return EX_NOINPUT
        consumer.assign(assignment)
        for topic in missing:
            _note(f"topic {topic} does not exist yet; waiting for it (the broker creates it "
                  "with the first record when auto.create.topics.enable is on)")
        if not follow:
            _note(f"reading {', '.join(topics)} from the beginning to the end; --follow "
                  "keeps waiting for more")
        else:
            _note(f"waiting for new messages on {', '.join(topics)}" + (
                "" if args.count or deadline else
                "; Ctrl-C stops (-n N or --timeout SECONDS stop by themselves)"))
        eof = KafkaError._PARTITION_EOF
        next_lookup = time.monotonic() + 1.0
        reported: set[str] = set()
        while True:
            now = time.monotonic()
            if args.count is not None and seen >= args.count:
                stopped = "count"
                break
            if deadline is not None and now >= deadline:
                stopped = "timeout"
                break
            if not follow and not unread:
                stopped = "end"
                break
            if missing and now >= next_lookup:
                next_lookup = now + 1.0
                with contextlib.suppress(KafkaException):
                    md = consumer.list_topics(timeout=5).topics
                    for topic in list(missing):
                        parts = partitions(topic, md)
                        if parts:
                            missing.remove(topic)
                            consumer.incremental_assign(parts)
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - now))
            m = consumer.poll(wait)
            if m is None:
                continue
            if m.error():
                key = (m.topic(), m.partition())
                if m.error().code() == eof:
                    unread.discard(key)
                elif m.error().str() not in reported:
                    reported.add(m.error().str())
                    print(f"jobcompd: {m.error().str()}", file=sys.stderr)
                continue
            seen += 1
            _print_message(m, args.value_only)
    except KafkaException as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        return EX_OK
    finally:
        consumer.close()
    plural = "s" if seen != 1 else ""
    if stopped == "timeout" and args.count is not None:
        _note(f"{seen} of {args.count} message{'s' if args.count != 1 else ''} arrived "
              f"within {args.timeout:g} s")
        return EX_TEMPFAIL
    if stopped == "end":
        _note(f"{seen} message{plural}: the end of {', '.join(topics)} "
              "(--follow waits for more)")
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
        description="Ship Slurm job records from a spool directory to Kafka. Each command "
        "has its own --help, with its exit status.",
    )
    parser.add_argument("--version", action="version", version=f"jobcompd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run", help="run the daemon in the foreground (as systemd does)",
        formatter_class=HelpFormatter,
        description="Run the daemon in the foreground, as jobcompd.service does: read the "
        "configuration, lock StateSaveLocation, scan SpoolDir/new/ and send every record to "
        "Kafka, removing its file once Kafka has acknowledged it. Logs go to the journal "
        "under systemd, else to stderr (LogTarget). SIGHUP reloads both configuration files; "
        "SIGTERM or SIGINT stops it after flush_timeout, leaving what was not acknowledged in "
        "the spool. 'jobcompd check' tests first what it needs.",
        epilog=exit_status(
            (EX_OK, "stopped by SIGTERM or SIGINT"),
            (EX_UNAVAILABLE, "HttpListen cannot be served (address in use, or a port below "
             "1024)"),
            (os.EX_CANTCREAT, "StateSaveLocation or SpoolDir missing, or not writable by "
             "this user"),
            (EX_TEMPFAIL, "another jobcompd already runs with this StateSaveLocation"),
            (EX_CONFIG, "bad configuration (the message names the file, line and key), "
             "librdkafka refused the properties, or SpoolDir/seg/ holds segment files; "
             "jobcompd.service does not restart after it"),
        ))
    _add_config_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check", help="test the configuration and what 'run' needs; --connect: the broker",
        formatter_class=HelpFormatter,
        description="Validate jobcompd.conf and the JobCompLoc file as 'run' does, then test "
        "what 'run' needs from the file system as the user the daemon runs as: the "
        "configuration files readable, StateSaveLocation there and writable, SpoolDir's "
        "tmp/ new/ failed/ writable, no files in SpoolDir/seg/, and, under jobcompd.service, "
        "the folders in its ReadWritePaths=. Each problem comes with the command that fixes "
        "it. With --connect, also reach the broker with the daemon's producer settings and "
        "look up the topics.\n\n"
        "The user: --user NAME; else, run as root, the User= of the installed "
        "jobcompd.service, else SlurmUser of SlurmConf, else the owner of SpoolDir, else "
        "'slurm', else root. Run as any other user, the check tests that user. Nothing is "
        "changed.",
        epilog=exit_status(
            (EX_OK, "all is well (warnings aside)"),
            (os.EX_NOUSER, "--user names no account on this host"),
            (EX_UNAVAILABLE, "--connect: no broker answered within 10 s, the brokers it "
             "names cannot be reached, or the broker refused a topic; or HttpListen is a "
             "port below 1024 for a user other than root"),
            (os.EX_CANTCREAT, "StateSaveLocation or SpoolDir (or tmp/ new/ failed/) missing "
             "or not writable by the user"),
            (os.EX_NOPERM, "--user another user, without being root"),
            (EX_CONFIG, "bad configuration, a configuration file the user cannot read, or "
             "files in SpoolDir/seg/"),
            note="With several problems, the status is the one 'run' would stop with first.",
        ))
    _add_config_arg(p)
    p.add_argument("--connect", action="store_true",
                   help="also reach the broker (10 s at most) and look up the topics")
    p.add_argument("--user", metavar="NAME", help="test as this user (root only; default: "
                   "see above)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "consume", help="print the messages on jobcompd's topics, as Kafka has them",
        formatter_class=HelpFormatter,
        description="Print the messages on jobcompd's topics, one line each: a JSON object "
        "with topic, partition, offset, timestamp (ms), key, headers and value. The value "
        "is put in exactly as Kafka holds it (the bytes jobcompd sent: escapes such as \\/ "
        "and the digits of numbers untouched); a value that is not JSON on one line is "
        "given as a JSON string. --value-only prints the value's bytes alone.\n\n"
        "Without --from-beginning, it waits for new messages until -n, --timeout or Ctrl-C "
        "stops it. With --from-beginning it prints what the topics hold and stops at their "
        "end, unless --follow. It commits no offsets.",
        epilog=exit_status(
            (EX_OK, "done: -n messages printed, the end reached (--from-beginning), "
             "--timeout passed without -n, or Ctrl-C"),
            (EX_NOINPUT, "--from-beginning without --follow: a topic does not exist"),
            (EX_UNAVAILABLE, "no broker answered within 10 s (the message says why)"),
            (EX_TEMPFAIL, "--timeout passed before -n messages arrived"),
            (EX_CONFIG, "bad configuration"),
        ) + "\n\nexamples:\n"
        "  jobcompd consume -n 1 --timeout 120        # the next record, or exit 75\n"
        "  jobcompd consume --from-beginning          # everything on the topic, then stop\n"
        "  jobcompd consume --from-beginning --value-only | tail -1 | od -c | head")
    _add_config_arg(p)
    p.add_argument("--topic", action="append", help="topic to read (repeatable; default: "
                   "the configured topic, and topic_job_start when start events are on)")
    p.add_argument("--from-beginning", action="store_true",
                   help="print what the topics hold, oldest first, and stop at the end")
    p.add_argument("-f", "--follow", action="store_true",
                   help="with --from-beginning: then wait for new messages")
    p.add_argument("-n", "--count", type=_positive, metavar="N",
                   help="stop after N messages")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="stop after this many seconds")
    p.add_argument("--value-only", action="store_true",
                   help="print only each message's value, byte for byte, one per line")
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
    # The daemon does not import the other commands' modules: their import time would add to
    # the time from exec to READY=1, which a restart on a backlog waits through.
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
