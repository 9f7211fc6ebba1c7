"""Operator commands: ``jobcompd status`` and ``jobcompd failed list|show|retry``.

``status`` prints the daemon's status file (status.py) and tells whether the daemon runs, with
systemctl's (LSB's) exit codes: 0 running, 3 not running (or never ran), 4 unknown.
``failed`` works on the dead letters in ``SpoolDir/failed/``: lists them with their reasons,
shows one whole, and moves chosen ones back into ``new/``, where the running daemon picks them
up (Spool's ``failed_entries()``/``retry_failed()`` do the file work). Other exit codes follow
sysexits(3).
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import os
import stat
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from jobcompd import config as configmod
from jobcompd import spool as spoolmod
from jobcompd import status as statusmod

EX_OK = 0
EX_NOT_RUNNING = 3  # systemctl status / LSB: program is not running
EX_STATUS_UNKNOWN = 4  # LSB: program status is unknown
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_IOERR = 74
EX_NOPERM = 77
EX_CONFIG = 78

#: The reasons jobcompd dead-letters a record for (besides ``kafka:<ERROR>``, the broker's
#: refusal, and ``unknown``, a reason file that cannot be read).
REASONS = ("malformed", "bad_name", "symlink", "not_regular", "hardlink", "owner",
           "too_large", "unreadable", "timeout")

#: How much of a dead letter ``failed show`` prints.
SHOW_MAX_BYTES = 64 * 1024
#: A status file older than this many update intervals is called stale.
STALE_INTERVALS = 3


def register(subparsers: Any) -> None:
    """Add ``status`` and ``failed`` to jobcompd's command line."""
    from jobcompd.cli import HelpFormatter, _add_config_arg, exit_status

    common = [(EX_NOINPUT, "SpoolDir/failed/ is missing (is SpoolDir right?)"),
              (EX_IOERR, "reading or moving failed"),
              (EX_NOPERM, "no permission: run as root or as the daemon's user (SlurmUser)"),
              (EX_CONFIG, "bad configuration (give --spool-dir DIR to work without it)")]

    p = subparsers.add_parser(
        "status", help="show the daemon's state (backlog, in flight, counters, last error)",
        description="Print the status file the daemon keeps in StateSaveLocation, and whether "
        "the daemon runs. Exit status: 0 running, 3 not running or never ran, 4 cannot tell "
        "(no access to /proc/locks nor to the process), 65 unreadable status file, 77 no "
        "permission, 78 bad configuration.")
    _add_config_arg(p)
    p.add_argument("--json", action="store_true", help="print the status document as JSON, "
                   "with the fields 'running' and 'running_pid' added")
    p.add_argument("--state-dir", metavar="DIR", help="read DIR instead of the configured "
                   "StateSaveLocation (works with a broken configuration file)")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser(
        "failed", help="list, show and retry dead letters (SpoolDir/failed/)",
        description="Records jobcompd could not send sit in SpoolDir/failed/, each with a "
        "<name>.reason file that says why. List them, show one, and move chosen ones back "
        "into new/ once the cause is fixed.")
    actions = p.add_subparsers(dest="failed_action", metavar="ACTION", required=True)

    a = actions.add_parser("list", help="one line per dead letter: job, reason, time, message",
                           description="List the dead letters, oldest first.",
                           formatter_class=HelpFormatter, epilog=exit_status(
                               (EX_OK, "listed (also when there are none)"),
                               (EX_USAGE, "--reason names no reason jobcompd gives"),
                               *common))
    _add_failed_common(a, _add_config_arg)
    a.add_argument("--reason", metavar="REASON", help="only those with this reason "
                   "(malformed, too_large, timeout, kafka:..., ...)")
    a.add_argument("--json", action="store_true", help="one JSON array of objects")
    a.set_defaults(func=cmd_failed_list)

    a = actions.add_parser("show", help="print dead letters whole: reason and record",
                           description="Print each named dead letter: its reason file, the "
                           "record in readable form, and what jobcompd would send for it now "
                           "(or why it cannot).",
                           formatter_class=HelpFormatter, epilog=exit_status(
                               (EX_OK, "shown"),
                               (EX_USAGE, "a path outside SpoolDir/failed/"),
                               (EX_NOINPUT, "no such dead letter, or SpoolDir/failed/ missing"),
                               *common[1:]))
    _add_failed_common(a, _add_config_arg)
    a.add_argument("names", nargs="+", metavar="NAME", help="dead letter file name (as "
                   "listed), or its path in failed/")
    a.set_defaults(func=cmd_failed_show)

    a = actions.add_parser("retry", help="move dead letters back into new/ to be sent again",
                           description="Move the chosen dead letters back into new/ under "
                           "their own names (so they keep their place in time order) and "
                           "remove their reason files; the daemon sends them again. Fix the "
                           "cause first, or they come back.",
                           formatter_class=HelpFormatter, epilog=exit_status(
                               (EX_OK, "moved (also when none matched a known --reason)"),
                               (EX_USAGE, "not exactly one of NAME..., --all, --reason; a "
                                "--reason jobcompd never gives; a path outside failed/"),
                               (EX_NOINPUT, "no such dead letter, or new/ already holds its "
                                "name (the others are still moved)"),
                               *common[1:]))
    _add_failed_common(a, _add_config_arg)
    a.add_argument("names", nargs="*", metavar="NAME", help="dead letter file names, or paths")
    a.add_argument("--all", action="store_true", help="every dead letter")
    a.add_argument("--reason", metavar="REASON", help="every dead letter with this reason")
    a.add_argument("-n", "--dry-run", action="store_true",
                   help="print what would be moved, move nothing")
    a.set_defaults(func=cmd_failed_retry)


