"""Tests for jobcompd.records: spool file bytes → the exact jobcomp/kafka message.

Fixtures in tests/data/records/ are verbatim captures from a real Slurm 22.05 cluster
(`end-*` jobcomp/script, `start-*` PrologSlurmctld, `epilog-*` EpilogSlurmctld, each with a
readable `.txt` twin) and the bodies Slurm's jobcomp/elasticsearch POSTed (`elasticsearch/`),
which are Slurm's own rendering of a job record with the same json-c serializer.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from jobcompd.records import (
    EVENT_END,
    EVENT_START,
    JobRecord,
    RecordError,
    encode,
    from_env,
    parse_env,
    parse_record,
    record_id,
    slurmfmt,
)

DATA = Path(__file__).parent / "data" / "records"
EXPECTED = DATA / "expected"
ES = DATA / "elasticsearch"
ENV_FIXTURES = sorted(DATA.glob("*.env"))
ES_BODIES = sorted(ES.glob("*.json"))
CLUSTER = "testcluster"
HOOK = "JOBCOMPD_HOOK_TIME"


def env_bytes(env: dict[str, str]) -> bytes:
    """What `env -0` prints for this environment."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


def fixture_env(name: str) -> dict[str, str]:
    return parse_env((DATA / f"{name}.env").read_bytes())


def parse_fixture(name: str):
    return parse_record((DATA / f"{name}.env").read_bytes(), "env", cluster=CLUSTER)


def message(name: str) -> dict:
    return json.loads(parse_fixture(name).value)


def es_body(job: int, seq: int | None = None) -> bytes:
    pattern = f"es-*-job{job}.json" if seq is None else f"es-{seq:04d}-job{job}.json"
    (path,) = sorted(ES.glob(pattern))
    return path.read_bytes()


def segment(body: bytes, key: str) -> bytes:
    """The raw `"key":value` bytes of a top-level key in compact JSON."""
    match = re.search(rb'"' + re.escape(key.encode()) + rb'":("(?:[^"\\]|\\.)*"|[^,}]*)', body)
    assert match, f"{key} not in {body[:80]!r}"
    return match.group(0)


# A jobcomp/script environment as Slurm 22.05 builds it (job 1), to vary in hand-made tests.
BASE_END_ENV = {
    "JOBID": "4242",
    "UID": "1001",
    "GID": "1002",
    "USERNAME": "alice",
    "GROUPNAME": "physics",
    "START": "1795618456",
    "END": "1795618460",
    "SUBMIT": "1795618450",
    "PROCS": "8",
    "NODECNT": "2",
    "NODES": "node[01-02]",
    "PARTITION": "batch",
    "JOBSTATE": "COMPLETED",
    "EXITCODE": "0:0",
    "DERIVED_EC": "0:0",
    "ARRAYJOBID": "0",
    "ARRAYTASKID": "4294967294",
    "LIMIT": "01:00:00",
    "JOBNAME": "sim",
    "ACCOUNT": "",
    "CLUSTER": "",
    "QOS": "",
    "CONSTRAINTS": "",
    "RESERVATION": "",
    "DEPENDENCY": "",
    "WORK_DIR": "/home/alice",
    "BATCH": "yes",
    "DB_FLAGS": "SchedMain",
    "STATEREASONPREV": "None",
    "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
}

BASE_PROLOG_ENV = {
    "SLURM_SCRIPT_CONTEXT": "prolog_slurmctld",
    "SLURM_JOB_ID": "4242",
    "SLURM_JOBID": "4242",
    "SLURM_JOB_UID": "1001",
    "SLURM_JOB_GID": "1002",
    "SLURM_JOB_USER": "alice",
    "SLURM_JOB_GROUP": "physics",
    "SLURM_JOB_ACCOUNT": "(null)",
    "SLURM_JOB_NAME": "sim",
    "SLURM_JOB_PARTITION": "batch",
    "SLURM_JOB_NODELIST": "node[01-03]",
    "SLURM_JOB_NUM_NODES": "3",
    "SLURM_JOB_CPUS_PER_NODE": "4(x2),8",
    "SLURM_JOB_RESTART_COUNT": "0",
    "SLURM_CLUSTER_NAME": "testcluster",
    "SLURM_JOB_WORK_DIR": "/home/alice",
}

BASE_EPILOG_ENV = {
    **BASE_PROLOG_ENV,
    "SLURM_SCRIPT_CONTEXT": "epilog_slurmctld",
    "SLURM_JOB_EXIT_CODE": "0",
    "SLURM_JOB_EXIT_CODE2": "0:0",
    "SLURM_JOB_DERIVED_EC": "0",
}


