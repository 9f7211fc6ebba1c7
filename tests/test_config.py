"""Tests for jobcompd.config: the three files an operator edits, and every rule they obey."""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobcompd import config
from jobcompd.config import ConfigError, KafkaProperty, is_secret, load, parse_params

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "config"
SLURM_CONF = DATA / "slurm.conf"  # the slurm.conf of a real Slurm 22.05 test cluster
KAFKA_OK = "bootstrap.servers=127.0.0.1:9092\n"

KEYS = (
    "ClusterName",
    "JobCompLoc",
    "JobCompParams",
    "SpoolDir",
    "SpoolMinFreeBytes",
    "StateSaveLocation",
    "Standby",
    "DebugFlags",
    "SlurmConf",
    "LogTarget",
    "LogFormat",
    "MetricsListen",
    "MetricsTextfile",
    "HttpListen",
    "SpoolOwners",
)


def write(folder: Path, main: str, kafka: str = KAFKA_OK, head: str = "ClusterName=test\n") -> Path:
    """jobcompd.conf = head + JobCompLoc=rdkafka.conf + main; rdkafka.conf = kafka."""
    (folder / "rdkafka.conf").write_text(kafka)
    (folder / "rdkafka.conf").chmod(0o600)
    path = folder / "jobcompd.conf"
    path.write_text(f"{head}JobCompLoc=rdkafka.conf\n{main}")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


# --------------------------------------------------------------------------- jobcompd.conf


def test_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""))
    assert cfg.path == tmp_path / "jobcompd.conf"
    assert cfg.cluster_name == "test"
    assert cfg.job_comp_loc == tmp_path / "rdkafka.conf"
    assert cfg.kafka == (KafkaProperty("bootstrap.servers", "127.0.0.1:9092", 1),)
    assert cfg.spool_dir == Path("/var/spool/jobcompd")
    assert cfg.state_dir == Path("/var/lib/jobcompd")
    assert cfg.spool_min_free_bytes == 64 << 20
    assert cfg.debug_flags == frozenset()
    assert not cfg.debug_jobcomp
    assert cfg.slurm_conf is None
    assert (cfg.log_target, cfg.log_format) == ("auto", "logfmt")
    assert cfg.metrics_listen is None and cfg.http_listen is None
    assert cfg.metrics_textfile is None
    assert 0 in cfg.spool_owners
    assert cfg.warnings == ()
    p = cfg.params
    assert (p.flush_timeout_ms, p.poll_interval_s) == (500, 2)
    assert (p.topic, p.topic_job_start) == ("test", "test-job-start")
    assert not (p.enable_job_start or p.send_script or p.send_comment)
    assert p.dead_letter_after_s == 0  # a timed-out record waits for the broker
    assert (p.max_inflight, p.max_record_bytes) == (10000, 524288)
    assert (p.rescan_interval_s, p.stall_timeout_s, p.retry_backoff_max_s) == (30, 30, 60)


def test_every_key(tmp_path: Path) -> None:
    main = (
        "JobCompParams=topic=jobs,enable_job_start,send_script\n"
        "SpoolDir=/srv/spool\n"
        "StateSaveLocation=/srv/state\n"
        "DebugFlags=JobComp\n"
        f"SlurmConf={SLURM_CONF}\n"
        "LogTarget=journal\n"
        "LogFormat=json\n"
        "MetricsListen=127.0.0.1:9817\n"
        "MetricsTextfile=/srv/metrics/jobcompd.prom\n"
        "HttpListen=[::1]:9200\n"
        "SpoolOwners=root,4242\n"
    )
    cfg = load(write(tmp_path, main, head="ClusterName=TestCluster\n"))
    assert cfg.cluster_name == "testcluster"
    assert cfg.params.topic == "jobs" and cfg.params.enable_job_start and cfg.params.send_script
    assert cfg.spool_dir == Path("/srv/spool")
    assert cfg.state_dir == Path("/srv/state")
    assert cfg.debug_jobcomp
    assert cfg.slurm_conf == SLURM_CONF
    assert (cfg.log_target, cfg.log_format) == ("journal", "json")
    assert cfg.metrics_listen == ("127.0.0.1", 9817)
    assert cfg.metrics_textfile == Path("/srv/metrics/jobcompd.prom")
    assert cfg.http_listen == ("::1", 9200)
    assert cfg.spool_owners == frozenset({0, 4242})
    assert cfg.warnings == ()


def test_keys_are_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "jobcompd.conf"
    (tmp_path / "rdkafka.conf").write_text(KAFKA_OK)
    path.write_text("clustername=Test\nJOBCOMPLOC=rdkafka.conf\nlogtarget=STDERR\n")
    cfg = load(path)
    assert cfg.cluster_name == "test"  # Slurm maps ClusterName to lower case
    assert cfg.log_target == "stderr"


def test_comments_whitespace_and_quotes(tmp_path: Path) -> None:
    main = (
        "# a comment line\n"
        "\n"
        "   \t\n"
        "  SpoolDir   =   /srv/spool   # trailing comment\n"
        'JobCompParams = "topic=jobs, send_comment"  # quoted, with a space inside\n'
        'StateSaveLocation="/srv/state#1"\n'
        "LogFormat=json\r\n"
    )
    cfg = load(write(tmp_path, main))
    assert cfg.spool_dir == Path("/srv/spool")
    assert cfg.params.topic == "jobs" and cfg.params.send_comment
    assert cfg.state_dir == Path("/srv/state#1")  # '#' inside quotes is not a comment
    assert cfg.log_format == "json"


def test_relative_paths_follow_the_config_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "etc").mkdir()
    shutil.copy(SLURM_CONF, tmp_path / "etc" / "slurm.conf")
    main = "SpoolDir=spool\nStateSaveLocation=../state\nSlurmConf=slurm.conf\n"
    main += "MetricsTextfile=m/jobcompd.prom\n"
    path = write(tmp_path / "etc", main, head="")
    monkeypatch.chdir("/")
    cfg = load(os.path.relpath(path, "/"))
    folder = tmp_path / "etc"
    assert cfg.path == path
    assert cfg.job_comp_loc == folder / "rdkafka.conf"
    assert cfg.spool_dir == folder / "spool"
    assert cfg.state_dir == folder / "../state"
    assert cfg.slurm_conf == folder / "slurm.conf"
    assert cfg.metrics_textfile == folder / "m/jobcompd.prom"


