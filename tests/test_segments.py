"""Segments end to end: records appended to seg/ by the writer protocol reach Kafka once, the
daemon seals and removes what it delivered, and nothing is lost across a SIGKILL or a torn
frame."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from jobcompd import segment
from tests.broker import wait_for
from tests.support import DATA, DaemonUnderTest, read_env_fixture

pytestmark = pytest.mark.broker

BASE_NS = 1795618456000000000


def payload(job_id: int) -> bytes:
    env = read_env_fixture(DATA / "records" / "end-4.env")
    env["JOBID"] = str(job_id)
    env["JOBNAME"] = f"job-{job_id}"
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


def append(dut: DaemonUnderTest, job_id: int) -> str:
    return segment.append(dut.spool / "seg", f"{time.time_ns()}.{job_id}.end.env",
                          payload(job_id))


def segments(dut: DaemonUnderTest) -> list[str]:
    return sorted(n for n in os.listdir(dut.spool / "seg") if n != segment.CURRENT)


def job_ids(received) -> list[int]:
    return [json.loads(r.value)["jobid"] for r in received]


def test_appended_records_arrive_once_and_their_segments_are_removed(daemon: DaemonUnderTest):
    daemon.start()
    count = 1500  # about 2 MiB: the daemon seals the first segment by size
    for job_id in range(1, count + 1):
        append(daemon, job_id)
    got = daemon.consume(count, timeout=60, settle=0.5)
    assert sorted(job_ids(got)) == list(range(1, count + 1))
    assert all(r.headers.get("redelivery") is None for r in got)
    # The sealed, delivered segment goes; only the one still being written stays.
    wait_for(lambda: len(segments(daemon)) <= 1, 30, what="sealed segments removed")
    assert daemon.new_files() == [] and daemon.failed_files() == []
    assert daemon.stop() == 0


def test_delivered_frames_become_holes(daemon: DaemonUnderTest):
    daemon.start()
    for job_id in range(1, 51):
        append(daemon, job_id)
    daemon.consume(50, timeout=30)
    (name,) = segments(daemon)
    path = daemon.spool / "seg" / name
    # Nothing but zeros is left where the records were (holes: a restart skips them).
    wait_for(lambda: path.read_bytes().count(0) == path.stat().st_size, 30,
             what="delivered frames punched")
    assert daemon.stop() == 0


def test_sigkill_loses_nothing_and_a_restart_sends_only_what_was_not_punched(
        daemon: DaemonUnderTest):
    daemon.start()
    for job_id in range(1, 201):
        append(daemon, job_id)
    first = daemon.consume(200, timeout=30)
    assert sorted(job_ids(first)) == list(range(1, 201))
    wait_for(lambda: all(b == 0 for b in (daemon.spool / "seg" / segments(daemon)[0])
                         .read_bytes()), 30, what="delivered frames punched")
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    for job_id in range(201, 301):  # written while the daemon is down
        append(daemon, job_id)
    daemon.start()
    got = daemon.consume(300, timeout=30, settle=1.0)
    # Every record once: the punched ones are not sent again after the restart.
    assert sorted(job_ids(got)) == list(range(1, 301))
    assert daemon.stop() == 0


def test_a_torn_frame_goes_to_failed_and_the_frames_around_it_arrive(daemon: DaemonUnderTest):
    seg_dir = daemon.spool / "seg"
    seg_dir.mkdir(parents=True)
    first = segment.encode_frame(f"{BASE_NS}.1.end.env", payload(1))
    cut = segment.encode_frame(f"{BASE_NS + 1}.2.end.env", payload(2))[:300]
    last = segment.encode_frame(f"{BASE_NS + 2}.3.end.env", payload(3))
    name = f"{BASE_NS}.4242.seg"
    (seg_dir / name).write_bytes(first + cut + last)  # a writer killed mid-write, then another
    (seg_dir / name).chmod(0o600)
    daemon.start()
    got = daemon.consume(2, timeout=30, settle=1.0)
    assert sorted(job_ids(got)) == [1, 3]
    torn = f"{name}.{len(first)}.torn"
    wait_for(lambda: torn in daemon.failed_files(), 30, what="the torn bytes in failed/")
    assert (daemon.spool / "failed" / torn).read_bytes() == cut
    reason = json.loads((daemon.spool / "failed" / (torn + ".reason")).read_text())
    assert reason["reason"] == "torn" and reason["segment"] == name
    line = daemon.wait_log("dead_lettered")[0]
    assert "reason=torn" in line and name in line
    # Sealed (one link), read to the end, everything settled: the segment is removed.
    wait_for(lambda: segments(daemon) == [], 30, what="the segment removed")
    assert daemon.stop() == 0


def test_a_malformed_frame_is_dead_lettered_under_its_record_name(daemon: DaemonUnderTest):
    daemon.start()
    seg_dir = daemon.spool / "seg"
    segment.append(seg_dir, f"{BASE_NS}.7.end.json", b"{not json")
    append(daemon, 8)
    got = daemon.consume(1, timeout=30, settle=0.5)
    assert job_ids(got) == [8]
    wait_for(lambda: f"{BASE_NS}.7.end.json" in daemon.failed_files(), 30,
             what="the malformed record in failed/")
    assert (daemon.spool / "failed" / f"{BASE_NS}.7.end.json").read_bytes() == b"{not json"
    assert daemon.stop() == 0


def test_a_segment_of_a_stranger_is_refused(daemon: DaemonUnderTest, tmp_path: Path):
    seg_dir = daemon.spool / "seg"
    seg_dir.mkdir(parents=True)
    name = f"{BASE_NS}.99.seg"
    (seg_dir / name).write_bytes(segment.encode_frame(f"{BASE_NS}.5.end.env", payload(5)))
    os.chown(seg_dir / name, 4242, 4242)
    daemon.start()
    wait_for(lambda: name in daemon.failed_files(), 30, what="the segment moved to failed/")
    reason = json.loads((daemon.spool / "failed" / (name + ".reason")).read_text())
    assert reason["reason"] == "owner"
    assert daemon.stop() == 0
