"""Tests for jobcompd.records.jobobjects: scontrol/squeue/sacct job objects → the jobcomp/kafka
record.

Fixtures in tests/data/jobjson/: real `squeue --json` captures from Slurm 22.05
(slurm-22.05/), and hand-made dumps in the shapes of every later release (shapes.py wrote
them, see its docstring). expected/<dump>.expected holds, per job and in dump order, the
event and the exact message, or the error, each checked by hand.

Regenerate the expected files after a deliberate change, then review the diff:

    .venv/bin/python -m tests.test_jobjson --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobcompd.records import EVENT_END, EVENT_START, RecordError, encode, jobobjects, parse_record

DATA = Path(__file__).parent / "data"
JOBJSON = DATA / "jobjson"
EXPECTED = JOBJSON / "expected"
DUMPS = sorted(JOBJSON.glob("**/*.json"))
ES = DATA / "records" / "elasticsearch"
ENV = DATA / "records"
CLUSTER = "testcluster"


class Ids:
    """The user database of the hand-made fixtures (sacct prints names only)."""

    def uid(self, name: str) -> int | None:
        return {"alice": 1001, "root": 0}.get(name)

    def gid(self, name: str) -> int | None:
        return {"physics": 2001, "root": 0}.get(name)


def expected_path(dump: Path) -> Path:
    return EXPECTED / (
        str(dump.relative_to(JOBJSON).with_suffix("")).replace("/", "-") + ".expected"
    )


def render_dump(dump: Path) -> str:
    """One line per job: "<event>\\t<message>" or "error\\t<message>"."""
    lines = []
    for job in json.loads(dump.read_bytes())["jobs"]:
        try:
            event, rec = jobobjects.from_job(job, ids=Ids(), send_script=True, send_comment=True)
        except RecordError as exc:
            lines.append(f"error\t{exc}")
        else:
            lines.append(f"{event}\t{encode(rec).decode()}")
    return "\n".join(lines) + "\n"


def jobs(dump: str) -> list[dict]:
    return json.loads((JOBJSON / dump).read_bytes())["jobs"]


def job(dump: str, job_id: int) -> dict:
    return next(j for j in jobs(dump) if j["job_id"] == job_id)


def message(job_obj: dict, **kwargs) -> dict:
    return json.loads(encode(jobobjects.from_job(job_obj, ids=Ids(), **kwargs)[1]))


# ---------------------------------------------------------------------------------------
# Golden files: every dump, every job, byte for byte


def test_every_dump_has_an_expected_file():
    assert {expected_path(d).name for d in DUMPS} == {p.name for p in EXPECTED.iterdir()}
    versions = {d.stem for d in DUMPS}
    for tool, releases in (
        ("scontrol", ("23.02", "23.11", "24.05", "24.11", "25.05", "25.11")),
        ("sacct", ("22.05", "23.02", "23.11", "24.05", "24.11", "25.05", "25.11")),
    ):
        assert {f"{tool}-{r}" for r in releases} <= versions


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: str(p.relative_to(JOBJSON)))
def test_dump_renders_to_the_expected_messages(dump: Path):
    assert render_dump(dump) == expected_path(dump).read_text(encoding="utf-8")


#: Releases whose dumps carry the same fields: scontrol prints the submitted stream paths
#: again from 25.05 (v0.0.43); sacct prints the streams from 24.05 and the energy count from
#: 23.02.
SAME_FIELDS = [
    ("scontrol", ("23.02", "23.11", "24.05", "24.11")),
    ("scontrol", ("25.05", "25.11")),
    ("sacct", ("23.02", "23.11")),
    ("sacct", ("24.05", "24.11", "25.05", "25.11")),
]


@pytest.mark.parametrize(("tool", "releases"), SAME_FIELDS)
def test_every_shape_of_a_release_series_gives_the_same_messages(tool, releases):
    """The data_parser shapes differ, the jobs do not."""
    assert len({render_dump(JOBJSON / f"{tool}-{v}.json") for v in releases}) == 1


# ---------------------------------------------------------------------------------------
# The real 22.05 captures against Slurm's own rendering of the same jobs

#: Keys where a 22.05 squeue job object and Slurm's jobcomp/elasticsearch body differ, and why.
ES_DIFFERENCES = {
    "alloc_node",  # not in squeue 22.05 (v0.0.38): null; Slurm knew "localhost"
    "container",  # 22.05's ES plugin wrote "" for none; jobcomp/kafka writes null
    "nodes",  # same, for a job that never ran
    "failed_node",  # 22.05's ES plugin did not write it; jobcomp/kafka writes null
    "cpus_per_task",  # squeue prints null when not requested; Slurm's record says 1
    "ntasks",  # squeue prints the computed task count; Slurm's record the requested (0)
    "ntasks_per_tres",  # not in squeue 22.05
    "priority",  # jobcomp/kafka 24.05+ sends it; 22.05's ES plugin did not
    "script",  # never in scontrol/squeue job objects
    "orig_dependency",  # job objects carry the current dependency, not the original
    "comment",  # sent with send_comment (26.05+); 22.05's ES plugin never sent it
    "tres_req_raw",  # jobcomp sends the raw TRES strings since 23.11.1
    "tres_alloc_raw",
}


# es-0001 is the first run of requeued job 36: no squeue capture shows that run.
@pytest.mark.parametrize(
    "es_name", sorted(p.name for p in ES.glob("*.json") if p.stem != "es-0001-job36"),
    ids=lambda n: n[:-5],
)  # fmt: skip
def test_squeue_22_05_matches_slurms_own_rendering(es_name: str):
    """Every key both carry is identical, TIMEOUT/CANCELLED exit codes included: Slurm
    records 0:0 at the state change, where squeue later shows the killed step's 0:15."""
    slurm = json.loads((ES / es_name).read_bytes())
    ours = message(job("slurm-22.05/squeue-final-all-2.json", slurm["jobid"]), send_comment=True)
    shared = (set(ours) | set(slurm)) - ES_DIFFERENCES
    assert {k: ours.get(k) for k in shared} == {k: slurm.get(k) for k in shared}


