"""Real job objects of Slurm 22.05-25.11, captured on live clusters by other projects: every
finished job renders to the record jobcomp/kafka sends, every other job is skipped.

The dumps are read in place from ``../shared/slurm/real-dumps/`` (its README and SOURCES.txt
say where each comes from); they are never copied into this repository. Without that folder
these tests skip, except in CI (``CI=true``), where they fail.

Three checks per dump:

- golden: each job's outcome and exact message, in dump order, against
  ``tests/data/real-dumps/expected/`` (reviewed by hand when written; regenerate after a
  deliberate change with ``.venv/bin/python -m tests.test_real_dumps --write`` and read the
  diff);
- rules: each message is checked field by field against what jobcomp/kafka derives from the
  same job (jobcomp-facts.md §1.3), computed here independently of jobcompd.records;
- backfill: the dump through ``jobcompd backfill``'s loop writes every finished job, counts the
  rest as not finished, and reports nothing, so the command would exit 0.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobcompd import backfill as bf
from jobcompd.records import EVENT_END, EVENT_START, RecordError, encode, jobobjects

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "slurm" / "real-dumps"
EXPECTED = Path(__file__).parent / "data" / "real-dumps" / "expected"
DUMPS = sorted(REAL.rglob("*.json")) if REAL.is_dir() else []
NO_VAL64 = 2**64 - 2


@pytest.fixture(autouse=True)
def _real_dumps_present():
    if DUMPS:
        return
    why = f"the real Slurm dumps are not at {REAL} (see tests/test_real_dumps.py)"
    if os.environ.get("CI") == "true":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


class Ids:
    """sacct prints names only: every name gets a stable id of its own (the same as the
    scontrol dumps give where they name it)."""

    def __init__(self) -> None:
        self.known: dict[str, int] = {}
        for dump in DUMPS:
            for job in _jobs(dump):
                for name_key, id_key in (("user_name", "user_id"), ("group_name", "group_id")):
                    if isinstance(job.get(name_key), str) and isinstance(job.get(id_key), int):
                        self.known[job[name_key]] = job[id_key]

    def uid(self, name: str) -> int | None:
        return self.known.get(name, 100000 + zlib.crc32(name.encode()) % 100000)

    gid = uid


def _jobs(dump: Path) -> list[dict[str, Any]]:
    return json.loads(dump.read_bytes()).get("jobs", [])


IDS: Ids | None = None


def ids() -> Ids:
    global IDS
    if IDS is None:
        IDS = Ids()
    return IDS


def name(dump: Path) -> str:
    return str(dump.relative_to(REAL).with_suffix("")).replace("/", "-")


def render(dump: Path) -> str:
    """One line per job: "<job_id>\\t<event>\\t<message>", or the reason there is none."""
    lines = []
    for job in _jobs(dump):
        try:
            event, rec = jobobjects.from_job(job, ids=ids(), send_script=True, send_comment=True)
        except jobobjects.NoRecord:
            lines.append(f"{job.get('job_id')}\tno record\t")
        except RecordError as exc:
            lines.append(f"{job.get('job_id')}\terror\t{exc}")
        else:
            lines.append(f"{rec.jobid}\t{event}\t{encode(rec).decode()}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Golden messages


def test_the_dumps_hold_the_581_job_objects_of_the_issue():
    assert sum(len(_jobs(d)) for d in DUMPS) == 581


@pytest.mark.parametrize("dump", DUMPS, ids=name)
def test_dump_renders_to_the_expected_messages(dump: Path):
    assert render(dump) == (EXPECTED / f"{name(dump)}.expected").read_text(encoding="utf-8")


def test_every_finished_job_renders_and_the_others_are_not_finished():
    outcomes: Counter[str] = Counter()
    for dump in DUMPS:
        for line in filter(None, render(dump).splitlines()):
            outcomes[line.split("\t")[1]] += 1
    # 217 finished jobs give their end record, running jobs their start record, pending ones
    # none. One running sacct job (SARC's 23.02 job 4) prints an empty group name: its start
    # record cannot have a group_id (backfill asks for end records only and skips it).
    assert outcomes == {EVENT_END: 217, EVENT_START: 239, "no record": 124, "error": 1}


# ---------------------------------------------------------------------------------------
# Each message against jobcomp/kafka's own rules, computed from the job object here


def _num(value: Any) -> int | None:
    """A printed number as Slurm holds it: None for unset/unlimited in any printed form."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if value is None or value in (-1, -2) or value >= 0xFFFFFFFE:
        return None
    return value