def parse_env_dict(env: dict[str, str], cluster: str = CLUSTER):
    return parse_record(env_bytes(env), "env", cluster=cluster)


# ---------------------------------------------------------------------------------------
# Golden files: every captured hook environment, byte for byte


def test_every_env_fixture_has_a_golden_message():
    assert {p.stem for p in ENV_FIXTURES} == {p.stem for p in EXPECTED.glob("*.json")}
    assert len(ENV_FIXTURES) == 73


@pytest.mark.parametrize("path", ENV_FIXTURES, ids=lambda p: p.stem)
def test_env_fixture_gives_the_golden_message(path: Path):
    record = parse_record(path.read_bytes(), "env", cluster=CLUSTER)
    assert record.value == (EXPECTED / f"{path.stem}.json").read_bytes()
    kind, job = path.stem.split("-", 1)
    assert record.job_id == int(job.split(".")[0])
    assert record.event == (EVENT_START if kind == "start" else EVENT_END)
    assert re.fullmatch(r"[0-9a-f]{32}", record.record_id)


# ---------------------------------------------------------------------------------------
# Golden files: hand-made records of later Slurm versions and of cases no capture has

HANDMADE = DATA / "handmade"
HANDMADE_FILES = sorted(HANDMADE.glob("*.env")) + sorted(HANDMADE.glob("*.json"))


def test_every_handmade_fixture_has_a_golden_message():
    assert {p.stem for p in HANDMADE_FILES} == {p.stem for p in (HANDMADE / "expected").iterdir()}


@pytest.mark.parametrize("path", HANDMADE_FILES, ids=lambda p: p.name)
def test_handmade_fixture_gives_the_golden_message(path: Path):
    """Default JobCompParams: script and comment are left out, also from passed-through
    records (Slurm 23.02-24.11 sent the script of every batch job)."""
    hint = "start" if "start" in path.stem else "end"
    record = parse_record(path.read_bytes(), path.suffix[1:], cluster=CLUSTER, event_hint=hint)
    assert record.value == (HANDMADE / "expected" / f"{path.stem}.json").read_bytes()
    assert record.event == (EVENT_START if hint == "start" else EVENT_END)


@pytest.mark.parametrize("path", sorted(HANDMADE.glob("*.json")), ids=lambda p: p.name)
def test_handmade_record_passes_through_whole_with_send_script_and_send_comment(path: Path):
    body = path.read_bytes()
    record = parse_record(body, "json", cluster=CLUSTER, send_script=True, send_comment=True)
    assert record.value == body.rstrip(b"\0").strip()
    quiet = parse_record(body, "json", cluster=CLUSTER)
    assert quiet.record_id == record.record_id  # the same Slurm event either way


def test_prolog_and_epilog_comment_only_with_send_comment():
    start = (HANDMADE / "start-26.05-array.env").read_bytes()
    assert "comment" not in json.loads(parse_record(start, "env", cluster=CLUSTER).value)
    loud = json.loads(parse_record(start, "env", cluster=CLUSTER, send_comment=True).value)
    assert loud["comment"] == "user comment"
    assert list(loud)[-2:] == ["account", "comment"]
    epilog = parse_record(
        (DATA / "epilog-1.env").read_bytes(), "env", cluster=CLUSTER, send_comment=True
    )
    assert json.loads(epilog.value)["comment"] == "a comment"
    script_env = parse_record(
        (DATA / "end-1.env").read_bytes(), "env", cluster=CLUSTER, send_comment=True
    )
    assert "comment" not in json.loads(script_env.value)  # jobcomp/script has no comment


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"script":"x","jobid":1}', b'{"jobid":1}'),
        (b'{"jobid":1,"script":"x"}', b'{"jobid":1}'),
        (b'{"jobid":1,"script":"x","account":"a"}', b'{"jobid":1,"account":"a"}'),
        (b'{ "jobid" : 1 , "script" : "a\\"b,}" , "comment" : [1,{"x":"]"}] , "k" : 2 }',
         b'{ "jobid" : 1 , "k" : 2 }'),
        (b'{"jobid":1,"scr\\u0069pt":"escaped name","script":"dup"}', b'{"jobid":1}'),
        (b'{"jobid":1,"x":{"script":"nested stays"},"script":null}',
         b'{"jobid":1,"x":{"script":"nested stays"}}'),
        (b'{"jobid":1,"script":"ends with backslash\\\\"}', b'{"jobid":1}'),
    ],
)  # fmt: skip
def test_script_and_comment_are_cut_out_of_the_bytes(body, expected):
    assert parse_record(body, "json", cluster=CLUSTER).value == expected


# ---------------------------------------------------------------------------------------
# Same formatting as Slurm's own rendering (jobcomp/elasticsearch bodies)


