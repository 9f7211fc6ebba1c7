"""The jobcompd-spool hook, exec'd the way slurmctld does: no shell, no arguments (or just the
spool option), exactly the environment Slurm builds, stdin on /dev/null.

Every behaviour test runs against both hooks -- the POSIX sh script (jobcompd/hook/jobcompd-spool)
and the compiled C program (jobcompd/hook/jobcompd-spool.c, built once per session with cc) --
since either may be the one slurm.conf points at. Their contract is jobcompd/spool/SPEC.md."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobcompd.spool import parse_name
from tests.support import build_c_hook
from tests.test_spool import HUGE, THRESHOLD_FILES, plant_threshold

ROOT = Path(__file__).resolve().parents[1]
SH_HOOK = ROOT / "jobcompd" / "hook" / "jobcompd-spool"
DATA = Path(__file__).parent / "data" / "hook"
NS = 1795618456123456789

Env = dict[bytes, bytes]


def parse_dump(raw: bytes) -> Env:
    """An `env -0` dump as a dict; refuses duplicate keys and a missing final NUL."""
    assert raw.endswith(b"\0")
    items = [item.partition(b"=") for item in raw[:-1].split(b"\0")]
    env = {key: value for key, _, value in items}
    assert len(env) == len(items), "duplicate variable in the dump"
    return env


def slurm_env(fixture: str) -> Env:
    """What slurmctld passes: the captured dump without the PWD its /bin/sh added."""
    env = parse_dump((DATA / fixture).read_bytes())
    del env[b"PWD"]
    return env


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    for sub in ("tmp", "new", "failed"):
        (root / sub).mkdir(parents=True)
    return root


@pytest.fixture(scope="session")
def c_hook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C hook, compiled the way the README says; any compiler warning fails the build."""
    return build_c_hook(tmp_path_factory.mktemp("hook"))


@pytest.fixture(params=["sh", "c"])
def hook(request: pytest.FixtureRequest) -> Path:
    return SH_HOOK if request.param == "sh" else request.getfixturevalue("c_hook")


def run_hook(hook: Path, env: Env, *args: str, cwd: Path, shell: list[str] | None = None,
             **kwargs) -> subprocess.CompletedProcess[bytes]:
    argv = [*(shell or []), str(hook), *args]
    return subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=30, check=False, **kwargs)


def new_files(spool: Path) -> list[str]:
    return sorted(os.listdir(spool / "new"))


FIXTURES = [
    ("end-1.env", 1, "end"),
    ("end-10.env", 10, "end"),
    ("end-14.env", 14, "end"),
    ("start-1.env", 1, "start"),
    ("start-17.env", 17, "start"),
    ("epilog-1.env", 1, "end"),
    ("epilog-26.env", 26, "end"),
]