def test_config_path(monkeypatch) -> None:
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    assert config.config_path(None) == Path("/etc/jobcompd/jobcompd.conf")
    monkeypatch.setenv("JOBCOMPD_CONFIG", "/env/jobcompd.conf")
    assert config.config_path(None) == Path("/env/jobcompd.conf")
    assert config.config_path("/cli/jobcompd.conf") == Path("/cli/jobcompd.conf")


def test_missing_config_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.conf")
    assert message.startswith(f"{tmp_path}/nope.conf: cannot read config file: No such file")
    assert "give its path with -c PATH or $JOBCOMPD_CONFIG" in message


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    path = write(tmp_path, "SpoolDir=/x\nSpolDir=/y\n")
    assert error_of(path) == f"{path}:4: unknown key 'SpolDir'; did you mean SpoolDir?"


def test_unknown_key_without_a_close_one(tmp_path: Path) -> None:
    path = write(tmp_path, "Frobnicate=1\n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: unknown key 'Frobnicate'")
    assert "did you mean" not in message


def test_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, "SpoolDir=/a\n\nspooldir=/b\n")
    assert error_of(path) == f"{path}:5: SpoolDir is set twice (first on line 3)"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("SpoolDir\n", "expected Key=Value"),
        ("=value\n", "expected Key=Value"),
        ('SpoolDir="/x\n', "unbalanced double quote"),
        ('SpoolDir="/x"y"\n', "unbalanced double quote"),
        ('SpoolDir=/x"y\n', "may only enclose the whole value"),
        ("SpoolDir=\n", "SpoolDir has no value"),
        ('SpoolDir=""\n', "SpoolDir has no value"),
        ("LogTarget=syslog\n", "LogTarget=syslog: accepted: auto, journal, stderr"),
        ("LogFormat=xml\n", "LogFormat=xml: accepted: logfmt, json"),
        ("SpoolOwners=no-such-user-xyz\n", "SpoolOwners: unknown user 'no-such-user-xyz'"),
        ("SpoolOwners= , \n", "SpoolOwners: lists no user"),
        ("SpoolOwners=4294967295\n", "uid 4294967295 is out of range"),
    ],
)
def test_bad_lines(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, line)
    message = error_of(path)
    assert message.startswith(f"{path}:3: ")
    assert expected in message


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("JobCompLoc", "it is required and has no default: set it to the librdkafka "
         "properties file, for example JobCompLoc=/etc/jobcompd/rdkafka.conf"),
        ("ClusterName", "set it (for example ClusterName=hpc), or remove the line and set "
         "SlurmConf="),
        ("SpoolDir", "remove the line to use the default /var/spool/jobcompd"),
        ("StateSaveLocation", "remove the line to use the default /var/lib/jobcompd"),
        ("MetricsListen", "or remove the line to serve no metrics"),
        ("SpoolOwners", "or remove the line to use the default (SlurmUser and root)"),
    ],
)
def test_an_empty_value_says_what_to_write(tmp_path: Path, key: str, says: str) -> None:
    """A key without a default is never told to fall back to one."""
    (tmp_path / "rdkafka.conf").write_text(KAFKA_OK)
    lines = {"ClusterName": "test", "JobCompLoc": "rdkafka.conf", key: ""}
    path = tmp_path / "jobcompd.conf"
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    message = error_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d: {key} has no value; ", message), message
    assert says in message


def test_every_key_that_needs_a_value_says_what_to_do_when_it_is_empty() -> None:
    hints = {k.name: k.empty_hint for k in config.KEYS if k.empty_hint is not None}
    may_be_empty = {k.name for k in config.KEYS if k.default == ""}
    assert set(hints) == set(KEYS) - may_be_empty
    assert not any("use the default" in hints[k] for k in ("JobCompLoc", "ClusterName"))


def test_empty_lists_are_allowed(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "JobCompParams=\nDebugFlags=\n"))
    assert cfg.params.topic == "test" and cfg.debug_flags == frozenset()


@pytest.mark.parametrize("value", ["JobComp", "jobcomp", "Elasticsearch", "JobComp,Elasticsearch"])
def test_debug_flags(tmp_path: Path, value: str) -> None:
    cfg = load(write(tmp_path, f"DebugFlags={value}\n"))
    assert cfg.debug_flags == frozenset({"JobComp"}) and cfg.debug_jobcomp


def test_unknown_debug_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "DebugFlags=JobComp, JobCmp\n")
    assert error_of(path).startswith(
        f"{path}:3: DebugFlags: unknown flag 'JobCmp'; did you mean JobComp?"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9817", ("127.0.0.1", 9817)),
        ("127.1.2.3:1", ("127.1.2.3", 1)),
        ("localhost:9817", ("localhost", 9817)),
        ("[::1]:9817", ("::1", 9817)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_loopback_listen_addresses(tmp_path: Path, value: str, expected: tuple) -> None:
    cfg = load(write(tmp_path, f"MetricsListen={value}\nHttpListen={value}\n"))
    assert cfg.metrics_listen == expected and cfg.http_listen == expected
    assert cfg.warnings == ()


@pytest.mark.parametrize("value", ["0.0.0.0:9817", "[::]:9817", "10.1.2.3:80", "node1:9817"])
def test_public_listen_address_is_a_warning(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"MetricsListen={value}\nHttpListen={value}\n")
    cfg = load(path)
    host = value.rpartition(":")[0].strip("[]")
    assert cfg.warnings == (
        f"{path}:3: MetricsListen: {host} is not a loopback address: "
        "anyone who can reach it can read the metrics",
        f"{path}:4: HttpListen: {host} is not a loopback address: "
        "anyone who can reach it can submit job records",
    )


@pytest.mark.parametrize(
    "value",
    [
        "9817",
        ":9817",
        "::1:9817",
        "[::1]9817",
        "[::1]:",
        "[127.0.0.1]:1",
        "[nope]:1",
        "host:70000",
        "host:-1",
        "host:x",
        "host:",
        "ho/st:1",
    ],
)
def test_bad_listen_address(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"MetricsListen={value}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: MetricsListen: ")
    assert "host:port or [IPv6]:port" in message


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0), ("4096", 4096), ("64M", 64 << 20), ("64m", 64 << 20), ("2G", 2 << 30),
    ("1T", 1 << 40), ("512k", 512 << 10), ("1024T", 1 << 50)])
