"""The spool's capacity as the daemon shows it: the gauges, the status file, the log line when
the writers start refusing records, and the threshold file it writes for the hooks (the
writers themselves: tests/test_hook.py, tests/test_spool.py; a full outage:
tests/faults/test_spool_capacity.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import structlog

from jobcompd.config import Config, load
from jobcompd.service import statusfile
from jobcompd.service.metrics import Metrics
from jobcompd.service.telemetry import Snapshot, Telemetry
from jobcompd.spool import space
from tests.broker import free_port, wait_for
from tests.support import DaemonUnderTest
from tests.test_metrics import scrape, value


def config(tmp_path: Path, min_free: str = "1M") -> Config:
    (tmp_path / "rdkafka.conf").write_text("bootstrap.servers=127.0.0.1:9\n")
    path = tmp_path / "jobcompd.conf"
    path.write_text(f"ClusterName=test\nJobCompLoc=rdkafka.conf\nStateSaveLocation={tmp_path}\n"
                    f"SpoolDir={tmp_path / 'spool'}\nSpoolMinFreeBytes={min_free}\n")
    return load(path)


def snapshot(cfg: Config, free: int | None, used: int | None) -> Snapshot:
    return Snapshot(phase="running", backlog=3, backlog_truncated=False, in_flight=0,
                    oldest_pending_ns=None, broker_up=False, dead_letters=0, unreadable=0,
                    restart_needed={}, config=cfg, spool_free_bytes=free, spool_bytes=used)


def test_the_gauges_and_the_status_file_show_the_spools_figures(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    metrics = Metrics(process_metrics=False)
    Telemetry(metrics).publish(snapshot(cfg, 5_000_000, 12_288))
    text = metrics.exposition()
    assert value(text, "jobcompd_spool_free_bytes") == 5_000_000
    assert value(text, "jobcompd_spool_bytes") == 12_288
    assert value(text, "jobcompd_spool_min_free_bytes") == 1 << 20
    doc = statusfile.read_status(tmp_path)
    assert (doc["spool_free_bytes"], doc["spool_bytes"], doc["spool_min_free_bytes"]) == (
        5_000_000, 12_288, 1 << 20)


def test_figures_not_known_are_left_out_not_zero(tmp_path: Path) -> None:
    metrics = Metrics(process_metrics=False)
    Telemetry(metrics).publish(snapshot(config(tmp_path), None, None))
    text = metrics.exposition()
    assert value(text, "jobcompd_spool_free_bytes") is None
    assert value(text, "jobcompd_spool_bytes") is None
    assert value(text, "jobcompd_spool_min_free_bytes") == 1 << 20
    assert b"# HELP jobcompd_spool_free_bytes" in text


def test_falling_below_the_threshold_is_logged_once_and_so_is_the_way_back(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    telemetry = Telemetry(Metrics(process_metrics=False))
    with structlog.testing.capture_logs() as logs:
        for free in (2 << 20, (1 << 20) - 1, 4096, 0, 1 << 20, 8 << 20):
            telemetry.publish(snapshot(cfg, free, 99))
    events = [(e["event"], e.get("free_bytes")) for e in logs if e["event"].startswith("spool")]
    assert events == [("spool_nearly_full", (1 << 20) - 1), ("spool_space_recovered", 1 << 20)]
    [low] = [e for e in logs if e["event"] == "spool_nearly_full"]
    assert low["log_level"] == "error" and low["min_free_bytes"] == 1 << 20
    assert low["new_bytes"] == 99 and "the hooks refuse new records" in low["detail"]
    assert telemetry.last_error == (f"{(1 << 20) - 1} bytes free on the spool's file system, "
                                    f"less than SpoolMinFreeBytes={1 << 20}")


def test_a_threshold_of_zero_never_says_full(tmp_path: Path) -> None:
    telemetry = Telemetry(Metrics(process_metrics=False))
    with structlog.testing.capture_logs() as logs:
        telemetry.publish(snapshot(config(tmp_path, "0"), 0, 0))
    assert not [e for e in logs if e["event"].startswith("spool")]


@pytest.mark.broker
def test_the_daemon_tells_the_hooks_its_threshold_and_reports_the_spool(
        daemon: DaemonUnderTest) -> None:
    """At start and at each reload it writes SpoolDir/.min-free-bytes; the gauges follow."""
    port = free_port()
    daemon.extra_conf.update(MetricsListen=f"127.0.0.1:{port}", SpoolMinFreeBytes="3M")
    daemon.write_config()
    daemon.start()
    threshold = daemon.spool / space.MIN_FREE_FILE
    assert threshold.read_bytes() == b"3145728\n"
    assert oct(threshold.stat().st_mode & 0o777) == "0o644"

    def gauges(min_free: int) -> str | None:
        text = scrape("127.0.0.1", port)
        ok = value(text, "jobcompd_spool_min_free_bytes") == min_free
        return text if ok and value(text, "jobcompd_spool_bytes") is not None else None

    text = wait_for(lambda: gauges(3 << 20), 20, what="the spool gauges")
    st = os.statvfs(daemon.spool / "new")
    assert abs(value(text, "jobcompd_spool_free_bytes") - st.f_bavail * st.f_frsize) < 1 << 30
    daemon.extra_conf["SpoolMinFreeBytes"] = "0"
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded")
    assert threshold.read_bytes() == b"0\n"
    wait_for(lambda: gauges(0), 20, what="the new threshold in the gauges")
    doc = statusfile.read_status(daemon.state)
    assert doc["spool_min_free_bytes"] == 0 and doc["spool_free_bytes"] > 0
    assert daemon.stop() == 0


@pytest.mark.parametrize(("free", "threshold", "line"), [
    (5 << 30, 64 << 20, "5.0 GiB free, 8.0 KiB in new/; new records refused below 64.0 MiB free"),
    (1 << 20, 64 << 20, "1.0 MiB free, 8.0 KiB in new/; NEW RECORDS ARE REFUSED below 64.0 MiB "
     "free (SpoolMinFreeBytes): bring the broker back or free space"),
    (0, 0, "0 B free, 8.0 KiB in new/; no free-space threshold (SpoolMinFreeBytes=0)"),
])
def test_jobcompd_status_shows_the_spool_space(capsys, tmp_path: Path, free: int,
                                               threshold: int, line: str) -> None:
    from jobcompd.cli import main as cli
    from tests.test_status import LockHolder, sample_status

    dut = DaemonUnderTest(root=tmp_path, bootstrap="127.0.0.1:9")
    holder = LockHolder(dut.state)
    try:
        doc = sample_status(spool_free_bytes=free, spool_bytes=8192,
                            spool_min_free_bytes=threshold)
        doc["pid"] = holder.pid
        statusfile.write_status(dut.state, doc)
        args = cli.build_parser().parse_args(["status", "-c", str(dut.conf)])
        assert args.func(args) == 0
    finally:
        holder.release()
    out = capsys.readouterr().out
    assert f"  spool space        {line}\n" in out, out


def test_backfill_stops_below_the_threshold_and_says_why(tmp_path: Path) -> None:
    """backfill takes the hooks' threshold from the file the daemon wrote and stops with 74 at
    the first refused record; what it wrote before stays."""
    from jobcompd.spool import Spool
    from tests.test_backfill import SCONTROL, command, write_config

    conf = write_config(tmp_path)
    sp = Spool(tmp_path / "spool", max_record_bytes=1 << 20, allowed_uids=None)
    sp.ensure_dirs()
    (sp.root / space.MIN_FREE_FILE).write_text("999999999999999999\n")
    code, _, err = command(["backfill", "-c", str(conf), str(SCONTROL)])
    assert code == 74, err
    assert f"writing into {sp.new} failed: spool nearly full: {sp.new} has " in err
    assert "less than SpoolMinFreeBytes=999999999999999999; job " in err
    assert os.listdir(sp.new) == [] and os.listdir(sp.tmp) == []
    (sp.root / space.MIN_FREE_FILE).write_text("0\n")
    assert command(["backfill", "-c", str(conf), str(SCONTROL)])[0] == 0
    assert len(os.listdir(sp.new)) == 9
