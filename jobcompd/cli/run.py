"""``jobcompd run``: the daemon in the foreground, as jobcompd.service runs it."""

from __future__ import annotations

import argparse

from jobcompd import config as configmod
from jobcompd.service import daemon


def cmd_run(args: argparse.Namespace) -> int:
    return daemon.run(configmod.config_path(args.config))
