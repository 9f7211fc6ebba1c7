"""Operator commands: ``jobcompd status`` and ``jobcompd failed list|show|retry``.

``status`` prints the daemon's status file (service/statusfile.py) and tells whether the
daemon runs, with systemctl's (LSB's) exit codes: 0 running, 3 not running (or never ran),
4 unknown.
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
from jobcompd import records
from jobcompd import spool as spoolmod
from jobcompd.service import statusfile as statusmod

#: ``status``'s codes besides 0, systemctl's (LSB's): the program is not running, or its
#: status is unknown.
EX_NOT_RUNNING = 3
EX_STATUS_UNKNOWN = 4


#: How much of a dead letter ``failed show`` prints.
SHOW_MAX_BYTES = 64 * 1024
#: A status file older than this many update intervals is called stale.
STALE_INTERVALS = 3


def _err(message: str) -> None:
    print(f"jobcompd: {message}", file=sys.stderr)


def _load_config(args: argparse.Namespace) -> configmod.Config:
    return configmod.load(configmod.config_path(args.config))


# --------------------------------------------------------------------------- formatting


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int) -> str:
    """4.0 KiB, 1.2 GiB: bytes as an operator reads them."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _spool_space(doc: dict[str, Any]) -> str | None:
    """The spool's free space, what new/ takes, and whether writers refuse records."""
    free, used = doc.get("spool_free_bytes"), doc.get("spool_bytes")
    threshold = doc.get("spool_min_free_bytes")
    if not isinstance(free, int) or not isinstance(threshold, int):
        return None
    text = f"{_size(free)} free" + (f", {_size(used)} in new/" if isinstance(used, int) else "")
    if threshold == 0:
        return text + "; no free-space threshold (SpoolMinFreeBytes=0)"
    if free < threshold:
        return (f"{text}; NEW RECORDS ARE REFUSED below {_size(threshold)} free "
                "(SpoolMinFreeBytes): bring the broker back or free space")
    return text + f"; new records refused below {_size(threshold)} free"


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
            return os.EX_CONFIG
    try:
        doc = statusmod.read_status(state_dir)
    except statusmod.StatusMissing as e:
        _err(str(e))
        return EX_NOT_RUNNING
    except statusmod.StatusError as e:
        _err(str(e))
        return os.EX_NOPERM if "permission denied" in str(e) else os.EX_DATAERR
    alive = statusmod.liveness(state_dir, doc["pid"])
    running = alive.running is True and doc.get("state") != "stopped"
    if args.json:
        out = dict(doc, running=alive.running, running_pid=alive.pid)
        print(json.dumps(out, indent=1, ensure_ascii=False))
    else:
        print_status(doc, alive, sys.stdout)
    if alive.running is None:
        return EX_STATUS_UNKNOWN
    return os.EX_OK if running else EX_NOT_RUNNING


def print_status(doc: dict[str, Any], alive: statusmod.Liveness, out: TextIO,
                 now: float | None = None) -> None:
    """The human view of a status document."""
    now = time.time() if now is None else now
    w = out.write
    w(_running_line(doc, alive, now))
    for label, value in _status_rows(doc, now):
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


def _age(doc: dict[str, Any], now: float) -> float | None:
    written = doc.get("written_at")
    return now - written if isinstance(written, (int, float)) else None


def _running_line(doc: dict[str, Any], alive: statusmod.Liveness, now: float) -> str:
    """Whether the daemon runs, and whether this status document is its own and fresh."""
    pid = doc["pid"]
    written = doc.get("written_at")
    age = _age(doc, now)
    interval = doc.get("update_interval_s") or statusmod.UPDATE_INTERVAL_S
    if alive.running and alive.pid == pid:
        uptime = now - doc["started_at"] if doc.get("started_at") else None
        line = (f"jobcompd is {doc.get('state', 'running')} (pid {pid}, up "
                f"{_duration(uptime)}, since {_when(doc.get('started_at'))})\n")
        if age is not None and age > STALE_INTERVALS * interval:
            line += (f"warning: the status was last written {_duration(age)} ago (every "
                     f"{interval:g}s expected): the daemon's main loop may be stuck\n")
        return line
    if alive.running:
        return (f"jobcompd runs (pid {alive.pid}), but this status was written by pid {pid}: "
                "it has not written its own yet; shown below is the previous run's\n")
    if alive.running is None:
        return f"jobcompd may be running (pid {pid}); cannot tell: {alive.how}\n"
    if doc.get("state") == "stopped":
        return (f"jobcompd is not running: pid {pid} stopped cleanly at {_when(written)} "
                f"({_duration(age)} ago)\n")
    return (f"jobcompd is not running: the status file is stale; pid {pid} last wrote it at "
            f"{_when(written)} ({_duration(age)} ago) and did not stop cleanly (killed or "
            "crashed); see journalctl -u jobcompd\n")