@pytest.mark.parametrize("job_id", [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 17, 18, 19])
def test_squeue_22_05_matches_the_jobcomp_script_record_of_the_same_job(job_id: int):
    env = parse_record((ENV / f"end-{job_id}.env").read_bytes(), "env", cluster=CLUSTER)
    theirs = json.loads(env.value)
    ours = message(job("slurm-22.05/squeue-final-all.json", job_id))
    if job_id == 14:  # jobcomp/script says PROCS=1 for this never-started het leader
        assert (ours["total_cpus"], theirs["total_cpus"]) == (0, 1)
    shared = (set(ours) & set(theirs)) - {"total_cpus", "cpu_hours"}
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    assert (ours["cpu_hours"] == theirs["cpu_hours"]) or job_id == 14


def test_one_slurm_event_gets_one_id_whichever_source_recorded_it():
    """jobcomp/script, jobcomp/elasticsearch and squeue of Slurm 22.05 describe the same job
    ends: consumers can drop a backfilled record that was already sent live."""
    squeue = {
        j["job_id"]: j
        for name in ("squeue-final-all.json", "squeue-final-all-2.json")
        for j in jobs(f"slurm-22.05/{name}")
    }

    def rendered_id(job_id: int) -> str:
        body = json.dumps(squeue[job_id]).encode()
        return parse_record(body, "json", cluster=CLUSTER, event_hint="end").record_id

    live = [(p, "env") for p in sorted(ENV.glob("end-*.env"))]
    live += [(p, "json") for p in sorted(ES.glob("*.json")) if p.stem != "es-0001-job36"]
    assert len(live) == 31
    for path, fmt in live:
        record = parse_record(path.read_bytes(), fmt, cluster=CLUSTER)
        assert record.record_id == rendered_id(record.job_id), path.name


def test_running_squeue_job_gives_a_start_record_like_the_prolog():
    record = parse_record(
        json.dumps(job("slurm-22.05/squeue-while-running.json", 3)).encode(), "json",
        cluster=CLUSTER,
    )  # fmt: skip
    assert record.event == EVENT_START
    ours = json.loads(record.value)
    prolog = json.loads(
        parse_record((ENV / "start-3.env").read_bytes(), "env", cluster=CLUSTER).value
    )
    assert ours["state"] is None and "@end" not in ours and "exit_code" not in ours
    end_record = parse_record((ENV / "end-3.env").read_bytes(), "env", cluster=CLUSTER)
    assert ours["@start"] == json.loads(end_record.value)["@start"]  # 14:56:08
    for key in set(prolog) - {"alloc_node"}:
        assert ours[key] == prolog[key], key


