"""The two settings jobcompd takes from slurm.conf (``SlurmConf``): ClusterName and SlurmUser.

Everything else in slurm.conf, ``Include`` lines too, is Slurm's business and is not read.
"""

from __future__ import annotations

import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from jobcompd.config.source import ConfigError, Entry, clip, read_text


@dataclass(frozen=True, slots=True)
class SlurmConf:
    """slurm.conf's ClusterName and SlurmUser (the last of each, as Slurm reads them)."""

    cluster_name: Entry | None
    slurm_user: Entry | None


_SLURM_KEY_RE = re.compile(r'(?:^|\s)(ClusterName|SlurmUser)\s*=\s*("[^"]*"|\S*)', re.IGNORECASE)


def read_slurm_conf(path: Path) -> SlurmConf:
    """Only ClusterName and SlurmUser; a problem reading the file is a ConfigError."""
    text, _ = read_text(path, "slurm.conf (SlurmConf)")
    found: dict[str, Entry] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = re.sub(r"(?<!\\)#.*", "", raw)  # Slurm: '#' starts a comment unless escaped
        for m in _SLURM_KEY_RE.finditer(line):
            found[m.group(1).lower()] = Entry(m.group(2).strip('"'), lineno)  # last wins
    return SlurmConf(found.get("clustername"), found.get("slurmuser"))


def uid_of(name: str, where: str) -> int:
    """A user name or a numeric uid as a uid; ``where`` prefixes the error."""
    if re.fullmatch(r"[0-9]+", name):
        if len(name.lstrip("0")) > 10 or int(name) >= 2**32 - 1:
            raise ConfigError(f"{where}: uid {clip(name)} is out of range")
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except (KeyError, ValueError):
        raise ConfigError(f"{where}: unknown user {clip(name)!r}") from None