def test_job_name_with_quotes_tabs_newline_and_unicode_is_escaped_like_slurm():
    ours = parse_fixture("start-26").value
    slurm = es_body(26)
    assert segment(ours, "job_name") == segment(slurm, "job_name")
    assert "ünïcødé ✓ 日本".encode() in ours  # UTF-8 raw, not \u-escaped
    assert segment(ours, "std_out") == segment(slurm, "std_out")  # "\/tmp\/..."


def test_newline_in_job_name():
    assert segment(parse_fixture("end-10").value, "job_name") == rb'"job_name":"name with\nnewline"'
    assert segment(parse_fixture("end-2").value, "job_name") == rb'"job_name":"line1\nline2"'


def test_end_record_formats_every_shared_key_like_slurm_for_the_same_job():
    """Job 35 (timeout) as jobcomp/script would have described it, against Slurm's own body."""
    env = {
        **BASE_END_ENV,
        "JOBID": "35",
        "UID": "0",
        "GID": "0",
        "USERNAME": "root",
        "GROUPNAME": "root",
        "START": "1795618906",  # 2026-11-25T15:01:46
        "END": "1795618994",  # 2026-11-25T15:03:14
        "SUBMIT": "1795618904",  # 2026-11-25T15:01:44
        "PROCS": "1",
        "NODECNT": "1",
        "NODES": "vm",
        "PARTITION": "debug",
        "JOBSTATE": "TIMEOUT",
        "LIMIT": "00:01:00",
        "JOBNAME": "es-timeout",
        "WORK_DIR": "/tmp/slurm-test/jobs",
        "STDIN": "/dev/null",
        "STDOUT": "/tmp/slurm-test/jobs/%j.out",
    }
    ours = parse_env_dict(env).value
    slurm = es_body(35)
    # Not in the jobcomp/script env, so null here: Slurm knew container and alloc_node, and
    # 22.05 did not write failed_node at all (newer Slurm always writes it).
    not_in_env = {"container", "alloc_node", "failed_node"}
    keys = [k for k in json.loads(ours) if k not in not_in_env]
    assert "cpu_hours" in keys and "time_limit" in keys and "@submit" in keys
    for key in keys:
        assert segment(ours, key) == segment(slurm, key)
    assert segment(ours, "cpu_hours") == b'"cpu_hours":0.024444444105029106'


@pytest.mark.parametrize(
    ("elapsed", "cpus", "expected"),
    [
        (2, 1, b"0.00055555556900799274"),  # es-0001-job36
        (6, 1, b"0.0016666667070239782"),  # es-0002-job36
        (1, 1, b"0.00027777778450399637"),  # es-0003-job24
        (0, 1, b"0.0"),
        (3600, 8, b"8.0"),
    ],
)
def test_cpu_hours_is_single_precision_printed_like_json_c(elapsed, cpus, expected):
    env = {**BASE_END_ENV, "START": "1000000", "END": str(1000000 + elapsed), "PROCS": str(cpus)}
    assert segment(parse_env_dict(env).value, "cpu_hours") == b'"cpu_hours":' + expected


def test_control_characters_slash_and_utf8_are_escaped_like_json_c():
    env = {**BASE_END_ENV, "JOBNAME": 'a\x01b\x1fc\x7fd\b\f\r\t/"\\é\u2028'}
    value = parse_env_dict(env).value
    expected = '"job_name":"a\\u0001b\\u001fc\x7fd\\b\\f\\r\\t\\/\\"\\\\é\u2028"'.encode()
    assert segment(value, "job_name") == expected
    assert json.loads(value)["job_name"] == env["JOBNAME"]


def test_invalid_utf8_in_a_value_becomes_replacement_character():
    data = env_bytes(BASE_END_ENV).replace(b"JOBNAME=sim", b"JOBNAME=s\xffm")
    value = parse_record(data, "env", cluster=CLUSTER).value
    assert json.loads(value)["job_name"] == "s\ufffdm"
    value.decode("utf-8")  # the message is valid UTF-8


# ---------------------------------------------------------------------------------------
# jobcomp/script environment → end record


def test_cancelled_while_pending_never_ran():
    """Slurm sets start = end = cancel time, so @start equals @end (as in es-0012-job38)."""
    for name in ("end-2", "end-7", "end-12", "end-14"):
        msg = message(name)
        assert msg["state"] == "CANCELLED"
        assert msg["@start"] == msg["@end"]
        assert msg["elapsed"] == 0 and msg["cpu_hours"] == 0.0
        assert msg["nodes"] is None and msg["total_nodes"] == 0


