"""The spine end to end: the real hook → spool → daemon process → real broker → consumer."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.broker import Tansu, free_port, wait_for
from tests.support import DATA, DaemonUnderTest, read_env_fixture, rss_kib

pytestmark = pytest.mark.broker

RECORDS = DATA / "records"
EXPECTED = RECORDS / "expected"
END_FIXTURES = sorted(RECORDS.glob("end-*.env"))
START_FIXTURES = sorted(RECORDS.glob("start-*.env"))


def end_env(job_id: int) -> dict[str, str]:
    """A realistic jobcomp/script environment for a made-up job id."""
    env = read_env_fixture(RECORDS / "end-4.env")
    env["JOBID"] = str(job_id)
    env["JOBNAME"] = f"job-{job_id}"
    return env


def end_env_bytes(job_id: int) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in end_env(job_id).items())


def drop(spool: Path, job_id: int, seq: int = 0) -> str:
    """Write a record the way the hook does (tmp, fsync, rename), fast enough for thousands."""
    name = f"{time.time_ns() + seq:019d}.{job_id}.end.env"
    tmp = spool / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(end_env_bytes(job_id))
    os.rename(tmp, spool / "new" / name)
    return name


def ids_of(received) -> list[int]:
    return [json.loads(r.value)["jobid"] for r in received]


def test_every_fixture_arrives_once_with_the_expected_message(daemon: DaemonUnderTest):
    daemon.params["enable_job_start"] = None
    daemon.write_config()
    daemon.start()
    t0 = int(time.time())
    for path in END_FIXTURES + START_FIXTURES:
        daemon.hook(read_env_fixture(path))
    t1 = int(time.time()) + 1
    ends = daemon.consume(len(END_FIXTURES), settle=1.0)
    starts = daemon.consume(len(START_FIXTURES), topic=daemon.start_topic, settle=0.5)
    assert len(ends) == len(END_FIXTURES)
    assert len(starts) == len(START_FIXTURES)

    by_id = {(r.headers["event"], json.loads(r.value)["jobid"]): r for r in ends + starts}
    for path in END_FIXTURES:
        expected = (EXPECTED / (path.stem + ".json")).read_bytes().rstrip(b"\n")
        got = by_id[(b"job_end", json.loads(expected)["jobid"])]
        assert got.value == expected, path.name
        assert got.key == f"testcluster:{json.loads(expected)['jobid']}".encode()
        assert got.headers["schema"] == b"1"
        assert len(got.headers["jobcompd-id"]) >= 16
        assert "redelivery" not in got.headers
    for path in START_FIXTURES:
        expected = json.loads((EXPECTED / (path.stem + ".json")).read_bytes())
        got = by_id[(b"job_start", expected["jobid"])]
        value = json.loads(got.value)
        # Slurm 22.05's prolog gives no start time: the hook's own time stands in for it.
        start = value.pop("@start")
        assert t0 <= _epoch(start) <= t1, (path.name, start)
        expected.pop("@start", None)
        assert value == expected, path.name
        assert list(value) == list(expected), path.name
        assert got.topic == daemon.start_topic

    wait_for(lambda: not daemon.new_files(), 10, what="spool files retired")
    assert daemon.failed_files() == []
    assert daemon.stop() == 0


def _epoch(text: str) -> int:
    import calendar

    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def test_start_records_are_retired_quietly_when_start_events_are_off(daemon):
    daemon.start()
    daemon.hook(read_env_fixture(START_FIXTURES[0]))
    daemon.hook(read_env_fixture(END_FIXTURES[0]))
    assert len(daemon.consume(1, settle=0.5)) == 1
    wait_for(lambda: not daemon.new_files(), 10, what="start record retired")
    assert daemon.failed_files() == []
    assert not daemon.log_lines("dead_lettered")


def test_bad_files_go_to_failed_with_a_reason_and_the_daemon_keeps_going(daemon):
    daemon.start()
    new = daemon.spool / "new"
    (new / f"{time.time_ns():019d}.77.end.env").write_bytes(b"")  # empty
    (new / f"{time.time_ns():019d}.78.end.env").write_bytes(b"JOBNAME=x\0USERNAME=u\0")  # no id
    (new / f"{time.time_ns():019d}.79.end.json").write_bytes(b"{not json")  # malformed
    (new / "garbage-name.txt").write_bytes(b"JOBID=1\0")  # not a spool name
    daemon.hook(end_env(80))
    got = daemon.consume(1, settle=0.5)
    assert ids_of(got) == [80]
    wait_for(lambda: len(daemon.failed_files()) == 8, 10, what="4 dead letters + 4 reasons")
    reasons = {
        p: json.loads((daemon.spool / "failed" / p).read_text())
        for p in daemon.failed_files() if p.endswith(".reason")
    }
    assert len(reasons) == 4
    for name, why in reasons.items():
        assert why["reason"] and why["message"], name
    assert {r["reason"] for r in reasons.values()} >= {"malformed", "bad_name"}
    assert len(daemon.log_lines("dead_lettered")) == 4
    assert daemon.proc.poll() is None
    assert daemon.new_files() == []


def test_second_instance_is_refused(daemon):
    daemon.start()
    second = subprocess.run(
        [sys.executable, "-m", "jobcompd", "run", "-c", str(daemon.conf)],
        capture_output=True, text=True, timeout=30,
    )
    assert second.returncode == 75
    assert "already runs" in second.stderr
    assert str(daemon.proc.pid) in second.stderr
    assert daemon.proc.poll() is None


def test_sighup_changes_topic_and_a_broken_file_keeps_the_old_config(daemon):
    daemon.start()
    daemon.hook(end_env(101))
    assert ids_of(daemon.consume(1)) == [101]

    old_topic = daemon.topic
    daemon.topic = old_topic + "-new"
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded")
    daemon.hook(end_env(102))
    assert ids_of(daemon.consume(1)) == [102]

    good = daemon.conf.read_text()
    daemon.conf.write_text(good + "NoSuchKey=1\n")
    daemon.signal(signal.SIGHUP)
    (line,) = daemon.wait_log("reload_failed")
    assert "NoSuchKey" in line
    daemon.hook(end_env(103))
    assert sorted(ids_of(daemon.consume(2, settle=0.5))) == [102, 103]
    assert ids_of(daemon.consume(1, topic=old_topic, settle=0.5)) == [101]
    assert daemon.proc.poll() is None


def test_sighup_with_new_kafka_properties_rebuilds_the_producer(daemon):
    daemon.start()
    daemon.hook(end_env(201))
    assert ids_of(daemon.consume(1)) == [201]
    daemon.kafka["linger.ms"] = "50"
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded")
    # Asked for: an info line, not the warning (and the counter) of a producer in trouble.
    (rebuilt,) = daemon.log_lines("producer_rebuilt")
    assert "level=info" in rebuilt and "librdkafka properties changed" in rebuilt
    daemon.hook(end_env(202))
    assert sorted(ids_of(daemon.consume(2, settle=0.5))) == [201, 202]
    assert _status(daemon)["counters"].get("producer_rebuilds", 0) == 0
    (started,) = daemon.log_lines("started")
    assert 'kafka="{\\"' in started  # the properties as JSON, not a Python dict


def _status(daemon) -> dict:
    def read() -> dict | None:
        try:
            return json.loads((daemon.state / "jobcompd.status").read_text())
        except (OSError, ValueError):
            return None
    return wait_for(read, 10, what="the status file")


def test_sighup_that_moves_the_spool_keeps_the_running_paths_and_says_so(daemon, tmp_path):
    """SpoolDir and StateSaveLocation move only with a restart: a reload keeps both (lock,
    status file, spool), says so once, and the status shows what is in force."""
    daemon.start()
    running_spool, running_state = daemon.spool, daemon.state
    daemon.spool, daemon.state = tmp_path / "spool2", tmp_path / "state2"
    daemon.state.mkdir()
    daemon.write_config()
    for reloads in (1, 2):
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded", count=reloads)
    (line,) = daemon.log_lines("reload_needs_restart")  # once, not at every reload
    assert "spool2" in line and "state2" in line
    daemon.spool, daemon.state = running_spool, running_state
    assert not any((tmp_path / "state2").iterdir())  # no status file moved there
    doc = wait_for(lambda: (d := _status(daemon))["restart_needed"] and d, 10,
                   what="restart_needed in the status file")
    assert doc["config"]["spool_dir"] == str(running_spool)
    assert doc["config"]["state_dir"] == str(running_state)
    assert doc["restart_needed"] == {"spool_dir": str(tmp_path / "spool2"),
                                     "state_dir": str(tmp_path / "state2")}
    daemon.hook(end_env(205))  # into the running spool, delivered as before
    assert ids_of(daemon.consume(1)) == [205]


#: The daemon as root without the capabilities that let root read any file: it may open only
#: what its uid owns or its mode allows, as the SlurmUser daemon of a real installation.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
          "--inh-caps=-dac_override,-dac_read_search", "--"]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root")
def test_a_record_the_daemon_may_not_open_waits_in_new_with_the_fix(tmp_path, broker):
    """A valid record of a trusted writer, mode 0600 under another uid: not bad data. It
    stays in new/, is counted and logged (with its job id and the chown that fixes it), and
    is sent once the chown is done."""
    dut = DaemonUnderTest(root=tmp_path, bootstrap=broker.bootstrap,
                          params={"rescan_interval": "1"},
                          extra_conf={"SpoolOwners": "root,64030"}, command_prefix=NO_DAC)
    dut.start()
    try:
        name = f"{time.time_ns():019d}.301.end.env"
        (dut.spool / "tmp" / name).write_bytes(end_env_bytes(301))
        os.chmod(dut.spool / "tmp" / name, 0o600)
        os.chown(dut.spool / "tmp" / name, 64030, 64030)  # before it shows up in new/
        os.rename(dut.spool / "tmp" / name, dut.spool / "new" / name)
        dut.hook(end_env(302))  # a good one beside it goes on
        assert ids_of(dut.consume(1)) == [302]
        (line,) = dut.wait_log("record_unreadable")
        assert "job_id=301" in line and name in line and "Permission denied" in line
        assert f"chown root {dut.spool / 'new' / name}" in line
        assert dut.new_files() == [name] and dut.failed_files() == []
        wait_for(lambda: _status(dut).get("unreadable") == 1, 10, what="unreadable 1")
        os.chown(dut.spool / "new" / name, 0, 0)  # the fix
        assert ids_of(dut.consume(2, settle=0.5)) == [302, 301]
        wait_for(lambda: _status(dut).get("unreadable") == 0, 10, what="unreadable 0")
        assert len(dut.log_lines("record_unreadable")) == 1  # once, not at every rescan
    finally:
        dut.stop()


def test_broker_outage_piles_up_on_disk_and_everything_arrives_after(daemon, broker):
    """Broker paused (state kept) for longer than message.timeout.ms while records arrive."""
    daemon.params.update(max_inflight="50")
    daemon.kafka["message.timeout.ms"] = "3000"
    daemon.write_config()
    daemon.start()
    for i in range(5):
        daemon.hook(end_env(300 + i))
    assert len(daemon.consume(5)) == 5
    broker.pause()
    try:
        for i in range(5, 400):
            drop(daemon.spool, 300 + i, i)
        # Only the window is in memory; the rest waits on disk.
        daemon.wait_log("deliveries_retrying", timeout=30)
        backlog = len(daemon.new_files())
        assert backlog >= 395 - 50
        rss = rss_kib(daemon.proc.pid)
        assert rss < 150 * 1024, f"RSS {rss} KiB during the outage"
    finally:
        broker.resume()
    got = daemon.consume(400, timeout=60, settle=1.0)
    assert set(ids_of(got)) == set(range(300, 700))
    wait_for(lambda: not daemon.new_files(), 30, what="backlog drained")
    assert daemon.failed_files() == []


def test_rescans_never_send_a_file_that_is_in_flight_twice(daemon, broker):
    daemon.params["rescan_interval"] = "1"
    daemon.extra_conf["DebugFlags"] = "JobComp"
    daemon.write_config()
    daemon.start()
    broker.pause()
    try:
        for i in range(50):
            daemon.hook(end_env(600 + i))
        daemon.wait_log("produced", count=50)
        before = len(daemon.log_lines("rescanned"))
        daemon.wait_log("rescanned", count=before + 2)  # files in flight seen by two rescans
    finally:
        broker.resume()
    got = daemon.consume(50, settle=2.0)
    assert sorted(ids_of(got)) == list(range(600, 650))  # each exactly once
    assert len(daemon.log_lines("produced")) == 50


def test_sigterm_with_broker_down_exits_in_time_and_nothing_is_lost(tmp_path):
    port = free_port()
    tansu = Tansu(port=port).start()
    dut = DaemonUnderTest(root=tmp_path, bootstrap=tansu.bootstrap)
    dut.params["flush_timeout"] = "1000"
    dut.extra_conf["DebugFlags"] = "JobComp"
    dut.write_config()
    try:
        dut.start()
        dut.hook(end_env(400))
        assert len(dut.consume(1)) == 1
        tansu.stop()
        for i in range(1, 30):
            dut.hook(end_env(400 + i))
        dut.wait_log("produced", count=30)  # all of them handed to librdkafka
        t = time.monotonic()
        dut.signal(signal.SIGTERM)
        assert dut.wait_exit(10) == 0
        elapsed = time.monotonic() - t
        assert elapsed < 1.0 + 1.0, f"exit took {elapsed:.2f} s with flush_timeout=1000"
        state = json.loads((dut.state / "jobcompd_state").read_text())
        assert state["clean"] is True
        assert sorted(state["pending"] + state["in_flight"]) == dut.new_files()
        assert len(dut.new_files()) == 29

        tansu = Tansu(port=port).start()
        dut.start()
        got = dut.consume(29, timeout=60, settle=1.0)
        assert set(ids_of(got)) == set(range(401, 430))
        wait_for(lambda: not dut.new_files(), 20, what="spool drained")
    finally:
        if dut.proc and dut.proc.poll() is None:
            dut.kill()
        tansu.stop()


def test_sigkill_mid_stream_loses_nothing_and_duplicates_are_recognisable(daemon):
    total = 5000
    daemon.start()
    writer_done = threading.Event()

    def write_stream():
        for i in range(total):
            drop(daemon.spool, 10_000 + i, i)
            if i % 50 == 0:
                time.sleep(0.005)
        writer_done.set()

    writer = threading.Thread(target=write_stream)
    writer.start()
    # Kill it while records are both arriving and in flight.
    wait_for(lambda: daemon.log_text().count("\n") > 0 and len(daemon.new_files()) > 0
             and _delivered_some(daemon), 30, what="stream under way")
    daemon.kill()
    writer.join()
    assert writer_done.is_set()
    daemon.start()
    got = daemon.consume(total, timeout=120, settle=2.0)
    ids = ids_of(got)
    assert set(ids) == set(range(10_000, 10_000 + total)), "a record was lost"
    first: dict[int, object] = {}
    for r in got:
        job = json.loads(r.value)["jobid"]
        if job in first:
            prev = first[job]
            assert r.key == prev.key
            assert r.headers["jobcompd-id"] == prev.headers["jobcompd-id"]
            assert r.value == prev.value
        else:
            first[job] = r
    dups = len(ids) - len(set(ids))
    print(f"sent {total} arrived {len(ids)} duplicates {dups}")
    wait_for(lambda: not daemon.new_files(), 30, what="spool drained")


def _delivered_some(daemon) -> bool:
    from tests.support import consume

    return len(consume(daemon.bootstrap, daemon.topic, 1, timeout=5)) > 0


def test_restarted_broker_wedges_the_producer_and_the_daemon_rebuilds_it(tmp_path):
    """A new Tansu on the same port forgets the idempotent producer: no error, only silence."""
    port = free_port()
    tansu = Tansu(port=port).start()
    dut = DaemonUnderTest(root=tmp_path, bootstrap=tansu.bootstrap)
    dut.params.update(stall_timeout="5")
    dut.kafka["message.timeout.ms"] = "60000"
    dut.write_config()
    try:
        dut.start()
        dut.hook(end_env(500))
        assert len(dut.consume(1)) == 1
        tansu.restart()
        for i in range(1, 21):
            dut.hook(end_env(500 + i))
        got = dut.consume(20, timeout=60, settle=1.0)
        assert set(ids_of(got)) >= set(range(501, 521))
        assert dut.log_lines("producer_rebuilt")
        wait_for(lambda: not dut.new_files(), 20, what="spool drained")
        assert dut.failed_files() == []
    finally:
        if dut.proc and dut.proc.poll() is None:
            dut.kill()
        tansu.stop()


def test_sighup_applies_the_record_limit_and_spool_owners_to_the_spool_and_http(daemon):
    """Every key applies on reload: a larger max_record_bytes lets a 150 kB record through
    the spool and the HTTP intake, and a new SpoolOwners user's record is accepted."""
    port = free_port()
    daemon.params["max_record_bytes"] = "100000"
    daemon.extra_conf["HttpListen"] = f"127.0.0.1:{port}"
    daemon.write_config()
    daemon.start()
    daemon.params["max_record_bytes"] = "400000"
    daemon.extra_conf["SpoolOwners"] = "root,64030"
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded")

    big = end_env(401)
    big["PADDING"] = "x" * 150_000
    name = f"{time.time_ns():019d}.401.end.env"
    tmp = daemon.spool / "tmp" / name
    tmp.write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in big.items()))
    os.chown(tmp, 64030, 64030)  # a writer that only the new SpoolOwners lets in
    os.rename(tmp, daemon.spool / "new" / name)
    body = json.dumps({"jobid": 402, "username": "alice", "state": "COMPLETED",
                       "comment": "y" * 150_000}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/slurm/jobcomp", body=body,
                     headers={"Content-Type": "application/json"})
        status = conn.getresponse().status
    finally:
        conn.close()
    assert status == 201
    assert sorted(ids_of(daemon.consume(2, settle=0.5))) == [401, 402]
    assert daemon.failed_files() == []
    doc = _status(daemon)
    assert doc["config"]["params"]["max_record_bytes"] == 400000
    assert 64030 in doc["config"]["spool_owners"]


