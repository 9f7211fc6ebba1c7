"""Hypothesis against every parser: whatever the bytes, only the project's own error type
escapes (RecordError, ConfigError, StateError, RejectedFile), and its message is one a person
can act on: not empty, not a Python repr, not a dump of the whole input.

The inputs are both blind (random bytes, random text) and informed: real captures from
tests/data with entries removed, cut off, or given strange values, and JSON of every shape.
"""

from __future__ import annotations

import json
import os
import re
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobcompd import config, records, spool
from jobcompd.service import statefile as state

DATA = Path(__file__).parent / "data" / "records"
ENV_FIXTURES = sorted(DATA.glob("*.env"))
JSON_FIXTURES = sorted((DATA / "elasticsearch").glob("*.json"))
#: Longest message tolerated: a message quoting a megabyte of input helps nobody.
MAX_MESSAGE = 1500

#: ``make soak`` (JOBCOMPD_SOAK=1) digs deeper.
EXAMPLES = 3000 if os.environ.get("JOBCOMPD_SOAK", "") not in ("", "0") else 100
fuzz = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def actionable(e: Exception) -> str:
    msg = str(e)
    assert msg.strip(), f"{type(e).__name__} without a message"
    assert len(msg) <= MAX_MESSAGE, f"message of {len(msg)} characters: {msg[:200]}…"
    assert not re.search(r"<[\w.]+ object at 0x", msg), msg
    assert "Traceback" not in msg, msg
    return msg


def env_dump(entries: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(k + b"=" + v + b"\0" for k, v in entries)


def fixture_entries(path: Path) -> list[tuple[bytes, bytes]]:
    raw = path.read_bytes()
    return [tuple(e.partition(b"=")[::2]) for e in raw[:-1].split(b"\0")]  # type: ignore[misc]


# -- env dumps ------------------------------------------------------------------------------

TRICKY_VALUES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    st.sampled_from([b"", b"0", b"-1", b"4294967295", b"4294967296", b"18446744073709551616",
                     b"99999999999999999999999", b"1e9", b"0x10", b" 12", b"12 ", b"NaN",
                     b"UNLIMITED", b"INVALID", b"0:0", b"-1:-1", b"1:", b":", b"1-00:00:00",
                     b"99-99:99:99", b"2(x3),1", b"4(x0)", b"(x2)", b"\xff\xfe", b"\x00"]),
)


@st.composite
def mutated_env(draw) -> bytes:
    """A real capture, with some entries dropped, some values replaced, maybe cut off."""
    entries = fixture_entries(draw(st.sampled_from(ENV_FIXTURES)))
    n = len(entries)
    for i in sorted(draw(st.sets(st.integers(0, n - 1), max_size=5)), reverse=True):
        del entries[i]
    for _ in range(draw(st.integers(0, 6))):
        if not entries:
            break
        i = draw(st.integers(0, len(entries) - 1))
        entries[i] = (entries[i][0], draw(TRICKY_VALUES))
    data = env_dump(entries)
    if draw(st.booleans()) and data:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@fuzz
@given(st.binary(max_size=2000))
def test_parse_env_random_bytes(data: bytes) -> None:
    try:
        env = records.parse_env(data)
    except records.RecordError as e:
        actionable(e)
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())


@fuzz
@given(mutated_env())
def test_parse_record_of_mutated_env_captures(data: bytes) -> None:
    try:
        rec = records.parse_record(data, "env", cluster="fuzz")
    except records.RecordError as e:
        actionable(e)
    else:
        json.loads(rec.value)  # whatever is accepted is valid JSON
        assert 1 <= rec.job_id <= 2**32 - 1


@fuzz
@given(st.lists(st.tuples(st.sampled_from([b"JOBID", b"SLURM_JOB_ID", b"SLURM_SCRIPT_CONTEXT",
                                           b"START", b"END", b"STATE", b"UID", b"NODECNT",
                                           b"PROCS", b"LIMIT", b"EXITCODE", b"NODES"]),
                          TRICKY_VALUES), max_size=15))
def test_parse_record_of_made_up_env(entries: list[tuple[bytes, bytes]]) -> None:
    try:
        records.parse_record(env_dump(entries), "env", cluster="fuzz")
    except records.RecordError as e:
        actionable(e)


# -- JSON -----------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@fuzz
@given(JSON_VALUES, st.sampled_from([None, "end", "start", "job_end", "job_start"]))
def test_parse_record_of_any_json(value, hint) -> None:
    data = json.dumps(value).encode()
    try:
        rec = records.parse_record(data, "json", cluster="fuzz", event_hint=hint)
    except records.RecordError as e:
        actionable(e)
    else:
        assert isinstance(value, dict) and rec.job_id == value["jobid"]


@fuzz
@given(st.sampled_from(JSON_FIXTURES), JSON_VALUES)
def test_parse_record_of_a_real_body_with_a_strange_jobid(path: Path, jobid) -> None:
    body = json.loads(path.read_bytes())
    body["jobid"] = jobid
    try:
        records.parse_record(json.dumps(body).encode(), "json", cluster="fuzz")
    except records.RecordError as e:
        assert "jobid" in actionable(e)