def _add_failed_common(p: argparse.ArgumentParser, add_config_arg: Any) -> None:
    add_config_arg(p)
    p.add_argument("--spool-dir", metavar="DIR", help="use DIR instead of the configured "
                   "SpoolDir (works with a broken configuration file)")


def _err(message: str) -> None:
    print(f"jobcompd: {message}", file=sys.stderr)


def _load_config(args: argparse.Namespace) -> configmod.Config:
    return configmod.load(configmod.config_path(args.config))


# --------------------------------------------------------------------------- formatting


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    """1d 2h 3m, 4m 5s, 2.5s: precise when short, coarse when long."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s}s"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    if args.state_dir:
        state_dir = Path(args.state_dir)
    else:
        try:
            state_dir = _load_config(args).state_dir
        except configmod.ConfigError as e:
            _err(f"{e}\n(give --state-dir DIR to read the status without the configuration)")
            return EX_CONFIG
    try:
        doc = statusmod.read_status(state_dir)
    except statusmod.StatusMissing as e:
        _err(str(e))
        return EX_NOT_RUNNING
    except statusmod.StatusError as e:
        _err(str(e))
        return EX_NOPERM if "permission denied" in str(e) else EX_DATAERR
    alive = statusmod.liveness(state_dir, doc["pid"])
    running = alive.running is True and doc.get("state") != "stopped"
    if args.json:
        out = dict(doc, running=alive.running, running_pid=alive.pid)
        print(json.dumps(out, indent=1, ensure_ascii=False))
    else:
        print_status(doc, alive, sys.stdout)
    if alive.running is None:
        return EX_STATUS_UNKNOWN
    return EX_OK if running else EX_NOT_RUNNING


def print_status(doc: dict[str, Any], alive: statusmod.Liveness, out: TextIO,
                 now: float | None = None) -> None:
    """The human view of a status document."""
    now = time.time() if now is None else now
    pid = doc["pid"]
    written = doc.get("written_at")
    age = now - written if isinstance(written, (int, float)) else None
    interval = doc.get("update_interval_s") or statusmod.UPDATE_INTERVAL_S
    w = out.write
    if alive.running and alive.pid == pid:
        uptime = now - doc["started_at"] if doc.get("started_at") else None
        w(f"jobcompd is {doc.get('state', 'running')} (pid {pid}, up {_duration(uptime)}, "
          f"since {_when(doc.get('started_at'))})\n")
        if age is not None and age > STALE_INTERVALS * interval:
            w(f"warning: the status was last written {_duration(age)} ago (every "
              f"{interval:g}s expected): the daemon's main loop may be stuck\n")
    elif alive.running:
        w(f"jobcompd runs (pid {alive.pid}), but this status was written by pid {pid}: it "
          "has not written its own yet; shown below is the previous run's\n")
    elif alive.running is None:
        w(f"jobcompd may be running (pid {pid}); cannot tell: {alive.how}\n")
    elif doc.get("state") == "stopped":
        w(f"jobcompd is not running: pid {pid} stopped cleanly at {_when(written)} "
          f"({_duration(age)} ago)\n")
    else:
        w(f"jobcompd is not running: the status file is stale; pid {pid} last wrote it at "
          f"{_when(written)} ({_duration(age)} ago) and did not stop cleanly (killed or "
          "crashed); see journalctl -u jobcompd\n")
    backlog = f"{doc.get('backlog', 0)}{'+' if doc.get('backlog_truncated') else ''}"
    oldest_at = doc.get("oldest_pending_at")
    oldest = (f"{_duration(max(0.0, now - oldest_at))} ago ({_when(oldest_at)})"
              if isinstance(oldest_at, (int, float)) else "none")
    counters = doc.get("counters") or {}
    dead = {k.split(":", 1)[1]: v for k, v in counters.items()
            if k.startswith("dead_lettered:") and v}
    dead_total = sum(dead.values())
    rows = [
        ("backlog", f"{backlog} records waiting in new/"),
        ("in flight", str(doc.get("in_flight", 0))),
        ("oldest pending", oldest),
        ("broker", str(doc.get("broker", "unknown"))),
        ("delivered", str(counters.get("delivered", 0))),
        ("retried", str(counters.get("retried", 0))),
        ("dead-lettered", str(dead_total) + (
            " (" + ", ".join(f"{k} {v}" for k, v in sorted(dead.items())) + ")" if dead else "")),
    ]
    if doc.get("dead_letters") is not None:
        rows.append(("in failed/", f"{doc['dead_letters']} (jobcompd failed list)"))
    if doc.get("unreadable"):
        rows.append(("unreadable", f"{doc['unreadable']} records in new/ jobcompd may not "
                                   "open: see the journal (record_unreadable) for the chown"))
    for key, configured in sorted((doc.get("restart_needed") or {}).items()):
        rows.append(("restart needed", f"{key} is {configured} in the file; the running "
                                       "value is below until a restart"))
    rows += [
        ("reloads", str(counters.get("reloads", 0))),
        ("producer rebuilds", str(counters.get("producer_rebuilds", 0))),
    ]
    error = doc.get("last_error")
    if isinstance(error, dict) and error.get("message"):
        at = error.get("at")
        rows.append(("last error", (f"{_when(at)}: " if at else "") + str(error["message"])))
    else:
        rows.append(("last error", "none"))
    rows.append(("status written", f"{_when(written)} ({_duration(age)} ago)"))
    for label, value in rows:
        w(f"  {label:<18} {value}\n")
    cfg = doc.get("config") or {}
    if cfg:
        w("configuration in force:\n")
        for key in ("path", "cluster_name", "job_comp_loc", "spool_dir", "state_dir",
                    "log_target", "log_format", "metrics_listen", "metrics_textfile",
                    "http_listen", "debug_flags", "spool_owners"):
            if key in cfg and cfg[key] not in (None, [], ""):
                w(f"  {key:<18} {_plain(cfg[key])}\n")
        params = cfg.get("params") or {}
        if params:
            text = ", ".join(f"{k}={_plain(v)}" for k, v in params.items())
            w(textwrap.fill(text, width=100, initial_indent="  JobCompParams      ",
                            subsequent_indent=" " * 21, break_on_hyphens=False) + "\n")
        for key, value in (cfg.get("kafka") or {}).items():
            w(f"  kafka              {key}={value}\n")


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# --------------------------------------------------------------------------- failed


def _open_spool(args: argparse.Namespace) -> tuple[spoolmod.Spool, configmod.Config | None]:
    """The spool named by --spool-dir, or the configured one (ConfigError propagates)."""
    if args.spool_dir:
        cfg = None
        root = Path(args.spool_dir)
    else:
        cfg = _load_config(args)
        root = cfg.spool_dir
    max_bytes = cfg.params.max_record_bytes if cfg else 16 * 1024 * 1024
    return spoolmod.Spool(root, max_record_bytes=max_bytes, allowed_uids=None), cfg


def _entries(sp: spoolmod.Spool) -> list[tuple[str, dict]]:
    return sp.failed_entries()


def _fail_os(e: OSError, what: str) -> int:
    if isinstance(e, PermissionError):
        _err(f"{what}: permission denied; run as root or as the daemon's user (SlurmUser)")
        return EX_NOPERM
    if isinstance(e, FileNotFoundError):
        _err(f"{what}: {e.strerror}: {e.filename}; is SpoolDir right?")
        return EX_NOINPUT
    _err(f"{what}: {e.strerror or e}")
    return EX_IOERR


def _describe(name: str, info: dict) -> dict[str, Any]:
    """One dead letter as a flat dict: its name's parts, then the reason file's fields."""
    try:
        parts = spoolmod.parse_name(name)
        job_id, event, fmt, written = parts.job_id, parts.event, parts.fmt, parts.ns / 1e9
    except spoolmod.RejectedFile:
        job_id = info.get("job_id")
        event = fmt = written = None
    row: dict[str, Any] = {
        "name": name, "job_id": job_id, "event": event, "format": fmt, "written_at": written,
        "reason": info.get("reason", "unknown"), "time": info.get("time"),
        "message": info.get("message", "(no reason file)"),
    }
    row.update((k, v) for k, v in info.items() if k not in row and k != "name")
    return row


def cmd_failed_list(args: argparse.Namespace) -> int:
    try:
        sp, _ = _open_spool(args)
        entries = _entries(sp)
    except configmod.ConfigError as e:
        _err(f"{e}\n(give --spool-dir DIR to work without the configuration)")
        return EX_CONFIG
    except OSError as e:
        return _fail_os(e, f"cannot list {args.spool_dir or 'SpoolDir'}/failed")
    rows = [_describe(n, i) for n, i in entries]
    if args.reason is not None:
        problem = _unknown_reason(args.reason, [r["reason"] for r in rows])
        if problem:
            _err(problem)
            return EX_USAGE
        rows = [r for r in rows if r["reason"] == args.reason]
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False, default=str))
        return EX_OK
    if not rows:
        which = f" with reason {args.reason}" if args.reason else ""
        print(f"no dead letters{which} in {sp.failed}")
        return EX_OK
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  {'JOB':>10}  {'EVENT':<5}  {'REASON':<18}  "
          f"{'DEAD-LETTERED':<25}  MESSAGE")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['job_id'] if r['job_id'] else '-':>10}  "
              f"{r['event'] or '-':<5}  {r['reason']:<18}  {r['time'] or '-':<25}  "
              f"{_shorten(_without_path(str(r['message']), r['name']), 100)}")
    by_reason = Counter(r["reason"] for r in rows)
    print(f"{len(rows)} dead letter{'s' if len(rows) != 1 else ''} in {sp.failed} ("
          + ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())) + ")")
    print("show one with 'jobcompd failed show NAME'; send them again, once the cause is "
          "fixed, with 'jobcompd failed retry NAME...|--reason REASON|--all'")
    return EX_OK


def _unknown_reason(reason: str, present: list[str]) -> str | None:
    """Why ``--reason REASON`` selects nothing by construction (a typo), or None when it is a
    reason jobcompd gives or one the dead letters in failed/ carry."""
    if reason in REASONS or reason in present or (
        reason.startswith("kafka:") and len(reason) > len("kafka:")
    ) or reason == "unknown":
        return None
    known = [*REASONS, "kafka:<ERROR>"]
    close = difflib.get_close_matches(reason, [*REASONS, *present], n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    here = Counter(present)
    now = (", ".join(f"{k} {v}" for k, v in sorted(here.items())) if here else "none")
    return (f"--reason {reason}: no such reason{hint} (reasons: {', '.join(known)}; "
            f"in failed/ now: {now}); 'jobcompd failed list' shows each letter's reason")


def _without_path(message: str, name: str) -> str:
    """Drop the leading "/var/spool/jobcompd/new/<name>: " of a reason's message: the list
    already shows the name, and the message's own words are what fits on the line."""
    prefix = f"/{name}: "
    at = message.find(prefix)
    if at >= 0 and " " not in message[:at]:
        return message[at + len(prefix):]
    return message


