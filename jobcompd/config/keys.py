"""The keys of jobcompd.conf, as one table: each :class:`Key`'s name, default, parser, doc,
what an empty value should become, whether a reload applies it, and how the status file
shows it.

:func:`jobcompd.config.load` reads the file through this table, ``status.config_summary``
shows what it holds, and the tests hold ``etc/jobcompd.conf`` and the README to it. A parser
gets the value as written, ``where`` (``file:line: Key``, the start of every message about it)
and the :class:`Context` of the keys read before it; it returns the Config attribute's value
or raises ConfigError.
"""

from __future__ import annotations

import ipaddress
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from jobcompd.config.kafka import (
    MESSAGE_OVERHEAD_BYTES,
    WHAT,
    KafkaProperty,
    check_kafka_properties,
    check_kafka_semantics,
    kafka_warnings,
    message_max_bytes,
    parse_kafka_text,
)
from jobcompd.config.params import parse_params
from jobcompd.config.slurmconf import SlurmConf, read_slurm_conf, uid_of
from jobcompd.config.source import C_SPACE, ConfigError, Entry, clip, read_text, resolve, suggest
from jobcompd.spool.space import MAX_MIN_FREE_BYTES

DEFAULT_SPOOL_DIR = Path("/var/spool/jobcompd")
DEFAULT_STATE_DIR = Path("/var/lib/jobcompd")


@dataclass
class Context:
    """What a parser may need besides its value: the file, the entries written in it, the
    values of the keys read before, and where warnings go."""

    path: Path
    entries: dict[str, Entry]
    warnings: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    kafka: tuple[KafkaProperty, ...] = ()
    _slurm: tuple[Path, SlurmConf] | None = None

    @property
    def base(self) -> Path:
        return self.path.parent

    def where(self, name: str) -> str:
        entry = self.entries.get(name)
        return f"{self.path}:{entry.line}: {name}" if entry else f"{self.path}: {name}"

    def slurm(self) -> tuple[Path, SlurmConf] | None:
        """The slurm.conf that SlurmConf names (read once), or None when it names none."""
        entry = self.entries.get("SlurmConf")
        if entry is None:
            return None
        if self._slurm is None:
            path = resolve(entry.value, self.base)
            try:
                self._slurm = path, read_slurm_conf(path)
            except ConfigError as e:
                # Name the line that pointed there too: the fix may be in either file.
                raise ConfigError(f"{e} (set by {self.where('SlurmConf')})") from None
        return self._slurm


Parser = Callable[[str, str, Context], Any]


def _plain(value: Any) -> Any:
    """A Config value as a JSON value for the status file."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, frozenset | set):
        return sorted(value)
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    return str(value)


def _hostport(value: tuple[str, int] | None) -> str | None:
    """A listen address as it is written: ``host:port`` or ``[v6]:port``."""
    if value is None:
        return None
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Key:
    """One key of jobcompd.conf.

    ``attr`` is its Config attribute; ``doc`` one line for the README's table; ``default``
    the value that applies when the key is absent, as it would be written ("" for an empty
    list), or None when there is no such value, and then ``default_doc`` says in words what
    applies and ``absent`` (if set) computes it or refuses to go on; ``empty_hint`` is what
    to tell an operator who wrote the key with no value (None: an empty value is allowed);
    ``reload`` whether a SIGHUP applies a change (otherwise it waits for a restart);
    ``show`` the value as the status file holds it."""

    name: str
    attr: str
    doc: str
    parse: Parser
    default: str | None = None
    default_doc: str = ""
    absent: Callable[[Context], Any] | None = None
    empty_hint: str | None = None
    reload: bool = True
    show: Callable[[Any], Any] = _plain

    def value(self, ctx: Context) -> Any:
        """This key's Config value in ``ctx``: parsed from the file, or its default."""
        entry = ctx.entries.get(self.name)
        if entry is not None:
            return self.parse(entry.value, ctx.where(self.name), ctx)
        if self.absent is not None:
            return self.absent(ctx)
        if self.default is not None:
            return self.parse(self.default, ctx.where(self.name), ctx)
        return None


# --------------------------------------------------------------------------- parsers