@pytest.mark.parametrize(("fixture", "job_id", "event"), FIXTURES)
def test_records_the_environment_slurm_gave(hook: Path, spool: Path, tmp_path: Path,
                                            fixture: str, job_id: int, event: str) -> None:
    env = slurm_env(fixture)
    done = run_hook(hook, env, "-d", str(spool), "-t", str(NS), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    fname = f"{NS}.{job_id}.{event}.env"
    assert new_files(spool) == [fname]
    path = spool / "new" / fname
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 1
    assert parse_dump(path.read_bytes()) == {**env, b"JOBCOMPD_HOOK_TIME": b"1795618456"}
    assert os.listdir(spool / "tmp") == []


def test_uses_the_clock_and_records_the_hook_time(hook: Path, spool: Path,
                                                  tmp_path: Path) -> None:
    before = time.time_ns()
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), cwd=tmp_path)
    after = time.time_ns()
    assert done.returncode == 0, done.stderr
    [fname] = new_files(spool)
    parsed = parse_name(fname)
    assert (parsed.job_id, parsed.event, parsed.fmt) == (1, "end", "env")
    assert before <= parsed.ns <= after
    dump = parse_dump((spool / "new" / fname).read_bytes())
    assert dump[b"JOBCOMPD_HOOK_TIME"] == str(parsed.ns // 10**9).encode()


def test_takes_the_spool_from_the_environment_and_keeps_it_out_of_the_dump(
        hook: Path, spool: Path, tmp_path: Path) -> None:
    env = slurm_env("start-1.env")
    done = run_hook(hook, {**env, b"JOBCOMPD_SPOOL": str(spool).encode()}, "-t", str(NS),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert new_files(spool) == [f"{NS}.1.start.env"]
    dump = parse_dump((spool / "new" / f"{NS}.1.start.env").read_bytes())
    assert dump == {**env, b"JOBCOMPD_HOOK_TIME": b"1795618456"}


@pytest.mark.parametrize("shell", [["dash"], ["bash"], ["bash", "--posix"]])
def test_runs_under_dash_and_bash_and_adds_no_shell_variables(
        spool: Path, tmp_path: Path, shell: list[str]) -> None:
    if shutil.which(shell[0]) is None:
        pytest.skip(f"{shell[0]} is not installed")
    for fixture in ("end-10.env", "start-17.env"):  # one with PATH, one without
        env = slurm_env(fixture)
        done = run_hook(SH_HOOK, env, "-d", str(spool), cwd=tmp_path, shell=shell)
        assert done.returncode == 0, done.stderr
        newest = new_files(spool)[-1]
        dump = parse_dump((spool / "new" / newest).read_bytes())
        del dump[b"JOBCOMPD_HOOK_TIME"]
        assert dump == env  # no PWD, SHLVL, _ or PATH of the shell's own


def test_its_own_time_replaces_one_already_in_the_environment(hook: Path, spool: Path,
                                                              tmp_path: Path) -> None:
    env = slurm_env("end-1.env")
    done = run_hook(hook, {**env, b"JOBCOMPD_HOOK_TIME": b"1"}, "-d", str(spool), "-t", str(NS),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [fname] = new_files(spool)
    assert parse_dump((spool / "new" / fname).read_bytes()) == {
        **env, b"JOBCOMPD_HOOK_TIME": b"1795618456"}


def test_is_a_posix_sh_script() -> None:
    assert SH_HOOK.read_bytes().startswith(b"#!/bin/sh\n")
    assert os.access(SH_HOOK, os.X_OK)
    for shell in ("dash", "bash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n", str(SH_HOOK)], check=True, timeout=30)


def test_names_sort_in_submission_order(hook: Path, spool: Path, tmp_path: Path) -> None:
    base = slurm_env("end-1.env")
    submitted = []
    for i in range(20):
        job_id = 1000 - i  # job ids against the order, so only the time stamp can sort them
        done = run_hook(hook, {**base, b"JOBID": str(job_id).encode()}, "-d", str(spool),
                        cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        submitted.append(job_id)
    assert [parse_name(n).job_id for n in new_files(spool)] == submitted


# -- planted entries are never followed, opened or replaced ------------------------------------


def plant(where: Path, kind: str, victim: Path) -> None:
    if kind == "symlink-to-file":
        where.symlink_to(victim)
    elif kind == "symlink-to-fifo":
        fifo = victim.with_name("fifo")
        os.mkfifo(fifo)  # following this link would block the hook for good
        where.symlink_to(fifo)
    elif kind == "dangling-symlink":
        where.symlink_to(victim.with_name("does-not-exist"))
    elif kind == "directory":
        where.mkdir()
    elif kind == "regular-file":
        where.write_bytes(b"an earlier record")


@pytest.mark.parametrize("subdir", ["tmp", "new"])
@pytest.mark.parametrize(
    "kind", ["symlink-to-file", "symlink-to-fifo", "dangling-symlink", "directory", "regular-file"])
def test_an_entry_planted_under_its_name_is_left_alone(hook: Path, spool: Path, tmp_path: Path,
                                                       subdir: str, kind: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    taken = f"{NS}.4.end.env"
    planted = spool / subdir / taken
    plant(planted, kind, victim)
    before = os.lstat(planted)
    env = slurm_env("end-1.env")
    env[b"JOBID"] = b"4"
    done = run_hook(hook, env, "-d", str(spool), "-t", str(NS), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert victim.read_bytes() == b"untouched"
    assert not victim.with_name("does-not-exist").exists()
    after = os.lstat(planted)
    assert (after.st_ino, after.st_mode, after.st_size) == (before.st_ino, before.st_mode,
                                                            before.st_size)
    # A name taken in new/ sends the record to the next nanosecond, which keeps its place in
    # the order; tmp/ names carry no time stamp, so an entry there is simply not in the way.
    fname = f"{NS + 1 if subdir == 'new' else NS}.4.end.env"
    assert parse_dump((spool / "new" / fname).read_bytes())[b"JOBID"] == b"4"
    assert sorted(os.listdir(spool / "tmp")) == ([taken] if subdir == "tmp" else [])


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "prolog"), [
    ("start-1.env", True), ("end-1.env", False), ("epilog-1.env", False)])
def test_a_missing_spool_fails_except_in_the_prolog(hook: Path, tmp_path: Path, fixture: str,
                                                     prolog: bool) -> None:
    missing = tmp_path / "no-spool"
    done = run_hook(hook, slurm_env(fixture), "-d", str(missing), cwd=tmp_path)
    assert (done.returncode == 0) is prolog
    assert done.returncode in (0, 73)
    assert str(missing).encode() in done.stderr
    assert b"job 1" in done.stderr and b"not recorded" in done.stderr
    assert not missing.exists()


def test_a_spool_without_tmp_fails(hook: Path, spool: Path, tmp_path: Path) -> None:
    (spool / "tmp").rmdir()
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), cwd=tmp_path)
    assert done.returncode == 73
    assert b"cannot use %s/tmp: No such file or directory (the hook runs as uid 0 (root)" % (
        bytes(spool)) in done.stderr, done.stderr
    assert new_files(spool) == []


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.fixture
def outside_tmp_path() -> Iterator[Path]:
    """A folder another user may enter (pytest's own base folder is root's alone)."""
    with tempfile.TemporaryDirectory(prefix="jobcompd-hook-") as top:
        os.chmod(top, 0o755)
        yield Path(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="running the hook as another user needs root")
@pytest.mark.parametrize("blocked", ["spool", "tmp", "new"])
def test_a_hook_that_may_not_enter_the_spool_says_why_and_as_whom(
        hook: Path, outside_tmp_path: Path, blocked: str) -> None:
    """The hook runs as a user the spool does not let in: the message gives the system's
    reason, the user and the folder (not 'no tmp/ or new/ directory')."""
    spool = outside_tmp_path / "spool"
    for sub in ("tmp", "new"):
        (spool / sub).mkdir(parents=True, mode=0o755)
    os.chmod(spool, 0o755)
    (spool if blocked == "spool" else spool / blocked).chmod(0o700)
    exe = outside_tmp_path / "jobcompd-spool"
    shutil.copy(hook, exe)
    os.chmod(exe, 0o755)
    done = run_hook(exe, slurm_env("end-1.env"), "-d", str(spool), cwd=outside_tmp_path,
                    preexec_fn=_as_nobody)
    assert done.returncode == 73, done.stderr
    folder = spool / ("tmp" if blocked == "spool" else blocked)
    assert done.stderr.startswith(b"jobcompd-spool: cannot use %s: Permission denied (the hook "
                                  b"runs as uid 65534 (nobody)" % bytes(folder)), done.stderr
    assert os.listdir(spool / "new") == [] and os.listdir(spool / "tmp") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="running the hook as another user needs root")