def test_a_long_linger_is_no_stall(daemon):
    """linger.ms beyond stall_timeout is legal: librdkafka holds the records on purpose. The
    stall is measured from the oldest record's produce time plus the linger, so the producer
    is not replaced again and again, and the records arrive."""
    daemon.kafka["linger.ms"] = "8000"
    daemon.kafka["message.timeout.ms"] = "60000"
    daemon.params["stall_timeout"] = "5"
    daemon.write_config()
    daemon.start()
    for i in range(3):
        daemon.hook(end_env(501 + i))
    assert sorted(ids_of(daemon.consume(3, timeout=60))) == [501, 502, 503]
    assert daemon.log_lines("producer_rebuilt") == []


def test_sighup_applies_every_key_but_the_two_that_need_a_restart(daemon, tmp_path):
    """A reload of every key at once: each one is in force afterwards, not just shown."""
    daemon.start()
    port_m, port_h = free_port(), free_port()
    textfile = tmp_path / "jobcompd.prom"
    daemon.topic += "-reloaded"
    daemon.cluster = "reloadedcluster"
    daemon.params.update(max_inflight="77", max_record_bytes="200000", send_comment=None,
                         retry_backoff_max="7", stall_timeout="40", rescan_interval="9")
    daemon.kafka["linger.ms"] = "7"
    daemon.extra_conf.update({
        "DebugFlags": "JobComp", "LogFormat": "json", "SpoolOwners": "root,64030",
        "MetricsListen": f"127.0.0.1:{port_m}", "HttpListen": f"127.0.0.1:{port_h}",
        "MetricsTextfile": str(textfile)})
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: '"msg": "reloaded"' in daemon.log_text(), 20, what="the reload (as JSON)")

    cfg = _status(daemon)["config"]
    assert cfg["cluster_name"] == "reloadedcluster" and cfg["log_format"] == "json"
    assert cfg["params"]["topic"] == daemon.topic and cfg["params"]["max_inflight"] == 77
    assert cfg["params"]["send_comment"] is True and cfg["debug_flags"] == ["JobComp"]
    assert cfg["kafka"]["linger.ms"] == "7" and 64030 in cfg["spool_owners"]
    daemon.hook(end_env(601))
    (got,) = daemon.consume(1)
    assert got.key == b"reloadedcluster:601"  # the new ClusterName and topic
    with urllib.request.urlopen(f"http://127.0.0.1:{port_m}/metrics", timeout=10) as r:
        assert b"jobcompd_records_delivered_total" in r.read()
    conn = http.client.HTTPConnection("127.0.0.1", port_h, timeout=10)
    try:
        conn.request("POST", "/slurm/jobcomp", body=b'{"jobid":602,"state":"COMPLETED"}',
                     headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 201
    finally:
        conn.close()
    assert sorted(ids_of(daemon.consume(2, settle=0.5))) == [601, 602]
    wait_for(textfile.exists, 30, what="the metrics textfile")
    traced = [json.loads(ln) for ln in daemon.log_text().splitlines() if ln.startswith("{")]
    assert any(e.get("msg") == "delivered" and e.get("job_id") == 601 for e in traced)
    assert _status(daemon)["restart_needed"] == {}