def test_spool_min_free_bytes(tmp_path: Path, value: str, expected: int) -> None:
    assert load(write(tmp_path, f"SpoolMinFreeBytes={value}\n")).spool_min_free_bytes == expected


@pytest.mark.parametrize("value", ["64MB", "64 M", "-1", "1.5G", "1025T", "1P", "M",
                                   "99999999999999999", "0x10"])
def test_bad_spool_min_free_bytes(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"SpoolMinFreeBytes={value}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: SpoolMinFreeBytes={value}: expected bytes, or a "
                              "number with K, M, G or T (1024-based), from 0 to "), message


def test_metrics_textfile_needs_prom_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "MetricsTextfile=/srv/metrics.txt\n")
    (warning,) = load(path).warnings
    assert warning.startswith(f"{path}:3: MetricsTextfile:") and ".prom" in warning


# --------------------------------------------------------------------------- slurm.conf


def test_cluster_name_and_slurm_user_from_slurm_conf(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, f"SlurmConf={SLURM_CONF}\n", head=""))
    assert cfg.cluster_name == "testcluster"
    assert cfg.params.topic == "testcluster"
    assert cfg.params.topic_job_start == "testcluster-job-start"
    assert cfg.spool_owners == frozenset({0})  # SlurmUser=root
    assert cfg.warnings == ()


def test_a_bad_slurm_conf_names_both_files(tmp_path: Path) -> None:
    path = write(tmp_path, "SlurmConf=/\n", head="")
    assert error_of(path) == (
        f"/: slurm.conf (SlurmConf) is not a regular file (set by {path}:2: SlurmConf)"
    )


def test_slurm_conf_syntax(tmp_path: Path) -> None:
    (tmp_path / "slurm.conf").write_text(
        "# ClusterName=commented\n"
        "include /etc/slurm/other.conf\n"
        "Include /etc/slurm/nodes.conf\n"
        "CLUSTERNAME = First  # trailing\n"
        "NodeName=n1 CPUs=2\n"
        "clustername=Second\n"  # the last one wins
        "slurmuser=4242\n"
    )
    cfg = load(write(tmp_path, "SlurmConf=slurm.conf\n", head=""))
    assert cfg.cluster_name == "second"
    assert cfg.spool_owners == frozenset({0, 4242})


def test_slurm_conf_without_slurm_user_means_root(tmp_path: Path) -> None:
    (tmp_path / "slurm.conf").write_text("ClusterName=c1\n")
    cfg = load(write(tmp_path, "SlurmConf=slurm.conf\n", head=""))
    assert cfg.spool_owners == frozenset({0})


def test_unknown_slurm_user(tmp_path: Path) -> None:
    (tmp_path / "slurm.conf").write_text("ClusterName=c1\n\nSlurmUser=no-such-user-xyz\n")
    message = error_of(write(tmp_path, "SlurmConf=slurm.conf\n", head=""))
    assert message == f"{tmp_path}/slurm.conf:3: SlurmUser: unknown user 'no-such-user-xyz'"


def test_unreadable_slurm_conf(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "SlurmConf=missing.conf\n"))
    assert message.startswith(f"{tmp_path}/missing.conf: cannot read slurm.conf")


def test_cluster_name_here_wins_over_slurm_conf_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, f"SlurmConf={SLURM_CONF}\n", head="ClusterName=Other\n")
    cfg = load(path)
    assert cfg.cluster_name == "other"
    assert cfg.warnings == (
        f"{path}:1: ClusterName: 'other' differs from ClusterName=testcluster in {SLURM_CONF}:2",
    )


def test_cluster_name_is_required(tmp_path: Path) -> None:
    path = write(tmp_path, "", head="")
    assert error_of(path).startswith(f"{path}: ClusterName is not known")
    (tmp_path / "slurm.conf").write_text("SlurmUser=root\n")
    path = write(tmp_path, "SlurmConf=slurm.conf\n", head="")
    assert error_of(path).startswith(f"{path}: ClusterName is not known")


@pytest.mark.parametrize("name", ["a b", "a:b"])
def test_bad_cluster_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "", head=f'ClusterName="{name}"\n')
    assert error_of(path).startswith(f"{path}:1: ClusterName: ClusterName {name!r} must be")


def test_cluster_name_that_is_no_topic_name(tmp_path: Path) -> None:
    path = write(tmp_path, "", head="ClusterName=a/b\n")
    assert "topic (default: ClusterName): 'a/b' is not a valid Kafka topic name" in error_of(path)
    # ...which an explicit topic avoids
    cfg = load(
        write(
            tmp_path, "JobCompParams=topic=ab,topic_job_start=ab-start\n", head="ClusterName=a/b\n"
        )
    )
    assert cfg.params.topic == "ab"


def test_default_spool_owners_without_slurm_conf(tmp_path: Path, monkeypatch) -> None:
    def fake_getpwnam(name: str):
        if name == "slurm":
            return pwd.struct_passwd(("slurm", "x", 64030, 64030, "", "/", "/bin/false"))
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", fake_getpwnam)
    assert load(write(tmp_path, "")).spool_owners == frozenset({0, 64030})
    monkeypatch.setattr(pwd, "getpwnam", lambda name: (_ for _ in ()).throw(KeyError(name)))
    assert load(write(tmp_path, "")).spool_owners == frozenset({0})


# --------------------------------------------------------------------------- JobCompParams

WHERE = "jobcompd.conf:7: JobCompParams"


def params(text: str, cluster: str = "c1"):
    return parse_params(text, cluster, WHERE)


def params_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        params(text)
    return str(info.value)


def test_params_every_option() -> None:
    p, warnings = params(
        "flush_timeout=-1, poll_interval=0, requeue_on_msg_timeout, topic=end.jobs,"
        "topic_job_start=start.jobs, enable_job_start, send_script, send_comment,"
        "max_inflight=5, max_record_bytes=2048, rescan_interval=7, stall_timeout=9,"
        "retry_backoff_max=11, dead_letter_after=3600"
    )
    assert len(warnings) == 1 and "requeue_on_msg_timeout is accepted" in warnings[0]
    assert p == config.Params(
        flush_timeout_ms=-1,
        poll_interval_s=0,
        topic="end.jobs",
        topic_job_start="start.jobs",
        enable_job_start=True,
        send_script=True,
        send_comment=True,
        max_inflight=5,
        max_record_bytes=2048,
        rescan_interval_s=7.0,
        stall_timeout_s=9.0,
        retry_backoff_max_s=11.0,
        dead_letter_after_s=3600.0,
    )
    assert isinstance(p.rescan_interval_s, float) and isinstance(p.max_inflight, int)