@fuzz
@given(st.binary(max_size=2000), st.text(max_size=10))
def test_parse_record_of_random_bytes_in_any_format(data: bytes, fmt: str) -> None:
    for f in ("env", "json", fmt):
        try:
            records.parse_record(data, f, cluster="fuzz", event_hint=fmt or None)
        except records.RecordError as e:
            actionable(e)


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_deeply_nested_json_is_refused_cleanly(depth: int) -> None:
    for data in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        with pytest.raises(records.RecordError) as info:
            records.parse_record(data, "json", cluster="fuzz")
        actionable(info.value)


# -- configuration --------------------------------------------------------------------------

PARAM_TOKENS = st.one_of(
    st.sampled_from(["flush_timeout", "poll_interval", "requeue_on_msg_timeout", "topic",
                     "topic_job_start", "enable_job_start", "send_script", "send_comment",
                     "max_inflight", "max_record_bytes", "rescan_interval", "stall_timeout",
                     "retry_backoff_max", "purge_in_flight", "Topic", "FLUSH_TIMEOUT"]),
    st.text(max_size=15),
).flatmap(lambda name: st.one_of(
    st.just(name),
    st.builds(lambda v: f"{name}={v}", st.one_of(st.text(max_size=15),
                                                  st.integers().map(str))),
))


@fuzz
@given(st.lists(PARAM_TOKENS, max_size=8).map(",".join) | st.text(max_size=200))
def test_parse_params(text: str) -> None:
    where = "/etc/jobcompd/jobcompd.conf:3: JobCompParams"
    try:
        params, warnings = config.parse_params(text, "fuzzcluster", where)
    except config.ConfigError as e:
        assert actionable(e).startswith(where)
    else:
        assert params.max_inflight >= 1 and params.topic
        for w in warnings:
            assert w.startswith(where)


@fuzz
@given(st.text(max_size=500))
def test_parse_kafka_text_never_fails(text: str) -> None:
    props = config.parse_kafka_text(text)
    lines = text.split("\n")
    for p in props:
        assert "#" not in p.key and "#" not in p.value
        assert 1 <= p.line <= len(lines)


CONF_KEYS = ["ClusterName", "JobCompLoc", "JobCompParams", "SpoolDir", "StateSaveLocation",
             "DebugFlags", "SlurmConf", "LogTarget", "LogFormat", "MetricsListen",
             "MetricsTextfile", "HttpListen", "SpoolOwners", "clustername", "NoSuchKey"]
CONF_LINE = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(CONF_KEYS),
              st.text(alphabet=string.printable, max_size=30)),
    st.text(max_size=40),
)
KAFKA_LINE = st.one_of(
    st.builds(lambda k, v: f"{k}={v}",
              st.sampled_from(["bootstrap.servers", "acks", "message.timeout.ms", "linger.ms",
                               "sasl.password", "enable.idempotence", "transactional.id",
                               "message.max.bytes", "no.such.property", "topic.acks"]),
              st.text(alphabet=string.printable, max_size=20)),
    st.text(max_size=40),
)


@fuzz
@given(st.lists(CONF_LINE, max_size=8), st.lists(KAFKA_LINE, max_size=6),
       st.booleans())
def test_load_of_generated_files(conf_lines: list[str], kafka_lines: list[str],
                                 good_base: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        kafka = root / "rdkafka.conf"
        kafka.write_text("\n".join(kafka_lines), errors="surrogatepass")
        base = ["ClusterName=fuzz", f"JobCompLoc={kafka}"] if good_base else []
        conf = root / "jobcompd.conf"
        conf.write_bytes("\n".join(base + conf_lines).encode("utf-8", "surrogatepass"))
        try:
            cfg = config.load(conf)
        except config.ConfigError as e:
            msg = actionable(e)
            # It names the file (and for most errors the line) it is about.
            assert str(root) in msg or "librdkafka" in msg, msg
        else:
            assert cfg.cluster_name and cfg.producer_config()["bootstrap.servers"]
            shown = cfg.redacted_kafka()
            for key, value in cfg.producer_config().items():
                if config.is_secret(key):
                    assert shown[key] == "***"
                    # Nowhere else either, unless another property holds the same text.
                    others = {v for k, v in cfg.producer_config().items() if k != key}
                    assert value in others or f"'{value}'" not in repr(shown)


# -- spool names and the state file ---------------------------------------------------------

@fuzz
@given(st.text(max_size=60) | st.from_regex(r"[0-9]{19}\.[0-9]{1,11}\.(end|start)\.(env|json)",
                                            fullmatch=True))
def test_parse_name(name: str) -> None:
    try:
        parsed = spool.parse_name(name)
    except spool.RejectedFile as e:
        assert e.reason == "bad_name"
        actionable(e)
    else:
        assert spool.make_name(parsed.ns, parsed.job_id, parsed.event, parsed.fmt) == name


STATE_JSON = st.fixed_dictionaries(
    {},
    optional={"version": JSON_VALUES, "clean": JSON_VALUES, "pending": JSON_VALUES,
              "in_flight": JSON_VALUES, "attempts": JSON_VALUES, "counters": JSON_VALUES,
              "saved_at": JSON_VALUES, "pid": JSON_VALUES},
).map(lambda d: json.dumps(d).encode())


@fuzz
@given(st.binary(max_size=500) | STATE_JSON)
def test_state_load(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / state.STATE_FILE).write_bytes(data)
        try:
            loaded = state.load(Path(d))
        except state.StateError as e:
            assert d in actionable(e)
        else:
            assert loaded is not None and loaded.version == state.STATE_VERSION