def _path(value: str, where: str, ctx: Context) -> Path:
    return resolve(value, ctx.base)


def _check_cluster_name(name: str, where: str) -> str:
    # Slurm maps ClusterName to lower case, so the default topic must too.
    if not name or re.search(r"[\s:\x00-\x1f\x7f]", name):
        raise ConfigError(
            f"{where}: ClusterName {clip(name)!r} must be a non-empty word without spaces, "
            "control characters or ':' (it forms the message key <ClusterName>:<jobid>)"
        )
    return name.lower()


def _cluster_name(value: str, where: str, ctx: Context) -> str:
    slurm = ctx.slurm()
    name = _check_cluster_name(value, where)
    if slurm and slurm[1].cluster_name and slurm[1].cluster_name.value.lower() != name:
        other = slurm[1].cluster_name
        ctx.warnings.append(f"{where}: {name!r} differs from ClusterName={clip(other.value)} "
                            f"in {slurm[0]}:{other.line}")
    return name


def _cluster_name_from_slurm(ctx: Context) -> str:
    slurm = ctx.slurm()
    if slurm and slurm[1].cluster_name:
        entry = slurm[1].cluster_name
        return _check_cluster_name(entry.value, f"{slurm[0]}:{entry.line}")
    raise ConfigError(
        f"{ctx.path}: ClusterName is not known: set ClusterName= here, or SlurmConf= to the "
        "slurm.conf that sets it (it names the default topic and prefixes message keys)"
    )


def _job_comp_loc(value: str, where: str, ctx: Context) -> Path:
    path = resolve(value, ctx.base)
    try:
        text, st = read_text(path, WHAT)
    except ConfigError as e:
        # Name the line that pointed there too: the fix may be in either file.
        raise ConfigError(f"{e} (set by {where})") from None
    props = parse_kafka_text(text)
    check_kafka_properties(props, path)
    check_kafka_semantics(props, path)
    ctx.warnings.extend(kafka_warnings(props, path, st))
    ctx.kafka = props
    return path


def _job_comp_loc_required(ctx: Context) -> Path:
    raise ConfigError(
        f"{ctx.path}: JobCompLoc is not set; point it at the librdkafka properties file, "
        "for example JobCompLoc=/etc/jobcompd/rdkafka.conf"
    )


def _params(value: str, where: str, ctx: Context) -> Any:
    params, warnings = parse_params(value, ctx.values["cluster_name"], where)
    ctx.warnings.extend(warnings)
    limit, source = message_max_bytes(ctx.kafka, ctx.values["job_comp_loc"])
    if params.max_record_bytes + MESSAGE_OVERHEAD_BYTES > limit:
        raise ConfigError(
            f"{where}: max_record_bytes={params.max_record_bytes} does not fit in "
            f"{source} with {MESSAGE_OVERHEAD_BYTES} bytes for key and headers; lower "
            f"max_record_bytes to at most {limit - MESSAGE_OVERHEAD_BYTES} or raise "
            "message.max.bytes"
        )
    return params


def _spool_owners(value: str, where: str, ctx: Context) -> frozenset[int]:
    names = [n.strip(C_SPACE) for n in value.split(",")]
    owners = {uid_of(n, where) for n in names if n}
    if not owners:
        raise ConfigError(f"{where}: lists no user")
    return frozenset(owners | {0})


def _default_spool_owners(ctx: Context) -> frozenset[int]:
    slurm = ctx.slurm()
    if slurm is not None:
        user = slurm[1].slurm_user
        # Slurm's own default SlurmUser is root.
        owners = {uid_of(user.value, f"{slurm[0]}:{user.line}: SlurmUser")} if user else set()
    else:
        try:
            owners = {pwd.getpwnam("slurm").pw_uid}
        except KeyError:
            owners = set()
    return frozenset(owners | {0})  # root can write anything anyway; its files are trusted


_DEBUG_FLAGS = {"jobcomp": "JobComp", "elasticsearch": "JobComp"}  # Slurm's alias


