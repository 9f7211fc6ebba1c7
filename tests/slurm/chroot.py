"""A Debian root with another Slurm release, for running slurmctld, slurmd and munged of that
release beside the host's.

Debian 13 (trixie) ships Slurm 24.11 with its jobcomp/kafka plugin (``slurm-wlm-kafka-plugin``)
and Debian 12 (bookworm) Slurm 22.05. The 24.11 test always runs trixie's from a root; the
22.05 test runs bookworm's from a root where the host's Slurm is not 22.05 (a Debian 13 host;
tests/slurm/cluster.py, ``slurm22_root_reason``). A root is built with ``mmdebstrap`` from
Debian's own package registry and cached outside the repository
(``/var/cache/jobcompd-tests/<suite>-slurm-<ROOT_VERSION>``), so later runs start at once.
Package scripts never start services in it (a ``policy-rc.d`` that exits 101). Processes run
in it through ``chroot`` with /proc, /sys, /dev, /dev/pts and a tmpfs /run mounted, and the
host's network.

Every failure says why (``RootError``): no root privileges, no mmdebstrap and no way to
install it, the build itself failing (its log's tail is in the message).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("JOBCOMPD_TEST_CACHE", "/var/cache/jobcompd-tests"))
#: Bumped when a package list changes, so an old cached root is not taken for a new one.
ROOT_VERSION = "1"
_COMMON = ["slurm-wlm", "slurm-client", "slurmctld", "slurmd", "munge", "procps",
           "ca-certificates"]  # fmt: skip
#: What each suite's root holds: trixie's Slurm 24.11 with its jobcomp/kafka (a package of its
#: own), bookworm's Slurm 22.05 with jobcomp/elasticsearch (22.05 has no jobcomp/kafka).
PACKAGES = {"trixie": [*_COMMON, "slurm-wlm-kafka-plugin"],
            "bookworm": [*_COMMON, "slurm-wlm-elasticsearch-plugin"]}  # fmt: skip
POLICY_RC = "#!/bin/sh\n# package scripts must not start services in this root\nexit 101\n"
MOUNTS = [("proc", "proc", None), ("sysfs", "sys", None), ("/dev", "dev", "bind"),
          ("/dev/pts", "dev/pts", "bind"), ("tmpfs", "run", None)]  # fmt: skip


class RootError(Exception):
    """The root cannot be had; the message says why."""


def host_codename() -> str:
    """The host's Debian codename (bookworm, trixie, ...), or "" elsewhere."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return ""


def ensure_root(suite: str, packages: list[str] | None = None) -> Path:
    """The cached root of ``suite`` with ``packages`` (default: ``PACKAGES[suite]``), built
    when missing. Raises RootError."""
    packages = packages if packages is not None else PACKAGES[suite]
    root = CACHE / f"{suite}-slurm-{ROOT_VERSION}"
    if (root / ".complete").exists():
        return root
    if os.geteuid() != 0:
        raise RootError(f"building the {suite} root {root} needs root (mmdebstrap, chroot)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second worker waits for the first's build
        if not (root / ".complete").exists():
            _build(root, suite, packages)
    return root


def _build(root: Path, suite: str, packages: list[str]) -> None:
    _ensure_mmdebstrap()
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log = CACHE / f"{suite}-build.log"
    hook = f"printf '%s' {_sh_quote(POLICY_RC)} > \"$1/usr/sbin/policy-rc.d\"; " \
           "chmod 755 \"$1/usr/sbin/policy-rc.d\""  # fmt: skip
    cmd = ["mmdebstrap", "--variant=apt", "--mode=root", f"--include={','.join(packages)}",
           f"--setup-hook=mkdir -p \"$1/usr/sbin\" && {hook}", suite, str(partial)]  # fmt: skip
    with open(log, "w") as out:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             timeout=1200, check=False)  # fmt: skip
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RootError(f"building the Debian {suite} root failed ({' '.join(cmd[:4])} ... "
                        f"exited with {res.returncode}; log {log}):\n{tail}")
    (partial / ".complete").write_text(" ".join(packages) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)


def _ensure_mmdebstrap() -> None:
    if shutil.which("mmdebstrap"):
        return
    if not shutil.which("apt-get"):
        raise RootError("mmdebstrap is missing and there is no apt-get to install it: the "
                        "Debian root for the other Slurm release cannot be built here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", "mmdebstrap"],
                ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "mmdebstrap"]):  # fmt: skip
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if res.returncode == 0 and shutil.which("mmdebstrap"):
            return
    raise RootError(f"installing mmdebstrap failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def mount(root: Path) -> None:
    """Mount /proc, /sys, /dev, /dev/pts and a tmpfs /run into the root (idempotent)."""
    for source, target, kind in MOUNTS:
        where = root / target
        where.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(where):
            continue
        args = ["mount", "--bind", source, str(where)] if kind == "bind" else \
            ["mount", "-t", source, source, str(where)]  # fmt: skip
        res = subprocess.run(args, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RootError(f"{' '.join(args)} failed: {res.stderr.strip()}")


def unmount(root: Path) -> None:
    """Undo mount(), innermost first; lazily, so a process still running does not stop it."""
    for _, target, _ in reversed(MOUNTS):
        where = root / target
        if os.path.ismount(where):
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
