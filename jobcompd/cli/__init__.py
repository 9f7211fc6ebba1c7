"""The ``jobcompd`` command line.

main.py parses every subcommand and imports a command's handler module only when that command
runs: ``jobcompd run`` loads the daemon and nothing of the other commands. The handlers: run.py
(run), check.py with preflight.py and brokercheck.py (check), consume.py (consume), ops.py
(status, failed), schema.py (schema); backfill's handler is jobcompd.backfill.cmd_backfill.
Exit codes are sysexits(3), ``os.EX_*``, except the LSB codes of ``status``.
"""