def test_a_hook_that_may_not_write_tmp_says_why_and_as_whom(hook: Path,
                                                              outside_tmp_path: Path) -> None:
    spool = outside_tmp_path / "spool"
    for sub in ("tmp", "new"):
        (spool / sub).mkdir(parents=True, mode=0o755)
    os.chmod(spool, 0o755)
    exe = outside_tmp_path / "jobcompd-spool"
    shutil.copy(hook, exe)
    os.chmod(exe, 0o755)
    done = run_hook(exe, slurm_env("end-1.env"), "-d", str(spool), cwd=outside_tmp_path,
                    preexec_fn=_as_nobody)
    assert done.returncode == 73, done.stderr
    assert re.fullmatch(rb"jobcompd-spool: cannot create a file in %s/tmp \(last tried "
                        rb"%s/tmp/1\.end\.\d+\.0\): Permission denied \(the hook runs as uid "
                        rb"65534 \(nobody\)\); job 1 end not recorded\n"
                        % (re.escape(bytes(spool)), re.escape(bytes(spool))), done.stderr), (
        done.stderr)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_record_written_as_root_belongs_to_the_owner_of_new(hook: Path, spool: Path,
                                                              tmp_path: Path) -> None:
    """jobcompd runs as the spool's owner (SlurmUser) and must be able to read the record,
    whoever wrote it: a hook run as root gives it to the owner of new/ before the rename."""
    os.chown(spool / "new", 64030, 64031)
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), "-t", str(NS),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    st = (spool / "new" / f"{NS}.1.end.env").stat()
    assert (st.st_uid, st.st_gid) == (64030, 64031)
    assert stat.S_IMODE(st.st_mode) == 0o600


