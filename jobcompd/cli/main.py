"""The ``jobcompd`` command line: the parser of every subcommand, and ``main``.

Each command's handler lives in a module of its own (jobcompd.cli.run, .check, .consume, .ops,
.schema, and jobcompd.backfill) and is imported only when that command runs: ``jobcompd run``
loads the daemon and nothing of the other commands, whose import time would add to the time
from exec to READY=1 that a restart on a backlog waits through. Exit codes are sysexits(3),
``os.EX_*``; each command's ``--help`` lists its own.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import textwrap
from typing import Any

from jobcompd import __version__
from jobcompd import config as configmod


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, but paragraphs stay paragraphs and indented lines (the exit
    status tables, examples) stay as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.split("\n\n"):
            if para.startswith("  ") or "\n  " in para:
                out.append("\n".join(indent + line for line in para.splitlines()))
            else:
                out.append(super()._fill_text(para, width, indent))
        return "\n\n".join(out)


def exit_status(*rows: tuple[int, str], note: str = "") -> str:
    """An epilog that lists a command's exit codes (sysexits(3) numbers), wrapped; ``note``
    is a paragraph after the list."""
    lines = ["exit status:"]
    for code, text in rows:
        wrapped = textwrap.wrap(text, width=72)
        lines.append(f"  {code:<3} {wrapped[0]}")
        lines += [f"      {more}" for more in wrapped[1:]]
    if note:
        lines += [f"  {more}" for more in textwrap.wrap(note, width=76)]
    return "\n".join(lines)


class _Handler:
    """A command's handler, named by module and function, imported when it is called."""

    def __init__(self, module: str, function: str) -> None:
        self.module = module if "." in module else f"jobcompd.cli.{module}"
        self.function = function

    def __call__(self, args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(self.module), self.function)(args)


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help=f"configuration file (default: ${configmod.CONFIG_ENV} or "
        f"{configmod.DEFAULT_CONFIG_PATH})",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0 seconds")
    return value


def _when(text: str) -> int:
    """``backfill --since/--until``: epoch seconds, by jobcompd.backfill.parse_when, imported
    with the command it belongs to."""
    from jobcompd.backfill import parse_when

    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line: every command, in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="jobcompd",
        description="Ship Slurm job records from a spool directory to Kafka. Each command "
        "has its own --help, with its exit status.",
    )
    parser.add_argument("--version", action="version", version=f"jobcompd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_run, _add_check, _add_consume, _add_status, _add_failed, _add_schema,
                _add_backfill, _add_drain_spool):
        add(sub)
    return parser


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run the daemon in the foreground (as systemd does)",
        formatter_class=HelpFormatter,
        description="Run the daemon in the foreground, as jobcompd.service does: read the "
        "configuration, lock StateSaveLocation, scan SpoolDir/new/ and send every record to "
        "Kafka, removing its file once Kafka has acknowledged it. Logs go to the journal "
        "under systemd, else to stderr (LogTarget). SIGHUP reloads both configuration files; "
        "SIGTERM or SIGINT stops it after flush_timeout, leaving what was not acknowledged in "
        "the spool. 'jobcompd check' tests first what it needs.",
        epilog=exit_status(
            (os.EX_OK, "stopped by SIGTERM or SIGINT (as the active daemon or the standby)"),
            (os.EX_UNAVAILABLE, "HttpListen cannot be served (address in use, or a port below "
             "1024)"),
            (os.EX_CANTCREAT, "StateSaveLocation or SpoolDir missing, or not writable by "
             "this user"),
            (os.EX_TEMPFAIL, "another jobcompd already runs with this StateSaveLocation, or "
             "holds SpoolDir's lock and Standby=no; or the spool lock was lost while running"),
            (os.EX_CONFIG, "bad configuration (the message names the file, line and key), "
             "librdkafka refused the properties, SpoolDir/seg/ holds segment files, or "
             "Standby=yes on a mount whose locks stay on this host; "
             "jobcompd.service does not restart after it"),
        ))
    _add_config_arg(p)
    p.set_defaults(func=_Handler("run", "cmd_run"))


