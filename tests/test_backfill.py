"""Tests for `jobcompd backfill`: a sacct/scontrol --json dump into the spool, end to end."""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

from jobcompd import backfill as bf
from jobcompd.cli import main as cli
from jobcompd.records import EVENT_END, parse_record
from jobcompd.spool import Spool, parse_name
from tests.broker import wait_for
from tests.support import DaemonUnderTest

DATA = Path(__file__).parent / "data"
JOBJSON = DATA / "jobjson"
CLUSTER = "testcluster"
SACCT = JOBJSON / "sacct-24.11.json"
SCONTROL = JOBJSON / "scontrol-24.11.json"


def expected_lines(dump: Path) -> list[str]:
    name = str(dump.relative_to(JOBJSON).with_suffix("")).replace("/", "-")
    return (JOBJSON / "expected" / f"{name}.expected").read_text(encoding="utf-8").splitlines()


def expected_end_records(dump: Path, *, drop: tuple[str, ...] = ("script", "comment")) -> list:
    """The golden end records of a dump, as dicts, without the keys JobCompParams leave out."""
    out = []
    for line in expected_lines(dump):
        event, _, value = line.partition("\t")
        if event == EVENT_END:
            out.append({k: v for k, v in json.loads(value).items() if k not in drop})
    return out


class Ids:
    def uid(self, name: str) -> int | None:
        return {"alice": 1001}.get(name)

    def gid(self, name: str) -> int | None:
        return {"physics": 2001}.get(name)


def run(items, **kwargs):
    written: list[tuple[bytes, int]] = []
    reports: list[str] = []
    summary = bf.backfill(
        items, lambda value, job_id: written.append((value, job_id)), ids=Ids(),
        report=reports.append, **kwargs,
    )  # fmt: skip
    return summary, written, reports


# ---------------------------------------------------------------------------------------
# Reading dumps


def test_a_whole_dump_is_read_with_its_job_count():
    total, items = bf.read_jobs(SACCT.read_bytes())
    items = list(items)
    assert total == len(items) == 11
    assert items[0].where == "job #1" and items[0].job["job_id"] == 1001


def test_concatenated_documents_and_single_job_objects_are_read():
    jobs = json.loads(SCONTROL.read_bytes())["jobs"]
    data = (
        json.dumps({"jobs": jobs[:2]}) + "\n"
        + json.dumps(jobs[2]) + "\n"  # one job object on its own
        + json.dumps({"jobs": jobs[3:5], "meta": {}}, indent=2)
    ).encode()  # fmt: skip
    total, items = bf.read_jobs(data)
    assert total is None
    assert [i.job["job_id"] for i in items] == [j["job_id"] for j in jobs[:5]]


def test_a_broken_job_is_reported_by_index_and_the_others_are_kept():
    jobs = [json.dumps(j) for j in json.loads(SACCT.read_bytes())["jobs"][:3]]
    jobs[1] = jobs[1].replace('"job_id": 1002', '"job_id": 10-02')  # not JSON any more
    data = ('{"meta": {"x": "]"}, "jobs": [' + ", ".join(jobs) + "]}").encode()
    items = list(bf.read_jobs(data)[1])
    assert [i.where for i in items] == ["job #1", "job #2", "job #3"]
    assert items[0].job["job_id"] == 1001 and items[2].job["job_id"] == 1003
    assert items[1].job is None and "not valid JSON" in items[1].error


def test_a_cut_off_dump_keeps_the_jobs_before_the_cut():
    data = SACCT.read_bytes()
    cut = data[: data.index(b'"job_id": 1103')]  # inside the fourth job
    items = list(bf.read_jobs(cut)[1])
    assert [i.job["job_id"] for i in items[:3]] == [1001, 1002, 1003]
    assert items[3].where == "job #4" and "cut off inside this job" in items[3].error
    assert len(items) == 4


def test_something_that_is_no_dump_is_reported():
    items = list(bf.read_jobs(b'[1, 2] {"jobs": [{"job_id": 5, "job_state": "RUNNING"}]}')[1])
    assert items[0].where == "input at byte 0" and "neither a dump" in items[0].error
    assert items[1].job == {"job_id": 5, "job_state": "RUNNING"}