def test_params_tokens_are_trimmed_and_names_case_insensitive() -> None:
    p, _ = params(" , Enable_Job_Start ,, TOPIC = x-y_z.1 ,")
    assert p.enable_job_start and p.topic == "x-y_z.1"
    assert p.topic_job_start == "c1-job-start"


@pytest.mark.parametrize(
    ("option", "low", "high", "unit"),
    [
        ("flush_timeout", -1, 2147483647, "milliseconds"),
        ("poll_interval", 0, 4294967295, "seconds"),
        ("max_inflight", 1, 1000000, "records"),
        ("max_record_bytes", 1024, 16777216, "bytes"),
        ("rescan_interval", 1, 86400, "seconds"),
        ("stall_timeout", 5, 86400, "seconds"),
        ("retry_backoff_max", 1, 3600, "seconds"),
    ],
)
def test_params_ranges(option: str, low: int, high: int, unit: str) -> None:
    field = {
        "flush_timeout": "flush_timeout_ms",
        "poll_interval": "poll_interval_s",
        "rescan_interval": "rescan_interval_s",
        "stall_timeout": "stall_timeout_s",
        "retry_backoff_max": "retry_backoff_max_s",
    }.get(option, option)
    assert getattr(params(f"{option}={low}")[0], field) == low
    assert getattr(params(f"{option}=+{high}")[0], field) == high
    accepted = f"accepted: a whole number in base 10, {low}..{high} {unit}"
    for bad in (low - 1, high + 1):
        assert params_error(f"{option}={bad}") == (
            f"{WHERE}: {option}={bad} is out of range ({accepted})"
        )


@pytest.mark.parametrize("value", ["abc", "0x10", "1.5", "1e3", "1_000", "", "٣", "5s", "- 1"])
def test_params_bad_numbers(value: str) -> None:
    assert params_error(f"poll_interval={value}") == (
        f"{WHERE}: poll_interval={value} is not a number "
        "(accepted: a whole number in base 10, 0..4294967295 seconds)"
    )


def test_params_unknown_option() -> None:
    assert params_error("send_script,flush_timeot=5").startswith(
        f"{WHERE}: unknown option 'flush_timeot'; did you mean flush_timeout?"
    )
    assert "did you mean" not in params_error("frobnicate")


@pytest.mark.parametrize("flag", ["enable_job_start", "send_script", "purge_in_flight"])
def test_params_flag_with_a_value(flag: str) -> None:
    assert params_error(f"{flag}=yes").startswith(
        f"{WHERE}: {flag} is a flag and takes no value (got {flag}=yes)"
    )


@pytest.mark.parametrize("option", ["topic", "topic_job_start", "flush_timeout"])
def test_params_option_without_value(option: str) -> None:
    assert params_error(option) == f"{WHERE}: {option} needs a value ({option}=...)"


@pytest.mark.parametrize("option", ["topic", "topic_job_start"])
def test_params_topics(option: str) -> None:
    assert params_error(f"{option}=") == f"{WHERE}: {option}: the topic name is empty"
    assert params_error(f"{option}= ") == f"{WHERE}: {option}: the topic name is empty"
    for bad in ("a b", "a/b", "..", "x" * 250, "ü"):
        assert "is not a valid Kafka topic name" in params_error(f"{option}={bad}")
    assert getattr(params(f"{option}={'x' * 249}")[0], option) == "x" * 249


def test_params_duplicate_option() -> None:
    assert params_error("topic=a,Topic=b") == f"{WHERE}: topic is given twice"


def test_params_purge_flags_are_ignored_with_a_warning() -> None:
    p, warnings = params("purge_in_flight,purge_non_blocking,requeue_purge_in_flight")
    assert p == params("")[0]
    assert len(warnings) == 3
    for name, warning in zip(
        ("purge_in_flight", "purge_non_blocking", "requeue_purge_in_flight"), warnings, strict=True
    ):
        assert warning.startswith(f"{WHERE}: {name} is accepted for compatibility with Slurm")
        assert "never discards" in warning


def test_params_same_topic_twice_is_a_warning() -> None:
    _, warnings = params("topic=jobs,topic_job_start=jobs,enable_job_start")
    assert warnings == [
        f"{WHERE}: topic and topic_job_start are both 'jobs': start and end records share "
        "one topic and consumers must tell them apart by the 'event' header"
    ]
    assert params("topic=jobs,topic_job_start=jobs")[1] == []  # start events are off


def test_params_error_through_load_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "\nJobCompParams=stall_timeout=1\n")
    assert error_of(path) == (
        f"{path}:4: JobCompParams: stall_timeout=1 is out of range "
        "(accepted: a whole number in base 10, 5..86400 seconds)"
    )


@pytest.mark.parametrize(
    ("kafka", "params_text", "fits"),
    [
        ("message.max.bytes=100000\n", "", False),
        ("message.max.bytes=525312\n", "", True),  # exactly 524288 + 1024
        ("message.max.bytes=525311\n", "", False),
        ("message.max.bytes=2000000\n", "max_record_bytes=1048576", True),
        ("", "max_record_bytes=998976", True),  # librdkafka's default: 1000000
        ("", "max_record_bytes=998977", False),
        ("message.max.bytes=0x100000\n", "max_record_bytes=1047552", True),  # hex: 1048576
        ("message.max.bytes=0x100000\n", "max_record_bytes=1047553", False),
    ],
)
def test_max_record_bytes_fits_message_max_bytes(
    tmp_path: Path, kafka: str, params_text: str, fits: bool
) -> None:
    path = write(tmp_path, f"JobCompParams={params_text}\n", kafka=KAFKA_OK + kafka)
    if fits:
        load(path)
        return
    message = error_of(path)
    assert message.startswith(f"{path}:3: JobCompParams: max_record_bytes=")
    if kafka:
        assert f"({tmp_path}/rdkafka.conf:2)" in message
    else:
        assert "librdkafka's default message.max.bytes=1000000" in message


# --------------------------------------------------------------------------- librdkafka file