def _name_of(arg: str, sp: spoolmod.Spool) -> str:
    """A dead letter's name from what the operator typed: a name, a path into failed/, or
    the name of its reason file."""
    name = arg
    if "/" in arg:
        path = Path(arg)
        if path.parent.resolve() != sp.failed.resolve():
            raise spoolmod.SpoolError(f"{arg} is not in {sp.failed}")
        name = path.name
    if name.endswith(spoolmod.REASON_SUFFIX):
        stem = name[: -len(spoolmod.REASON_SUFFIX)]
        if os.path.lexists(sp.failed / stem) or not os.path.lexists(sp.failed / name):
            name = stem
    return name


def cmd_failed_show(args: argparse.Namespace) -> int:
    try:
        sp, cfg = _open_spool(args)
        entries = dict(_entries(sp))
    except configmod.ConfigError as e:
        _err(f"{e}\n(give --spool-dir DIR to work without the configuration)")
        return EX_CONFIG
    except OSError as e:
        return _fail_os(e, f"cannot list {args.spool_dir or 'SpoolDir'}/failed")
    status = EX_OK
    for i, arg in enumerate(args.names):
        if i:
            print()
        try:
            name = _name_of(arg, sp)
        except spoolmod.SpoolError as e:
            _err(str(e))
            status = status or EX_USAGE
            continue
        if name not in entries:
            _err(f"no dead letter {name!r} in {sp.failed}; 'jobcompd failed list' shows them")
            status = status or EX_NOINPUT
            continue
        show_dead_letter(sp, name, entries[name], cfg, sys.stdout)
    return status