def _utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _expected_times(job: dict[str, Any]) -> dict[str, Any]:
    """@start, @end, elapsed, @submit, @eligible and @queue_wait as jobcomp derives them."""
    t = job.get("time")
    if isinstance(t, dict):  # sacct
        start, end = _num(t["start"]) or 0, _num(t["end"]) or 0
        submit, eligible = _num(t["submission"]) or 0, _num(t["eligible"]) or 0
        if not start and job["nodes"] == "None assigned":
            start = end  # slurmctld ends a never-started job with start = end
    else:
        start, end = _num(job["start_time"]) or 0, _num(job["end_time"]) or 0
        submit, eligible = _num(job["submit_time"]) or 0, _num(job["eligible_time"]) or 0
    exp: dict[str, Any] = {"@end": _utc(end) if end else None, "@submit": _utc(submit)}
    exp["@start"] = _utc(start) if start and start <= end else None
    exp["elapsed"] = end - start if start and end and start < end else 0
    exp["@eligible"] = _utc(eligible) if eligible else None
    exp["@queue_wait"] = start - eligible if start and eligible and start >= eligible else None
    return exp


def _expected_tres_raw(job: dict[str, Any], side: str) -> str | None:
    """sacct: every count of the list (sentinels as uint64, zero skipped), in list order."""
    items = (job.get("tres") or {}).get(side) or []
    pairs = [f"{i['id']}={i['count'] % 2**64}" for i in items if i["count"]]
    return ",".join(pairs) or None


@pytest.mark.parametrize("dump", DUMPS, ids=name)
def test_each_message_follows_jobcomp_kafkas_rules(dump: Path):
    problems = []
    by_id = {str(j.get("job_id")): j for j in _jobs(dump)}
    for line in filter(None, render(dump).splitlines()):
        job_id, event, value = line.split("\t", 2)
        if event != EVENT_END:
            continue
        msg, job = json.loads(value), by_id[job_id]
        expected = _expected_times(job)
        if "time" in job:  # sacct
            expected["tres_alloc_raw"] = _expected_tres_raw(job, "allocated")
            expected["tres_req_raw"] = _expected_tres_raw(job, "requested")
            if isinstance(job.get("stdout"), str):
                filled = f"{job['working_directory']}/slurm-%j.out"
                expected["std_out"] = job["stdout"] if job["stdout"] not in ("", filled) else None
        else:
            state = job["job_state"]
            expected["state"] = state if isinstance(state, str) else state[0]
            expected["nodes"] = job["nodes"] or None
            if "stdout_expanded" not in job:  # expanded paths: not what was submitted
                expected["std_out"] = expected["std_err"] = None
        expected["ntasks"] = None
        for key, want in expected.items():
            if msg.get(key) != want:
                problems.append(f"job {job_id}: {key} is {msg.get(key)!r}, jobcomp: {want!r}")
        if msg["state"] in ("CANCELLED", "TIMEOUT") and msg["nodes"] and msg["exit_code"] != "0:0":
            problems.append(f"job {job_id}: exit_code {msg['exit_code']} at the state change")
        named = msg.get("tres_alloc") or ""
        if "=-" in named or str(NO_VAL64) in named:
            problems.append(f"job {job_id}: a sentinel in the named TRES string {named}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------
# Through backfill


@pytest.mark.parametrize("dump", DUMPS, ids=name)
def test_backfill_writes_every_finished_job_and_reports_nothing(dump: Path):
    written: list[bytes] = []
    reports: list[str] = []
    _, items = bf.read_jobs(dump.read_bytes())
    summary = bf.backfill(items, lambda value, _: written.append(value), ids=ids(),
                          report=reports.append)  # fmt: skip
    document = json.loads(dump.read_bytes())
    slurm_errors = document.get("errors") or []
    assert reports == [r for r in reports if "Slurm reported" in r], reports
    assert summary.slurm_errors == len(slurm_errors)
    assert summary.problems == len(slurm_errors)  # exit 0 exactly when Slurm reported nothing
    lines = filter(None, render(dump).splitlines())
    finished = sum(1 for line in lines if line.split("\t")[1] == EVENT_END)
    assert summary.written == len(written) == finished
    assert summary.read == len(document.get("jobs", []))
    assert summary.skipped == ({bf.NOT_FINISHED: summary.read - finished}
                               if summary.read > finished else {})  # fmt: skip


def test_a_dump_of_slurm_errors_is_reported_and_fails():
    dump = REAL / "slurmweb" / "23.02" / "slurm-job-archived.json"  # no "jobs" at all
    reports: list[str] = []
    summary = bf.backfill(bf.read_jobs(dump.read_bytes())[1], lambda *_: None, ids=ids(),
                          report=reports.append)  # fmt: skip
    assert summary.read == 0 and summary.slurm_errors == 1 and summary.problems == 1
    assert reports == ["the dump at byte 0: Slurm reported: Invalid job id specified Unable to "
                       "query JobId=306 (error 2017)"]  # fmt: skip
    assert summary.line(dry_run=True).endswith("; 1 error reported by Slurm in the dump")


def _write_expected() -> None:
    EXPECTED.mkdir(parents=True, exist_ok=True)
    for dump in DUMPS:
        (EXPECTED / f"{name(dump)}.expected").write_text(render(dump), encoding="utf-8")
    print(f"wrote {len(DUMPS)} files into {EXPECTED}")


if __name__ == "__main__" and "--write" in sys.argv:
    _write_expected()