def _add_check(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="test the configuration and what 'run' needs; --connect: the broker",
        formatter_class=HelpFormatter,
        description="Validate jobcompd.conf and the JobCompLoc file as 'run' does, then test "
        "what 'run' needs from the file system as the user the daemon runs as: the "
        "configuration files readable, StateSaveLocation there and writable, SpoolDir's "
        "tmp/ new/ failed/ writable, no files in SpoolDir/seg/, and, under jobcompd.service, "
        "the folders in its ReadWritePaths=. Each problem comes with the command that fixes "
        "it. With --connect, also reach the broker with the daemon's producer settings and "
        "look up the topics.\n\n"
        "The user: --user NAME; else, run as root, the User= of the installed "
        "jobcompd.service, else SlurmUser of SlurmConf, else the owner of SpoolDir, else "
        "'slurm', else root. Run as any other user, the check tests that user. Nothing is "
        "changed.",
        epilog=exit_status(
            (os.EX_OK, "all is well (warnings aside)"),
            (os.EX_NOUSER, "--user names no account on this host"),
            (os.EX_UNAVAILABLE, "--connect: no broker answered within 10 s, the brokers it "
             "names cannot be reached, or the broker refused a topic; or HttpListen is a "
             "port below 1024 for a user other than root"),
            (os.EX_CANTCREAT, "StateSaveLocation or SpoolDir (or tmp/ new/ failed/) missing "
             "or not writable by the user"),
            (os.EX_NOPERM, "--user another user, without being root"),
            (os.EX_CONFIG, "bad configuration, a configuration file the user cannot read, or "
             "files in SpoolDir/seg/"),
            note="With several problems, the status is the one 'run' would stop with first.",
        ))
    _add_config_arg(p)
    p.add_argument("--connect", action="store_true",
                   help="also reach the broker (10 s at most) and look up the topics")
    p.add_argument("--user", metavar="NAME", help="test as this user (root only; default: "
                   "see above)")
    p.set_defaults(func=_Handler("check", "cmd_check"))


def _add_consume(sub: Any) -> None:
    p = sub.add_parser(
        "consume", help="print the messages on jobcompd's topics, as Kafka has them",
        formatter_class=HelpFormatter,
        description="Print the messages on jobcompd's topics, one line each: a JSON object "
        "with topic, partition, offset, timestamp (ms), key, headers and value. The value "
        "is put in exactly as Kafka holds it (the bytes jobcompd sent: escapes such as \\/ "
        "and the digits of numbers untouched); a value that is not JSON on one line is "
        "given as a JSON string. --value-only prints the value's bytes alone.\n\n"
        "Without --from-beginning, it waits for new messages until -n, --timeout or Ctrl-C "
        "stops it. With --from-beginning it prints what the topics hold and stops at their "
        "end, unless --follow. It commits no offsets.",
        epilog=exit_status(
            (os.EX_OK, "done: -n messages printed, the end reached (--from-beginning), "
             "--timeout passed without -n, or Ctrl-C"),
            (os.EX_NOINPUT, "--from-beginning without --follow: a topic does not exist"),
            (os.EX_UNAVAILABLE, "no broker answered within 10 s (the message says why)"),
            (os.EX_TEMPFAIL, "--timeout passed before -n messages arrived"),
            (os.EX_CONFIG, "bad configuration"),
        ) + "\n\nexamples:\n"
        "  jobcompd consume -n 1 --timeout 120        # the next record, or exit 75\n"
        "  jobcompd consume --from-beginning          # everything on the topic, then stop\n"
        "  jobcompd consume --from-beginning --value-only | tail -1 | od -c | head")
    _add_config_arg(p)
    p.add_argument("--topic", action="append", help="topic to read (repeatable; default: "
                   "the configured topic, and topic_job_start when start events are on)")
    p.add_argument("--from-beginning", action="store_true",
                   help="print what the topics hold, oldest first, and stop at the end")
    p.add_argument("-f", "--follow", action="store_true",
                   help="with --from-beginning: then wait for new messages")
    p.add_argument("-n", "--count", type=_positive, metavar="N",
                   help="stop after N messages")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="stop after this many seconds")
    p.add_argument("--value-only", action="store_true",
                   help="print only each message's value, byte for byte, one per line")
    p.set_defaults(func=_Handler("consume", "cmd_consume"))