@pytest.mark.parametrize(("fixture", "variable", "value"), [
    ("end-1.env", b"JOBID", None),
    ("epilog-1.env", b"SLURM_JOB_ID", None),
    ("end-1.env", b"JOBID", b"1; touch /tmp/x"),
    ("end-1.env", b"JOBID", b"../1"),
    ("end-1.env", b"JOBID", b"4294967296"),
    ("end-1.env", b"JOBID", b"99999999999999999999999"),
    ("start-1.env", b"SLURM_JOB_ID", None),
    ("start-1.env", b"SLURM_JOB_ID", b""),
])
def test_a_missing_or_bad_job_id_records_nothing(hook: Path, spool: Path, tmp_path: Path,
                                                 fixture: str, variable: bytes,
                                                 value: bytes | None) -> None:
    env = slurm_env(fixture)
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    done = run_hook(hook, env, "-d", str(spool), cwd=tmp_path)
    prolog = fixture.startswith("start-")
    assert done.returncode == (0 if prolog else 65)
    assert variable in done.stderr and b"nothing recorded" in done.stderr
    assert new_files(spool) == [] and os.listdir(spool / "tmp") == []


@pytest.mark.parametrize(("context", "status"), [("prolog_slurmd", 0), ("epilog_slurmd", 64)])
def test_an_unknown_script_context_is_refused(hook: Path, spool: Path, tmp_path: Path,
                                              context: str, status: int) -> None:
    env = slurm_env("epilog-1.env")
    env[b"SLURM_SCRIPT_CONTEXT"] = context.encode()
    done = run_hook(hook, env, "-d", str(spool), cwd=tmp_path)
    assert done.returncode == status
    assert context.encode() in done.stderr
    assert new_files(spool) == []


def limit_file_size() -> None:
    """Child set-up: a file-size limit the dump exceeds, the way a full disk refuses writes."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


@pytest.mark.parametrize(("fixture", "prolog"), [("start-1.env", True), ("end-1.env", False)])
def test_a_failed_write_leaves_nothing_behind(hook: Path, spool: Path, tmp_path: Path,
                                              fixture: str, prolog: bool) -> None:
    done = run_hook(hook, slurm_env(fixture), "-d", str(spool), cwd=tmp_path,
                    preexec_fn=limit_file_size)
    event = "start" if prolog else "end"
    assert done.returncode == (0 if prolog else 74)
    # The sh hook's env adds a line of its own before; the hook's line is last in both.
    last = done.stderr.splitlines()[-1]
    assert re.fullmatch(rb"jobcompd-spool: cannot write %s/tmp/1\.%s\.\d+\.0 \(disk full\?\)"
                        rb"(: File too large)?; job 1 %s not recorded"
                        % (re.escape(bytes(spool)), event.encode(), event.encode()), last), last
    assert os.listdir(spool / "tmp") == [] and new_files(spool) == []


def test_help_and_usage_errors(hook: Path, spool: Path, tmp_path: Path) -> None:
    done = run_hook(hook, {}, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith(b"usage: jobcompd-spool")
    assert b"PrologSlurmctld" in done.stdout
    done = run_hook(hook, slurm_env("end-1.env"), "--bogus", cwd=tmp_path)
    assert done.returncode == 64
    assert b"unknown argument '--bogus'" in done.stderr
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), "-t", "123", cwd=tmp_path)
    assert done.returncode == 64
    assert b"19 digits" in done.stderr
    assert new_files(spool) == []


@pytest.mark.parametrize(("fixture", "status"), [("start-1.env", 0), ("end-1.env", 75)])
def test_a_signal_before_the_record_is_in_new_records_nothing(
        hook: Path, spool: Path, tmp_path: Path, fixture: str, status: int) -> None:
    def term_pending() -> None:  # blocked and pending across the exec: seen at the first step
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        os.kill(os.getpid(), signal.SIGTERM)

    done = run_hook(hook, slurm_env(fixture), "-d", str(spool), cwd=tmp_path,
                    preexec_fn=term_pending)
    assert done.returncode == status
    assert done.stderr == b"jobcompd-spool: interrupted by a signal; job 1 not recorded\n"
    assert os.listdir(spool / "tmp") == [] and new_files(spool) == []


@pytest.mark.parametrize("fixture", ["start-1.env", "end-1.env"])
def test_it_finishes_with_the_signal_mask_slurmscriptd_gives(
        hook: Path, spool: Path, tmp_path: Path, fixture: str) -> None:
    """slurmscriptd starts its scripts with SIGCHLD (and more) blocked. A shell that waits for
    a background child then never wakes: a hook that did so hung under a real slurmctld and
    held up every later job's record. Each run must finish, with its record in new/."""
    def slurmscriptd_mask() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGHUP,
                                                  signal.SIGPIPE, signal.SIGALRM})

    for i in range(10):
        done = run_hook(hook, slurm_env(fixture), "-d", str(spool), "-t", str(NS + i),
                        cwd=tmp_path, preexec_fn=slurmscriptd_mask)
        assert done.returncode == 0, done.stderr
    assert len(new_files(spool)) == 10


