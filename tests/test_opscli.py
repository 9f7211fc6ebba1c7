"""``jobcompd status`` and ``jobcompd failed list|show|retry`` on real files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from jobcompd import spool
from jobcompd.cli import main as cli
from jobcompd.cli import ops as opscli
from jobcompd.service import statusfile as status
from tests.broker import wait_for
from tests.support import DATA, ROOT, DaemonUnderTest, read_env_fixture
from tests.test_status import LockHolder, sample_status


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run one operator command in-process; (exit code, stdout, stderr)."""
    args = cli.build_parser().parse_args(list(argv))
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def installation(tmp_path) -> DaemonUnderTest:
    """Config files, spool and state of a jobcompd that is not running."""
    dut = DaemonUnderTest(root=tmp_path, bootstrap="127.0.0.1:9")
    for sub in ("tmp", "new", "failed"):
        (dut.spool / sub).mkdir(parents=True, exist_ok=True)
    return dut


def env_record(job_id: int) -> bytes:
    env = read_env_fixture(DATA / "records" / "end-4.env")
    env["JOBID"] = str(job_id)
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


def dead_letter(dut: DaemonUnderTest, job_id: int, reason: str, data: bytes | None = None,
                fmt: str = "env") -> str:
    """A record the daemon gave up on, made the way the daemon makes it."""
    sp = spool.Spool(dut.spool, max_record_bytes=1 << 20, allowed_uids=None)
    name = sp.write_record(data if data is not None else env_record(job_id), job_id=job_id,
                           event="end", fmt=fmt)
    sp.dead_letter(name, reason, f"{dut.spool / 'new' / name}: {reason} happened",
                   attempts=3, job_id=job_id)
    return name


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("argv", [["status"], ["failed"], ["failed", "list"],
                                  ["failed", "show"], ["failed", "retry"]])
def test_every_command_has_help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        run(capsys, *argv, "--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jobcompd " + " ".join(argv))
    if argv != ["failed"]:
        assert "-c PATH, --config PATH" in out


def test_the_jobcompd_command_has_them():
    for argv in (["status", "--help"], ["failed", "retry", "--help"]):
        res = subprocess.run([sys.executable, "-m", "jobcompd", *argv], capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("usage: jobcompd " + argv[0])


# --------------------------------------------------------------------------- status


def test_status_without_a_status_file_is_not_running(capsys, installation):
    code, _out, err = run(capsys, "status", "-c", str(installation.conf))
    assert code == 3
    assert f"no status file {installation.state / 'jobcompd.status'}" in err


def test_status_of_a_running_daemon(capsys, installation):
    holder = LockHolder(installation.state)
    try:
        doc = sample_status()
        doc["pid"] = holder.pid
        status.write_status(installation.state, doc)
        code, out, err = run(capsys, "status", "-c", str(installation.conf))
        assert code == 0, err
        assert out.startswith(f"jobcompd is running (pid {holder.pid}, up 1h 0m")
        assert "backlog            12 records waiting in new/\n" in out
        assert "in flight          3" in out
        assert "broker             up" in out
        assert "dead-lettered      2 (malformed 2)" in out
        assert "last error" in out and "broker down" in out
        assert re.search(r"oldest pending {5}4[5-9]\.[0-9]s ago", out), out

        code, out, _ = run(capsys, "status", "--json", "-c", str(installation.conf))
        assert code == 0
        got = json.loads(out)
        assert got["running"] is True and got["running_pid"] == holder.pid
        assert got["backlog"] == 12
    finally:
        holder.release()


def test_status_of_a_killed_daemon_is_stale(capsys, installation):
    doc = sample_status()
    doc["pid"] = 999_999
    status.write_status(installation.state, doc)
    (installation.state / "jobcompd.lock").write_text("999999\n")
    code, out, _ = run(capsys, "status", "-c", str(installation.conf))
    assert code == 3
    assert "jobcompd is not running: the status file is stale; pid 999999" in out
    assert "did not stop cleanly" in out
    assert "backlog            12" in out  # the last facts are still shown


def test_status_of_a_cleanly_stopped_daemon(capsys, installation):
    status.write_status(installation.state, sample_status(state="stopped"))
    (installation.state / "jobcompd.lock").write_text("1\n")
    code, out, _ = run(capsys, "status", "-c", str(installation.conf))
    assert code == 3
    assert "stopped cleanly" in out


def test_status_when_liveness_cannot_be_told(capsys, installation, monkeypatch):
    status.write_status(installation.state, sample_status())
    monkeypatch.setattr(opscli.statusmod, "liveness", lambda _dir, pid: status.Liveness(
        None, pid, "cannot read /proc/locks: Permission denied"))
    code, out, _ = run(capsys, "status", "-c", str(installation.conf))
    assert code == 4
    assert "may be running" in out and "/proc/locks" in out


def test_status_with_a_broken_config_points_to_state_dir(capsys, installation):
    installation.conf.write_text(installation.conf.read_text() + "NoSuchKey=1\n")
    code, _, err = run(capsys, "status", "-c", str(installation.conf))
    assert code == 78
    assert "NoSuchKey" in err and "--state-dir" in err
    status.write_status(installation.state, sample_status(state="stopped"))
    code, out, _ = run(capsys, "status", "--state-dir", str(installation.state))
    assert code == 3 and "stopped cleanly" in out


def test_status_of_an_unreadable_file(capsys, installation):
    (installation.state / "jobcompd.status").write_text("garbage")
    code, _, err = run(capsys, "status", "-c", str(installation.conf))
    assert code == 65
    assert "not valid JSON" in err


# --------------------------------------------------------------------------- failed list/show


def test_failed_list_shows_job_reason_and_message(capsys, installation):
    a = dead_letter(installation, 4101, "timeout")
    b = dead_letter(installation, 4102, "malformed", b"{not json", fmt="json")
    code, out, err = run(capsys, "failed", "list", "-c", str(installation.conf))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "JOB", "EVENT", "REASON", "DEAD-LETTERED", "MESSAGE"]
    row_a = next(ln for ln in lines if ln.startswith(a))
    assert row_a.split()[1:4] == ["4101", "end", "timeout"]
    assert "timeout happened" in row_a
    assert any(ln.startswith(b) and "malformed" in ln for ln in lines)
    assert "2 dead letters" in out and "(malformed 1, timeout 1)" in out

    code, out, _ = run(capsys, "failed", "list", "--reason", "malformed", "--json",
                       "-c", str(installation.conf))
    rows = json.loads(out)
    assert [(r["name"], r["job_id"], r["reason"], r["attempts"]) for r in rows] == [
        (b, 4102, "malformed", 3)]