@pytest.mark.parametrize(("start", "end"), [("0", "1795618460"), ("1795618470", "1795618460")])
def test_no_start_when_start_is_zero_or_after_end(start, end):
    msg = json.loads(parse_env_dict({**BASE_END_ENV, "START": start, "END": end}).value)
    assert "@start" not in msg
    assert msg["@end"] == "2026-11-25T14:54:20"
    assert msg["elapsed"] == 0


def test_requeued_job_first_record_is_pending():
    first, second = (json.loads(es_body(36, seq)) for seq in (1, 2))
    assert first["state"] == "PENDING" and second["state"] == "COMPLETED"


def test_array_tasks_carry_their_array_ids_and_own_job_ids():
    for name, job, task in (("end-17", 17, 1), ("end-18", 18, 2), ("end-8", 8, 3)):
        msg = message(name)
        assert (msg["jobid"], msg["array_job_id"], msg["array_task_id"]) == (job, 8, task)
    assert message("end-18")["exit_code"] == "5:0"
    assert "array_job_id" not in message("end-1")
    assert "array_task_id" not in message("end-1")


def test_het_components_and_ordinary_jobs_carry_het_ids():
    for name, offset in (("end-14", 0), ("end-15", 1)):
        msg = message(name)
        assert msg["het_job_id"] == msg["pack_job_id"] == 14
        assert msg["het_job_offset"] == msg["pack_job_offset"] == offset
    msg = message("end-1")
    assert [msg[k] for k in ("pack_job_id", "pack_job_offset", "het_job_id", "het_job_offset")] == [
        0,
        0,
        0,
        0,
    ]


def test_timeout_job():
    msg = message("end-3")
    assert msg["state"] == "TIMEOUT"
    assert msg["time_limit"] == 60
    assert msg["elapsed"] == 83
    assert msg["exit_code"] == "0:0"  # what Slurm itself records at that moment


@pytest.mark.parametrize(
    ("limit", "seconds"),
    [("00:01:00", 60), ("01:00:00", 3600), ("1-02:03:04", 93784), ("365-00:00:00", 31536000)],
)
def test_time_limit_in_seconds(limit, seconds):
    assert json.loads(parse_env_dict({**BASE_END_ENV, "LIMIT": limit}).value)["time_limit"] == (
        seconds
    )


def test_unlimited_time_limit_is_omitted():
    assert "time_limit" not in message("end-1")
    assert "time_limit" not in json.loads(
        parse_env_dict({**BASE_END_ENV, "LIMIT": "UNLIMITED"}).value
    )


def test_missing_user_and_group_names_are_null():
    msg = json.loads(parse_env_dict({**BASE_END_ENV, "USERNAME": "", "GROUPNAME": ""}).value)
    assert msg["username"] is None and msg["groupname"] is None
    assert msg["user_id"] == 1001


def test_keys_slurm_always_writes_are_null_when_the_env_lacks_them():
    msg = json.loads(parse_env_dict(BASE_END_ENV).value)
    assert msg["container"] is None and msg["alloc_node"] is None and msg["failed_node"] is None
    for key in ("priority", "ntasks", "cpus_per_task", "tres_req", "script", "parent_accounts"):
        assert key not in msg


def test_optional_keys_from_newer_slurm_and_accounting():
    env = {
        **BASE_END_ENV,
        "SLUID": "s01JX4R7T2B9KM",
        "ORIGINAL_SLUID": "s01JX4R7T2B9KN",
        "ELIGIBLE": "1795618452",
        "CLUSTER": "mycluster",
        "QOS": "normal",
        "CONSTRAINTS": "ib",
        "RESERVATION": "maint",
        "DEPENDENCY": "afterok:4(unfulfilled)",
        "ACCOUNT": "physics",
        "STDERR": "/home/alice/e",
        "STDIN": "/dev/null",
        "STDOUT": "/home/alice/o",
    }
    msg = json.loads(parse_env_dict(env).value)
    assert list(msg)[:3] == ["jobid", "sluid", "original_sluid"]
    assert msg["@eligible"] == "2026-11-25T14:54:12"
    assert msg["@queue_wait"] == 4
    assert (msg["cluster"], msg["qos"], msg["features"]) == ("mycluster", "normal", "ib")
    assert (msg["reservation_name"], msg["account"]) == ("maint", "physics")
    assert (msg["std_err"], msg["std_in"], msg["std_out"]) == (
        env["STDERR"],
        env["STDIN"],
        env["STDOUT"],
    )
    keys = list(msg)
    assert keys.index("work_dir") < keys.index("std_err") < keys.index("std_in")
    assert keys.index("std_in") < keys.index("std_out") < keys.index("cluster")


