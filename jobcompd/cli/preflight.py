"""``jobcompd check``: what ``jobcompd run`` needs from files and folders, tested as the user
the daemon runs as, with the command that fixes each problem.

``run`` reads jobcompd.conf, the JobCompLoc file and SlurmConf; locks and writes
StateSaveLocation; refuses a spool whose ``seg/`` holds files; and reads, writes and removes in
``SpoolDir/{tmp,new,failed}``. A check run as root proves none of that for the unit's User=, so
the checks run in a forked child that has dropped to that user's uid, gid and groups (the kernel
then answers ``access()``/``open()`` exactly as it will for the daemon, ACLs and read-only
mounts included). Nothing is created or changed: only opened for reading, listed and stat'ed.

Which user: ``--user``; otherwise, for a check run as root, the first of: the User= of the
installed jobcompd.service (``systemctl show``: what really runs the daemon), SlurmUser of the
SlurmConf file (the unit must run as SlurmUser), the owner of SpoolDir (the tmpfiles entry
makes it SlurmUser's), the ``slurm`` account (the unit's default User=), root. Run as another
user, the check tests that user (it cannot switch).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobcompd import config as configmod

UNIT = "jobcompd.service"
TMPFILES = Path("/etc/tmpfiles.d/jobcompd.conf")
#: The account jobcompd.service runs as unless a drop-in says otherwise.
DEFAULT_UNIT_USER = "slurm"

OK, WARN, FAIL = "ok", "warn", "FAIL"


class PreflightError(Exception):
    """The check itself cannot be made (unknown user, no permission to switch)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    group: str
    why: str

    @property
    def owner(self) -> str:
        """``user:group`` for chown."""
        return f"{self.name}:{self.group}"


@dataclass(frozen=True)
class UnitInfo:
    """What ``systemctl show jobcompd.service`` says about the installed unit."""

    user: str
    read_write_paths: tuple[Path, ...]
    state_directories: tuple[Path, ...]
    protect_system: str
    private_tmp: bool = False
    protect_home: str = ""

    def hidden(self, path: Path) -> str | None:
        """Why the daemon, inside the unit, would not see the ``path`` everyone else sees."""
        if self.private_tmp and any(_under(path, Path(t)) for t in ("/tmp", "/var/tmp")):
            return "PrivateTmp=yes gives the daemon a /tmp and /var/tmp of its own"
        if self.protect_home in ("yes", "read-only", "tmpfs") and any(
                _under(path, Path(h)) for h in ("/home", "/root", "/run/user")):
            return f"ProtectHome={self.protect_home} hides /home, /root and /run/user"
        return None

    def writable(self, path: Path) -> bool:
        """Whether the unit's sandbox lets the daemon write under ``path``."""
        if self.protect_system != "strict":
            return True
        return any(_under(path, root) for root in (*self.read_write_paths,
                                                   *self.state_directories))


@dataclass(frozen=True)
class Finding:
    level: str  # OK, WARN or FAIL
    subject: str  # "SpoolDir", "config file", ...
    detail: str
    fix: str = ""
    code: int = os.EX_OK  # what `run` would exit with (FAIL only)


@dataclass
class Report:
    account: Account
    unit: UnitInfo | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.level == FAIL]

    @property
    def code(self) -> int:
        """The exit status ``run`` would stop with: that of the first problem in the order
        ``run`` meets them."""
        return self.failures[0].code if self.failures else os.EX_OK

    def add(self, level: str, subject: str, detail: str, fix: str = "",
            code: int = os.EX_OK) -> None:
        self.findings.append(Finding(level, subject, detail, fix, code))


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# --------------------------------------------------------------------------- the unit


