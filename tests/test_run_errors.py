"""``jobcompd run`` with a bad configuration: exit 78 and a message that says what to fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest


def _run(conf):
    return subprocess.run([sys.executable, "-m", "jobcompd", "run", "-c", str(conf)],
                          capture_output=True, text=True, timeout=60)


def _setup(tmp_path, params="", rdkafka="bootstrap.servers=127.0.0.1:9\n", extra=""):
    (tmp_path / "rdkafka.conf").write_text(rdkafka)
    conf = tmp_path / "jobcompd.conf"
    conf.write_text(
        f"ClusterName=c1\nJobCompLoc={tmp_path / 'rdkafka.conf'}\nJobCompParams={params}\n"
        f"SpoolDir={tmp_path / 'spool'}\nStateSaveLocation={tmp_path}\nSpoolOwners=root\n{extra}"
    )
    return conf


@pytest.mark.parametrize(
    ("params", "rdkafka", "extra", "must_say"),
    [
        ("no_such_option", None, "", ["no_such_option"]),
        ("flush_timeout=abc", None, "", ["flush_timeout", "abc"]),
        ("max_inflight=0", None, "", ["max_inflight", "0"]),
        ("poll_interval=-5", None, "", ["poll_interval", "-5"]),
        ("", "linger.ms=5\n", "", ["bootstrap.servers"]),
        ("", "bootstrap.servers=x:1\nno.such.property=1\n", "", ["no.such.property", ":2"]),
        ("", "bootstrap.servers=x:1\nlinger.ms=banana\n", "", ["linger.ms", "banana", ":2"]),
        ("", None, "Bogus=1\n", ["Bogus", ":7"]),
    ],
)
def test_bad_config_exits_78_naming_the_problem(tmp_path, params, rdkafka, extra, must_say):
    kwargs = {"params": params, "extra": extra}
    if rdkafka is not None:
        kwargs["rdkafka"] = rdkafka
    res = _run(_setup(tmp_path, **kwargs))
    assert res.returncode == 78, res.stderr
    for word in must_say:
        assert word in res.stderr, (word, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1


def test_missing_jobcomploc_file_exits_78(tmp_path):
    conf = _setup(tmp_path)
    (tmp_path / "rdkafka.conf").unlink()
    res = _run(conf)
    assert res.returncode == 78
    assert "rdkafka.conf" in res.stderr


def test_missing_config_file_exits_78(tmp_path):
    res = _run(tmp_path / "nope.conf")
    assert res.returncode == 78
    assert "nope.conf" in res.stderr


def test_records_left_in_seg_refuse_the_start_naming_them(tmp_path):
    """seg/ was an unreleased spool format: records there would be stranded, so the daemon
    stops at once (78: restarting cannot help) and names the files and what to do."""
    conf = _setup(tmp_path)
    seg = tmp_path / "spool" / "seg"
    seg.mkdir(parents=True)
    (seg / "1795618456000000000.4242.seg").write_bytes(b"JCR1 ...")
    (seg / "current").symlink_to("1795618456000000000.4242.seg")
    res = _run(conf)
    assert res.returncode == 78, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    for word in (str(seg), "2 segment file(s)", "1795618456000000000.4242.seg", "current",
                 "no longer reads segments"):
        assert word in res.stderr, (word, res.stderr)
    assert not (tmp_path / "spool" / "new").exists()  # refused before touching the spool


def test_an_empty_seg_does_not_stop_the_daemon(tmp_path):
    """An empty seg/ strands nothing: the daemon starts."""
    conf = _setup(tmp_path)
    (tmp_path / "spool" / "seg").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "jobcompd", "run", "-c", str(conf)],
                            stderr=subprocess.PIPE, text=True)
    deadline = threading.Timer(60, proc.kill)  # a daemon that logs neither line fails here
    deadline.start()
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "msg=started" in line or "start_failed" in line:
                break
        assert any("msg=started" in ln for ln in lines), "".join(lines)
    finally:
        deadline.cancel()
        proc.terminate()
        proc.wait(30)


def test_a_missing_state_save_location_exits_73_naming_it(tmp_path):
    conf = _setup(tmp_path)
    conf.write_text(conf.read_text().replace(f"StateSaveLocation={tmp_path}",
                                             f"StateSaveLocation={tmp_path / 'nope'}"))
    res = _run(conf)
    assert res.returncode == 73, res.stderr
    assert "state_dir_unusable" in res.stderr
    assert f"No such file or directory: {tmp_path / 'nope'}" in res.stderr
    assert "jobcompd check" in res.stderr and "[Errno" not in res.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv")
def test_a_spool_the_daemon_may_not_write_exits_73_with_the_fix(tmp_path):
    """What check calls a FAIL, run refuses too: new/ it cannot clean would resend every
    delivered record at each start."""
    conf = _setup(tmp_path)
    for sub in ("tmp", "new", "failed"):
        (tmp_path / "spool" / sub).mkdir(parents=True)
    os.chown(tmp_path / "spool" / "new", 64030, 64030)
    os.chmod(tmp_path / "spool" / "new", 0o750)
    res = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
                          sys.executable, "-m", "jobcompd", "run", "-c", str(conf)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 73, res.stderr
    assert f"cannot read and write {tmp_path / 'spool' / 'new'}" in res.stderr
    assert "systemd-tmpfiles --create" in res.stderr