# ---------------------------------------------------------------------------------------
# Shapes: numbers, states, exit codes, TRES

BASE = job("scontrol-24.11.json", 1004)  # TIMEOUT, 1 node


def with_fields(base: dict, **fields) -> dict:
    return {**base, **fields}


@pytest.mark.parametrize(
    "value",
    [60, {"set": True, "infinite": False, "number": 60}],
)
def test_time_limit_in_any_number_shape(value):
    assert message(with_fields(BASE, time_limit=value))["time_limit"] == 3600


@pytest.mark.parametrize(
    "value",
    [None, 4294967295, 4294967294, {"set": False, "infinite": True, "number": 0},
     {"set": True, "infinite": True, "number": 0}, {"set": False, "infinite": False, "number": 7}],
)  # fmt: skip
def test_unlimited_or_unset_time_limit_is_omitted(value):
    assert "time_limit" not in message(with_fields(BASE, time_limit=value))


def test_sentinels_depend_on_the_width_of_the_field():
    """65534 is NO_VAL16 for a 16-bit count, but a real 32-bit priority."""
    msg = message(with_fields(BASE, priority=65534, cpus_per_task=65534))
    assert msg["priority"] == 65534 and "cpus_per_task" not in msg


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("TIMEOUT", "TIMEOUT"),
        (["TIMEOUT"], "TIMEOUT"),
        (["COMPLETED", "COMPLETING"], "COMPLETED"),
        ("REQUEUED", "PENDING"),
        (["PENDING", "REQUEUED"], "PENDING"),
        (["PENDING", "REQUEUE_HOLD"], "PENDING"),
        ("SPECIAL_EXIT", "PENDING"),
    ],
)
def test_state_as_string_or_list(state, expected):
    assert message(with_fields(BASE, job_state=state))["state"] == expected


@pytest.mark.parametrize(
    ("exit_code", "pair"),
    [
        (0, "0:0"),
        (768, "3:0"),
        (9, "0:9"),
        (4294967294, "0:0"),
        (None, "0:0"),
        ({"status": "SUCCESS", "return_code": 0}, "0:0"),
        ({"status": "ERROR", "return_code": 3}, "3:0"),
        ({"status": "SIGNALED", "return_code": 0, "signal": {"signal_id": 9, "name": "KILL"}},
         "0:9"),
        ({"status": ["ERROR"], "return_code": {"set": True, "infinite": False, "number": 2},
          "signal": {"id": {"set": False, "infinite": False, "number": 0}, "name": ""}}, "2:0"),
        ({"status": ["SIGNALED"], "return_code": {"set": False, "infinite": False, "number": 0},
          "signal": {"id": {"set": True, "infinite": False, "number": 15}, "name": "TERM"}},
         "0:15"),
        ({"status": ["PENDING"]}, "0:0"),
        ({"status": ["CORE_DUMPED"]}, "0:0"),
        ({"status": ["INVALID"], "return_code": {"set": True, "infinite": False, "number": 11}},
         "0:11"),
    ],
)  # fmt: skip
def test_exit_code_in_every_shape(exit_code, pair):
    failed = with_fields(BASE, exit_code=exit_code, job_state=["FAILED"])
    assert message(failed)["exit_code"] == pair


SACCT = job("sacct-24.11.json", 1001)


@pytest.mark.parametrize(
    ("field", "value"),
    [("end_time", 4294967294), ("end_time", 4294967295), ("end_time", -2),
     ("end_time", 2**64 - 2), ("end_time", {"set": False, "infinite": False, "number": 5})],
)  # fmt: skip
def test_unset_times_in_every_printed_form(field, value):
    assert "@end" not in message(with_fields(BASE, **{field: value}))


