"""The spool: `SpoolDir/{tmp,new,failed}`, the only durable copy of a record until Kafka
acknowledges it. SPEC.md beside this file is the contract every writer and the daemon follow.

    names        the file-name rule: parse_name, make_name
    files        Spool: scan, read, retire, write_record
    layout       the folders: made and checked, tmp/ cleaned, a segment spool refused
    space        free space: the threshold every writer keeps free, the figures for the gauges
    deadletters  failed/ and the reason files
    durable      create, fsync, rename: the steps of the writer contract
    watch        inotify and the queue of names waiting to be read (the daemon's)
    retirer      unlinking acknowledged files off the main loop (the daemon's)
    unreadable   records the daemon may not open, kept in new/ (the daemon's)

The daemon's three are imported by name (``jobcompd.spool.watch``...): a writer such as
``jobcompd backfill`` needs only the names and the Spool class.
"""

from jobcompd.spool.deadletters import REASON_SUFFIX, REASONS, count_dead_letters
from jobcompd.spool.durable import DIR_MODE, FILE_MODE
from jobcompd.spool.errors import RejectedFile, SpoolError, Unreadable
from jobcompd.spool.files import Spool
from jobcompd.spool.names import EVENTS, FORMATS, MAX_JOB_ID, SpoolName, make_name, parse_name
from jobcompd.spool.space import SpoolFull

__all__ = [
    "DIR_MODE",
    "EVENTS",
    "FILE_MODE",
    "FORMATS",
    "MAX_JOB_ID",
    "REASONS",
    "REASON_SUFFIX",
    "RejectedFile",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "SpoolName",
    "Unreadable",
    "count_dead_letters",
    "make_name",
    "parse_name",
]