def show_dead_letter(sp: spoolmod.Spool, name: str, info: dict,
                     cfg: configmod.Config | None, out: TextIO) -> None:
    """Print one dead letter: reason fields, the record readably, what would be sent now."""
    w = out.write
    row = _describe(name, info)
    w(f"dead letter   {sp.failed / name}\n")
    for key in ("reason", "time", "message", "job_id", "event", "format"):
        if row.get(key) is not None:
            w(f"{key:<13} {row[key]}\n")
    if row.get("written_at"):
        w(f"{'written':<13} {_when(row['written_at'])} (by the hook, from the file name)\n")
    for key, value in row.items():
        if key not in ("name", "reason", "time", "message", "job_id", "event", "format",
                       "written_at"):
            w(f"{key:<13} {value}\n")
    data, what = _read_dead_letter(sp.failed / name)
    if data is None:
        w(f"record        {what}\n")
        return
    w(f"record        {what}\n")
    w(_readable(data[:SHOW_MAX_BYTES], row["format"]))
    if len(data) > SHOW_MAX_BYTES:
        w(f"  … ({len(data) - SHOW_MAX_BYTES} more bytes not shown)\n")
    if cfg is None or row["format"] is None:
        return
    from jobcompd import records

    try:
        rec = records.parse_record(data, row["format"], cluster=cfg.cluster_name,
                                  event_hint=row["event"])
    except records.RecordError as e:
        w(f"sent now as   cannot be sent: {e}\n")
        return
    topic = (cfg.params.topic_job_start if rec.event == records.EVENT_START
             else cfg.params.topic)
    w(f"sent now as   topic {topic}, key {cfg.cluster_name}:{rec.job_id}, "
      f"event {rec.event}:\n")
    w(_indent(json.dumps(json.loads(rec.value), indent=1, ensure_ascii=False)))