@pytest.mark.parametrize("value", [-1, -2, 4294967294, 2**64 - 1, {"set": True, "infinite": True}])
def test_unset_numbers_in_every_printed_form(value):
    assert "priority" not in message(with_fields(BASE, priority=value))


@pytest.mark.parametrize(
    ("named", "raw"),
    [("cpu=8,mem=16000M,node=2,billing=8", "1=8,2=16000,3=18446744073709551614,4=2,5=8"),
     ("cpu=1,mem=1.50G,node=1", "1=1,2=1536,3=18446744073709551614,4=1"),
     ("cpu=4,mem=16G,energy=120,node=1", "1=4,2=16384,3=120,4=1"),
     ("cpu=8,node=2,billing=8,gres/gpu=2", None),  # a GRES id is the site's
     ("cpu=8,license/matlab=1", None)],
)  # fmt: skip
def test_raw_tres_of_scontrol_from_the_named_string_and_slurms_fixed_ids(named, raw):
    msg = message(with_fields(BASE, tres_alloc_str=named))
    assert msg.get("tres_alloc_raw") == raw


def test_scontrol_23_02_exit_codes_are_raw_statuses_in_number_objects():
    number = {"set": True, "infinite": False, "number": 768}
    failed = with_fields(BASE, job_state="FAILED", exit_code=number, derived_exit_code=number)
    msg = message(failed)
    assert (msg["exit_code"], msg["derived_ec"]) == ("3:0", "3:0")




def tres(*items) -> list[dict]:
    return [{"type": t, "name": n, "id": i, "count": c} for t, n, i, c in items]


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (100, "100M"),
        (1023, "1023M"),
        (1024, "1G"),
        (1536, "1.50G"),
        (1280, "1280M"),  # 1.25G is not a half: stays in M
        (16000, "16000M"),
        (16384, "16G"),
        (1572864, "1.50T"),
        (3 * 1024**3, "3P"),
    ],
)
def test_memory_is_converted_like_slurm_only_when_exact(count, text):
    sacct = with_fields(SACCT, tres={"requested": tres(("mem", "", 2, count)), "allocated": []})
    msg = message(sacct)
    assert msg["tres_req"] == f"mem={text}" and msg["tres_req_raw"] == f"2={count}"


def test_tres_keep_dump_order_skip_zero_counts_and_name_gres_and_burst_buffers():
    items = tres(("billing", "", 5, 4), ("cpu", "", 1, 4), ("energy", "", 3, 0),
                 ("gres", "gpu", 1001, 2), ("bb", "datawarp", 1002, 2048),
                 ("license", "matlab", 1003, 1))  # fmt: skip
    msg = message(with_fields(SACCT, tres={"requested": items, "allocated": items}))
    assert msg["tres_alloc"] == "billing=4,cpu=4,gres/gpu=2,bb/datawarp=2G,license/matlab=1"
    assert msg["tres_alloc_raw"] == "5=4,1=4,1001=2,1002=2048,1003=1"
    assert msg["total_cpus"] == 4


def test_tres_without_ids_give_only_the_named_string():
    items = [{"type": "cpu", "name": "", "count": 2}]
    msg = message(with_fields(SACCT, tres={"requested": items, "allocated": items}))
    assert msg["tres_alloc"] == "cpu=2" and "tres_alloc_raw" not in msg


def test_sacct_never_ran_has_no_nodes_and_no_cpus():
    msg = message(job("sacct-24.11.json", 1002))
    assert msg["nodes"] is None and msg["total_cpus"] == 0 and msg["total_nodes"] == 0


def test_cluster_only_with_an_accounting_association():
    assert message(BASE)["cluster"] == "mycluster"
    assert "cluster" not in message(with_fields(BASE, association_id=0))
    assert "cluster" not in message(with_fields(SACCT, association=None))


def test_resize_time_is_the_start_of_an_end_record_but_not_of_elapsed():
    resized = with_fields(BASE, resize_time={"set": True, "infinite": False, "number": 1780000090})
    msg = message(resized)
    assert msg["@start"] == "2026-05-28T20:28:10"
    assert msg["elapsed"] == 60  # end - start_time, as Slurm computes it


