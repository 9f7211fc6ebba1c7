"""The jobcompd-spool hook, exec'd the way slurmctld does: no shell, no arguments (or just the
spool option), exactly the environment Slurm builds, stdin on /dev/null."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from jobcompd.spool import parse_name

HOOK = Path(__file__).resolve().parents[1] / "jobcompd" / "jobcompd-spool"
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


def run_hook(env: Env, *args: str, cwd: Path, shell: list[str] | None = None,
             **kwargs) -> subprocess.CompletedProcess[bytes]:
    argv = [*(shell or []), str(HOOK), *args]
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
def test_records_the_environment_slurm_gave(spool: Path, tmp_path: Path, fixture: str,
                                            job_id: int, event: str) -> None:
    env = slurm_env(fixture)
    done = run_hook(env, "-d", str(spool), "-t", str(NS), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    fname = f"{NS}.{job_id}.{event}.env"
    assert new_files(spool) == [fname]
    path = spool / "new" / fname
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 1
    assert parse_dump(path.read_bytes()) == {**env, b"JOBCOMPD_HOOK_TIME": b"1795618456"}
    assert os.listdir(spool / "tmp") == []


def test_uses_the_clock_and_records_the_hook_time(spool: Path, tmp_path: Path) -> None:
    before = time.time_ns()
    done = run_hook(slurm_env("end-1.env"), "-d", str(spool), cwd=tmp_path)
    after = time.time_ns()
    assert done.returncode == 0, done.stderr
    [fname] = new_files(spool)
    parsed = parse_name(fname)
    assert (parsed.job_id, parsed.event, parsed.fmt) == (1, "end", "env")
    assert before <= parsed.ns <= after
    dump = parse_dump((spool / "new" / fname).read_bytes())
    assert dump[b"JOBCOMPD_HOOK_TIME"] == str(parsed.ns // 10**9).encode()


def test_takes_the_spool_from_the_environment_and_keeps_it_out_of_the_dump(
        spool: Path, tmp_path: Path) -> None:
    env = slurm_env("start-1.env")
    done = run_hook({**env, b"JOBCOMPD_SPOOL": str(spool).encode()}, "-t", str(NS),
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
        done = run_hook(env, "-d", str(spool), cwd=tmp_path, shell=shell)
        assert done.returncode == 0, done.stderr
        newest = new_files(spool)[-1]
        dump = parse_dump((spool / "new" / newest).read_bytes())
        del dump[b"JOBCOMPD_HOOK_TIME"]
        assert dump == env  # no PWD, SHLVL, _ or PATH of the shell's own


def test_its_own_time_replaces_one_already_in_the_environment(spool: Path,
                                                              tmp_path: Path) -> None:
    env = slurm_env("end-1.env")
    done = run_hook({**env, b"JOBCOMPD_HOOK_TIME": b"1"}, "-d", str(spool), "-t", str(NS),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [fname] = new_files(spool)
    assert parse_dump((spool / "new" / fname).read_bytes()) == {
        **env, b"JOBCOMPD_HOOK_TIME": b"1795618456"}


def test_is_a_posix_sh_script() -> None:
    assert HOOK.read_bytes().startswith(b"#!/bin/sh\n")
    assert os.access(HOOK, os.X_OK)
    for shell in ("dash", "bash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n", str(HOOK)], check=True, timeout=30)


def test_names_sort_in_submission_order(spool: Path, tmp_path: Path) -> None:
    base = slurm_env("end-1.env")
    submitted = []
    for i in range(20):
        job_id = 1000 - i  # job ids against the order, so only the time stamp can sort them
        done = run_hook({**base, b"JOBID": str(job_id).encode()}, "-d", str(spool),
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
def test_an_entry_planted_under_its_name_is_left_alone(spool: Path, tmp_path: Path,
                                                       subdir: str, kind: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    taken = f"{NS}.4.end.env"
    planted = spool / subdir / taken
    plant(planted, kind, victim)
    before = os.lstat(planted)
    env = slurm_env("end-1.env")
    env[b"JOBID"] = b"4"
    done = run_hook(env, "-d", str(spool), "-t", str(NS), cwd=tmp_path)
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
def test_a_missing_spool_fails_except_in_the_prolog(tmp_path: Path, fixture: str,
                                                     prolog: bool) -> None:
    missing = tmp_path / "no-spool"
    done = run_hook(slurm_env(fixture), "-d", str(missing), cwd=tmp_path)
    assert (done.returncode == 0) is prolog
    assert done.returncode in (0, 73)
    assert str(missing).encode() in done.stderr
    assert b"job 1" in done.stderr and b"not recorded" in done.stderr
    assert not missing.exists()


def test_a_spool_without_tmp_fails(spool: Path, tmp_path: Path) -> None:
    (spool / "tmp").rmdir()
    done = run_hook(slurm_env("end-1.env"), "-d", str(spool), cwd=tmp_path)
    assert done.returncode != 0
    assert b"no tmp/ or new/" in done.stderr
    assert new_files(spool) == []


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
def test_a_missing_or_bad_job_id_records_nothing(spool: Path, tmp_path: Path, fixture: str,
                                                 variable: bytes, value: bytes | None) -> None:
    env = slurm_env(fixture)
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    done = run_hook(env, "-d", str(spool), cwd=tmp_path)
    prolog = fixture.startswith("start-")
    assert done.returncode == (0 if prolog else 65)
    assert variable in done.stderr and b"nothing recorded" in done.stderr
    assert new_files(spool) == [] and os.listdir(spool / "tmp") == []


@pytest.mark.parametrize(("context", "status"), [("prolog_slurmd", 0), ("epilog_slurmd", 64)])
def test_an_unknown_script_context_is_refused(spool: Path, tmp_path: Path, context: str,
                                              status: int) -> None:
    env = slurm_env("epilog-1.env")
    env[b"SLURM_SCRIPT_CONTEXT"] = context.encode()
    done = run_hook(env, "-d", str(spool), cwd=tmp_path)
    assert done.returncode == status
    assert context.encode() in done.stderr
    assert new_files(spool) == []


def limit_file_size() -> None:
    """Child set-up: a file-size limit the dump exceeds, the way a full disk refuses writes."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


@pytest.mark.parametrize(("fixture", "prolog"), [("start-1.env", True), ("end-1.env", False)])
def test_a_failed_write_leaves_nothing_behind(spool: Path, tmp_path: Path, fixture: str,
                                              prolog: bool) -> None:
    done = run_hook(slurm_env(fixture), "-d", str(spool), cwd=tmp_path,
                    preexec_fn=limit_file_size)
    assert (done.returncode == 0) is prolog
    assert b"cannot write" in done.stderr
    assert os.listdir(spool / "tmp") == [] and new_files(spool) == []


def test_help_and_usage_errors(spool: Path, tmp_path: Path) -> None:
    done = run_hook({}, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith(b"usage: jobcompd-spool")
    assert b"PrologSlurmctld" in done.stdout
    done = run_hook(slurm_env("end-1.env"), "--bogus", cwd=tmp_path)
    assert done.returncode == 64
    assert b"unknown argument '--bogus'" in done.stderr
    done = run_hook(slurm_env("end-1.env"), "-d", str(spool), "-t", "123", cwd=tmp_path)
    assert done.returncode == 64
    assert b"19 digits" in done.stderr
    assert new_files(spool) == []