@pytest.mark.parametrize("data", [b'{"jobs":[}', b'{"jobs":[1,}', b'{"jobs":[{"job_id":5}}'])
def test_a_stray_bracket_in_the_jobs_ends_them(data: bytes):
    """Reading stops at a '}' where a job should start, once: walking on would find the same
    nothing there for ever."""
    items = list(itertools.islice(bf.read_jobs(data)[1], 10))
    assert len(items) < 10
    assert items[-1].error is not None


# ---------------------------------------------------------------------------------------
# Rendering: what is written, skipped and reported


def test_finished_jobs_are_written_as_their_golden_end_records():
    summary, written, reports = run(bf.read_jobs(SACCT.read_bytes())[1])
    assert [json.loads(v) for v, _ in written] == expected_end_records(SACCT)
    assert [job_id for _, job_id in written] == [json.loads(v)["jobid"] for v, _ in written]
    # 1007 has no user name (sacct prints no uid), 1008 runs, 1009 is pending.
    assert summary.read == 11 and summary.written == 8
    assert summary.skipped == {"not finished": 2, "unknown user or group": 1}
    assert reports == ["job #9 (job_id 1007): no user name and no user_id: cannot tell the user_id"]
    assert summary.line(dry_run=False) == (
        "11 jobs read, 8 written, 3 skipped (2 not finished, 1 unknown user or group)"
    )


def test_script_and_comment_follow_job_comp_params():
    _, written, _ = run(bf.read_jobs(SACCT.read_bytes())[1], send_script=True, send_comment=True)
    first = json.loads(written[0][0])
    assert first["comment"] == "user comment" and first["script"].startswith("#!/bin/sh")


def test_since_and_until_filter_on_the_end_time():
    # Ends in the dump: 1001 at T0+3665, 1002 at T0+400, 1003 at T0+50, 1103 at T0+91, ...
    t0 = 1780000000
    summary, written, _ = run(bf.read_jobs(SACCT.read_bytes())[1], since=t0 + 91, until=t0 + 400)
    assert [json.loads(v)["jobid"] for v, _ in written] == [1103, 1004]  # ends +91, +120
    assert summary.skipped["outside --since/--until"] == 6


def test_invalid_jobs_are_reported_and_skipped():
    jobs = json.loads(SCONTROL.read_bytes())["jobs"][:3]
    jobs[0]["time_limit"] = "forever"
    jobs[2] = {"name": "no id"}
    summary, _, reports = run(bf.read_jobs(json.dumps({"jobs": jobs}).encode())[1])
    assert summary.written == 1 and summary.skipped == {"invalid": 2} and summary.problems == 2
    assert reports[0].startswith('job #1 (job_id 1001): time_limit="forever": expected')
    assert reports[1] == "job #3: no 'job_id': not a Slurm job object"


def test_a_record_too_large_for_the_spool_is_skipped(tmp_path: Path):
    spool = Spool(tmp_path, max_record_bytes=1000, allowed_uids=None)
    spool.ensure_dirs()

    def emit(value: bytes, job_id: int) -> None:
        spool.write_record(value, job_id=job_id, event="end", fmt="json")

    reports: list[str] = []
    summary = bf.backfill(bf.read_jobs(SACCT.read_bytes())[1], emit, ids=Ids(),
                          report=reports.append)  # fmt: skip
    assert summary.skipped["too large for the spool"] == 1  # job 1001, with all its fields
    assert "job #1 (job_id 1001): record for job 1001 is" in reports[0]
    assert len(os.listdir(tmp_path / "new")) == summary.written == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01", datetime(2026, 5, 1).timestamp()),
        ("2026-05-01T08:30", datetime(2026, 5, 1, 8, 30).timestamp()),
        ("2026-05-01T08:30:15", datetime(2026, 5, 1, 8, 30, 15).timestamp()),
        ("2026-05-28T20:26:40Z", 1780000000),
    ],
)
def test_when_formats(text, expected):
    assert bf.parse_when(text) == int(expected)


@pytest.mark.parametrize("text", ["2026-5-1", "2026-02-30", "yesterday", "2026-05-01 08:00"])
def test_bad_when_is_refused_with_the_format(text):
    with pytest.raises(ValueError, match=r"YYYY-MM-DD|day is out of range"):
        bf.parse_when(text)


