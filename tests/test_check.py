"""``jobcompd check`` tests what ``jobcompd run`` needs, as the user the daemon runs as.

The setups are real: folders and files with real owners and modes, the check run as a real
process, as root switching to ``nobody``. Each problem found must come with a fix that, run
as printed, makes the next check pass.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobcompd import config as configmod
from jobcompd.cli import preflight
from tests.support import ROOT

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="tests access as another user: root only")
NOBODY = pwd.getpwnam("nobody")


@dataclass
class Site:
    """A jobcompd installation under a folder every user may enter, like /etc and /var."""

    root: Path
    bin: Path  # holds a stand-in for systemctl

    def __post_init__(self) -> None:
        self.etc = self.root / "etc"
        self.spool = self.root / "spool"
        self.state = self.root / "state"
        self.conf = self.etc / "jobcompd.conf"
        self.rdkafka = self.etc / "rdkafka.conf"

    def write(self, **extra: str) -> None:
        self.etc.mkdir(exist_ok=True)
        self.rdkafka.write_text("bootstrap.servers=127.0.0.1:9\n")
        lines = {"ClusterName": "c1", "JobCompLoc": str(self.rdkafka),
                 "SpoolDir": str(self.spool), "StateSaveLocation": str(self.state),
                 "SpoolOwners": "root", **extra}
        self.conf.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        for path in (self.conf, self.rdkafka):
            path.chmod(0o644)

    def make_dirs(self, owner: int = 0) -> None:
        for path in (self.spool, self.spool / "tmp", self.spool / "new", self.spool / "failed",
                     self.state):
            path.mkdir(mode=0o750, exist_ok=True)
            path.chmod(0o750)
            os.chown(path, owner, owner)

    def systemctl(self, **props: str) -> None:
        """What `systemctl show jobcompd.service` answers (no unit, unless props are given)."""
        text = "\n".join(f"{k}={v}" for k, v in props.items()) if props else \
            "LoadState=not-found"
        script = self.bin / "systemctl"
        script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\n")
        script.chmod(0o755)

    def check(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, PATH=f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        env.pop("JOBCOMPD_CONFIG", None)
        return subprocess.run([sys.executable, "-m", "jobcompd", "check", "-c", str(self.conf),
                               *args], capture_output=True, text=True, timeout=60, env=env,
                              cwd=ROOT)


@pytest.fixture
def site():
    root = Path(tempfile.mkdtemp(prefix="jobcompd-check-", dir="/tmp"))
    root.chmod(0o755)  # pytest's tmp_path is 0700: no other user could even look
    s = Site(root=root, bin=root / "bin")
    s.bin.mkdir()
    s.write()
    s.systemctl()
    yield s
    shutil.rmtree(root)


def fixes(stdout: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^ +fix: (.*)$", stdout, re.MULTILINE)]


def apply(fix: str) -> None:
    """Run a printed fix as an operator would paste it (the part for this host)."""
    command = fix.split("; under systemd")[0].split("   (or:")[0]
    subprocess.run(["sh", "-c", command], check=True, timeout=30)


def row(stdout: str, level: str, subject: str) -> str:
    found = [ln for ln in stdout.splitlines()
             if re.match(rf"  {level} +{re.escape(subject)}  ", ln)]
    assert found, f"no {level} {subject} line in:\n{stdout}"
    return found[0]


# --------------------------------------------------------------------------- as another user


@as_root
def test_a_state_dir_the_service_user_cannot_write_fails_where_root_would_pass(site):
    """The setup of the issue: root could run it, the unit's user cannot. The default user
    is the spool's owner, and the fix printed makes the next check pass."""
    site.make_dirs(owner=NOBODY.pw_uid)
    os.chown(site.state, 0, 0)
    res = site.check()
    assert res.returncode == 73, res.stdout + res.stderr
    assert (f"tested as user nobody (uid {NOBODY.pw_uid}, gid {NOBODY.pw_gid}; the owner of "
            f"SpoolDir {site.spool})") in res.stdout
    line = row(res.stdout, "FAIL", "StateSaveLocation")
    assert f"{site.state}: nobody cannot write there (drwxr-x--- root:root)" in line
    assert fixes(res.stdout) == [f"chown nobody:nogroup {site.state}"]
    assert "'jobcompd run' as nobody would stop with exit status 73" in res.stderr
    apply(fixes(res.stdout)[0])
    res = site.check()
    assert res.returncode == 0, res.stdout + res.stderr
    assert row(res.stdout, "ok", "StateSaveLocation").endswith(f"{site.state}: writable")
    assert row(res.stdout, "ok", "SpoolDir").endswith(f"{site.spool}: tmp/ new/ failed/ writable")


