"""Records the daemon may not open: remembered once, reminded of hourly, forgotten when gone."""

from __future__ import annotations

from jobcompd.spool.unreadable import REPORT_INTERVAL_S, UnreadableRecords


def test_a_record_is_noticed_once_and_forgotten_when_read(tmp_path):
    u = UnreadableRecords(str(tmp_path))
    assert u.notice("1.42.end.env", 42, "chown slurm x", now=0.0) is True
    assert u.notice("1.42.end.env", 42, "chown slurm x", now=5.0) is False
    assert len(u) == 1
    u.forget("1.42.end.env")
    assert len(u) == 0


def test_the_reminder_comes_hourly_names_the_fixes_and_drops_vanished_records(tmp_path):
    u = UnreadableRecords(str(tmp_path))
    for i in range(7):
        (tmp_path / f"{i}.{i + 1}.end.env").touch()
        u.notice(f"{i}.{i + 1}.end.env", i + 1, f"chown slurm {i}", now=float(i))
    assert u.reminder(now=10.0) is None  # not an hour yet
    r = u.reminder(now=REPORT_INTERVAL_S)
    assert r is not None and r.count == 7 and len(r.files) == 5
    assert r.fixes[0] == "chown slurm 0" and r.oldest_s == REPORT_INTERVAL_S
    assert u.reminder(now=REPORT_INTERVAL_S + 60) is None  # one an hour
    for i in range(7):
        (tmp_path / f"{i}.{i + 1}.end.env").unlink()  # removed by hand
    assert u.reminder(now=3 * REPORT_INTERVAL_S) is None
    assert len(u) == 0