def test_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, plain = Tty(), io.StringIO()
    for stream in (tty, plain):
        bar = bf._Progress(4, stream)
        for done in range(1, 5):
            bar.update(done)
        bar.close()
    assert plain.getvalue() == ""
    assert tty.getvalue().startswith("\rbackfill [#######") and tty.getvalue().endswith("\n")
    assert "\rbackfill [" + "#" * 30 + "] 4/4 jobs\n" in tty.getvalue()


def test_a_report_takes_the_bar_line_and_the_bar_comes_back():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = bf._Progress(2, tty)
    bar.update(1)
    bar.clear()
    tty.write("jobcompd backfill: job #1: bad\n")
    bar.update(2)
    bar.close()
    bar.close()  # a second close adds nothing
    assert tty.getvalue() == (
        "\rbackfill [###############---------------] 1/2 jobs\r\033[K"
        "jobcompd backfill: job #1: bad\n"
        "\rbackfill [" + "#" * 30 + "] 2/2 jobs\n"
    )


# ---------------------------------------------------------------------------------------
# The command, into a real spool


def write_config(root: Path, **params: str) -> Path:
    (root / "state").mkdir(exist_ok=True)
    (root / "rdkafka.conf").write_text("bootstrap.servers=127.0.0.1:9\n")
    jcp = ",".join(["topic=t", *[k if v == "" else f"{k}={v}" for k, v in params.items()]])
    conf = root / "jobcompd.conf"
    conf.write_text(
        f"ClusterName={CLUSTER}\nJobCompLoc={root / 'rdkafka.conf'}\nJobCompParams={jcp}\n"
        f"SpoolDir={root / 'spool'}\nStateSaveLocation={root / 'state'}\nSpoolOwners=root\n"
    )
    return conf


def command(argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, str]:
    args = cli.build_parser().parse_args(argv)
    out, err = io.BytesIO(), io.StringIO()
    fake_out = io.TextIOWrapper(out, write_through=True)
    fake_in = io.TextIOWrapper(io.BytesIO(stdin))
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr, sys.stdin = fake_out, err, fake_in
    try:
        code = args.func(args)
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
    written = out.getvalue()
    fake_out.detach()  # a collected wrapper would close the buffer it wraps
    return code, written, err.getvalue()


def root_sacct_dump(tmp_path: Path) -> Path:
    """The 24.11 sacct dump with its user and group renamed to root, which resolves on every
    host (sacct prints names, backfill looks the ids up here), without the job whose user
    has no name."""
    dump = json.loads(SACCT.read_bytes())
    dump["jobs"] = [j for j in dump["jobs"] if j["job_id"] != 1007]
    for j in dump["jobs"]:
        j["user"] = j["group"] = "root"
    path = tmp_path / "sacct-root.json"
    path.write_text(json.dumps(dump))
    return path


def root_sacct_records() -> list[dict]:
    out = expected_end_records(SACCT)
    for m in out:
        m.update(username="root", user_id=0, groupname="root", group_id=0)
    return out


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Spool]:
    conf = write_config(tmp_path)
    spool = Spool(tmp_path / "spool", max_record_bytes=1 << 20, allowed_uids=None)
    spool.ensure_dirs()
    return conf, spool


def spool_records(spool: Spool) -> list:
    """(name, parsed Record) of every file in new/, oldest first, as the daemon reads them."""
    out = []
    for name in sorted(os.listdir(spool.new)):
        meta = parse_name(name)
        out.append((meta, parse_record(spool.read(name), meta.fmt, cluster=CLUSTER,
                                       event_hint=meta.event)))  # fmt: skip
    return out


def test_backfill_writes_one_end_record_per_finished_job(setup):
    conf, spool = setup
    code, out, err = command(["backfill", "-c", str(conf), str(SCONTROL)])
    assert code == 0, err
    assert out == b""
    assert err == (
        f"jobcompd backfill: 11 jobs read, 9 written, 2 skipped (2 not finished) into {spool.new}\n"
    )
    records = spool_records(spool)
    assert [(m.event, m.fmt) for m, _ in records] == [("end", "json")] * 9
    assert [m.job_id for m, _ in records] == [r.job_id for _, r in records]
    assert [json.loads(r.value) for _, r in records] == expected_end_records(SCONTROL)
    assert all(r.event == EVENT_END for _, r in records)
    assert os.listdir(spool.tmp) == []