# -- read-only and full spools, in a mount namespace of the hook's own -----------------------

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        raise OSError(ctypes.get_errno(), f"{name}: {os.strerror(ctypes.get_errno())}")


def _private_mounts() -> None:
    """Child set-up: a mount namespace of its own (in a user namespace unless root), so that
    what it mounts is seen by the hook only. Root bypasses permission bits: a read-only or
    full file system is the only way to refuse it a write."""
    uid, gid = os.geteuid(), os.getegid()
    _libc_call("unshare", CLONE_NEWNS | (CLONE_NEWUSER if uid != 0 else 0))
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                           ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    _libc_call("mount", b"none", b"/", None, MS_REC | MS_PRIVATE, None)


def read_only(spool: Path):
    def setup() -> None:
        _private_mounts()
        path = bytes(spool)
        _libc_call("mount", path, path, None, MS_BIND, None)
        _libc_call("mount", None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
    return setup


def full(spool: Path, threshold: bytes | None = None):
    """Child set-up: the spool on a tmpfs of two pages, with the threshold file holding
    ``threshold`` (if given), and every page left taken."""
    def setup() -> None:
        _private_mounts()
        _libc_call("mount", b"tmpfs", bytes(spool), b"tmpfs", 0, b"size=8k,mode=0700")
        for sub in ("tmp", "new"):
            (spool / sub).mkdir()
        if threshold is not None:
            (spool / ".min-free-bytes").write_bytes(threshold)
        with open(spool / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"x" * 4096)
    return setup


def tight(spool: Path, over: int):
    """Child set-up: the spool on a tmpfs of 1 MiB whose threshold file asks for its free space
    plus ``over`` bytes, measured with the file in place (it takes a page of its own)."""
    def setup() -> None:
        _private_mounts()
        _libc_call("mount", b"tmpfs", bytes(spool), b"tmpfs", 0, b"size=1m,mode=0700")
        for sub in ("tmp", "new"):
            (spool / sub).mkdir()
        threshold = spool / ".min-free-bytes"
        threshold.write_bytes(b"0\n")
        st = os.statvfs(spool)
        threshold.write_bytes(b"%d\n" % (st.f_bavail * st.f_frsize + over))
    return setup


@pytest.fixture(scope="session")
def mount_namespaces() -> None:
    """Skip where the hook cannot get a mount namespace (a container without the rights)."""
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.exit(0)"],
                           preexec_fn=_private_mounts, capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("no mount namespace for a read-only or full spool (unshare refused)")


@pytest.mark.usefixtures("mount_namespaces")
@pytest.mark.parametrize(("fixture", "status"), [("start-1.env", 0), ("end-1.env", 73)])
def test_a_read_only_spool_fails_with_the_reason(hook: Path, spool: Path, tmp_path: Path,
                                                 fixture: str, status: int) -> None:
    event = "start" if status == 0 else "end"
    done = run_hook(hook, slurm_env(fixture), "-d", str(spool), cwd=tmp_path,
                    preexec_fn=read_only(spool))
    assert done.returncode == status
    # The sh hook tries five names (its shell reports each); the C one stops at the first
    # error that is not "exists" and gives the reason. Same line shape otherwise.
    last = done.stderr.splitlines()[-1]
    assert re.fullmatch(rb"jobcompd-spool: cannot create a file in %s/tmp \(last tried "
                        rb"%s/tmp/1\.%s\.\d+\.\d\)(: Read-only file system)?; job 1 %s not "
                        rb"recorded" % (re.escape(bytes(spool)), re.escape(bytes(spool)),
                                        event.encode(), event.encode()), last), last
    assert os.listdir(spool / "tmp") == [] and new_files(spool) == []


@pytest.mark.usefixtures("mount_namespaces")
def test_a_full_spool_fails_with_the_reason(hook: Path, spool: Path, tmp_path: Path) -> None:
    """With the threshold off (0), the write itself meets the full disk."""
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), cwd=tmp_path,
                    preexec_fn=full(spool, b"0\n"))
    assert done.returncode == 74
    last = done.stderr.splitlines()[-1]
    assert re.fullmatch(rb"jobcompd-spool: cannot write %s/tmp/1\.end\.\d+\.0 \(disk full\?\)"
                        rb"(: No space left on device)?; job 1 end not recorded"
                        % re.escape(bytes(spool)), last), last


