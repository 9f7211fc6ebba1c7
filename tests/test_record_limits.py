"""Hostile records: whatever a record holds, parsing it costs time in proportion to its size,
and a record with more members than any real one could have is refused before it is read
(TooManyKeys, dead-lettered as ``too_many_keys``), while the records around it go on.

The time limits below are far above what the linear code takes: they catch work that grows
with the square of the input, not a slow machine.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from jobcompd.records import (
    MAX_RECORD_MEMBERS,
    RecordError,
    TooManyKeys,
    parse_record,
)

DATA = Path(__file__).parent / "data"
REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "slurm" / "real-dumps"
#: The cap stays at least this many times above the largest real record.
MARGIN = 50
LINEAR_SECONDS = 1.0


def many_keys(count: int, *, script: bool = True) -> bytes:
    """``{"jobid":1,"script":"x","":1,"":1,…}`` with ``count`` members in all."""
    head = b'{"jobid":1,"script":"x"' if script else b'{"jobid":1,"x":2'
    return head + b',"":1' * (count - 2) + b"}"


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def test_100000_keys_are_refused_unread_and_fast() -> None:
    body = many_keys(100_000)
    start = time.perf_counter()
    with pytest.raises(TooManyKeys) as info:
        parse_record(body, "json", cluster="c")
    seconds = time.perf_counter() - start
    assert seconds < LINEAR_SECONDS, f"{seconds:.2f} s for 100,000 keys"
    assert info.value.reason == "too_many_keys"
    assert f"more than {MAX_RECORD_MEMBERS} top-level keys" in str(info.value)
    assert isinstance(info.value, RecordError)  # code that knows only RecordError still copes


def test_a_record_at_the_cap_is_sent_and_its_script_cut_in_linear_time() -> None:
    body = many_keys(MAX_RECORD_MEMBERS)
    rec, seconds = timed(lambda: parse_record(body, "json", cluster="c"))
    assert seconds < LINEAR_SECONDS, f"{seconds:.2f} s for {MAX_RECORD_MEMBERS} keys"
    assert rec.job_id == 1
    assert rec.value == b'{"jobid":1' + b',"":1' * (MAX_RECORD_MEMBERS - 2) + b"}"
    with pytest.raises(TooManyKeys):
        parse_record(many_keys(MAX_RECORD_MEMBERS + 1), "json", cluster="c")


def test_an_env_dump_is_capped_in_entries() -> None:
    entries = b"JOBID=1\0" + b"".join(b"X%d=1\0" % i for i in range(MAX_RECORD_MEMBERS))
    with pytest.raises(TooManyKeys, match=f"more than {MAX_RECORD_MEMBERS} entries"):
        parse_record(entries, "env", cluster="c")


def test_members_inside_values_and_colons_inside_strings_do_not_count() -> None:
    """Only a record's own members count: a job object's nested objects and a script full of
    colons are bounded by the record's size alone."""
    nested = {"jobid": 7, "x": {f"k{i}": i for i in range(3 * MAX_RECORD_MEMBERS)},
              "script": ":" * (3 * MAX_RECORD_MEMBERS)}  # fmt: skip
    body = json.dumps(nested, separators=(",", ":")).encode()
    rec, seconds = timed(lambda: parse_record(body, "json", cluster="c"))
    assert seconds < LINEAR_SECONDS
    assert json.loads(rec.value) == {"jobid": 7, "x": nested["x"]}


def test_the_good_records_around_a_hostile_one_go_on() -> None:
    good = (DATA / "records" / "elasticsearch").glob("*.json")
    batch = [next(good).read_bytes(), many_keys(100_000), next(good).read_bytes()]
    outcomes = []
    for data in batch:
        try:
            outcomes.append(parse_record(data, "json", cluster="c").job_id)
        except RecordError as exc:
            outcomes.append(exc.reason)
    assert outcomes[1] == "too_many_keys"
    assert all(isinstance(job_id, int) for job_id in (outcomes[0], outcomes[2]))


# ------------------------------------------------------------------------------------------
# The cap against what real Slurm records hold


def _objects(path: Path):
    """The JSON objects of a file: a record, a job object, or each job of a dump (read with
    the standard library, not the code under test)."""
    decoder = json.JSONDecoder()
    pos, raw = 0, path.read_text()
    while pos < len(raw):
        while pos < len(raw) and (raw[pos].isspace() or raw[pos] == "\0"):
            pos += 1
        if pos >= len(raw):
            break
        value, pos = decoder.raw_decode(raw, pos)
        jobs = value.get("jobs") if isinstance(value, dict) else None
        yield from (jobs if isinstance(jobs, list) else [value])


def _largest(paths) -> tuple[int, str]:
    largest = (0, "")
    for path in paths:
        if path.suffix == ".env":
            largest = max(largest, (path.read_bytes().count(b"\0"), str(path)))
            continue
        for obj in _objects(path):
            if isinstance(obj, dict):
                largest = max(largest, (len(obj), str(path)))
    return largest


def test_the_cap_is_far_above_every_real_record() -> None:
    """The captures in tests/data (jobcomp/script, prolog and epilog environments,
    jobcomp/elasticsearch bodies, job objects of Slurm 22.05 to 25.11) and the real dumps
    beside the project: the cap stays MARGIN times above the largest."""
    paths = [*DATA.rglob("*.env"), *DATA.rglob("*.json")]
    if REAL.is_dir():
        paths += REAL.rglob("*.json")
    elif os.environ.get("CI") == "true":
        pytest.fail(f"{REAL} is missing")
    members, where = _largest(paths)
    assert members > 20, "no real record found"
    assert MARGIN * members <= MAX_RECORD_MEMBERS, f"{where} holds {members} members"