def _add_status(sub: Any) -> None:
    p = sub.add_parser(
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
    p.set_defaults(func=_Handler("ops", "cmd_status"))


#: The exit codes every ``failed`` action shares.
_FAILED_COMMON = [
    (os.EX_NOINPUT, "SpoolDir/failed/ is missing (is SpoolDir right?)"),
    (os.EX_IOERR, "reading or moving failed"),
    (os.EX_NOPERM, "no permission: run as root or as the daemon's user (SlurmUser)"),
    (os.EX_CONFIG, "bad configuration (give --spool-dir DIR to work without it)"),
]


def _add_failed(sub: Any) -> None:
    p = sub.add_parser(
        "failed", help="list, show and retry dead letters (SpoolDir/failed/)",
        description="Records jobcompd could not send sit in SpoolDir/failed/, each with a "
        "<name>.reason file that says why. List them, show one, and move chosen ones back "
        "into new/ once the cause is fixed.")
    actions = p.add_subparsers(dest="failed_action", metavar="ACTION", required=True)

    a = actions.add_parser("list", help="one line per dead letter: job, reason, time, message",
                           description="List the dead letters, oldest first.",
                           formatter_class=HelpFormatter, epilog=exit_status(
                               (os.EX_OK, "listed (also when there are none)"),
                               (os.EX_USAGE, "--reason names no reason jobcompd gives"),
                               *_FAILED_COMMON))
    _add_failed_common(a)
    a.add_argument("--reason", metavar="REASON", help="only those with this reason "
                   "(malformed, too_large, timeout, kafka:..., ...)")
    a.add_argument("--json", action="store_true", help="one JSON array of objects")
    a.set_defaults(func=_Handler("ops", "cmd_failed_list"))

    a = actions.add_parser("show", help="print dead letters whole: reason and record",
                           description="Print each named dead letter: its reason file, the "
                           "record in readable form, and what jobcompd would send for it now "
                           "(or why it cannot).",
                           formatter_class=HelpFormatter, epilog=exit_status(
                               (os.EX_OK, "shown"),
                               (os.EX_USAGE, "a path outside SpoolDir/failed/"),
                               (os.EX_NOINPUT, "no such dead letter, or SpoolDir/failed/ missing"),
                               *_FAILED_COMMON[1:]))
    _add_failed_common(a)
    a.add_argument("names", nargs="+", metavar="NAME", help="dead letter file name (as "
                   "listed), or its path in failed/")
    a.set_defaults(func=_Handler("ops", "cmd_failed_show"))

    a = actions.add_parser("retry", help="move dead letters back into new/ to be sent again",
                           description="Move the chosen dead letters back into new/ under "
                           "their own names (so they keep their place in time order) and "
                           "remove their reason files; the daemon sends them again. Fix the "
                           "cause first, or they come back.",
                           formatter_class=HelpFormatter, epilog=exit_status(
                               (os.EX_OK, "moved (also when none matched a known --reason)"),
                               (os.EX_USAGE, "not exactly one of NAME..., --all, --reason; a "
                                "--reason jobcompd never gives; a path outside failed/"),
                               (os.EX_NOINPUT, "no such dead letter, or new/ already holds its "
                                "name (the others are still moved)"),
                               *_FAILED_COMMON[1:]))
    _add_failed_common(a)
    a.add_argument("names", nargs="*", metavar="NAME", help="dead letter file names, or paths")
    a.add_argument("--all", action="store_true", help="every dead letter")
    a.add_argument("--reason", metavar="REASON", help="every dead letter with this reason")
    a.add_argument("-n", "--dry-run", action="store_true",
                   help="print what would be moved, move nothing")
    a.set_defaults(func=_Handler("ops", "cmd_failed_retry"))


def _add_failed_common(p: argparse.ArgumentParser) -> None:
    _add_config_arg(p)
    p.add_argument("--spool-dir", metavar="DIR", help="use DIR instead of the configured "
                   "SpoolDir (works with a broken configuration file)")


def _add_schema(sub: Any) -> None:
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of the messages jobcompd sends",
        formatter_class=HelpFormatter,
        description="Print the JSON Schema (draft 2020-12) of the job record jobcompd sends to "
        "Kafka, with the Slurm version notes of each field. A copy is in "
        "docs/message-schema.json. It needs no configuration; one given with -c is checked.",
        epilog=exit_status((os.EX_OK, "printed"),
                           (os.EX_CONFIG, "the configuration given with -c is invalid or "
                            "unreadable (the message names the file, line and key)")),
    )
    _add_config_arg(p)
    p.set_defaults(func=_Handler("schema", "cmd_schema"))