def _debug_flags(value: str, where: str, ctx: Context) -> frozenset[str]:
    flags: set[str] = set()
    for token in value.split(","):
        flag = token.strip(C_SPACE)
        if not flag:
            continue
        if flag.lower() not in _DEBUG_FLAGS:
            raise ConfigError(
                f"{where}: unknown flag {clip(flag)!r}{suggest(flag, ['JobComp'])} "
                "(known: JobComp, or its Slurm alias Elasticsearch)"
            )
        flags.add(_DEBUG_FLAGS[flag.lower()])
    return frozenset(flags)


def _choice(*choices: str) -> Parser:
    def parse(value: str, where: str, ctx: Context) -> str:
        if value.lower() not in choices:
            raise ConfigError(f"{where}={clip(value)}: accepted: {', '.join(choices)}")
        return value.lower()

    return parse


def _yes_no(value: str, where: str, ctx: Context) -> bool:
    """slurm.conf's booleans: yes/no (and true/false, 1/0), any case."""
    word = value.strip(C_SPACE).lower()
    if word in ("yes", "true", "1"):
        return True
    if word in ("no", "false", "0"):
        return False
    raise ConfigError(f"{where}={clip(value)}: accepted: yes, no")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, where: str, purpose: str,
                 warnings: list[str]) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; a non-loopback host is allowed with a warning."""
    usage = "write host:port or [IPv6]:port, for example 127.0.0.1:9817"
    if value.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", value)
        if not m:
            raise ConfigError(f"{where}: {clip(value)!r}: {usage}")
        host, port_text = m.groups()
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{where}: {clip(host)!r} is not an IPv6 address ({usage})") \
                from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{where}: {clip(value)!r}: {usage}")
        if ":" in host:
            raise ConfigError(
                f"{where}: {clip(value)!r}: put an IPv6 address in brackets ({usage})")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", host):
            raise ConfigError(f"{where}: {clip(host)!r} is not a host name or address ({usage})")
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise ConfigError(f"{where}: port {clip(port_text)!r} is not 0..65535 ({usage})")
    if not _is_loopback(host):
        warnings.append(f"{where}: {host} is not a loopback address: {purpose}")
    return host, int(port_text)


def _listen(purpose: str) -> Parser:
    def parse(value: str, where: str, ctx: Context) -> tuple[str, int]:
        return parse_listen(value, where, purpose, ctx.warnings)

    return parse


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(value: str, where: str, ctx: Context) -> int:
    """Bytes, or with a suffix K, M, G or T (powers of 1024, as Slurm's sizes)."""
    m = re.fullmatch(r"([0-9]{1,16})([KkMmGgTt]?)", value)
    size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()] if m else -1
    if not 0 <= size <= MAX_MIN_FREE_BYTES:
        raise ConfigError(f"{where}={clip(value)}: expected bytes, or a number with K, M, G or "
                          f"T (1024-based), from 0 to {MAX_MIN_FREE_BYTES} (1P); for example "
                          "64M")
    return size


def _textfile(value: str, where: str, ctx: Context) -> Path:
    path = resolve(value, ctx.base)
    if path.suffix != ".prom":
        ctx.warnings.append(f"{where}: node_exporter's textfile collector reads only files "
                            "ending in .prom")
    return path


# --------------------------------------------------------------------------- the table

