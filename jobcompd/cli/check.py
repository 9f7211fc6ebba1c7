"""``jobcompd check``: the configuration as ``run`` reads it, what ``run`` needs from the file
system as the daemon's user (preflight.py), and with ``--connect`` the broker (brokercheck.py)."""

from __future__ import annotations

import argparse
import os
import sys

from confluent_kafka import KafkaException, Producer

from jobcompd import config as configmod
from jobcompd.cli import brokercheck, preflight


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = configmod.load(configmod.config_path(args.config))
    except configmod.ConfigError as e:
        print(f"jobcompd: {e}", file=sys.stderr)
        return os.EX_CONFIG
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


def _check_connect(cfg: configmod.Config) -> int:
    """Reach the broker with the daemon's own producer settings and look up the topics:
    librdkafka's own log is kept quiet, and a failure is one sentence with its cause."""
    conf = cfg.producer_config()
    full, errors, _ = brokercheck.quiet_conf(conf)
    try:
        producer = Producer(full)
    except KafkaException as e:
        print(f"jobcompd: {cfg.job_comp_loc}: librdkafka refused the properties: {e}",
              file=sys.stderr)
        return os.EX_CONFIG
    servers, where = brokercheck.bootstrap(cfg)
    reached = brokercheck.reach(producer.list_topics, producer.poll, errors)
    if reached is None:
        print(f"jobcompd: {brokercheck.verdict(errors, servers, where, conf)}", file=sys.stderr)
        return os.EX_UNAVAILABLE
    count = len(reached.brokers)
    print(f"broker {servers}: reachable ({count} broker{'s' if count != 1 else ''} in the "
          "cluster)")
    status = os.EX_OK
    unreachable = brokercheck.unreachable_advertised(reached.brokers)
    if unreachable:
        print(f"jobcompd: {servers} answered, but records go to the brokers it names, and "
              f"this host cannot connect to {'; '.join(unreachable)}: set the broker's "
              "advertised.listeners to an address this host reaches", file=sys.stderr)
        status = os.EX_UNAVAILABLE
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
            status = os.EX_UNAVAILABLE
        else:
            print(f"topic {topic}: missing (the broker creates it with the first record when "
                  "auto.create.topics.enable is on; otherwise create it)")
    return status
