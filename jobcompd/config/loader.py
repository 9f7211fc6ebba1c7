"""Reading jobcompd.conf: its syntax (slurm.conf's), then every key through the table in
:mod:`jobcompd.config.keys`, into one checked, frozen :class:`Config`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jobcompd.config import kafka
from jobcompd.config.kafka import KafkaProperty
from jobcompd.config.keys import KEY_BY_LOWER, KEYS, NAMES, Context, Key
from jobcompd.config.params import Params
from jobcompd.config.source import C_SPACE, ConfigError, Entry, clip, read_text, suggest

DEFAULT_CONFIG_PATH = Path("/etc/jobcompd/jobcompd.conf")
CONFIG_ENV = "JOBCOMPD_CONFIG"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, checked configuration. ``warnings`` are for the log, not errors."""

    path: Path
    cluster_name: str
    job_comp_loc: Path
    kafka: tuple[KafkaProperty, ...]
    params: Params
    spool_dir: Path
    spool_min_free_bytes: int
    state_dir: Path
    standby: bool
    debug_flags: frozenset[str]
    slurm_conf: Path | None
    log_target: str
    log_format: str
    metrics_listen: tuple[str, int] | None
    metrics_textfile: Path | None
    http_listen: tuple[str, int] | None
    spool_owners: frozenset[int]
    warnings: tuple[str, ...]

    @property
    def debug_jobcomp(self) -> bool:
        """``DebugFlags=JobComp``: log every record's journey at debug level."""
        return "JobComp" in self.debug_flags

    def producer_config(self) -> dict[str, str]:
        """The librdkafka configuration for the producer: jobcompd's defaults, then the
        operator's properties in file order (so the later of two aliases wins, as in
        librdkafka). No callbacks: the delivery module owns them."""
        return kafka.producer_config(self.kafka)

    def redacted_kafka(self) -> dict[str, str]:
        """The effective producer configuration with secret values shown as ``***``."""
        return kafka.redacted(self.producer_config())

    def kafka_changed(self, other: Config) -> bool:
        """True when ``other`` needs a new producer (its effective properties differ)."""
        return self.producer_config() != other.producer_config()


def config_path(cli_value: str | None) -> Path:
    """``-c PATH`` if given, else ``$JOBCOMPD_CONFIG`` if set, else the default path."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def _strip_comment(line: str) -> str:
    """Cut at the first ``#`` outside double quotes."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _unquote(value: str, where: str) -> str:
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"') or '"' in value[1:-1]:
            raise ConfigError(f"{where}: unbalanced double quote")
        return value[1:-1]
    if '"' in value:
        raise ConfigError(f"{where}: a double quote may only enclose the whole value")
    return value


def parse_conf_text(text: str, path: Path) -> dict[str, Entry]:
    """jobcompd.conf's lines as entries by key name; syntax errors, unknown and repeated
    keys, and empty values of keys that need one are ConfigErrors."""
    entries: dict[str, Entry] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = _strip_comment(raw).strip(C_SPACE)
        if not line:
            continue
        key, sep, value = line.partition("=")
        key = key.strip(C_SPACE)
        if not sep or not key:
            raise ConfigError(f"{path}:{lineno}: expected Key=Value, got {clip(line)!r}")
        spec = KEY_BY_LOWER.get(key.lower())
        if spec is None:
            raise ConfigError(f"{path}:{lineno}: unknown key {clip(key)!r}{suggest(key, NAMES)}")
        name = spec.name
        if name in entries:
            raise ConfigError(
                f"{path}:{lineno}: {name} is set twice (first on line {entries[name].line})"
            )
        value = _unquote(value.strip(C_SPACE), f"{path}:{lineno}: {name}")
        if not value and spec.empty_hint is not None:
            raise ConfigError(f"{path}:{lineno}: {name} has no value; {spec.empty_hint}")
        entries[name] = Entry(value, lineno)
    return entries


def _value(key: Key, ctx: Context) -> object:
    """One key's value; a value error the parser did not foresee is still a ConfigError
    that names the file, the line and the key."""
    try:
        return key.value(ctx)
    except (ValueError, ArithmeticError):
        entry = ctx.entries.get(key.name)
        written = f" {clip(entry.value)!r}" if entry else ""
        raise ConfigError(f"{ctx.where(key.name)}:{written} is not a value jobcompd can use; "
                          f"{key.name} is {key.doc}") from None


def load(path: str | Path) -> Config:
    """Read and check jobcompd.conf and the files it names. Raises ConfigError, and only
    ConfigError, for anything wrong in them."""
    path = Path(path).absolute()
    text, _ = read_text(
        path, "config file",
        "" if path.exists() else f"; give its path with -c PATH or ${CONFIG_ENV} (default "
        f"{DEFAULT_CONFIG_PATH})")
    ctx = Context(path, parse_conf_text(text, path))
    for key in KEYS:
        ctx.values[key.attr] = _value(key, ctx)
    return Config(path=path, kafka=ctx.kafka, warnings=tuple(ctx.warnings), **ctx.values)