def test_backfilling_the_same_dump_twice_gives_the_same_ids(setup, tmp_path: Path):
    conf, spool = setup
    dump = root_sacct_dump(tmp_path)
    assert command(["backfill", "-c", str(conf), str(dump)])[0] == 0
    assert [json.loads(r.value) for _, r in spool_records(spool)] == root_sacct_records()
    first = [r.record_id for _, r in spool_records(spool)]
    assert command(["backfill", "-c", str(conf), str(dump)])[0] == 0
    both = [r.record_id for _, r in spool_records(spool)]
    assert len(first) == 8 and both == first + first  # the repeats carry the same ids
    assert len(set(first)) == 8
    # The same jobs rendered straight from the job objects by the daemon get these ids too.
    scontrol_ids = {
        parse_record(json.dumps(j).encode(), "json", cluster=CLUSTER, event_hint="end").record_id
        for j in json.loads(SCONTROL.read_bytes())["jobs"]
        if j["job_id"] not in (1007, 1008, 1009)
    }  # fmt: skip
    assert scontrol_ids == set(first)  # one Slurm event, one id, whichever dump it came from


def test_dry_run_writes_nothing_and_prints_the_records(setup):
    conf, spool = setup
    code, out, err = command(["backfill", "-c", str(conf), "--dry-run", "-"],
                             stdin=SCONTROL.read_bytes())  # fmt: skip
    assert code == 0 and os.listdir(spool.new) == []
    assert [json.loads(line) for line in out.splitlines()] == expected_end_records(SCONTROL)
    assert "11 jobs read, 9 would be written, 2 skipped (2 not finished)\n" in err


def test_since_until_on_the_command_line(setup):
    conf, spool = setup
    code, _, err = command(
        [
            "backfill",
            "-c",
            str(conf),
            str(SCONTROL),
            "--since",
            "2026-05-28T20:28:00Z",
            "--until",
            "2026-05-28T20:30Z",
        ]
    )
    assert code == 0, err
    # Ends at 20:28:11, 20:28:40 and 20:28:01; six others end before 20:28 or after 20:30.
    assert [r.job_id for _, r in spool_records(spool)] == [1103, 1004, 1007]
    assert "6 outside --since/--until" in err


def test_send_script_from_the_configuration(tmp_path: Path):
    conf = write_config(tmp_path, send_script="")
    Spool(tmp_path / "spool", max_record_bytes=1 << 20, allowed_uids=None).ensure_dirs()
    assert command(["backfill", "-c", str(conf), str(root_sacct_dump(tmp_path))])[0] == 0
    names = sorted(os.listdir(tmp_path / "spool" / "new"))
    first = json.loads((tmp_path / "spool" / "new" / names[0]).read_bytes())
    assert first["script"].startswith("#!/bin/sh") and "comment" not in first


def test_bad_jobs_give_exit_65_after_writing_the_good_ones(setup, tmp_path: Path):
    conf, spool = setup
    jobs = json.loads(SCONTROL.read_bytes())["jobs"]
    jobs[3]["exit_code"] = "3:0"
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"jobs": jobs}))
    code, _, err = command(["backfill", "-c", str(conf), str(dump)])
    assert code == 65
    assert 'job #4 (job_id 1103): exit_code="3:0": expected a wait status' in err
    assert len(os.listdir(spool.new)) == 8


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["--config", "/nonexistent/jobcompd.conf"], 78, "/nonexistent/jobcompd.conf"),
        (["FILE=/nonexistent/dump.json"], 66, "cannot read /nonexistent/dump.json"),
        (["NOSPOOL"], 73, "has no tmp/ and new/: start jobcompd once"),
    ],
)
def test_command_errors(tmp_path: Path, argv, code, words):
    conf = write_config(tmp_path)
    if argv != ["NOSPOOL"]:
        Spool(tmp_path / "spool", max_record_bytes=1 << 20, allowed_uids=None).ensure_dirs()
    args = ["backfill", "-c", str(conf), str(SCONTROL)]
    if argv[0] == "--config":
        args = ["backfill", *argv, str(SCONTROL)]
    elif argv[0].startswith("FILE="):
        args[-1] = argv[0][5:]
    got, _, err = command(args)
    assert got == code and words in err