def test_failed_list_of_an_empty_spool(capsys, installation):
    code, out, _ = run(capsys, "failed", "list", "-c", str(installation.conf))
    assert code == 0
    assert out == f"no dead letters in {installation.spool / 'failed'}\n"


def test_failed_show_prints_the_record_and_what_would_be_sent(capsys, installation):
    name = dead_letter(installation, 4201, "timeout")
    code, out, err = run(capsys, "failed", "show", name, "-c", str(installation.conf))
    assert code == 0, err
    assert f"dead letter   {installation.spool / 'failed' / name}" in out
    assert "reason        timeout" in out
    assert "attempts      3" in out
    assert "  JOBID=4201\n" in out  # the environment, one variable per line
    assert f"sent now as   topic {installation.topic}, key testcluster:4201" in out
    assert '"jobid": 4201' in out


def test_failed_show_explains_a_malformed_record(capsys, installation):
    name = dead_letter(installation, 4202, "malformed", b'{"jobid": "x\x01"', fmt="json")
    code, out, _ = run(capsys, "failed", "show", name, "-c", str(installation.conf))
    assert code == 0
    assert "cannot be sent:" in out
    assert '\\x01' in out  # control characters are shown escaped, not sent to the terminal


def test_failed_show_never_follows_a_link(capsys, installation, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("TOP SECRET\n")
    name = f"{time.time_ns():019d}.4203.end.env"
    os.symlink(secret, installation.spool / "failed" / name)
    (installation.spool / "failed" / (name + ".reason")).write_text(
        json.dumps({"reason": "symlink", "message": "a link"}))
    code, out, _ = run(capsys, "failed", "show", name, "-c", str(installation.conf))
    assert code == 0
    assert "symbolic link" in out
    assert "TOP SECRET" not in out


def test_failed_show_of_an_unknown_name(capsys, installation):
    code, _, err = run(capsys, "failed", "show", "nope", "-c", str(installation.conf))
    assert code == 66
    assert "no dead letter 'nope'" in err


# --------------------------------------------------------------------------- failed retry


def test_retry_moves_named_letters_back_and_drops_their_reasons(capsys, installation):
    a = dead_letter(installation, 4301, "timeout")
    b = dead_letter(installation, 4302, "timeout")
    failed = installation.spool / "failed"
    code, out, err = run(capsys, "failed", "retry", a, str(failed / (b + ".reason")),
                         "-c", str(installation.conf))
    assert code == 0, err
    assert installation.new_files() == sorted([a, b])
    assert installation.failed_files() == []
    assert "2 records moved back" in out
    assert "jobcompd is not running: they are sent when it starts" in out


def test_retry_by_reason_and_all(capsys, installation):
    t = dead_letter(installation, 4401, "timeout")
    m = dead_letter(installation, 4402, "malformed", b"{", fmt="json")
    code, out, _ = run(capsys, "failed", "retry", "--reason", "timeout",
                       "-c", str(installation.conf))
    assert code == 0
    assert installation.new_files() == [t]
    # A reason file whose record vanished is skipped with a word, not an error.
    orphan = f"{time.time_ns():019d}.4403.end.env"
    (installation.spool / "failed" / (orphan + ".reason")).write_text('{"reason": "timeout"}')
    code, out, _ = run(capsys, "failed", "retry", "--all", "-c", str(installation.conf))
    assert code == 0
    assert f"skipped {orphan}" in out
    assert installation.new_files() == sorted([t, m])
    assert installation.failed_files() == [orphan + ".reason"]


def test_retry_dry_run_moves_nothing(capsys, installation):
    a = dead_letter(installation, 4501, "timeout")
    code, out, _ = run(capsys, "failed", "retry", "--all", "--dry-run",
                       "-c", str(installation.conf))
    assert code == 0
    assert out == f"would move {a} back into new/\n"
    assert installation.new_files() == []


def test_retry_needs_exactly_one_choice(capsys, installation):
    dead_letter(installation, 4601, "timeout")
    assert run(capsys, "failed", "retry", "-c", str(installation.conf))[0] == 64
    assert run(capsys, "failed", "retry", "--all", "x", "-c", str(installation.conf))[0] == 64
    assert installation.new_files() == []


def test_an_unknown_reason_is_a_usage_error_not_an_empty_result(capsys, installation):
    """``--reason bogus`` used to exit 0 as if there were just no such letters."""
    t = dead_letter(installation, 4651, "timeout")
    code, out, err = run(capsys, "failed", "retry", "--reason", "timout",
                         "-c", str(installation.conf))
    assert (code, out) == (64, "")
    assert err.startswith("jobcompd: --reason timout: no such reason; did you mean timeout? "
                          "(reasons: malformed, too_many_keys, bad_name,")
    assert "in failed/ now: timeout 1" in err
    assert installation.failed_files() == sorted([t, t + ".reason"])
    code, out, err = run(capsys, "failed", "list", "--reason", "bogus",
                         "-c", str(installation.conf))
    assert (code, out) == (64, "")
    assert "--reason bogus: no such reason" in err


def test_a_known_reason_without_letters_and_a_broker_reason_are_fine(capsys, installation):
    dead_letter(installation, 4661, "timeout")
    for reason in ("malformed", "kafka:MSG_SIZE_TOO_LARGE"):
        code, out, _ = run(capsys, "failed", "retry", "--reason", reason,
                           "-c", str(installation.conf))
        assert code == 0
        assert out == f"no dead letters with reason {reason} in {installation.spool / 'failed'}\n"


@pytest.mark.parametrize("argv", [["failed", "list"], ["failed", "show"], ["failed", "retry"]])
def test_failed_help_lists_the_exit_status(capsys, argv):
    with pytest.raises(SystemExit):
        run(capsys, *argv, "--help")
    out = capsys.readouterr().out
    assert "exit status:\n  0   " in out
    assert "\n  78  " in out and "\n  77  " in out


def test_retry_of_a_missing_name_and_of_a_path_elsewhere(capsys, installation, tmp_path):
    a = dead_letter(installation, 4701, "timeout")
    code, _out, err = run(capsys, "failed", "retry", "nope", a, "-c", str(installation.conf))
    assert code == 66
    assert "no dead letter 'nope'" in err
    assert installation.new_files() == [a]  # the good one still moved
    code, _, err = run(capsys, "failed", "retry", str(tmp_path / "elsewhere"),
                       "--spool-dir", str(installation.spool))
    assert code == 64
    assert "is not in" in err


def test_retry_refuses_to_replace_a_pending_record(capsys, installation):
    a = dead_letter(installation, 4801, "timeout")
    (installation.spool / "new" / a).write_bytes(b"JOBID=4801\0")
    code, _, err = run(capsys, "failed", "retry", a, "-c", str(installation.conf))
    assert code == 66
    assert "already exists" in err
    assert (installation.spool / "failed" / a).exists()


# --------------------------------------------------------------------------- with a daemon


@pytest.mark.broker
def test_status_and_retry_against_a_running_daemon(daemon: DaemonUnderTest, capsys):
    """The status file the daemon keeps, and a retry it picks up at once."""
    daemon.start()
    (daemon.spool / "new" / f"{time.time_ns():019d}.4901.end.json").write_bytes(b"{bad")
    daemon.wait_log("dead_lettered")

    def current():
        code, out, _ = run(capsys, "status", "--json", "-c", str(daemon.conf))
        doc = json.loads(out) if code == 0 else {}
        return doc if doc.get("counters", {}).get("dead_lettered:malformed") == 1 else None

    doc = wait_for(current, 30, what="the status file to show the dead letter")
    assert doc["pid"] == daemon.proc.pid and doc["running"] is True
    assert doc["config"]["spool_dir"] == str(daemon.spool)
    (name,) = [n for n in daemon.failed_files() if not n.endswith(".reason")]
    # Fix the record, then send it again.
    (daemon.spool / "failed" / name).unlink()
    (daemon.spool / "failed" / name.replace(".json", ".env")).write_bytes(env_record(4901))
    (daemon.spool / "failed" / (name.replace(".json", ".env") + ".reason")).write_text("{}")
    (daemon.spool / "failed" / (name + ".reason")).unlink()
    code, out, _ = run(capsys, "failed", "retry", "--all", "-c", str(daemon.conf))
    assert code == 0
    assert f"the running daemon (pid {daemon.proc.pid}) sends them now" in out
    got = daemon.consume(1)
    assert json.loads(got[0].value)["jobid"] == 4901

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    code, out, _ = run(capsys, "status", "-c", str(daemon.conf))
    assert code == 3
    assert "stopped cleanly" in out