# -- free space: SpoolMinFreeBytes through SpoolDir/.min-free-bytes (SPEC.md) ----------------


def refusal(spool: Path, event: str, threshold: int) -> bytes:
    """The pattern of the line both hooks write when they refuse a record for room."""
    return (rb"jobcompd-spool: spool nearly full: %s/new has (\d+) bytes free, less than "
            rb"SpoolMinFreeBytes=%d; job 1 %s not recorded" % (re.escape(bytes(spool)),
                                                               threshold, event.encode()))


@pytest.mark.parametrize(("fixture", "status"), [
    ("start-1.env", 0), ("end-1.env", 74), ("epilog-1.env", 74)])
def test_a_spool_below_its_threshold_refuses_the_record(hook: Path, spool: Path,
                                                        tmp_path: Path, fixture: str,
                                                        status: int) -> None:
    """Refused loudly before anything is created; as PrologSlurmctld still exit 0."""
    plant_threshold(spool, "file", b"%d\n" % HUGE)
    done = run_hook(hook, slurm_env(fixture), "-d", str(spool), cwd=tmp_path)
    assert done.returncode == status
    event = "start" if fixture.startswith("start") else "end"
    m = re.fullmatch(refusal(spool, event, HUGE) + rb"\n", done.stderr)
    assert m, done.stderr
    st = os.statvfs(spool / "new")  # the disk is shared: about what the hook saw
    assert abs(int(m.group(1)) - st.f_bavail * st.f_frsize) < 1 << 30
    assert os.listdir(spool / "tmp") == [] and new_files(spool) == []


@pytest.mark.parametrize(("content", "threshold"), THRESHOLD_FILES)
def test_both_hooks_read_the_threshold_file_alike(hook: Path, spool: Path, tmp_path: Path,
                                                  content: bytes, threshold: int) -> None:
    """What the file holds decides alike in both hooks and in Spool.write_record
    (tests/test_spool.py reads the same table); only a huge threshold can refuse here."""
    assert shutil.disk_usage(spool).free > 1 << 30, "the test needs 1 GiB free"
    plant_threshold(spool, "file", content)
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), cwd=tmp_path)
    if threshold == HUGE:
        assert done.returncode == 74 and re.fullmatch(refusal(spool, "end", HUGE) + rb"\n",
                                                      done.stderr), done.stderr
        assert new_files(spool) == []
    else:
        assert done.returncode == 0 and done.stderr == b"", done.stderr
        assert len(new_files(spool)) == 1


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_threshold_entry_that_is_no_file_means_the_default(hook: Path, spool: Path,
                                                             tmp_path: Path, kind: str) -> None:
    """Never followed, never blocked on: a symlink to a huge threshold is not read."""
    plant_threshold(spool, kind)
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert len(new_files(spool)) == 1


@pytest.mark.usefixtures("mount_namespaces")
@pytest.mark.parametrize(("over", "refused"), [(0, False), (1, True)])
def test_the_threshold_counts_to_the_byte(hook: Path, spool: Path, tmp_path: Path,
                                          over: int, refused: bool) -> None:
    """On a private tmpfs: exactly the free space passes, one byte more is refused."""
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), cwd=tmp_path,
                    preexec_fn=tight(spool, over))
    if not refused:
        assert done.returncode == 0 and done.stderr == b"", done.stderr
        return
    assert done.returncode == 74
    m = re.fullmatch(rb"jobcompd-spool: spool nearly full: \S+/new has (\d+) bytes free, "
                     rb"less than SpoolMinFreeBytes=(\d+); job 1 end not recorded\n",
                     done.stderr)
    assert m, done.stderr
    free, threshold = int(m.group(1)), int(m.group(2))
    assert threshold == free + 1 and free % 4096 == 0 and 0 < free < 1 << 20


@pytest.mark.usefixtures("mount_namespaces")
@pytest.mark.parametrize(("fixture", "status"), [("start-1.env", 0), ("end-1.env", 74)])
def test_a_nearly_full_spool_is_refused_before_the_disk_refuses(
        hook: Path, spool: Path, tmp_path: Path, fixture: str, status: int) -> None:
    """No threshold file: the built-in default (64 MiB) refuses a record on a full spool
    before any write, so nothing is left and the reason is the threshold."""
    done = run_hook(hook, slurm_env(fixture), "-d", str(spool), cwd=tmp_path,
                    preexec_fn=full(spool))
    assert done.returncode == status
    event = "start" if status == 0 else "end"
    m = re.fullmatch(refusal(spool, event, 64 << 20) + rb"\n", done.stderr)
    assert m and int(m.group(1)) == 0, done.stderr