@as_root
def test_every_problem_as_the_given_user_has_a_fix_that_works(site):
    """Root owns everything and the JobCompLoc file is private: the daemon as nobody could
    read nothing of it, nor write anything. Root alone would have passed."""
    site.make_dirs(owner=0)
    site.rdkafka.chmod(0o600)
    assert site.check("--user", "root").returncode == 0
    res = site.check("--user", "nobody")
    assert res.returncode == 78, res.stdout + res.stderr  # the first thing run would meet
    assert f"{site.rdkafka}: nobody cannot read it: Permission denied" in row(
        res.stdout, "FAIL", "JobCompLoc")
    assert "nobody cannot write there" in row(res.stdout, "FAIL", "StateSaveLocation")
    spool_line = row(res.stdout, "FAIL", "SpoolDir")
    assert f"{site.spool}: nobody cannot read it (drwxr-x--- root:root)" in spool_line
    for sub in ("tmp", "new", "failed"):
        assert f"{site.spool / sub}: nobody cannot reach it: Permission denied" in spool_line
    assert fixes(res.stdout) == [
        f"chgrp nogroup {site.rdkafka} && chmod g+r {site.rdkafka}",
        f"chown nobody:nogroup {site.state}",
        f"chown nobody:nogroup {site.spool} {site.spool}/tmp {site.spool}/new "
        f"{site.spool}/failed",
    ]
    for fix in fixes(res.stdout):
        apply(fix)
    res = site.check("--user", "nobody")
    assert res.returncode == 0, res.stdout + res.stderr
    assert oct(site.rdkafka.stat().st_mode & 0o777) == "0o640"  # still not world-readable


@as_root
def test_a_folder_the_user_cannot_enter(site):
    site.make_dirs(owner=NOBODY.pw_uid)
    site.etc.chmod(0o750)
    res = site.check()
    assert res.returncode == 78
    line = row(res.stdout, "FAIL", "config file")
    assert f"{site.conf}: nobody cannot enter the folder {site.etc}" in line
    assert fixes(res.stdout)[0] == f"chgrp nogroup {site.etc} && chmod g+x {site.etc}"
    apply(fixes(res.stdout)[0])
    assert site.check().returncode == 0


@as_root
def test_the_user_is_the_units_user_and_its_sandbox_counts(site):
    """With jobcompd.service installed, its User= runs the daemon, and ProtectSystem=strict
    leaves only ReadWritePaths= and StateDirectory= writable."""
    site.make_dirs(owner=NOBODY.pw_uid)
    site.systemctl(LoadState="loaded", User="nobody", ProtectSystem="strict",
                   ReadWritePaths=f"-/var/spool/jobcompd {site.state}",
                   StateDirectory="jobcompd")
    res = site.check()
    assert res.returncode == 73, res.stdout + res.stderr
    assert "tested as user nobody (uid 65534, gid 65534; the User= of jobcompd.service)" \
        in res.stdout
    assert row(res.stdout, "ok", "StateSaveLocation")
    line = row(res.stdout, "FAIL", "SpoolDir")
    assert f"{site.spool}: read-only inside jobcompd.service" in line
    assert fixes(res.stdout) == [
        f"systemctl edit jobcompd, and add under [Service]: ReadWritePaths={site.spool}"]
    site.systemctl(LoadState="loaded", User="nobody", ProtectSystem="strict",
                   ReadWritePaths=f"-/var/spool/jobcompd {site.state} {site.spool}")
    assert site.check().returncode == 0


def test_a_spool_in_tmp_is_not_the_one_the_unit_sees(site):
    """PrivateTmp=yes: the daemon would watch a /tmp of its own while the hook writes the
    real one, and no record would ever be sent."""
    site.make_dirs()
    site.systemctl(LoadState="loaded", User=pwd.getpwuid(os.geteuid()).pw_name,
                   ProtectSystem="strict", PrivateTmp="yes",
                   ReadWritePaths=f"{site.spool} {site.state}")
    res = site.check()
    assert res.returncode == 73
    assert (f"{site.spool}: the daemon would not see it inside jobcompd.service: PrivateTmp=yes "
            "gives the daemon a /tmp and /var/tmp of its own") in row(res.stdout, "FAIL",
                                                                      "SpoolDir")
    assert "choose a SpoolDir under /var/spool" in fixes(res.stdout)