def _read_dead_letter(path: Path) -> tuple[bytes | None, str]:
    """The bytes of a dead letter, never following a link nor blocking on a FIFO; or None and
    what the entry is instead."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, "(missing: only the reason file is left; the record vanished)"
    if stat.S_ISLNK(st.st_mode):
        return None, f"(a symbolic link to {os.readlink(path)!r}; not followed)"
    if not stat.S_ISREG(st.st_mode):
        return None, f"(not a regular file: {stat.filemode(st.st_mode)})"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return None, f"(cannot open: {e.strerror})"
    try:
        data = os.read(fd, st.st_size + 1)
    except OSError as e:
        return None, f"(cannot read: {e.strerror})"
    finally:
        os.close(fd)
    return data, f"{len(data)} bytes, owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}:"


def _escape(raw: bytes) -> str:
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def _readable(data: bytes, fmt: str | None) -> str:
    """An env dump as one VAR=value per line; JSON pretty-printed; anything else escaped."""
    if fmt == "env" or (fmt is None and b"\0" in data):
        return "".join(f"  {_escape(item)}\n" for item in data.split(b"\0") if item)
    if fmt == "json":
        try:
            return _indent(json.dumps(json.loads(data), indent=1, ensure_ascii=False))
        except ValueError:
            pass
    return "".join(f"  {_escape(line)}\n" for line in data.split(b"\n"))


def cmd_failed_retry(args: argparse.Namespace) -> int:
    chosen = sum((bool(args.names), args.all, args.reason is not None))
    if chosen != 1:
        _err("failed retry: name the dead letters, or give --all or --reason REASON "
             "(exactly one of these)")
        return EX_USAGE
    try:
        sp, cfg = _open_spool(args)
        entries = _entries(sp)
    except configmod.ConfigError as e:
        _err(f"{e}\n(give --spool-dir DIR to work without the configuration)")
        return EX_CONFIG
    except OSError as e:
        return _fail_os(e, f"cannot list {args.spool_dir or 'SpoolDir'}/failed")
    if args.reason is not None:
        problem = _unknown_reason(args.reason, [info.get("reason", "unknown")
                                                for _, info in entries])
        if problem:
            _err(problem)
            return EX_USAGE
    status = EX_OK
    names: list[str] = []
    if args.names:
        for arg in args.names:
            try:
                names.append(_name_of(arg, sp))
            except spoolmod.SpoolError as e:
                _err(str(e))
                status = status or EX_USAGE
    else:
        for name, info in entries:
            if args.reason is not None and info.get("reason") != args.reason:
                continue
            if not os.path.lexists(sp.failed / name):
                print(f"skipped {name}: only its reason file is left (the record vanished "
                      f"before it was moved); remove {sp.failed / name}{spoolmod.REASON_SUFFIX}")
                continue
            names.append(name)
    moved = 0
    for name in names:
        if args.dry_run:
            if os.path.lexists(sp.failed / name):
                print(f"would move {name} back into new/")
                moved += 1
            else:
                _err(f"no dead letter {name!r} in {sp.failed}")
                status = status or EX_NOINPUT
            continue
        try:
            sp.retry_failed(name)
        except spoolmod.SpoolError as e:
            _err(str(e))
            status = status or EX_NOINPUT
            continue
        except OSError as e:
            status = status or _fail_os(e, f"cannot move {name} back into {sp.new}")
            continue
        print(f"moved {name} back into new/")
        moved += 1
    if not names and status == EX_OK:
        which = f" with reason {args.reason}" if args.reason else ""
        print(f"no dead letters{which} in {sp.failed}")
    if moved and not args.dry_run:
        print(f"{moved} record{'s' if moved != 1 else ''} moved back into {sp.new}; "
              + _who_sends(cfg))
    return status


def _who_sends(cfg: configmod.Config | None) -> str:
    if cfg is None:
        return "the daemon sends them when it sees them"
    alive = statusmod.liveness(cfg.state_dir, None)
    if alive.running:
        return f"the running daemon (pid {alive.pid}) sends them now"
    if alive.running is None:
        return "the daemon sends them when it sees them"
    return "jobcompd is not running: they are sent when it starts (systemctl start jobcompd)"