def test_kafka_file_lines_are_read_as_slurm_reads_them() -> None:
    text = (
        "bootstrap.servers = b1:9092 , b2:9092   # inline comment\n"  # 1
        "# a comment=with an equals sign\n"  # 2: '#' in the key part
        "a#b=c\n"  # 3: '#' in the key part
        "no equals sign here\n"  # 4
        "\n"  # 5
        "linger.ms=5=6\n"  # 6: split at the first '='
        "=v\n"  # 7: empty key, kept
        "client.id=\n"  # 8: empty value, kept
        "\t debug \t=\t#all\r\n"  # 9: value cut at '#', then trimmed
        "  log_level = 7"  # 10: no newline at the end
    )
    assert config.parse_kafka_text(text) == (
        KafkaProperty("bootstrap.servers", "b1:9092 , b2:9092", 1),
        KafkaProperty("linger.ms", "5=6", 6),
        KafkaProperty("", "v", 7),
        KafkaProperty("client.id", "", 8),
        KafkaProperty("debug", "", 9),
        KafkaProperty("log_level", "7", 10),
    )


def test_parse_kafka_file(tmp_path: Path) -> None:
    (tmp_path / "k.conf").write_text("# x\nacks=all\n")
    assert config.parse_kafka_file(tmp_path / "k.conf") == (KafkaProperty("acks", "all", 2),)
    with pytest.raises(ConfigError, match=r"k2\.conf: cannot read librdkafka properties file"):
        config.parse_kafka_file(tmp_path / "k2.conf")


def test_missing_job_comp_loc_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    (tmp_path / "rdkafka.conf").unlink()
    assert error_of(path) == (
        f"{tmp_path}/rdkafka.conf: cannot read librdkafka properties file (JobCompLoc): "
        f"No such file or directory (set by {path}:2: JobCompLoc)"
    )



def test_job_comp_loc_is_required(tmp_path: Path) -> None:
    path = tmp_path / "jobcompd.conf"
    path.write_text("ClusterName=c\n")
    assert error_of(path).startswith(f"{path}: JobCompLoc is not set")


def test_job_comp_loc_must_be_a_regular_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    (tmp_path / "rdkafka.conf").unlink()
    (tmp_path / "rdkafka.conf").mkdir()
    assert error_of(path) == (
        f"{tmp_path}/rdkafka.conf: librdkafka properties file (JobCompLoc) is not a regular "
        f"file (set by {path}:2: JobCompLoc)"
    )


def test_kafka_file_encoding_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    (tmp_path / "rdkafka.conf").write_bytes(b"bootstrap.servers=a:1\nclient.id=\xff\n")
    assert error_of(path).startswith(f"{tmp_path}/rdkafka.conf:2: ") and "UTF-8" in error_of(path)
    (tmp_path / "rdkafka.conf").write_bytes(b"bootstrap.servers=a:1\n\nclient.id=a\0b\n")
    assert error_of(path).startswith(f"{tmp_path}/rdkafka.conf:3: ") and "NUL" in error_of(path)


def test_missing_bootstrap_servers(tmp_path: Path) -> None:
    path = write(tmp_path, "", kafka="# nothing\nclient.id=x\n")
    assert error_of(path).startswith(f"{tmp_path}/rdkafka.conf: bootstrap.servers is not set")
    path = write(tmp_path, "", kafka="bootstrap.servers=   # none\n")
    assert error_of(path) == f"{tmp_path}/rdkafka.conf:1: bootstrap.servers is empty"


def test_metadata_broker_list_is_an_alias(tmp_path: Path) -> None:
    load(write(tmp_path, "", kafka="metadata.broker.list=127.0.0.1:9092\n"))


def test_unknown_kafka_property(tmp_path: Path) -> None:
    """An unknown name may be a misspelled secret: its value is never repeated."""
    path = write(tmp_path, "", kafka=KAFKA_OK + "\nlinger.mss=5\nfoo=1\n")
    assert error_of(path) == (
        f'{tmp_path}/rdkafka.conf:3: linger.mss: No such configuration property: "linger.mss"'
        "; did you mean linger.ms?"
    )


def test_invalid_kafka_value(tmp_path: Path) -> None:
    path = write(tmp_path, "", kafka=KAFKA_OK + "enable.idempotence=maybe\n")
    assert error_of(path) == (
        f"{tmp_path}/rdkafka.conf:2: enable.idempotence=maybe: "
        'Expected bool value for "enable.idempotence": true or false'
    )
    path = write(tmp_path, "", kafka=KAFKA_OK + "linger.ms=-5\n")
    message = error_of(path)
    assert message.startswith(f"{tmp_path}/rdkafka.conf:2: linger.ms=-5: ")
    assert "outside allowed range" in message


def test_callbacks_cannot_be_set_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "", kafka=KAFKA_OK + "dr_msg_cb=x\n")
    message = error_of(path)
    assert message.startswith(f"{tmp_path}/rdkafka.conf:2: dr_msg_cb=***: ")  # no documented
    assert "must be set through dedicated" in message  # non-secret value: not shown


def test_rejected_secret_is_redacted(tmp_path: Path) -> None:
    jaas = 'sasl.jaas.config=ScramLoginModule required username="u" password="hunter2";\n'
    path = write(tmp_path, "", kafka=KAFKA_OK + jaas)
    message = error_of(path)
    assert message.startswith(f"{tmp_path}/rdkafka.conf:2: sasl.jaas.config=***: ")
    assert "hunter2" not in message


def test_transactional_id_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "", kafka=KAFKA_OK + "transactional.id=x\n")
    assert error_of(path).startswith(f"{tmp_path}/rdkafka.conf:2: transactional.id: jobcompd")


def test_check_kafka_properties_directly(tmp_path: Path) -> None:
    config.check_kafka_properties([KafkaProperty("acks", "all", 1)], tmp_path / "k")
    with pytest.raises(ConfigError, match=r"k:9: acks=most: Invalid value"):
        config.check_kafka_properties([KafkaProperty("acks", "most", 9)], tmp_path / "k")


def test_world_readable_secret_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "", kafka=KAFKA_OK + "sasl.password=hunter2\n")
    assert load(path).warnings == ()  # 0600
    (tmp_path / "rdkafka.conf").chmod(0o644)
    (warning,) = load(path).warnings
    assert warning == (
        f"{tmp_path}/rdkafka.conf: holds a secret (sasl.password, line 2) and is readable "
        "by every user; chmod o-r it"
    )
    assert "hunter2" not in warning
    path = write(tmp_path, "", kafka=KAFKA_OK + "client.id=x\n")
    (tmp_path / "rdkafka.conf").chmod(0o644)
    assert load(path).warnings == ()  # no secret in it