def _status_rows(doc: dict[str, Any], now: float) -> list[tuple[str, str]]:
    """The label and value of each line about the work: backlog, counters, last error."""
    backlog = f"{doc.get('backlog', 0)}{'+' if doc.get('backlog_truncated') else ''}"
    oldest_at = doc.get("oldest_pending_at")
    oldest = (f"{_duration(max(0.0, now - oldest_at))} ago ({_when(oldest_at)})"
              if isinstance(oldest_at, (int, float)) else "none")
    counters = doc.get("counters") or {}
    dead = {k.split(":", 1)[1]: v for k, v in counters.items()
            if k.startswith("dead_lettered:") and v}
    dead_total = sum(dead.values())
    rows = _role_rows(doc)
    if doc.get("state") == "standby":
        written = f"{_when(doc.get('written_at'))} ({_duration(_age(doc, now))} ago)"
        return [*rows, ("status written", written)]
    rows += [
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
    space = _spool_space(doc)
    if space is not None:
        rows.append(("spool space", space))
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
    rows.append(("status written", f"{_when(doc.get('written_at'))} "
                                   f"({_duration(_age(doc, now))} ago)"))
    return rows


def _role_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Which daemon drains the spool: this one, or the holder of the lock it waits for."""
    role, holder = doc.get("role"), doc.get("lock_holder")
    if role == "standby":
        return [("role", f"standby: waiting {_duration(doc.get('standby_waited_s'))} for the "
                         f"spool lock, held by {holder} (the active jobcompd)")]
    if role == "active":
        waited = doc.get("standby_waited_s") or 0
        took = f", took over after {_duration(waited)} as standby" if waited else ""
        return [("role", f"active: {holder} holds the spool lock{took}")]
    return []


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


_Failed = tuple[spoolmod.Spool, "configmod.Config | None", list[tuple[str, dict]]]


def _open_failed(args: argparse.Namespace) -> _Failed | int:
    """The spool, its configuration (None with --spool-dir) and the dead letters in failed/;
    or, when they cannot be had, the exit status after saying why."""
    try:
        sp, cfg = _open_spool(args)
        return sp, cfg, _entries(sp)
    except configmod.ConfigError as e:
        _err(f"{e}\n(give --spool-dir DIR to work without the configuration)")
        return os.EX_CONFIG
    except OSError as e:
        return _fail_os(e, f"cannot list {args.spool_dir or 'SpoolDir'}/failed")


def _fail_os(e: OSError, what: str) -> int:
    if isinstance(e, PermissionError):
        _err(f"{what}: permission denied; run as root or as the daemon's user (SlurmUser)")
        return os.EX_NOPERM
    if isinstance(e, FileNotFoundError):
        _err(f"{what}: {e.strerror}: {e.filename}; is SpoolDir right?")
        return os.EX_NOINPUT
    _err(f"{what}: {e.strerror or e}")
    return os.EX_IOERR


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
    opened = _open_failed(args)
    if isinstance(opened, int):
        return opened
    sp, _, entries = opened
    rows = [_describe(n, i) for n, i in entries]
    if args.reason is not None:
        problem = _unknown_reason(args.reason, [r["reason"] for r in rows])
        if problem:
            _err(problem)
            return os.EX_USAGE
        rows = [r for r in rows if r["reason"] == args.reason]
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False, default=str))
        return os.EX_OK
    if not rows:
        which = f" with reason {args.reason}" if args.reason else ""
        print(f"no dead letters{which} in {sp.failed}")
        return os.EX_OK
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
    return os.EX_OK


def _unknown_reason(reason: str, present: list[str]) -> str | None:
    """Why ``--reason REASON`` selects nothing by construction (a typo), or None when it is a
    reason jobcompd gives or one the dead letters in failed/ carry."""
    if reason in spoolmod.REASONS or reason in present or (
        reason.startswith("kafka:") and len(reason) > len("kafka:")
    ) or reason == "unknown":
        return None
    known = [*spoolmod.REASONS, "kafka:<ERROR>"]
    close = difflib.get_close_matches(reason, [*spoolmod.REASONS, *present], n=1)
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
    opened = _open_failed(args)
    if isinstance(opened, int):
        return opened
    sp, cfg, listed = opened
    entries = dict(listed)
    status = os.EX_OK
    for i, arg in enumerate(args.names):
        if i:
            print()
        try:
            name = _name_of(arg, sp)
        except spoolmod.SpoolError as e:
            _err(str(e))
            status = status or os.EX_USAGE
            continue
        if name not in entries:
            _err(f"no dead letter {name!r} in {sp.failed}; 'jobcompd failed list' shows them")
            status = status or os.EX_NOINPUT
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
        return os.EX_USAGE
    opened = _open_failed(args)
    if isinstance(opened, int):
        return opened
    sp, cfg, entries = opened
    if args.reason is not None:
        problem = _unknown_reason(args.reason, [info.get("reason", "unknown")
                                                for _, info in entries])
        if problem:
            _err(problem)
            return os.EX_USAGE
    names, status = _retry_names(args, sp, entries)
    moved, moving = _move_back(args, sp, names)
    status = status or moving
    if not names and status == os.EX_OK:
        which = f" with reason {args.reason}" if args.reason else ""
        print(f"no dead letters{which} in {sp.failed}")
    if moved and not args.dry_run:
        print(f"{moved} record{'s' if moved != 1 else ''} moved back into {sp.new}; "
              + _who_sends(cfg))
    return status


def _retry_names(args: argparse.Namespace, sp: spoolmod.Spool,
                 entries: list[tuple[str, dict]]) -> tuple[list[str], int]:
    """The dead letters ``failed retry`` was asked for, and EX_USAGE if a name was wrong."""
    status = os.EX_OK
    names: list[str] = []
    if args.names:
        for arg in args.names:
            try:
                names.append(_name_of(arg, sp))
            except spoolmod.SpoolError as e:
                _err(str(e))
                status = status or os.EX_USAGE
        return names, status
    for name, info in entries:
        if args.reason is not None and info.get("reason") != args.reason:
            continue
        if not os.path.lexists(sp.failed / name):
            print(f"skipped {name}: only its reason file is left (the record vanished "
                  f"before it was moved); remove {sp.failed / name}{spoolmod.REASON_SUFFIX}")
            continue
        names.append(name)
    return names, status


def _move_back(args: argparse.Namespace, sp: spoolmod.Spool,
               names: list[str]) -> tuple[int, int]:
    """Move ``names`` back into new/ (or say so, with --dry-run): how many, and the status of
    the first that failed."""
    status = os.EX_OK
    moved = 0
    for name in names:
        if args.dry_run:
            if os.path.lexists(sp.failed / name):
                print(f"would move {name} back into new/")
                moved += 1
            else:
                _err(f"no dead letter {name!r} in {sp.failed}")
                status = status or os.EX_NOINPUT
            continue
        try:
            sp.retry_failed(name)
        except spoolmod.SpoolError as e:
            _err(str(e))
            status = status or os.EX_NOINPUT
            continue
        except OSError as e:
            status = status or _fail_os(e, f"cannot move {name} back into {sp.new}")
            continue
        print(f"moved {name} back into new/")
        moved += 1
    return moved, status


def _who_sends(cfg: configmod.Config | None) -> str:
    if cfg is None:
        return "the daemon sends them when it sees them"
    alive = statusmod.liveness(cfg.state_dir, None)
    if alive.running:
        return f"the running daemon (pid {alive.pid}) sends them now"
    if alive.running is None:
        return "the daemon sends them when it sees them"
    return "jobcompd is not running: they are sent when it starts (systemctl start jobcompd)"
