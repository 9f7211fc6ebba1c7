"""Parsing records in a worker process while a backlog drains.

Turning a record's bytes into its message (record.parse_record) is most of what the main loop
does per record, and it holds the GIL: a drain is bound by one core while the other is idle
(bench/: the machine 43% idle during a drain of segments). A worker process parses big
batches of frames instead, so that reading, producing and parsing overlap on two cores. Small
batches (steady operation, a handful of records per loop round) are parsed in the main loop as
before: a round trip to the worker would only add latency.

The worker is started at the first big batch, is a child of the daemon (it dies with it:
PR_SET_PDEATHSIG) and ignores the signals meant for the daemon. If it cannot be started or
dies, the daemon logs it once and parses in the main loop from then on: nothing depends on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

import structlog

from jobcompd import record

log = structlog.get_logger("jobcompd.parsepool")

#: A batch of frames at least this big goes to the worker (a drain reads 256 per round). A
#: backlog of files does not: its unlinks need the second core (daemon._worth_a_worker).
OFFLOAD_MIN = 64
#: Batches handed to the worker and not yet back: enough that it is never idle while the main
#: loop produces (bench/: 3 left it idle a third of the time), few enough to bound memory
#: (12 x 256 records of at most max_record_bytes).
MAX_BATCHES = 12
#: Batches waiting in all (the worker's, and the ones the main loop parsed itself while the
#: worker was busy, queued behind them to keep the order): bounds the daemon's memory. Room
#: for as many as the worker's: with 2, the main loop sat waiting for the worker a fifth of
#: a drain of segments (bench/: 8,700 records/s; 9,100 with room for 12).
MAX_QUEUED = MAX_BATCHES + 12

#: What parse_batch returns per record: the message, or the error message of a bad record.
Parsed = record.Record | str
#: One record to parse: its bytes, its format (env/json) and the event its name gives.
Item = tuple[bytes, str, str]

_PR_SET_PDEATHSIG = 1


def parse_batch(items: list[Item], cluster: str, send_script: bool,
                send_comment: bool) -> list[Parsed]:
    """Parse records (in the worker, or in the main loop when there is none)."""
    out: list[Parsed] = []
    for data, fmt, hint in items:
        try:
            out.append(record.parse_record(data, fmt, cluster=cluster, event_hint=hint,
                                           send_script=send_script,
                                           send_comment=send_comment))
        except record.RecordError as e:
            out.append(str(e))
    return out


def _init_worker(daemon_pid: int) -> None:
    """In the worker: die with the daemon, and leave its signals to it.

    PR_SET_PDEATHSIG only covers a death after it is set: a daemon killed while the worker
    was still starting (spawn imports Python anew) would leave it waiting forever on its
    queue, of which it holds both ends. So it looks whether its parent is still the daemon.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != daemon_pid:
        os._exit(0)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class ParsePool:
    """One worker process for parsing, started on first use; ``usable`` turns False for good
    once it fails."""

    def __init__(self, wake: Callable[[], None], *, enabled: bool = True) -> None:
        self._wake = wake
        self._executor: ProcessPoolExecutor | None = None
        self.usable = enabled

    def submit(self, items: list[Item], cluster: str, send_script: bool,
               send_comment: bool) -> Future[list[Parsed]] | None:
        """Hand a batch to the worker; None if there is no worker (parse it in the caller)."""
        if not self.usable:
            return None
        try:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker, initargs=(os.getpid(),))
            future = self._executor.submit(parse_batch, items, cluster, send_script,
                                           send_comment)
        except Exception as e:  # whatever it is, parsing goes on without it
            self.failed(e)
            return None
        future.add_done_callback(lambda _: self._wake())
        return future

    def failed(self, error: BaseException) -> None:
        """The worker could not be started or died: parse in the main loop from now on."""
        if self.usable:
            log.error("parse_worker_failed", error=f"{type(error).__name__}: {error}",
                      detail="records are parsed in the main loop from now on; nothing is lost")
        self.usable = False
        self.shutdown(wait=False)

    def shutdown(self, wait: bool = True) -> None:
        """End the worker (after the batch it is parsing, with ``wait``); batches not started
        are dropped: their records are still in the spool."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None