@pytest.mark.parametrize(
    "key",
    [
        "sasl.password",
        "SASL.PASSWORD",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.assertion.private.key.pem",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.jaas.config",
    ],
)
def test_secrets(key: str) -> None:
    assert is_secret(key)


@pytest.mark.parametrize(
    "key",
    [
        "bootstrap.servers",
        "sasl.username",
        "ssl.key.location",
        "ssl.certificate.pem",
        "ssl.ca.location",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.token.endpoint.url",
    ],
)
def test_not_secrets(key: str) -> None:
    assert not is_secret(key)


SECRET_VALUE = "hunter2-Sec-4711"


@pytest.mark.parametrize("key", ["sasl.pasword", "sasl.passwd", "sasl_password", "SASL.PASSWORD",
                                 "ssl.key.passwrd", "sasl.oauthbearer.client.secrets",
                                 "ssl.keypem", "no.such.thing"])
def test_a_misspelled_property_never_shows_its_value(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, "", kafka=f"{KAFKA_OK}{key}={SECRET_VALUE}\n")
    message = error_of(path)
    assert SECRET_VALUE not in message
    assert message.startswith(f"{tmp_path}/rdkafka.conf:2: {key}: No such configuration "
                              f'property: "{key}"'), message


def test_a_misspelled_secret_is_named_with_the_right_spelling(tmp_path: Path) -> None:
    path = write(tmp_path, "", kafka=f"{KAFKA_OK}sasl.pasword={SECRET_VALUE}\n")
    assert error_of(path) == (f"{tmp_path}/rdkafka.conf:2: sasl.pasword: No such configuration "
                              'property: "sasl.pasword"; did you mean sasl.password?')


@pytest.mark.parametrize("key", ["sasl.kerberos.kinit.cmd", "sasl.oauthbearer.extensions",
                                 "dr_msg_cb", "ssl_key"])
def test_values_of_undocumented_or_secret_properties_are_hidden(key: str) -> None:
    assert is_secret(key)
    assert config.kafka.redacted({key: SECRET_VALUE}) == {key: "***"}


@pytest.mark.parametrize("key", ["acks", "topic.acks", "topic.message.timeout.ms",
                                 "topic.metadata.refresh.interval.ms", "linger.ms",
                                 "security.protocol", "compression.type"])
def test_values_of_documented_plain_properties_are_shown(key: str) -> None:
    assert not is_secret(key)


def test_librdkafka_knows_every_property_the_secret_rule_names() -> None:
    lib = config.kafka._librdkafka()
    conf = lib.rd_kafka_conf_new()
    unknown = []
    try:
        for name in sorted(config.kafka.KNOWN | {f"topic.{n}" for n in
                                                  config.kafka.NON_SECRET_TOPIC}):
            errstr = ctypes.create_string_buffer(512)
            if lib.rd_kafka_conf_set(conf, name.encode(), b"", errstr, 512) == -2:
                unknown.append(name)
    finally:
        lib.rd_kafka_conf_destroy(conf)
    assert unknown == []


def test_a_rejected_secret_value_is_masked_even_when_librdkafka_cut_it() -> None:
    prop = KafkaProperty("sasl.oauthbearer.config", "principal=" + "s" * 600, 4)
    message = 'Invalid value "principal=' + "s" * 480  # errstr is 512 bytes at most
    masked = config.kafka._masked(message, prop)
    assert "sss" not in masked and masked == 'Invalid value "***"'
    plain = config.kafka._masked('Invalid value "x" for "sasl.oauthbearer.config"', prop)
    assert plain == 'Invalid value "***" for "sasl.oauthbearer.config"'


# --------------------------------------------------------------------------- producer config


def test_producer_config_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "", kafka=KAFKA_OK + "client.id=x\n"))
    assert cfg.producer_config() == {
        "enable.idempotence": "true",
        "message.timeout.ms": "300000",
        "acks": "all",
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "x",
    }


def test_producer_config_user_overrides(tmp_path: Path) -> None:
    kafka = KAFKA_OK + "enable.idempotence=false\nmessage.timeout.ms=60000\nacks=-1\n"
    cfg = load(write(tmp_path, "", kafka=kafka))
    assert cfg.producer_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "enable.idempotence": "false",
        "message.timeout.ms": "60000",
        "acks": "-1",
    }


def test_producer_config_respects_librdkafka_aliases(tmp_path: Path) -> None:
    kafka = KAFKA_OK + "request.required.acks=all\ntopic.delivery.timeout.ms=1000\n"
    cfg = load(write(tmp_path, "", kafka=kafka))
    assert cfg.producer_config() == {
        "enable.idempotence": "true",
        "bootstrap.servers": "127.0.0.1:9092",
        "request.required.acks": "all",
        "topic.delivery.timeout.ms": "1000",
    }


def test_producer_config_last_value_wins(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "", kafka=KAFKA_OK + "linger.ms=1\nclient.id=a\nlinger.ms=2\n"))
    assert list(cfg.producer_config().items())[-2:] == [("client.id", "a"), ("linger.ms", "2")]


def test_weaker_acks_drop_the_idempotence_default_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "", kafka=KAFKA_OK + "acks=1\n")
    cfg = load(path)
    assert "enable.idempotence" not in cfg.producer_config()
    assert cfg.producer_config()["acks"] == "1"
    (warning,) = cfg.warnings
    assert warning.startswith(f"{tmp_path}/rdkafka.conf:2: acks=1: a record the leader alone")


@pytest.mark.parametrize("extra", ["", "acks=1\n", "enable.idempotence=false\nacks=0\n"])
def test_producer_config_is_accepted_by_confluent_kafka(tmp_path: Path, extra: str) -> None:
    """librdkafka checks the combination (idempotence needs acks=all) only when the
    producer is created; creating one needs no broker."""
    import confluent_kafka

    kafka = "bootstrap.servers=127.0.0.1:1\nlinger.ms=5\n" + extra
    cfg = load(write(tmp_path, "", kafka=kafka))
    producer = confluent_kafka.Producer(cfg.producer_config())  # raises when refused
    producer.produce("t", b"x")  # and it takes messages
    producer.purge()