def test_script_and_comment_only_when_asked():
    quiet = message(SACCT)
    assert "script" not in quiet and "comment" not in quiet
    assert quiet["admin_comment"] == "admin note"  # always sent (26.05+)
    loud = message(SACCT, send_script=True, send_comment=True)
    assert loud["script"].startswith("#!/bin/sh") and loud["comment"] == "user comment"


def test_22_05_sacct_reservation_number_is_not_a_name():
    assert "reservation_name" not in message(job("sacct-22.05.json", 1001))


# ---------------------------------------------------------------------------------------
# Events: end, start, none


def test_event_follows_the_state_or_the_request():
    running = job("scontrol-24.11.json", 1008)
    assert jobobjects.from_job(running)[0] == EVENT_START
    assert jobobjects.from_job(BASE)[0] == EVENT_END
    assert jobobjects.from_job(BASE, event=EVENT_START)[0] == EVENT_START  # it did start


@pytest.mark.parametrize(
    ("dump", "job_id", "event", "words"),
    [
        ("scontrol-24.11.json", 1009, None, "job 1009: state PENDING: a job that has not run"),
        ("scontrol-24.11.json", 1008, EVENT_END, "job 1008: state RUNNING: an end record needs"),
        ("scontrol-24.11.json", 1002, EVENT_START, "job 1002: .*never started"),
        ("scontrol-24.11.json", 1009, EVENT_START, "job 1009: .*never started"),
    ],
)
def test_impossible_event_is_refused(dump, job_id, event, words):
    with pytest.raises(RecordError, match=words):
        jobobjects.from_job(job(dump, job_id), event=event)


# ---------------------------------------------------------------------------------------
# Errors name the job, the field and the value


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"job_id": 0}, "job object: job_id=0: expected a job id"),
        ({"job_id": "12"}, 'job object: job_id="12"'),
        ({"time_limit": "1:00"}, 'job 1004: time_limit="1:00": expected a non-negative integer'),
        ({"time_limit": {"set": True}}, "job 1004: time_limit=.*expected an integer or"),
        ({"priority": -5}, "job 1004: priority=-5"),
        ({"priority": True}, "job 1004: priority=true"),
        ({"name": 7}, "job 1004: name=7: expected a string"),
        ({"job_state": "COMPLETING"}, 'job_state="COMPLETING": expected a base job state'),
        ({"job_state": ["COMPLETED", "FAILED"]}, "job_state=.*expected a job state"),
        ({"job_state": []}, "job_state=\\[\\]"),
        ({"exit_code": "0:0"}, 'exit_code="0:0": expected a wait status'),
        ({"exit_code": {"status": ["WEIRD"]}}, "exit_code=.*status SUCCESS, ERROR"),
        ({"exit_code": {"status": ["SIGNALED"]}}, "exit_code=.*signal object"),
        ({"exit_code": -1}, "exit_code=-1: expected a 32-bit wait status"),
        ({"user_id": None}, "job 1004: user_id=null: expected a numeric id"),
        ({"end_time": {"set": True, "infinite": False, "number": 2**63}},
         "end_time=.*a 64-bit integer"),
        ({"time_limit": 2**32}, "time_limit=4294967296: expected a 32-bit integer"),
    ],
)  # fmt: skip
def test_bad_scontrol_field_is_named(changes, words):
    with pytest.raises(RecordError, match=words):
        jobobjects.from_job(with_fields(BASE, **changes))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"time": 5}, "job 1001: time=5: expected an object"),
        ({"tres": {"requested": "cpu=1"}}, "tres.requested=\"cpu=1\": expected a list"),
        ({"tres": {"requested": [{"type": "cpu", "count": "1"}]}},
         'tres.requested\\[0\\].count="1"'),
        ({"tres": {"requested": [{"name": "gpu", "count": 1}]}}, "tres.requested\\[0\\]="),
        ({"user": "mallory"}, "user 'mallory' is unknown on this host"),
        ({"group": "nobody-here"}, "group 'nobody-here' is unknown on this host"),
    ],
)  # fmt: skip
def test_bad_sacct_field_is_named(changes, words):
    with pytest.raises(RecordError, match=words):
        jobobjects.from_job(with_fields(SACCT, **changes), ids=Ids())