def unit_info(timeout: float = 5.0) -> UnitInfo | None:
    """The installed unit's User=, writable paths and ProtectSystem=, or None without systemd
    or without the unit."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    try:
        done = subprocess.run(
            [systemctl, "show", "--property=LoadState,User,ReadWritePaths,StateDirectory,"
             "ProtectSystem,PrivateTmp,ProtectHome", UNIT],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    props: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    if props.get("LoadState") != "loaded":
        return None
    paths = tuple(Path(p.lstrip("-+")) for p in props.get("ReadWritePaths", "").split() if p)
    states = tuple(Path("/var/lib") / d for d in props.get("StateDirectory", "").split() if d)
    return UnitInfo(user=props.get("User", "") or "root", read_write_paths=paths,
                    state_directories=states, protect_system=props.get("ProtectSystem", ""),
                    private_tmp=props.get("PrivateTmp") == "yes",
                    protect_home=props.get("ProtectHome", ""))


# --------------------------------------------------------------------------- which user


def _account(entry: pwd.struct_passwd, why: str) -> Account:
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = str(entry.pw_gid)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, group, why)


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        if name.isdigit():
            return pwd.getpwuid(int(name))
        return pwd.getpwnam(name)
    except (KeyError, ValueError, OverflowError):
        return None


def choose_account(cfg: configmod.Config, requested: str | None,
                   unit: UnitInfo | None) -> Account:
    """The user to test as (see the module's doc). Raises PreflightError."""
    euid = os.geteuid()
    if requested is not None:
        entry = _lookup(requested)
        if entry is None:
            raise PreflightError(
                f"--user {requested}: no such user on this host (getent passwd {requested} "
                "finds nothing); give the account jobcompd.service runs as (its User=)",
                os.EX_NOUSER)
        if euid != 0 and entry.pw_uid != euid:
            raise PreflightError(
                f"--user {requested}: only root can test as another user; run "
                f"'sudo jobcompd check --user {requested}' or 'sudo -u {requested} jobcompd "
                "check'", os.EX_NOPERM)
        return _account(entry, "given with --user")
    if euid != 0:
        return _account(pwd.getpwuid(euid), "the user running this check; run it as root to "
                        "test as the daemon's user")
    if unit is not None:
        entry = _lookup(unit.user)
        if entry is not None:
            return _account(entry, f"the User= of {UNIT}")
    if cfg.slurm_conf is not None:
        slurm = configmod.read_slurm_conf(cfg.slurm_conf)
        if slurm.slurm_user is not None:
            entry = _lookup(slurm.slurm_user.value)
            if entry is not None:
                return _account(entry, f"SlurmUser in {cfg.slurm_conf}:"
                                f"{slurm.slurm_user.line}, which the unit must run as")
    try:
        owner = os.stat(cfg.spool_dir).st_uid
        return _account(pwd.getpwuid(owner), f"the owner of SpoolDir {cfg.spool_dir}")
    except (OSError, KeyError):
        pass
    entry = _lookup(DEFAULT_UNIT_USER)
    if entry is not None:
        return _account(entry, f"the User= {UNIT} has by default")
    return _account(pwd.getpwuid(0), f"no {UNIT}, SlurmConf, SpoolDir or "
                    f"{DEFAULT_UNIT_USER} account says otherwise")


# --------------------------------------------------------------------------- probing


def _probe(requests: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Look at each path as the current user. Pure os calls: it runs after the privilege
    drop, where importing a module could fail (the interpreter's files may be root's)."""
    results: list[dict[str, Any]] = []
    for kind, path in requests:
        r: dict[str, Any] = {"path": path}
        if kind == "read":
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                os.close(fd)
                r["error"] = None
            except OSError as e:
                r["error"] = e.strerror
                r["errno"] = e.errno
        elif kind == "list":
            try:
                names = os.listdir(path)
                r["names"] = sorted(names)[:11]
                r["count"] = len(names)
                r["error"] = None
            except OSError as e:
                r["error"] = e.strerror
                r["errno"] = e.errno
        else:  # "stat": what the path is and what this user may do with it
            try:
                st = os.stat(path)
            except OSError as e:
                r["error"] = e.strerror
                r["errno"] = e.errno
            else:
                r["error"] = None
                r["mode"] = st.st_mode
                r["uid"] = st.st_uid
                r["gid"] = st.st_gid
                r["dev"] = st.st_dev
                r["r"] = os.access(path, os.R_OK)
                r["w"] = os.access(path, os.W_OK)
                r["x"] = os.access(path, os.X_OK)
                try:
                    r["rofs"] = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
                except OSError:
                    r["rofs"] = False
            # The nearest folder above that exists, and whether this user could create in it.
            parent = os.path.dirname(path.rstrip("/")) or "/"
            while parent != "/" and not os.path.isdir(parent):
                parent = os.path.dirname(parent) or "/"
            r["parent"] = parent
            r["parent_w"] = os.access(parent, os.W_OK | os.X_OK)
        results.append(r)
    return results


def probe_as(account: Account, requests: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """``_probe`` as ``account``: in this process when it is us, else in a forked child that
    drops to the account's uid, gid and groups first."""
    if account.uid == os.geteuid():
        return _probe(requests)
    try:
        groups = os.getgrouplist(account.name, account.gid)
    except (OSError, KeyError):
        groups = [account.gid]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, look, report, never return
        status = 0
        try:
            os.close(read_fd)
            os.setgroups(groups)
            os.setgid(account.gid)
            os.setuid(account.uid)
            out = json.dumps({"results": _probe(requests)})
        except BaseException as e:
            out = json.dumps({"error": f"{type(e).__name__}: {e}"})
            status = 1
        try:
            data = out.encode()
            while data:
                data = data[os.write(write_fd, data):]
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    os.waitpid(pid, 0)
    try:
        doc = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        doc = {}
    if "results" not in doc:
        raise PreflightError(f"cannot test as {account.name}: "
                             f"{doc.get('error', 'the test process died')}", os.EX_SOFTWARE)
    return doc["results"]


# --------------------------------------------------------------------------- the checks


def _mode(r: dict[str, Any]) -> str:
    return stat.filemode(r["mode"])


def _owner_of(r: dict[str, Any]) -> str:
    try:
        user = pwd.getpwuid(r["uid"]).pw_name
    except KeyError:
        user = str(r["uid"])
    try:
        group = grp.getgrgid(r["gid"]).gr_name
    except KeyError:
        group = str(r["gid"])
    return f"{user}:{group}"


def _readable_fix(account: Account, path: str, r: dict[str, Any] | None) -> str:
    """How to let the account read a file without showing it to everyone (it may hold a
    password): its group becomes the account's, group-readable."""
    if r is not None and r.get("error") is None and r["uid"] == account.uid:
        return f"chmod u+r {path}"
    return f"chgrp {account.group} {path} && chmod g+r {path}"


def _blocked_folder(account: Account, path: str, results: dict[str, dict[str, Any]]
                    ) -> str | None:
    """The first folder above ``path`` the account cannot enter, from the probed ancestors."""
    for parent in reversed(Path(path).parents):
        r = results.get(str(parent))
        if r is not None and r.get("error") is None and not r["x"]:
            return str(parent)
    return None


def _enter_fix(account: Account, folder: str) -> str:
    """Let the account through a folder it cannot enter, without opening it to everyone."""
    return f"chgrp {account.group} {folder} && chmod g+x {folder}"


def _ancestors(paths: list[Path]) -> list[str]:
    seen: list[str] = []
    for p in paths:
        for parent in reversed(p.parents):
            if str(parent) not in seen:
                seen.append(str(parent))
    return seen


def _create_fix(account: Account, paths: list[Path], default: bool) -> str:
    command = (f"install -d -o {account.name} -g {account.group} -m 0750 "
               + " ".join(str(p) for p in paths))
    if default and TMPFILES.exists():
        return f"systemd-tmpfiles --create {TMPFILES}   (or: {command})"
    return command


def _sandbox_fix(path: Path) -> str:
    return (f"systemctl edit jobcompd, and add under [Service]: ReadWritePaths={path}")


def check(cfg: configmod.Config, account: Account, unit: UnitInfo | None) -> Report:
    """Everything ``run`` needs from the file system, as ``account``, in ``run``'s order."""
    report = Report(account, unit)
    files, requests = _probes(cfg)
    raw = probe_as(account, requests)
    reads = {r["path"]: r for r, (kind, _) in zip(raw, requests, strict=True) if kind == "read"}
    stats = {r["path"]: r for r, (kind, _) in zip(raw, requests, strict=True) if kind == "stat"}
    # 1. The configuration files (run: exit 78 when one cannot be read).
    _check_files(report, files, reads, stats)
    # 2. StateSaveLocation (run: exit 73 when the lock cannot be made there).
    _check_state(report, cfg, stats, unit)
    # 3. SpoolDir/seg/ (run: exit 78 while it holds segment files).
    _check_seg(report, cfg, raw[-1], stats)
    # 4. SpoolDir and tmp/ new/ failed/ (run: exit 73 when it cannot make them).
    _check_spool(report, cfg, stats, unit)
    # 5. What run survives without, but should be fixed.
    _check_others(report, cfg, stats, unit)
    # 6. A spool shared by a controller pair: its locks and its owners (run: exit 78).
    _check_shared(report, cfg)
    return report


def _check_shared(report: Report, cfg: configmod.Config) -> None:
    """A spool on a network file system, or Standby=yes: the lock must be seen by the other
    host, and NFS v4 must map the spool's owners (else the owner check refuses every record)."""
    from jobcompd.service import mounts

    mount = mounts.mount_of(cfg.spool_dir)
    if mount is None or not mount.network:
        if cfg.standby:
            where = f"{mount.fstype} on {mount.point}" if mount else "an unknown file system"
            report.add(WARN, "Standby", f"SpoolDir {cfg.spool_dir} is on {where}, not a "
                       "shared file system: only daemons of this host can take turns on it",
                       "put SpoolDir on the file system both controllers mount (NFS v4, "
                       "GPFS, Lustre -o flock)")
        return
    problem = mounts.local_lock_problem(mount)
    if problem is not None:
        report.add(FAIL if cfg.standby else WARN, "SpoolDir",
                   f"{problem}; a standby on the other controller would not see the lock",
                   "remount as said, or keep Standby=no with a spool of each controller's own",
                   os.EX_CONFIG)
    idmap = mounts.idmap_problem(cfg.spool_dir, cfg.spool_dir / "new")
    if idmap is not None:
        report.add(WARN, "SpoolDir", f"{idmap}: every such record would go to failed/ "
                   "(owner)", "fix the id mapping, then jobcompd failed retry --reason owner")
    elif problem is None:
        report.add(OK, "SpoolDir", f"{mount.fstype} on {mount.point}: locks are seen by other "
                   "hosts, owners are mapped")


def _probes(cfg: configmod.Config) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """The configuration files (subject, path), and what the test process is asked to try
    as the user: read those files, stat them and every folder on the way, list seg/ (last)."""
    spool, state = cfg.spool_dir, cfg.state_dir
    subdirs = [spool / "tmp", spool / "new", spool / "failed"]
    files: list[tuple[str, Path]] = [("config file", cfg.path)]
    if cfg.slurm_conf is not None:
        files.append(("SlurmConf", cfg.slurm_conf))
    files.append(("JobCompLoc", cfg.job_comp_loc))
    lock = state / "jobcompd.lock"
    state_file = state / "jobcompd_state"
    folders = [state, spool, *subdirs]
    extra: list[Path] = []
    if cfg.metrics_textfile is not None:
        extra.append(cfg.metrics_textfile.parent)
    requests: list[tuple[str, str]] = [("read", str(p)) for _, p in files]
    requests += [("stat", a) for a in _ancestors([p for _, p in files] + folders + extra)]
    requests += [("stat", str(p)) for p in ([p for _, p in files] + folders
                                            + [lock, state_file, *extra])]
    requests = list(dict.fromkeys(requests))  # each once, in order
    requests.append(("list", str(spool / "seg")))
    return files, requests


def _check_files(report: Report, files: list[tuple[str, Path]],
                 reads: dict[str, dict[str, Any]], stats: dict[str, dict[str, Any]]) -> None:
    account, who = report.account, report.account.name
    for subject, path in files:
        r = reads[str(path)]
        if r["error"] is None:
            report.add(OK, subject, f"{path}: readable")
            continue
        blocked = _blocked_folder(account, str(path), stats)
        if blocked is not None:
            fix = _enter_fix(account, blocked)
            detail = f"{path}: {who} cannot enter the folder {blocked}"
        else:
            fix = _readable_fix(account, str(path), stats.get(str(path)))
            detail = f"{path}: {who} cannot read it: {r['error']}"
        report.add(FAIL, subject, detail, fix, os.EX_CONFIG)


def _check_seg(report: Report, cfg: configmod.Config, seg: dict[str, Any],
               stats: dict[str, dict[str, Any]]) -> None:
    account, who, spool = report.account, report.account.name, cfg.spool_dir
    if seg["error"] is None and seg["count"]:
        shown = ", ".join(seg["names"][:10]) + (" ..." if seg["count"] > 10 else "")
        report.add(FAIL, "SpoolDir/seg", f"{spool / 'seg'} holds {seg['count']} segment "
                   f"file(s) ({shown}), which this version no longer reads",
                   f"let the jobcompd version that wrote them deliver them (start it until "
                   f"{spool / 'seg'} is empty), then rm -r {spool / 'seg'}", os.EX_CONFIG)
    elif seg["error"] is not None and seg.get("errno") not in (2, 20) and (  # ENOENT, ENOTDIR
            stats[str(spool)].get("x")):  # else the SpoolDir finding below says it all
        report.add(FAIL, "SpoolDir/seg", f"{spool / 'seg'}: {who} cannot list it: "
                   f"{seg['error']}", f"rm -r {spool / 'seg'} if it is empty, or chown "
                   f"{account.owner} {spool / 'seg'}", os.EX_CONFIG)


def _check_others(report: Report, cfg: configmod.Config, stats: dict[str, dict[str, Any]],
                  unit: UnitInfo | None) -> None:
    account, who = report.account, report.account.name
    if cfg.http_listen is not None and cfg.http_listen[1] < 1024 and account.uid != 0:
        report.add(FAIL, "HttpListen", f"port {cfg.http_listen[1]}: {who} cannot listen on a "
                   "port below 1024", "choose a port above 1023 (the default jobcomp/"
                   "elasticsearch JobCompLoc port is 9200)", os.EX_UNAVAILABLE)
    if cfg.metrics_listen is not None and cfg.metrics_listen[1] < 1024 and account.uid != 0:
        report.add(WARN, "MetricsListen", f"port {cfg.metrics_listen[1]}: {who} cannot "
                   "listen on a port below 1024; the daemon runs without metrics",
                   "choose a port above 1023, e.g. 9817")
    if cfg.metrics_textfile is not None:
        folder = cfg.metrics_textfile.parent
        r = stats[str(folder)]
        if r["error"] is not None or not (r["w"] and r["x"]):
            report.add(WARN, "MetricsTextfile", f"{folder}: {who} cannot write there "
                       f"({r['error'] or _mode(r) + ' ' + _owner_of(r)}); the textfile is "
                       "not written", f"chgrp {account.group} {folder} && chmod g+wx {folder}")
        elif unit is not None and not unit.writable(folder):
            report.add(WARN, "MetricsTextfile", f"{folder}: read-only inside {UNIT}",
                       _sandbox_fix(folder))
    if cfg.slurm_conf is not None:
        slurm = configmod.read_slurm_conf(cfg.slurm_conf)
        hook_user = slurm.slurm_user.value if slurm.slurm_user else "root"
        entry = _lookup(hook_user)
        if entry is not None and entry.pw_uid != account.uid:
            report.add(WARN, "SlurmUser", f"the hook writes the spool as SlurmUser {hook_user} "
                       f"({cfg.slurm_conf}), the daemon runs as {who}: they must be the same "
                       "user", f"systemctl edit jobcompd: [Service] User={hook_user}")


def _check_state(report: Report, cfg: configmod.Config, stats: dict[str, dict[str, Any]],
                 unit: UnitInfo | None) -> None:
    account, who, state = report.account, report.account.name, cfg.state_dir
    r = stats[str(state)]
    if r["error"] is not None:
        _state_unreachable(report, cfg, stats, unit)
        return
    if not stat.S_ISDIR(r["mode"]):
        report.add(FAIL, "StateSaveLocation", f"{state}: is not a folder",
                   f"move it away, then {_create_fix(account, [state], default=False)}",
                   os.EX_CANTCREAT)
        return
    if r["rofs"]:
        report.add(FAIL, "StateSaveLocation", f"{state}: on a read-only file system",
                   "choose a StateSaveLocation on a writable file system", os.EX_CANTCREAT)
        return
    if not (r["w"] and r["x"]):
        report.add(FAIL, "StateSaveLocation", f"{state}: {who} cannot write there "
                   f"({_mode(r)} {_owner_of(r)})", f"chown {account.owner} {state}",
                   os.EX_CANTCREAT)
        return
    lock = stats[str(state / "jobcompd.lock")]
    if lock["error"] is None and not (lock["r"] and lock["w"]):
        report.add(FAIL, "StateSaveLocation", f"{state / 'jobcompd.lock'}: {who} cannot open "
                   f"the instance lock ({_mode(lock)} {_owner_of(lock)}; left by a run as "
                   "another user?)", f"chown {account.owner} {state}/jobcompd.*",
                   os.EX_CANTCREAT)
        return
    hidden = unit.hidden(state) if unit is not None else None
    if hidden:
        report.add(FAIL, "StateSaveLocation", f"{state}: the daemon would not see it inside "
                   f"{UNIT}: {hidden}", "choose a StateSaveLocation under /var/lib",
                   os.EX_CANTCREAT)
        return
    if unit is not None and not unit.writable(state):
        report.add(FAIL, "StateSaveLocation", f"{state}: read-only inside {UNIT} "
                   "(ProtectSystem=strict, not in ReadWritePaths= or StateDirectory=)",
                   _sandbox_fix(state), os.EX_CANTCREAT)
        return
    saved = stats[str(state / "jobcompd_state")]
    if saved["error"] is None and not saved["r"]:
        report.add(WARN, "StateSaveLocation", f"{state / 'jobcompd_state'}: {who} cannot read "
                   "the state file; the daemon moves it aside and starts without it",
                   f"chown {account.owner} {state / 'jobcompd_state'}")
        return
    report.add(OK, "StateSaveLocation", f"{state}: writable")


def _state_unreachable(report: Report, cfg: configmod.Config,
                       stats: dict[str, dict[str, Any]], unit: UnitInfo | None) -> None:
    """StateSaveLocation cannot be looked at: missing (made by systemd or not), or behind a
    folder the user cannot enter."""
    account, who, state = report.account, report.account.name, cfg.state_dir
    r = stats[str(state)]
    made_by_systemd = (unit is not None and any(_under(state, d)
                                                 for d in unit.state_directories)) or (
        unit is None and state == configmod.DEFAULT_STATE_DIR)
    if r.get("errno") == 2 and made_by_systemd:
        report.add(WARN, "StateSaveLocation", f"{state}: does not exist yet; {UNIT} "
                   "creates it at start (StateDirectory=jobcompd), a 'jobcompd run' by "
                   "hand does not", _create_fix(account, [state], default=True))
        return
    if r.get("errno") == 2:
        fix = _create_fix(account, [state], default=False)
        if unit is None or not unit.writable(state):
            fix += f"; under systemd also: {_sandbox_fix(state)}"
        report.add(FAIL, "StateSaveLocation", f"{state}: does not exist (jobcompd keeps "
                   "its lock and state file there and does not create it)", fix,
                   os.EX_CANTCREAT)
        return
    blocked = _blocked_folder(account, str(state), stats)
    fix = _enter_fix(account, blocked) if blocked else f"chown {account.owner} {state}"
    report.add(FAIL, "StateSaveLocation", f"{state}: {who} cannot reach it: {r['error']}",
               fix, os.EX_CANTCREAT)


def _check_spool(report: Report, cfg: configmod.Config, stats: dict[str, dict[str, Any]],
                 unit: UnitInfo | None) -> None:
    account, who, spool = report.account, report.account.name, cfg.spool_dir
    default = spool == configmod.DEFAULT_SPOOL_DIR
    subdirs = [spool / "tmp", spool / "new", spool / "failed"]
    root = stats[str(spool)]
    missing = [p for p in (spool, *subdirs) if stats[str(p)].get("errno") == 2]
    if missing:
        fix = _create_fix(account, missing, default)
        if unit is not None and not unit.writable(spool):
            fix += f"; and {_sandbox_fix(spool)}"
        names = ", ".join(str(p) for p in missing)
        report.add(FAIL, "SpoolDir", f"missing: {names} (the hook needs tmp/ and new/ to "
                   "record a job; run creates them only where it may write)", fix,
                   os.EX_CANTCREAT)
        return
    if root["error"] is not None:
        blocked = _blocked_folder(account, str(spool), stats)
        fix = _enter_fix(account, blocked) if blocked else f"chown {account.owner} {spool}"
        report.add(FAIL, "SpoolDir", f"{spool}: {who} cannot reach it: {root['error']}", fix,
                   os.EX_CANTCREAT)
        return
    bad, chown = _spool_folder_problems(who, spool, subdirs, stats)
    if bad:
        fix = "choose a SpoolDir on a writable local file system"
        if chown:
            fix = f"chown {account.owner} {' '.join(chown)}"
            if not all(_owner_has_rwx(p) for p in chown):
                fix += f" && chmod u+rwx {' '.join(chown)}"
        if chown and default and TMPFILES.exists():
            fix = f"systemd-tmpfiles --create {TMPFILES}   (or: {fix})"
        report.add(FAIL, "SpoolDir", "; ".join(bad), fix, os.EX_CANTCREAT)
        return
    hidden = unit.hidden(spool) if unit is not None else None
    if hidden:
        report.add(FAIL, "SpoolDir", f"{spool}: the daemon would not see it inside {UNIT}: "
                   f"{hidden}, and the hook writes the real one",
                   "choose a SpoolDir under /var/spool", os.EX_CANTCREAT)
        return
    if unit is not None and not unit.writable(spool):
        report.add(FAIL, "SpoolDir", f"{spool}: read-only inside {UNIT} (ProtectSystem="
                   "strict, not in ReadWritePaths=)", _sandbox_fix(spool), os.EX_CANTCREAT)
        return
    for path in (spool, *subdirs):
        if stats[str(path)]["mode"] & stat.S_IWOTH:
            report.add(WARN, "SpoolDir", f"{path}: world-writable "
                       f"({_mode(stats[str(path)])}): anyone can plant or remove records",
                       f"chmod o-w {path}")
    devices = {stats[str(p)]["dev"] for p in subdirs}
    if len(devices) > 1:
        report.add(WARN, "SpoolDir", "tmp/, new/ and failed/ are on different file systems: "
                   "renames between them are not atomic",
                   "keep the three folders on one file system")
    report.add(OK, "SpoolDir", f"{spool}: tmp/ new/ failed/ writable")


def _spool_folder_problems(who: str, spool: Path, subdirs: list[Path],
                           stats: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """What is wrong with SpoolDir and its three folders, and which of them a chown fixes."""
    bad: list[str] = []
    chown: list[str] = []
    for path in (spool, *subdirs):
        r = stats[str(path)]
        if r["error"] is not None:
            bad.append(f"{path}: {who} cannot reach it: {r['error']}")
            if r.get("errno") == 13:  # EACCES: behind the folder above, fixed with it
                chown.append(str(path))
            continue
        if not stat.S_ISDIR(r["mode"]):
            bad.append(f"{path}: not a folder")
            continue
        need_w = path != spool
        if r["rofs"] and need_w:
            bad.append(f"{path}: on a read-only file system")
            continue
        if not (r["r"] and r["x"] and (r["w"] or not need_w)):
            bad.append(f"{path}: {who} cannot {'read and write' if need_w else 'read'} it "
                       f"({_mode(r)} {_owner_of(r)})")
            chown.append(str(path))
    return bad, chown


def _owner_has_rwx(path: str) -> bool:
    """Whether the owner's bits allow all (looked at by this process, not the user tested:
    it says whether a chown alone is enough)."""
    try:
        return os.stat(path).st_mode & stat.S_IRWXU == stat.S_IRWXU
    except OSError:
        return False


def render(report: Report) -> list[str]:
    """The report as aligned lines: level, subject, detail; a fix under its problem."""
    account = report.account
    lines = [f"what 'jobcompd run' needs, tested as user {account.name} (uid {account.uid}, "
             f"gid {account.gid}; {account.why}):"]
    if not report.findings:
        return lines
    level_w = max(len(f.level) for f in report.findings)
    subject_w = max(len(f.subject) for f in report.findings)
    for f in report.findings:
        lines.append(f"  {f.level:<{level_w}}  {f.subject:<{subject_w}}  {f.detail}")
        if f.fix:
            lines.append(f"  {'':<{level_w}}  {'':<{subject_w}}  fix: {f.fix}")
    return lines