def test_redacted_kafka(tmp_path: Path) -> None:
    kafka = KAFKA_OK + "sasl.username=alice\nsasl.password=hunter2\nssl.key.pem=PEM\n"
    cfg = load(write(tmp_path, "", kafka=kafka))
    redacted = cfg.redacted_kafka()
    assert redacted["sasl.password"] == "***" and redacted["ssl.key.pem"] == "***"
    assert redacted["sasl.username"] == "alice"
    assert redacted["acks"] == "all"
    assert "hunter2" not in repr(redacted)
    assert cfg.producer_config()["sasl.password"] == "hunter2"


def test_kafka_changed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = load(write(tmp_path / "a", "", kafka=KAFKA_OK + "client.id=x\n"))
    moved = load(
        write(tmp_path / "b", "JobCompParams=topic=t\n", kafka="\n\n" + KAFKA_OK + "client.id=x\n")
    )
    assert not first.kafka_changed(moved)  # other lines, other params: same producer
    changed = load(write(tmp_path / "b", "", kafka=KAFKA_OK + "client.id=y\n"))
    assert first.kafka_changed(changed) and changed.kafka_changed(first)


# --------------------------------------------------------------------------- etc/ examples


def _etc_copy(tmp_path: Path) -> Path:
    """etc/jobcompd.conf and etc/rdkafka.conf side by side, SlurmConf aimed at test data."""
    text = (ROOT / "etc" / "jobcompd.conf").read_text()
    text, n = re.subn(r"(?m)^SlurmConf=.*$", f"SlurmConf={SLURM_CONF}", text)
    assert n == 1
    (tmp_path / "jobcompd.conf").write_text(text)
    shutil.copy(ROOT / "etc" / "rdkafka.conf", tmp_path / "rdkafka.conf")
    (tmp_path / "rdkafka.conf").chmod(0o600)
    return tmp_path / "jobcompd.conf"


def test_example_config_loads(tmp_path: Path) -> None:
    cfg = load(_etc_copy(tmp_path))
    assert cfg.cluster_name == "testcluster"
    assert cfg.producer_config()["bootstrap.servers"] == "127.0.0.1:9092"
    assert cfg.warnings == ()


def test_example_config_documents_every_key_and_option() -> None:
    text = (ROOT / "etc" / "jobcompd.conf").read_text()
    for key in KEYS:
        assert re.search(rf"(?m)^#?{key}=", text), key
    for option in (
        "topic",
        "topic_job_start",
        "enable_job_start",
        "flush_timeout",
        "poll_interval",
        "requeue_on_msg_timeout",
        "send_script",
        "send_comment",
        "purge_in_flight",
        "purge_non_blocking",
        "requeue_purge_in_flight",
        "max_inflight",
        "max_record_bytes",
        "rescan_interval",
        "stall_timeout",
        "retry_backoff_max",
    ):
        assert re.search(rf"(?m)^#\s+.*\b{option}\b", text), option


def test_example_config_commented_values_are_valid(tmp_path: Path, monkeypatch) -> None:
    real_getpwnam = pwd.getpwnam

    def getpwnam(name: str):  # the example names the user "slurm", which may not exist here
        if name == "slurm":
            return pwd.struct_passwd(("slurm", "x", 64030, 64030, "", "/", "/bin/false"))
        return real_getpwnam(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    path = _etc_copy(tmp_path)
    text = path.read_text()
    text, n = re.subn(r"(?m)^#([A-Z][A-Za-z]+=)", r"\1", text)
    assert n >= 10
    path.write_text(text)
    cfg = load(path)
    assert cfg.params.enable_job_start and cfg.debug_jobcomp
    assert cfg.metrics_listen is not None and cfg.http_listen is not None
    assert cfg.spool_owners == frozenset({0, 64030})
    # the example ClusterName is not the test slurm.conf's: the only complaint
    (warning,) = cfg.warnings
    assert "'mycluster' differs from ClusterName=testcluster" in warning


@pytest.mark.parametrize("variant", ["Plain", "TLS", "SASL/SCRAM over TLS"])
def test_example_rdkafka_variants_are_valid(tmp_path: Path, variant: str) -> None:
    text = (ROOT / "etc" / "rdkafka.conf").read_text()
    blocks = re.split(r"(?m)^# --- ", text)
    (block,) = [b for b in blocks if b.startswith(variant + ":")]
    lines = [re.sub(r"^#(?=[a-z_.]+=)", "", line) for line in block.splitlines()]
    props = config.parse_kafka_text("\n".join(lines))
    assert any(p.key == "bootstrap.servers" for p in props)
    config.check_kafka_properties(props, Path("rdkafka.conf"))


def test_slurm_conf_snippet_wires_the_hook() -> None:
    text = (ROOT / "etc" / "slurm.conf.snippet").read_text()
    active = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert active["JobCompType"] == "jobcomp/script"
    assert active["JobCompLoc"].endswith("/jobcompd-spool")
    assert active["PrologSlurmctld"] == active["JobCompLoc"]
    assert "JOBCOMPD_SPOOL" in text and "/var/spool/jobcompd" in text


# --------------------------------------------------------------------------- hostile values

NINES = "9" * 5000
HOSTILE_VALUES = [
    NINES, "-" + NINES, "+" + "0" * 4990 + "7", "0x" + "f" * 5000, "x" * 5000, "١٢٣",
    "1e999", "nan", "\x1b[2J\x07bell", "a,b," * 1000,
]


def one_line_error(path: Path) -> str | None:
    """load's ConfigError, checked to be one short line that starts with a file in ``path``'s
    folder; None if the file loads."""
    try:
        load(path)
    except ConfigError as e:
        message = str(e)
    else:
        return None
    assert "\n" not in message and "\x1b" not in message and "\x07" not in message, message
    assert len(message) < 800, message
    assert NINES[:400] not in message and "x" * 400 not in message, message
    assert message.startswith(str(path.parent)), message
    return message


def test_a_5000_digit_max_inflight_is_a_config_error(tmp_path: Path) -> None:
    """A number past Python's 4300-digit conversion limit raised ValueError, past the
    reload's except ConfigError."""
    path = write(tmp_path, f"JobCompParams=max_inflight={NINES}\n")
    message = one_line_error(path)
    assert message == (
        f"{path}:3: JobCompParams: max_inflight={'9' * 40}… (5000 characters) is out of "
        "range (accepted: a whole number in base 10, 1..1000000 records)"
    )


def test_a_5000_digit_uid_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"SpoolOwners=root,{NINES}\n")
    assert one_line_error(path) == (
        f"{path}:3: SpoolOwners: uid {'9' * 40}… (5000 characters) is out of range")
    (tmp_path / "slurm.conf").write_text(f"ClusterName=c1\nSlurmUser={NINES}\n")
    path = write(tmp_path, "SlurmConf=slurm.conf\n", head="")
    assert one_line_error(path) == (
        f"{tmp_path}/slurm.conf:2: SlurmUser: uid {'9' * 40}… (5000 characters) is out of "
        "range")


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=range(len(HOSTILE_VALUES)))
@pytest.mark.parametrize("key", KEYS)
def test_a_hostile_value_of_any_key_is_refused_in_one_line(tmp_path: Path, key: str,
                                                           value: str) -> None:
    lines = {"ClusterName": "test", "JobCompLoc": "rdkafka.conf", key: value}
    (tmp_path / "rdkafka.conf").write_text(KAFKA_OK)
    path = tmp_path / "jobcompd.conf"
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    one_line_error(path)


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=range(len(HOSTILE_VALUES)))
@pytest.mark.parametrize("option", [o.name for o in config.OPTIONS])
def test_a_hostile_value_of_any_option_is_refused_in_one_line(tmp_path: Path, option: str,
                                                              value: str) -> None:
    message = one_line_error(write(tmp_path, f"JobCompParams={option}={value}\n"))
    if message is not None:  # a topic may be called "nan", and +000…0007 is 7
        assert message.startswith(f"{tmp_path}/jobcompd.conf:3: JobCompParams: "), message


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=range(len(HOSTILE_VALUES)))
@pytest.mark.parametrize("prop", ["message.max.bytes", "linger.ms", "acks", "client.id"])
def test_a_hostile_kafka_value_is_refused_in_one_line(tmp_path: Path, prop: str,
                                                      value: str) -> None:
    message = one_line_error(write(tmp_path, "", kafka=f"{KAFKA_OK}{prop}={value}\n"))
    assert message is None or f"{tmp_path}/rdkafka.conf:2: {prop}" in message