def with_dev_log(socket_path: Path, old_dev: Path):
    """Child set-up: /dev/log is ``socket_path`` (a fresh /dev holding only log and null), so
    the test hears what the hook sends to syslog."""
    def setup() -> None:
        _private_mounts()
        _libc_call("mount", b"/dev", bytes(old_dev), None, MS_BIND | MS_REC, None)
        _libc_call("mount", b"tmpfs", b"/dev", b"tmpfs", 0, b"mode=0755")
        Path("/dev/null").touch()
        _libc_call("mount", bytes(old_dev / "null"), b"/dev/null", None, MS_BIND, None)
        os.symlink(socket_path, "/dev/log")
    return setup


def hear_syslog(hook: Path, fixture: str, spool: Path, tmp_path: Path
                ) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run the hook with /dev/log a socket of the test's; its result and the one message."""
    old_dev = tmp_path / "old-dev"
    old_dev.mkdir()
    with tempfile.TemporaryDirectory(prefix="log", dir="/tmp") as short:  # sun_path <= 107
        path = Path(short) / "log"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            sock.settimeout(10)
            done = run_hook(hook, slurm_env(fixture), "-d", str(spool), cwd=tmp_path,
                            preexec_fn=with_dev_log(path, old_dev))
            return done, sock.recv(65536)


@pytest.mark.usefixtures("mount_namespaces")
@pytest.mark.parametrize(("fixture", "status"), [("start-1.env", 0), ("end-1.env", 74)])
def test_a_refusal_for_room_goes_to_syslog_also_from_the_prolog(
        hook: Path, spool: Path, tmp_path: Path, fixture: str, status: int) -> None:
    plant_threshold(spool, "file", b"%d\n" % HUGE)
    done, message = hear_syslog(hook, fixture, spool, tmp_path)
    assert done.returncode == status, done.stderr
    event = "start" if status == 0 else "end"
    assert message.startswith(b"<27>"), message  # daemon.err
    assert re.search(rb" jobcompd-spool: spool nearly full: .* bytes free, less than "
                     rb"SpoolMinFreeBytes=%d; job 1 %s not recorded" % (HUGE, event.encode()),
                     message), message
    assert done.stderr.split(b": ", 1)[1].rstrip(b"\n") in message
    assert os.listdir(spool / "tmp") == [] and new_files(spool) == []


@pytest.mark.usefixtures("mount_namespaces")
@pytest.mark.parametrize("fixture", ["start-1.env", "end-1.env"])
def test_a_failure_goes_to_syslog_as_daemon_err(hook: Path, tmp_path: Path,
                                                fixture: str) -> None:
    done, message = hear_syslog(hook, fixture, tmp_path / "none", tmp_path)
    assert done.returncode == (0 if fixture.startswith("start") else 73), done.stderr
    # <27>: facility daemon (3) * 8 + severity err (3); then the tag and the stderr text.
    assert message.startswith(b"<27>"), message
    assert re.search(rb" jobcompd-spool: cannot use \S+/none/tmp: No such file or directory",
                     message)
    assert done.stderr.splitlines()[-1].split(b": ", 1)[1] in message


# -- the C hook against the sh hook ---------------------------------------------------------

TRICKY: Env = {
    b"NEWLINES": b"first\nsecond\n",
    b"EQUALS": b"a=b==c=",
    b"NOT_UTF8": b"\xff\xfe\x80 latin-1 \xe9",
    b"EMPTY": b"",
    b"QUOTES": b"\t'\"$`\\ *?[",
}


def dump_of(hook: Path, env: Env | list[bytes], root: Path) -> tuple[str, bytes]:
    """Run a hook into a fresh spool under ``root``; the name and content of its record.

    ``env`` as a list is handed to execve as it is, so it may hold what a dict cannot:
    repeated names, entries without "=". Python's subprocess cannot, so a small Python
    child execs the hook with it."""
    spool = root / "spool"
    for sub in ("tmp", "new", "failed"):
        (spool / sub).mkdir(parents=True)
    argv = [str(hook), "-d", str(spool), "-t", str(NS)]
    if isinstance(env, dict):
        done = run_hook(hook, env, *argv[1:], cwd=root)
    else:
        done = subprocess.run([sys.executable, "-c", EXECVE, str(len(argv)), *argv, *env],
                              env={}, cwd=root, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=30, check=False)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    [name] = new_files(spool)
    return name, (spool / "new" / name).read_bytes()


