"""systemd/jobcompd.service and systemd/jobcompd.tmpfiles, checked by systemd's own tools."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from jobcompd import config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "jobcompd.service"
TMPFILES = ROOT / "systemd" / "jobcompd.tmpfiles"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
needs_systemd_tmpfiles = pytest.mark.skipif(
    shutil.which("systemd-tmpfiles") is None, reason="systemd-tmpfiles is not installed")


def unit_settings(text: str) -> dict[str, list[str]]:
    """Key → values (in order) of a unit file, sections merged (the keys do not overlap)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd time span such as 15s, 5min, 1min 30s, 500ms (the forms the unit uses)."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", value):
        total += float(number) * units[unit or "s"]
    return total


def verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart aimed at a real executable, so verify checks it for real."""
    exe = tmp_path / "bin" / "jobcompd"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/jobcompd run" in text
    unit = tmp_path / "jobcompd.service"
    unit.write_text(text.replace("ExecStart=/usr/local/bin/jobcompd", f"ExecStart={exe}"))
    return unit


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path):
    unit = verifiable_copy(tmp_path)
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    # verify also talks about other units it loads (their own problems); any line naming our
    # unit or our file is a finding about it.
    ours = [ln for ln in (res.stdout + res.stderr).splitlines()
            if "jobcompd" in ln or str(tmp_path) in ln]
    assert res.returncode == 0, res.stdout + res.stderr
    assert ours == [], "\n".join(ours)


@needs_systemd_analyze
def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path):
    """The check above can fail: a typo in a key and a missing binary are both reported."""
    unit = verifiable_copy(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHom=yes")
                    .replace(str(tmp_path / "bin" / "jobcompd"), str(tmp_path / "missing")))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert "ProtectHom" in out
    assert "missing" in out


@needs_systemd_analyze
def test_the_sandbox_is_rated_ok_by_systemd_analyze_security(tmp_path):
    unit = verifiable_copy(tmp_path)
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    if "--offline" in res.stderr and res.returncode != 0:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 2.0, res.stdout


def test_unit_runs_the_daemon_the_way_its_code_expects():
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["ExecStart"] == ["/usr/local/bin/jobcompd run"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["slurm"]
    assert "78" in s["RestartPreventExitStatus"][0].split()  # EX_CONFIG: restarting cannot help
    assert seconds(s["WatchdogSec"][0]) >= 10
    # Stopping takes flush_timeout (500 ms by default) plus saving the state file.
    stop = seconds(s["TimeoutStopSec"][0])
    assert 500 / 1000 + 2 <= stop <= 60
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert set(s["RestrictAddressFamilies"][0].split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert s["UMask"] == ["0027"]


def test_unit_can_write_exactly_the_default_spool_and_state_folders():
    s = unit_settings(UNIT.read_text())
    writable = {p.lstrip("-") for v in s["ReadWritePaths"] for p in v.split()}
    writable |= {f"/var/lib/{d}" for d in s["StateDirectory"]}
    assert writable == {str(config.DEFAULT_SPOOL_DIR), str(config.DEFAULT_STATE_DIR)}


def tmpfiles_entries() -> list[list[str]]:
    return [ln.split() for ln in TMPFILES.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def test_tmpfiles_never_cleans_the_spool_by_age():
    for fields in tmpfiles_entries():
        assert len(fields) == 6, fields
        assert fields[5] == "-", f"{fields[1]}: age must be '-', records are the only copy"


@needs_systemd_tmpfiles
@pytest.mark.skipif(os.geteuid() != 0, reason="creating folders owned by slurm needs root")
def test_tmpfiles_creates_the_spool_for_the_slurm_user(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # systemd-tmpfiles --root resolves user names in the root's own passwd and group files.
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                         "slurm:x:64030:64031::/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nslurm:x:64031:\n")
    res = subprocess.run(["systemd-tmpfiles", "--create", f"--root={root}", str(TMPFILES)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr
    spool = root / str(config.DEFAULT_SPOOL_DIR).lstrip("/")
    state = root / str(config.DEFAULT_STATE_DIR).lstrip("/")
    for path in (spool, spool / "tmp", spool / "new", spool / "failed", state):
        st = os.stat(path)
        assert stat.S_ISDIR(st.st_mode), path
        assert (st.st_uid, st.st_gid) == (64030, 64031), path
        # The hook and the daemon (both SlurmUser) read and write; the group may look.
        assert stat.S_IMODE(st.st_mode) == 0o750, (path, oct(st.st_mode))

    # A later run (at boot, with --clean) leaves old records alone.
    record = spool / "new" / "0000000000000000001.1.end.env"
    record.write_bytes(b"JOBID=1\0")
    year_ago = time.time() - 365 * 86400
    os.utime(record, (year_ago, year_ago))
    res = subprocess.run(["systemd-tmpfiles", "--create", "--clean", f"--root={root}",
                          str(TMPFILES)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert record.read_bytes() == b"JOBID=1\0"