KEYS: tuple[Key, ...] = (
    Key("ClusterName", "cluster_name",
        "the default topic, and the first half of every message key; lower-cased, like "
        "Slurm. This or `SlurmConf` is required",
        _cluster_name, default_doc="from the slurm.conf named by `SlurmConf`",
        absent=_cluster_name_from_slurm,
        empty_hint="set it (for example ClusterName=hpc), or remove the line and set "
        "SlurmConf= to the slurm.conf that names the cluster"),
    Key("SlurmConf", "slurm_conf",
        "a slurm.conf to read `ClusterName` and `SlurmUser` from (nothing else is read)",
        _path, default_doc="unset",
        empty_hint="set it to slurm.conf's path, or remove the line to read no slurm.conf"),
    Key("JobCompLoc", "job_comp_loc", "the librdkafka properties file (below)",
        _job_comp_loc, default_doc="required", absent=_job_comp_loc_required,
        empty_hint="it is required and has no default: set it to the librdkafka properties "
        "file, for example JobCompLoc=/etc/jobcompd/rdkafka.conf"),
    Key("JobCompParams", "params", "comma-separated options (below)", _params, default=""),
    Key("SpoolDir", "spool_dir",
        "holds `tmp/`, `new/`, `failed/` and the instance lock `.jobcompd.lock` (with "
        "`Standby=yes` also the state file); must be the hook's spool",
        _path, default=str(DEFAULT_SPOOL_DIR), reload=False,
        empty_hint=f"remove the line to use the default {DEFAULT_SPOOL_DIR}"),
    Key("SpoolMinFreeBytes", "spool_min_free_bytes",
        "the hooks and jobcompd's own writers refuse a record while `SpoolDir`'s file system "
        "has less free space than this (K, M, G, T: 1024-based; 0: never; below, \"A full "
        "spool\")", _size, default="64M",
        empty_hint="remove the line to use the default (64M), or write 0 to turn the check "
        "off"),
    Key("StateSaveLocation", "state_dir",
        "the status file and its lock, and the state file unless `Standby=yes` (then it "
        "follows the spool); local to each host",
        _path, default=str(DEFAULT_STATE_DIR), reload=False,
        empty_hint=f"remove the line to use the default {DEFAULT_STATE_DIR}"),
    Key("Standby", "standby",
        "`yes` where two controllers share one `SpoolDir`: a daemon that finds the spool "
        "lock held waits as the standby and takes over when it is released (`no`: it exits "
        "75)", _yes_no, default="no",
        empty_hint="remove the line to use the default (no), or write yes"),
    Key("SpoolOwners", "spool_owners",
        "comma-separated users or uids whose files in `new/` are accepted (others go to "
        "`failed/`). Default: `SlurmUser` of `SlurmConf` (root when it sets none, as in "
        "Slurm), else the user `slurm` if it exists; root and the daemon's own user are "
        "always accepted",
        _spool_owners, default_doc="SlurmUser, root", absent=_default_spool_owners,
        empty_hint="list users (for example SpoolOwners=slurm), or remove the line to use "
        "the default (SlurmUser and root)"),
    Key("DebugFlags", "debug_flags",
        "`JobComp` (or Slurm's alias `Elasticsearch`) logs every record's journey at debug "
        "level", _debug_flags, default=""),
    Key("LogTarget", "log_target",
        "`journal` or `stderr`; `auto` picks the journal when stderr is connected to it "
        "(under systemd)", _choice("auto", "journal", "stderr"), default="auto",
        empty_hint="remove the line to use the default (auto), or write journal or stderr"),
    Key("LogFormat", "log_format", "lines on stderr: `logfmt` or `json`",
        _choice("logfmt", "json"), default="logfmt",
        empty_hint="remove the line to use the default (logfmt), or write json"),
    Key("MetricsListen", "metrics_listen",
        "`host:port` or `[IPv6]:port` to serve Prometheus metrics on; loopback, or a warning",
        _listen("anyone who can reach it can read the metrics"), default_doc="unset",
        show=_hostport,
        empty_hint="set host:port (for example 127.0.0.1:9817), or remove the line to "
        "serve no metrics"),
    Key("MetricsTextfile", "metrics_textfile",
        "also write the metrics to this file (name ending in `.prom`) every 10 s, for "
        "node_exporter's textfile collector", _textfile, default_doc="unset",
        empty_hint="set the .prom file's path, or remove the line to write no textfile"),
    Key("HttpListen", "http_listen",
        "`host:port` of the jobcomp/elasticsearch intake (above); loopback, or a warning",
        _listen("anyone who can reach it can submit job records"), default_doc="unset",
        show=_hostport,
        empty_hint="set host:port (for example 127.0.0.1:9200), or remove the line to run "
        "no HTTP intake"),
)
KEY_BY_LOWER = {k.name.lower(): k for k in KEYS}
NAMES = tuple(k.name for k in KEYS)
#: Config attributes that only a restart changes: a reload keeps them as they run.
RESTART_ATTRS = tuple(k.attr for k in KEYS if not k.reload)