EXECVE = """
import ctypes, os, sys
n = int(sys.argv[1])
argv = [os.fsencode(a) for a in sys.argv[2:2 + n]]
envp = [os.fsencode(e) for e in sys.argv[2 + n:]]
libc = ctypes.CDLL(None, use_errno=True)
libc.execve(argv[0], (ctypes.c_char_p * (n + 1))(*argv, None),
            (ctypes.c_char_p * (len(envp) + 1))(*envp, None))
sys.exit("execve: " + os.strerror(ctypes.get_errno()))
"""


def entries(dump: bytes) -> list[bytes]:
    assert dump.endswith(b"\0")
    return dump[:-1].split(b"\0")


def test_the_c_dump_is_the_sh_dump_in_environ_order(c_hook: Path, tmp_path: Path) -> None:
    env = {**slurm_env("end-10.env"), **TRICKY}
    sh_name, sh_dump = dump_of(SH_HOOK, env, tmp_path / "sh")
    c_name, c_dump = dump_of(c_hook, env, tmp_path / "c")
    assert c_name == sh_name == f"{NS}.10.end.env"
    # Byte for byte what the sh hook writes, except the order: a shell hands its children
    # the environment in an order of its own (dash: hash order); the C hook keeps Slurm's.
    assert sorted(entries(c_dump)) == sorted(entries(sh_dump))
    assert c_dump == b"".join(k + b"=" + v + b"\0" for k, v in env.items()) + \
        b"JOBCOMPD_HOOK_TIME=1795618456\0"


def test_repeated_and_malformed_entries_are_handled_like_a_shell(c_hook: Path,
                                                                  tmp_path: Path) -> None:
    slurm = [k + b"=" + v for k, v in slurm_env("end-1.env").items()]
    assert b"JOBID=1" in slurm
    extra = [b"JOBID=99", b"NO_EQUALS_SIGN", b"=no-name", b"PWD=/somewhere", b"SHLVL=3",
             b"_=/usr/bin/x", b"JOBCOMPD_HOOK_TIME=1", b"JOBCOMPD_SPOOL=/elsewhere",
             b"NEWLINES=first\nsecond"]
    sh_name, sh_dump = dump_of(SH_HOOK, slurm + extra, tmp_path / "sh")
    c_name, c_dump = dump_of(c_hook, slurm + extra, tmp_path / "c")
    # The last of a repeated name counts (JOBID=99), as in a shell and for the file name.
    assert c_name == sh_name == f"{NS}.99.end.env"
    assert sorted(entries(c_dump)) == sorted(entries(sh_dump))
    kept = [e for e in slurm if e != b"JOBID=1"]
    assert entries(c_dump) == [*kept, b"JOBID=99", b"NEWLINES=first\nsecond",
                               b"JOBCOMPD_HOOK_TIME=1795618456"]


def test_the_c_hook_keeps_names_a_shell_may_not(c_hook: Path, tmp_path: Path) -> None:
    """dash drops entries whose name is no shell identifier, bash keeps them: the C hook hands
    on all that have a name, in place, as bash and env(1) do."""
    env = slurm_env("end-1.env")
    odd = [b"SPANK-OPTION=1", b"1ST=2"]
    _, c_dump = dump_of(c_hook, [*odd, *(k + b"=" + v for k, v in env.items())], tmp_path)
    assert entries(c_dump)[:2] == odd


# -- seg/: a spool format that was never released -----------------------------------------


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo", "file"])
def test_both_hooks_write_a_file_whatever_seg_is(hook: Path, spool: Path, tmp_path: Path,
                                                 kind: str) -> None:
    """The hooks write one file per record and never look at seg/ (the daemon refuses to
    start while seg/ holds anything, so no record may go there)."""
    seg, elsewhere = spool / "seg", tmp_path / "elsewhere"
    elsewhere.mkdir()
    if kind == "directory":
        (seg / "current").mkdir(parents=True)
    elif kind == "symlink":
        seg.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(seg)
    else:
        seg.write_bytes(b"not a directory")
    done = run_hook(hook, slurm_env("end-1.env"), "-d", str(spool), "-t", str(NS),
                    cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert new_files(spool) == [f"{NS}.1.end.env"]
    assert os.listdir(elsewhere) == []
    if kind == "directory":
        assert os.listdir(seg) == ["current"] and os.listdir(seg / "current") == []