def _add_backfill(sub: Any) -> None:
    p = sub.add_parser(
        "backfill",
        help="put the jobs of a sacct/scontrol --json dump into the spool as job end records",
        description="Read a `sacct --json` or `scontrol show job --json` dump (FILE, or - for "
        "standard input) and write one job end record per finished job into the spool, for "
        "the daemon to send. Running it twice on the same dump gives the same jobcompd-id "
        "headers, so consumers can drop the repeats. Jobs that are not finished are skipped; "
        "a job that cannot be read is reported by its position and skipped.",
    )
    _add_config_arg(p)
    p.add_argument("file", metavar="FILE", help="the dump, or - to read standard input")
    p.add_argument(
        "--since",
        type=_when,
        metavar="WHEN",
        help="only jobs that ended at or after WHEN: YYYY-MM-DD[THH:MM[:SS]], local time "
        "(like sacct -S), or UTC with a final Z",
    )
    p.add_argument(
        "--until",
        type=_when,
        metavar="WHEN",
        help="only jobs that ended before WHEN (same format)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="write nothing; print each record that would be written on standard output",
    )
    p.set_defaults(func=_Handler("jobcompd.backfill", "cmd_backfill"))


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the command's handler."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `jobcompd failed list | head`: the reader left; say nothing more.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())


def _add_drain_spool(sub: Any) -> None:
    p = sub.add_parser(
        "drain-spool", help="move another host's spool records into this one's, to be sent",
        formatter_class=HelpFormatter,
        description="Move the records in PATH/new/ (another controller's spool, its disk "
        "mounted or copied here) into this host's SpoolDir/new/, where the running jobcompd "
        "sends them once, with the jobcompd-id the other host's daemon would have given them. "
        "Each record is written and fsynced here before it is removed at PATH, so a crash "
        "loses nothing and running the command again only finishes the job. PATH/failed/ "
        "(dead letters) and PATH/tmp/ (partial writes) are left alone. Never point it at a "
        "spool whose own jobcompd still runs: that one would send the same records too.",
        epilog=exit_status(
            (os.EX_OK, "every record was moved"),
            (os.EX_DATAERR, "some entries of PATH/new/ are no records and stay there (listed)"),
            (os.EX_USAGE, "PATH is this host's own spool"),
            (os.EX_NOINPUT, "PATH has no new/, or a record could not be written here"),
            (os.EX_CONFIG, "bad configuration"),
        ))
    _add_config_arg(p)
    p.add_argument("path", metavar="PATH", help="the other spool (or its new/ folder)")
    p.add_argument("--dry-run", action="store_true", help="count what would move, move nothing")
    p.set_defaults(func=_Handler("drainspool", "cmd_drain_spool"))