def test_unknown_work_dir_is_omitted():
    assert "work_dir" not in json.loads(
        parse_env_dict({**BASE_END_ENV, "WORK_DIR": "unknown"}).value
    )


# ---------------------------------------------------------------------------------------
# PrologSlurmctld → start record; EpilogSlurmctld → end record

END_ONLY = (
    "@end",
    "elapsed",
    "derived_ec",
    "exit_code",
    "failed_node",
    "cpu_hours",
    "pack_job_id",
    "pack_job_offset",
)


def test_start_record_has_the_start_field_set():
    record = parse_fixture("start-1")
    msg = json.loads(record.value)
    assert record.event == EVENT_START
    assert msg["state"] is None
    assert msg["het_job_id"] == 0 and msg["het_job_offset"] == 0
    for key in END_ONLY:
        assert key not in msg
    assert "account" not in msg  # SLURM_JOB_ACCOUNT=(null)
    assert "comment" not in msg  # only with send_comment (26.05+)


def test_start_record_sums_cpus_per_node():
    msg = json.loads(parse_env_dict(BASE_PROLOG_ENV).value)
    assert msg["total_cpus"] == 16 and msg["total_nodes"] == 3


def test_start_time_from_slurm_wins_over_hook_time():
    env = {
        **BASE_PROLOG_ENV,
        "SLURM_JOB_START_TIME": "1795618456",
        "JOBCOMPD_HOOK_TIME": "1795618999",
    }
    msg = json.loads(parse_env_dict(env).value)
    assert msg["@start"] == "2026-11-25T14:54:16"


def test_start_time_falls_back_to_hook_time():
    env = {**BASE_PROLOG_ENV, "JOBCOMPD_HOOK_TIME": "1795618457"}
    assert json.loads(parse_env_dict(env).value)["@start"] == "2026-11-25T14:54:17"


def test_epilog_decodes_raw_wait_status():
    for name, exit_code, derived in (
        ("epilog-5", "3:0", "0:0"),  # 768
        ("epilog-18", "5:0", "0:0"),  # 1280
        ("epilog-27", "4:0", "0:0"),  # 1024
        ("epilog-33", "0:9", "0:9"),  # SIGKILL: 9
    ):
        msg = message(name)
        assert (msg["exit_code"], msg["derived_ec"]) == (exit_code, derived), name
        assert msg["state"] is None


@pytest.mark.parametrize(
    ("status", "pair"),
    [
        ("0", "0:0"),
        ("256", "1:0"),
        ("65280", "255:0"),
        ("15", "0:15"),
        ("139", "0:11"),
        ("4991", "0:0"),
        ("4294967294", "0:0"),
    ],
)
def test_wait_status_decoding(status, pair):
    env = {**BASE_EPILOG_ENV, "SLURM_JOB_EXIT_CODE": status}
    assert json.loads(parse_env_dict(env).value)["exit_code"] == pair


def test_epilog_with_times_has_elapsed_and_cpu_hours():
    env = {
        **BASE_EPILOG_ENV,
        "SLURM_JOB_START_TIME": "1795618456",
        "SLURM_JOB_END_TIME": "1795622056",
        "JOBCOMPD_HOOK_TIME": "1795622060",
    }
    msg = json.loads(parse_env_dict(env).value)
    assert (msg["@start"], msg["@end"]) == ("2026-11-25T14:54:16", "2026-11-25T15:54:16")
    assert msg["elapsed"] == 3600 and msg["cpu_hours"] == 16.0


def test_epilog_without_end_time_uses_hook_time():
    msg = json.loads(parse_env_dict({**BASE_EPILOG_ENV, "JOBCOMPD_HOOK_TIME": "1795618457"}).value)
    assert msg["@end"] == "2026-11-25T14:54:17"
    assert "@start" not in msg and msg["elapsed"] == 0


def test_prolog_array_and_het_ids():
    env = {
        **BASE_PROLOG_ENV,
        "SLURM_ARRAY_JOB_ID": "4240",
        "SLURM_ARRAY_TASK_ID": "2",
        "SLURM_HET_JOB_ID": "4240",
        "SLURM_HET_JOB_OFFSET": "1",
    }
    msg = json.loads(parse_env_dict(env).value)
    assert (msg["array_job_id"], msg["array_task_id"]) == (4240, 2)
    assert (msg["het_job_id"], msg["het_job_offset"]) == (4240, 1)


# ---------------------------------------------------------------------------------------
# JSON pass-through


@pytest.mark.parametrize("path", ES_BODIES, ids=lambda p: p.stem)
def test_elasticsearch_body_passes_through_byte_for_byte(path: Path):
    body = path.read_bytes()
    record = parse_record(
        body, "json", cluster=CLUSTER, event_hint="end", send_script=True, send_comment=True
    )
    assert record.value == body
    assert record.event == EVENT_END
    assert record.job_id == json.loads(body)["jobid"]