def test_a_value_error_no_parser_foresaw_still_names_file_line_and_key(tmp_path: Path,
                                                                       monkeypatch) -> None:
    import dataclasses

    from jobcompd.config import loader as loadmod

    def boom(value, where, ctx):
        raise ValueError("unforeseen")

    keys = tuple(dataclasses.replace(k, parse=boom) if k.name == "LogFormat" else k
                 for k in config.KEYS)
    monkeypatch.setattr(loadmod, "KEYS", keys)
    path = write(tmp_path, "LogFormat=json\n")
    assert one_line_error(path) == (
        f"{path}:3: LogFormat: 'json' is not a value jobcompd can use; LogFormat is lines on "
        "stderr: `logfmt` or `json`")


# --------------------------------------------------------------------------- property tests

lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.builds(
            lambda k, v: f"{k}={v}",
            st.sampled_from([*KEYS, "clustername", "Nope"]),
            st.text(max_size=30),
        ),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200))
def test_params_only_raise_config_error(text: str) -> None:
    try:
        p, warnings = parse_params(text, "c1", WHERE)
    except ConfigError as e:
        assert str(e).startswith(WHERE)
    else:
        assert p.topic and p.topic_job_start and isinstance(warnings, list)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_kafka_text_parse_never_fails(text: str) -> None:
    for prop in config.parse_kafka_text(text):
        assert "#" not in prop.key and "#" not in prop.value
        assert prop.key == prop.key.strip(" \t\n\v\f\r")
        assert prop.value == prop.value.strip(" \t\n\v\f\r")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(main=lines)
def test_arbitrary_main_file_only_raises_config_error(tmp_path_factory, main: list[str]) -> None:
    folder = tmp_path_factory.mktemp("main", numbered=True)
    path = write(folder, "\n".join(main) + "\n", head="")
    try:
        cfg = load(path)
    except ConfigError as e:
        assert str(e)
    else:
        assert cfg.cluster_name and cfg.kafka


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kafka=st.one_of(
        st.binary(max_size=200),
        st.lists(
            st.one_of(
                st.text(max_size=40),
                st.builds(
                    lambda k, v: f"{k}={v}",
                    st.sampled_from(
                        ["bootstrap.servers", "acks", "linger.ms", "sasl.password", "nope", "#x"]
                    ),
                    st.text(max_size=20),
                ),
            ),
            max_size=6,
        ).map(lambda ls: "\n".join(ls).encode()),
    )
)
def test_arbitrary_kafka_file_only_raises_config_error(tmp_path_factory, kafka: bytes) -> None:
    folder = tmp_path_factory.mktemp("kafka", numbered=True)
    path = write(folder, "")
    (folder / "rdkafka.conf").write_bytes(kafka)
    try:
        cfg = load(path)
    except ConfigError as e:
        assert str(e)
    else:
        assert cfg.producer_config()


@pytest.mark.parametrize(("lines", "names"), [
    ("linger.ms=45000\nmessage.timeout.ms=10000\n", ["linger.ms=45000", "line 3"]),
    ("queue.buffering.max.ms=400000\n", ["queue.buffering.max.ms=400000",
                                         "default message.timeout.ms=300000"]),
])
def test_a_linger_that_outlasts_the_message_timeout_is_refused(tmp_path, lines, names):
    """librdkafka would refuse the producer at start; the configuration says why first, so
    check and run agree."""
    kafka = tmp_path / "rdkafka.conf"
    kafka.write_text("bootstrap.servers=127.0.0.1:9\n" + lines)
    conf = tmp_path / "jobcompd.conf"
    conf.write_text(f"ClusterName=c1\nJobCompLoc={kafka}\nSpoolDir={tmp_path}/spool\n"
                    f"StateSaveLocation={tmp_path}\n")
    with pytest.raises(ConfigError) as e:
        load(conf)
    for word in names:
        assert word in str(e.value), str(e.value)
    assert str(e.value).startswith(f"{kafka}:2: ")


def test_a_long_linger_below_the_message_timeout_is_accepted(tmp_path):
    kafka = tmp_path / "rdkafka.conf"
    kafka.write_text("bootstrap.servers=127.0.0.1:9\nlinger.ms=45000\n")
    conf = tmp_path / "jobcompd.conf"
    conf.write_text(f"ClusterName=c1\nJobCompLoc={kafka}\nSpoolDir={tmp_path}/spool\n"
                    f"StateSaveLocation={tmp_path}\n")
    assert load(conf).producer_config()["linger.ms"] == "45000"