@pytest.mark.parametrize(
    "dump",
    [  # slurmrestd/scontrol of 23.11+ (an empty job list), and of 23.02 (no "jobs" at all)
        b'{"jobs": [], "errors": [{"description": "Unable to query JobId=306", '
        b'"error_number": 2017, "error": "Invalid job id specified"}], "warnings": []}',
        b'{"errors": [{"description": "Unable to query JobId=306", "error_number": 2017, '
        b'"error": "Invalid job id specified"}], "warnings": []}',
    ],
)
def test_errors_slurm_put_into_the_dump_are_reported_with_exit_65(setup, dump: bytes):
    conf, _ = setup
    code, _, err = command(["backfill", "-c", str(conf), "-"], stdin=dump)
    assert code == 65
    assert "Slurm reported: Invalid job id specified Unable to query JobId=306 (error 2017)" in err
    assert "0 jobs read, 0 written, 0 skipped; 1 error reported by Slurm in the dump" in err


def test_pending_and_running_jobs_are_not_finished_whatever_their_other_fields():
    jobs = json.loads(SCONTROL.read_bytes())["jobs"]
    odd = [{**j, "exit_code": "odd", "time_limit": "odd"} for j in jobs if j["job_id"] in
           (1008, 1009)]  # fmt: skip
    summary, written, reports = run(bf.read_jobs(json.dumps({"jobs": odd}).encode())[1])
    assert summary.skipped == {"not finished": 2} and not written and not reports
    assert summary.problems == 0


def test_empty_input_is_an_error_but_an_empty_dump_is_not(setup, tmp_path: Path):
    conf, _ = setup
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    code, _, err = command(["backfill", "-c", str(conf), str(empty)])
    assert code == 65 and "holds no JSON" in err
    code, _, err = command(["backfill", "-c", str(conf), "-"], stdin=b'{"jobs": []}\n')
    assert code == 0 and "0 jobs read, 0 written, 0 skipped" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files as another user")
def test_as_root_the_records_belong_to_the_spool_owner(tmp_path: Path):
    """The daemon runs as SlurmUser and must read the records (mode 0600)."""
    nobody = 65534
    # Outside pytest's private (0700) folder, so that the spool's owner can reach it.
    root = Path(tempfile.mkdtemp(prefix="jobcompd-backfill-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        conf = write_config(root)
        spool = Spool(root / "spool", max_record_bytes=1 << 20, allowed_uids=None)
        spool.ensure_dirs()
        for path in (spool.root, spool.tmp, spool.new):
            os.chown(path, nobody, nobody)
        _backfill_as_root_into(conf, spool, root_sacct_dump(tmp_path), nobody)
    finally:
        shutil.rmtree(root)


def _backfill_as_root_into(conf: Path, spool: Spool, dump: Path, nobody: int) -> None:
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.test_backfill import command; "
         f"code, _, err = command(['backfill', '-c', {str(conf)!r}, {str(dump)!r}]); "
         "sys.stderr.write(err); sys.exit(code)"],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"writing as uid {nobody}" in res.stderr
    owners = {os.stat(spool.new / n).st_uid for n in os.listdir(spool.new)}
    assert owners == {nobody} and len(os.listdir(spool.new)) == 8


# ---------------------------------------------------------------------------------------
# End to end: backfill, the daemon, the broker


@pytest.mark.broker
def test_backfilled_records_arrive_in_kafka_with_stable_ids(daemon: DaemonUnderTest, tmp_path):
    daemon.start()  # creates the spool
    code, _, err = command(["backfill", "-c", str(daemon.conf), str(root_sacct_dump(tmp_path))])
    assert code == 0, err
    received = sorted(daemon.consume(8, settle=1.0), key=lambda r: r.json["jobid"])
    expected = sorted(root_sacct_records(), key=lambda m: m["jobid"])
    assert [r.json for r in received] == expected
    for r in received:
        again = parse_record(r.value, "json", cluster=daemon.cluster, event_hint="end")
        assert r.headers["jobcompd-id"] == again.record_id.encode()
        assert r.headers["event"] == EVENT_END.encode()
        assert r.key == f"{daemon.cluster}:{r.json['jobid']}".encode()
    wait_for(lambda: daemon.new_files() == [], 30, what="the spool to empty")
    assert daemon.failed_files() == []