@pytest.mark.parametrize("path", ES_BODIES, ids=lambda p: p.stem)
def test_script_is_cut_from_the_bytes_without_send_script(path: Path):
    """Slurm 22.05's ES plugin sent every batch script; 25.05+ only with send_script."""
    body = path.read_bytes()
    value = parse_record(body, "json", cluster=CLUSTER).value
    expected = {k: v for k, v in json.loads(body).items() if k != "script"}
    assert json.loads(value) == expected
    assert list(json.loads(value)) == list(expected)  # key order kept
    if b'"script":' in body:
        start = body.index(b',"script":')
        assert value == body[:start] + b"}"  # script is the last key: the rest is untouched
    else:
        assert value == body


def test_trailing_nul_and_surrounding_whitespace_are_stripped():
    body = es_body(24)
    record = parse_record(b"\n " + body + b"\0\n", "json", cluster=CLUSTER, send_script=True)
    assert record.value == body
    assert record.record_id == parse_record(body, "json", cluster=CLUSTER).record_id


def test_newer_record_with_sluid_and_unknown_key_is_kept_as_is():
    body = (
        b'{"jobid":4242,"sluid":"s01JX4R7T2B9KM","original_sluid":"s01JX4R7T2B9KM",'
        b'"container":null,"username":"alice","user_id":1001,"groupname":"physics",'
        b'"group_id":1001,"@start":"2026-06-01T10:00:00","state":null,'
        b'"future_field":{"nested":[1,2.50,"\\u00e9"]},"priority":12345}'
    )
    record = parse_record(body, "json", cluster=CLUSTER, event_hint="start")
    assert record.value == body
    assert record.event == EVENT_START
    assert record.job_id == 4242


def test_json_record_id_matches_record_id_of_the_same_content():
    body = es_body(36, 2)
    rec = msgspec.json.decode(body, type=JobRecord)
    assert parse_record(body, "json", cluster=CLUSTER).record_id == record_id(
        CLUSTER, EVENT_END, rec
    )


# ---------------------------------------------------------------------------------------
# Record id


def test_record_id_is_pinned():
    """Changing the id breaks consumers that de-duplicate on it: change only on purpose."""
    assert parse_fixture("end-1").record_id == "e3f22613aa971cddfcfabacb7d919c66"
    assert parse_fixture("start-36").record_id == "e5c752aed49adf72d7b3d83476d395a4"


def test_record_id_is_the_same_for_identical_content():
    a = fixture_env("start-36")
    b = {**a, "PWD": "/elsewhere"}  # not Slurm's
    assert parse_env_dict(a).record_id == parse_env_dict(b).record_id
    assert parse_fixture("end-3").record_id == parse_fixture("end-3").record_id


def test_record_id_separates_the_runs_of_a_requeued_job():
    assert parse_fixture("start-36").record_id != parse_fixture("start-36.2").record_id
    first, second = (parse_record(es_body(36, s), "json", cluster=CLUSTER) for s in (1, 2))
    assert first.record_id != second.record_id


def test_epilogs_of_a_requeued_job_differ_by_hook_time():
    """Slurm 22.05 gives the epilog neither times nor a distinct restart count."""
    a, b = fixture_env("epilog-36"), fixture_env("epilog-36.2")
    assert parse_env_dict(a).record_id == parse_env_dict(b).record_id
    a[HOOK] = "1795618908"
    b[HOOK] = "1795618916"
    assert parse_env_dict(a).record_id != parse_env_dict(b).record_id


def test_hook_time_does_not_change_the_id_when_slurm_gave_the_start():
    env = {**BASE_PROLOG_ENV, "SLURM_JOB_START_TIME": "1795618456"}
    first = parse_env_dict({**env, HOOK: "1795618457"})
    rerun = parse_env_dict({**env, HOOK: "1795619999"})  # prolog re-run after a restart
    assert first.record_id == rerun.record_id and first.value == rerun.value


def test_record_id_separates_reused_job_ids_clusters_and_events():
    base = parse_env_dict(BASE_END_ENV)
    assert base.record_id != parse_env_dict({**BASE_END_ENV, "SUBMIT": "1895618450"}).record_id
    assert base.record_id != parse_env_dict(BASE_END_ENV, cluster="other").record_id
    _, rec = from_env(BASE_END_ENV)
    assert record_id(CLUSTER, EVENT_END, rec) != record_id(CLUSTER, EVENT_START, rec)
    assert record_id(CLUSTER, EVENT_END, rec) == base.record_id