@as_root
def test_the_user_is_slurm_confs_slurm_user(site):
    site.make_dirs(owner=0)
    slurm_conf = site.etc / "slurm.conf"
    slurm_conf.write_text("ClusterName=c1\nSlurmUser=nobody\n")
    slurm_conf.chmod(0o644)
    site.write(SlurmConf=str(slurm_conf))
    res = site.check()
    assert f"tested as user nobody (uid 65534, gid 65534; SlurmUser in {slurm_conf}:2, which " \
        "the unit must run as)" in res.stdout
    assert res.returncode == 73
    assert row(res.stdout, "ok", "SlurmConf")


def test_an_unknown_user(site):
    site.make_dirs()
    res = site.check("--user", "no-such-user-xyz")
    assert res.returncode == 67
    assert "--user no-such-user-xyz: no such user on this host" in res.stderr


def test_only_root_tests_as_another_user(site, monkeypatch):
    site.make_dirs()
    cfg = configmod.load(site.conf)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # an operator's own account
    with pytest.raises(preflight.PreflightError) as e:
        preflight.choose_account(cfg, "nobody", None)
    assert e.value.code == 77
    assert "only root can test as another user; run 'sudo jobcompd check --user nobody'" \
        in str(e.value)


# --------------------------------------------------------------------------- as anyone


def test_a_missing_state_dir_is_named_with_the_command_that_makes_it(site):
    """`run` stops with exit 73 and a raw [Errno 2]; check said ok. Now check names it."""
    site.make_dirs()
    shutil.rmtree(site.state)
    me = pwd.getpwuid(os.geteuid())
    res = site.check()
    assert res.returncode == 73, res.stdout + res.stderr
    line = row(res.stdout, "FAIL", "StateSaveLocation")
    assert f"{site.state}: does not exist" in line
    assert "Errno" not in res.stdout + res.stderr
    (fix,) = fixes(res.stdout)
    assert fix.startswith(f"install -d -o {me.pw_name} -g ")
    assert fix.endswith(f"; under systemd also: systemctl edit jobcompd, and add under "
                        f"[Service]: ReadWritePaths={site.state}")
    run = subprocess.run([sys.executable, "-m", "jobcompd", "run", "-c", str(site.conf)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 73  # what check said run would do
    apply(fix)
    assert site.check().returncode == 0


def test_a_missing_spool(site):
    site.make_dirs()
    shutil.rmtree(site.spool / "new")
    shutil.rmtree(site.spool / "failed")
    res = site.check()
    assert res.returncode == 73
    line = row(res.stdout, "FAIL", "SpoolDir")
    assert f"missing: {site.spool / 'new'}, {site.spool / 'failed'} (the hook needs" in line
    (fix,) = fixes(res.stdout)
    assert fix.endswith(f"-m 0750 {site.spool / 'new'} {site.spool / 'failed'}")
    apply(fix)
    assert site.check().returncode == 0


def test_segment_files_are_refused_as_run_refuses_them(site):
    site.make_dirs()
    (site.spool / "seg").mkdir()
    (site.spool / "seg" / "0001.seg").write_bytes(b"x")
    res = site.check()
    assert res.returncode == 78
    line = row(res.stdout, "FAIL", "SpoolDir/seg")
    assert f"{site.spool / 'seg'} holds 1 segment file(s) (0001.seg)" in line
    (site.spool / "seg" / "0001.seg").unlink()
    assert site.check().returncode == 0  # an empty seg/ is ignored, as by run


def test_the_tables_line_up_whatever_the_lengths(site):
    site.make_dirs()
    res = site.check()
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    config_rows = lines[1:7]
    assert [r.split()[0] for r in config_rows] == [
        "ClusterName", "JobCompLoc", "SpoolDir", "StateSaveLocation", "topic",
        "topic_job_start"]
    starts = {len(r) - len(r.split(None, 1)[1]) for r in config_rows}
    assert starts == {len("  StateSaveLocation  ")}, config_rows
    checks = [ln for ln in lines if re.match(r"  (ok|warn|FAIL) ", ln)]
    assert len(checks) >= 4
    details = {ln.index("/") for ln in checks}  # every detail starts with its path
    assert len(details) == 1, checks