def test_names_are_resolved_only_for_jobs_that_have_a_record():
    pending = with_fields(job("sacct-24.11.json", 1009), user="mallory")
    with pytest.raises(jobobjects.NoRecord, match="state PENDING"):
        jobobjects.from_job(pending, ids=Ids())
    with pytest.raises(jobobjects.UnknownName, match="user 'mallory' is unknown"):
        jobobjects.from_job(with_fields(SACCT, user="mallory"), ids=Ids())


def test_sacct_without_a_name_lookup_points_to_backfill():
    with pytest.raises(RecordError, match=r"sacct prints the user name 'alice' but no user_id.*"
                       r"jobcompd backfill"):  # fmt: skip
        jobobjects.from_job(SACCT)


def test_not_a_job_object():
    with pytest.raises(RecordError, match=r"neither 'job_state'.*nor 'state'/'time'"):
        jobobjects.from_job({"job_id": 5, "name": "x"})


def test_end_epoch_of_both_families():
    assert jobobjects.end_epoch(BASE) == 1780000120
    assert jobobjects.end_epoch(SACCT) == 1780003665
    assert jobobjects.end_epoch(job("scontrol-24.11.json", 1009)) == 0


# ---------------------------------------------------------------------------------------
# Through parse_record, as the daemon sees a spool file


def test_parse_record_renders_a_job_object_and_keeps_the_id_stable():
    body = json.dumps(BASE).encode()
    first = parse_record(body, "json", cluster=CLUSTER, event_hint="end")
    again = parse_record(json.dumps(BASE, indent=2).encode(), "json", cluster=CLUSTER)
    assert first.event == EVENT_END and first.job_id == 1004
    assert first.value == again.value and first.record_id == again.record_id
    # The rendered record, passed through later (backfill writes those), keeps its id.
    assert parse_record(first.value, "json", cluster=CLUSTER).record_id == first.record_id


def test_parse_record_refuses_a_whole_dump():
    dump = (JOBJSON / "scontrol-24.11.json").read_bytes()
    with pytest.raises(RecordError, match=r"a dump of 11 job\(s\).*jobcompd backfill"):
        parse_record(dump, "json", cluster=CLUSTER)


def test_parse_record_of_sacct_object_needs_backfill():
    with pytest.raises(RecordError, match="jobcompd backfill"):
        parse_record(json.dumps(SACCT).encode(), "json", cluster=CLUSTER)


def test_rendered_message_decodes_into_the_model():
    for dump in DUMPS:
        for line in expected_path(dump).read_text(encoding="utf-8").splitlines():
            event, _, value = line.partition("\t")
            if event != "error":
                msgspec.json.decode(value.encode())  # valid JSON
                assert b"/" not in value.encode().replace(b"\\/", b"")


# ---------------------------------------------------------------------------------------
# Property: any damage to a job object gives a record or a RecordError, nothing else

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["COMPLETED", "REQUEUED", "SIGNALED", "None assigned", ""]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["set", "infinite", "number", "status", "return_code",
                                       "signal", "id", "type", "name", "count", "current",
                                       "end", "start", "cluster"]), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip
BASES = [BASE, SACCT, job("slurm-22.05/squeue-final-all.json", 9), job("sacct-22.05.json", 1001)]


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(BASES),
    changes=st.lists(st.tuples(st.integers(min_value=0, max_value=200), json_values), max_size=4),
    event=st.sampled_from([None, EVENT_END, EVENT_START]),
)
def test_any_damaged_job_object_gives_a_record_or_record_error(base, changes, event):
    damaged = dict(base)
    keys = sorted(damaged)
    for index, value in changes:
        damaged[keys[index % len(keys)]] = value
    try:
        _, rec = jobobjects.from_job(damaged, event=event, ids=Ids(), send_script=True)
    except RecordError:
        return
    value = encode(rec)
    assert json.loads(value)["jobid"] == rec.jobid


def _write_expected() -> None:
    EXPECTED.mkdir(exist_ok=True)
    for dump in DUMPS:
        expected_path(dump).write_text(render_dump(dump), encoding="utf-8")
        print("wrote", expected_path(dump))


if __name__ == "__main__" and "--write" in sys.argv:
    _write_expected()