# ---------------------------------------------------------------------------------------
# Model, encoder, schema

SLURM_KEY_ORDER = [
    "jobid", "sluid", "original_sluid", "container", "username", "user_id", "groupname",
    "group_id", "@start", "@end", "elapsed", "partition", "alloc_node", "nodes", "total_cpus",
    "total_nodes", "derived_ec", "exit_code", "state", "failed_node", "cpu_hours",
    "array_job_id", "array_task_id", "pack_job_id", "pack_job_offset", "het_job_id",
    "het_job_offset", "priority", "@submit", "@eligible", "@queue_wait", "work_dir", "std_err",
    "std_in", "std_out", "cluster", "qos", "ntasks", "ntasks_per_node", "ntasks_per_tres",
    "cpus_per_task", "orig_dependency", "excluded_nodes", "features", "time_limit", "job_name",
    "reservation_name", "wc_key", "tres_req_raw", "tres_req", "tres_alloc_raw", "tres_alloc",
    "account", "admin_comment", "comment", "script", "parent_accounts",
]  # fmt: skip


def test_model_keys_are_in_slurm_insertion_order():
    schema = msgspec.json.schema(JobRecord)
    props = schema["$defs"]["JobRecord"]["properties"]
    assert list(props) == SLURM_KEY_ORDER
    assert all(p.get("description") for p in props.values())


def test_model_requires_the_keys_slurm_always_writes():
    required = msgspec.json.schema(JobRecord)["$defs"]["JobRecord"]["required"]
    assert set(required) == {
        "jobid", "container", "username", "user_id", "groupname", "group_id", "partition",
        "alloc_node", "nodes", "total_cpus", "total_nodes", "state",
    }  # fmt: skip


def test_encode_round_trips_through_the_model():
    _, rec = from_env(fixture_env("end-3"))
    assert msgspec.json.decode(encode(rec), type=JobRecord) == rec


# ---------------------------------------------------------------------------------------
# Environment parsing and errors


def test_parse_env_keeps_equals_newlines_and_utf8_in_values():
    env = parse_env(b"A=x=y\0B=line1\nline2\0C=\xe6\x97\xa5\0D=\0")
    assert env == {"A": "x=y", "B": "line1\nline2", "C": "日", "D": ""}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"JOBID=1\nUID=0\n", "NUL"),
        (b"JOBID=1\0UID=0", "cut off"),
        (b"JOBID=1\0garbage\0", "entry 2"),
        (b"=1\0", "entry 1"),
    ],
)
def test_parse_env_rejects_what_env_0_cannot_print(data, words):
    with pytest.raises(RecordError, match=words):
        parse_env(data)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_UID": "0"},
         "SLURM_JOB_ID is missing"),
        ({**BASE_END_ENV, "JOBID": "12a"}, "JOBID='12a'"),
        ({**BASE_END_ENV, "JOBID": "0"}, "JOBID=0"),
        ({**BASE_END_ENV, "UID": "-1"}, "UID='-1': expected a non-negative integer"),
        ({**BASE_END_ENV, "START": " 1"}, "START"),
        ({**BASE_END_ENV, "LIMIT": "1:2:3"}, "LIMIT='1:2:3': expected '\\[D-\\]HH:MM:SS'"),
        ({**BASE_END_ENV, "LIMIT": "INVALID"}, "LIMIT='INVALID'"),
        ({**BASE_END_ENV, "EXITCODE": "3"}, "EXITCODE='3': expected 'exit:signal'"),
        ({k: v for k, v in BASE_END_ENV.items() if k != "UID"}, "UID is missing"),
        ({"PATH": "/bin", "HOME": "/root"}, "neither JOBID .* nor SLURM_SCRIPT_CONTEXT"),
        ({**BASE_PROLOG_ENV, "SLURM_SCRIPT_CONTEXT": "prolog_slurmd"}, "'prolog_slurmd'"),
        ({**BASE_PROLOG_ENV, "SLURM_JOB_CPUS_PER_NODE": "4(x)"},
         "SLURM_JOB_CPUS_PER_NODE='4\\(x\\)'"),
        ({**BASE_PROLOG_ENV, "JOBCOMPD_HOOK_TIME": "1.5"}, "JOBCOMPD_HOOK_TIME='1.5'"),
        ({**BASE_PROLOG_ENV, "SLURM_JOB_RESTART_COUNT": "x"}, "SLURM_JOB_RESTART_COUNT='x'"),
        ({k: v for k, v in BASE_EPILOG_ENV.items() if k != "SLURM_JOB_EXIT_CODE"},
         "SLURM_JOB_EXIT_CODE is missing"),
    ],
)  # fmt: skip
def test_bad_env_names_the_variable_and_value(env, words):
    with pytest.raises(RecordError, match=words):
        parse_env_dict(env)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b" \n\0", "empty"),
        (b"[1,2]", "JSON array found: expected an object"),
        (b'"x"', "JSON string found"),
        (b"null", "JSON null found"),
        (b'{"jobid":1', "not valid JSON"),
        (b'{"id":1}', "no 'jobid' \\(jobcomp schema\\) nor 'job_id'"),
        (b'{"job_id":1}', "job 1: neither 'job_state'"),
        (b'{"jobs":[{"job_id":1}]}', "a dump of 1 job.*jobcompd backfill"),
        (b'{"jobid":"1"}', 'jobid="1"'),
        (b'{"jobid":true}', "jobid=true"),
        (b'{"jobid":1.0}', "jobid=1.0"),
        (b'{"jobid":0}', "jobid=0"),
        (b'{"jobid":4294967296}', "jobid=4294967296"),
        (b'{"jobid":1}\xff', "not valid JSON"),
    ],
)
def test_bad_json_is_rejected_with_a_reason(data, words):
    with pytest.raises(RecordError, match=words):
        parse_record(data, "json", cluster=CLUSTER)


def test_unknown_format_and_event_hint_are_rejected():
    with pytest.raises(RecordError, match="'yaml': expected 'env' or 'json'"):
        parse_record(b"{}", "yaml", cluster=CLUSTER)
    with pytest.raises(RecordError, match="'finish': expected 'end' or 'start'"):
        parse_record(b'{"jobid":1}', "json", cluster=CLUSTER, event_hint="finish")


# ---------------------------------------------------------------------------------------
# Property: any bytes give a Record or a RecordError, nothing else

ENV_KEYS = sorted(
    set(BASE_END_ENV) | set(BASE_EPILOG_ENV)
    | {"HETJOBID", "HETJOBOFFSET", "ELIGIBLE", "SLUID", "SLURM_JOB_START_TIME",
       "SLURM_JOB_END_TIME", "JOBCOMPD_HOOK_TIME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
       "SLURM_HET_JOB_ID", "STDOUT"}
)  # fmt: skip
values = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-5, max_value=2**70).map(str),
    st.sampled_from(["4294967294", "4294967295", "UNLIMITED", "0:9", "4(x2),8", "(null)"]),
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), fmt=st.sampled_from(["env", "json"]))
def test_any_bytes_give_a_record_or_record_error(data, fmt):
    try:
        record = parse_record(data, fmt, cluster=CLUSTER, event_hint="end")
    except RecordError:
        return
    assert json.loads(record.value)["jobid"] == record.job_id


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([BASE_END_ENV, BASE_PROLOG_ENV, BASE_EPILOG_ENV]),
    changes=st.dictionaries(st.sampled_from(ENV_KEYS), values, max_size=6),
    dropped=st.sets(st.sampled_from(ENV_KEYS), max_size=3),
)
def test_any_env_gives_a_valid_message_or_record_error(base, changes, dropped):
    env = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    try:
        record = parse_record(env_bytes(env), "env", cluster=CLUSTER)
    except RecordError:
        return
    decoded = msgspec.json.decode(record.value, type=JobRecord)  # valid JSON, valid model
    assert decoded.jobid == record.job_id
    assert b"/" not in record.value.replace(b"\\/", b"")


# ---------------------------------------------------------------------------------------
# Record ids: consumers deduplicate on them, so they must never change for the same event


def _fixture_ids() -> dict[str, str]:
    ids = {}
    for path in ENV_FIXTURES:
        ids[path.name] = parse_record(path.read_bytes(), "env", cluster=CLUSTER).record_id
    for path in HANDMADE_FILES:
        hint = "start" if "start" in path.stem else "end"
        ids[f"handmade/{path.name}"] = parse_record(
            path.read_bytes(), path.suffix[1:], cluster=CLUSTER, event_hint=hint
        ).record_id
    return ids


def test_record_ids_stay_what_jobcompd_id_1_gave():
    """expected-ids.json holds the ids of every fixture as the first release computed them
    (from msgspec.to_builtins of the whole record); a faster way must give the same."""
    assert _fixture_ids() == json.loads((DATA / "expected-ids.json").read_bytes())


@given(st.integers(min_value=-(2**40), max_value=253402300799))
def test_times_print_as_strftime_of_gmtime(epoch: int):
    """Times are formatted from a per-day cache; they must read as strftime would print them."""
    expected = (UNSET if epoch in (0, 0xFFFFFFFE, 0xFFFFFFFF)
                else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)))
    assert slurmfmt.format_time(epoch, "END") == expected
