"""Removing acknowledged spool files, off the main loop.

An unlink costs a system call that the main loop does not need to wait for: once Kafka has
acknowledged a record, when its file disappears changes nothing but disk usage. And on a disk
file system it is the dearest step of a record: freeing a written-back file's blocks costs the
kernel more than reading and parsing it (docs/performance.md). So the
main loop collects the names of a round of delivery reports and hands them over as one batch;
a thread of its own unlinks them, relative to one descriptor of new/ per batch, and reports
each batch back once it is gone.

A second thread helps only while batches pile up (draining a backlog): unlinks in one directory
overlap in part in the kernel, but in steady operation a second unlinker only contends for new/
with the hook's renames and the daemon's reads, and latency was worse with it
(docs/performance.md).

Until then the names stay in ``pending``, which intake consults: a rescan or a late inotify
event must not take an acknowledged file for a new one and send it again. A crash before the
unlink only means the file is sent once more after restart, a duplicate the durability
contract allows.
"""

from __future__ import annotations

import errno
import queue
import threading
import time

import structlog

from jobcompd.spool.files import Spool

log = structlog.get_logger("jobcompd.retirer")

#: Batches waiting for the first thread before the second one is given work.
BACKLOG = 2
#: Pauses before unlinking again what failed for want of descriptors or memory.
RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0
#: errnos of a process short of a resource (the same as httpserver's, which the spool
#: package does not import).
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: retire_waiting is logged at most this often.
LOG_INTERVAL_S = 60.0

_Batch = list[str]


class Retirer:
    """Unlinks acknowledged files of ``new/`` on a background thread (two while behind), in
    batches."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        #: work of the first thread, and of the second (only while the first is behind).
        self._todo: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._extra: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._batch: list[str] = []
        #: names handed over and not yet reported gone (main thread only).
        self.pending: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._logged_waiting_at = -LOG_INTERVAL_S

    def start(self) -> None:
        for i, todo in enumerate((self._todo, self._extra)):
            thread = threading.Thread(target=self._run, args=(todo,),
                                      name=f"jobcompd-retirer-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def retire(self, name: str) -> None:
        """Queue one name; it is handed to the threads at the next ``collect``."""
        self.pending.add(name)
        self._batch.append(name)

    def collect(self) -> None:
        """Hand over the names retired since the last call, and forget the names the threads
        have removed (called by the main loop, once per round)."""
        if self._batch:
            behind = self._todo.qsize() >= BACKLOG
            (self._extra if behind else self._todo).put(self._batch)
            self._batch = []
        try:
            while True:
                self.pending.difference_update(self._done.get_nowait())
        except queue.Empty:
            pass

    def stop(self) -> None:
        """Finish every unlink handed over so far, then end the threads."""
        if self._batch and not self._threads:
            self._unlink(self._batch)  # never started: unlink here
            self._batch = []
        self.collect()
        self._stopping.set()
        if self._threads:
            self._todo.put(None)
            self._extra.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
        self.collect()

    def _run(self, todo: queue.SimpleQueue[_Batch | None]) -> None:
        while (batch := todo.get()) is not None:
            self._unlink(batch)

    def _unlink(self, names: _Batch) -> None:
        """Unlink a batch. Names that fail for want of descriptors or memory are tried again
        after a pause, and kept in ``pending`` meanwhile: released, a rescan would take such
        a file for a new record and send it again. Other failures are logged: the record is
        delivered, and a file left behind is sent again at a later start."""
        left, pause = names, RETRY_MIN_S
        while True:
            failed = self._spool.retire_all(left)
            left = [name for name, e in failed if _short_of_resources(e)]
            for name, error in failed:
                if not _short_of_resources(error):
                    log.error("retire_failed", file=name, error=str(error))
            if not left:
                break
            if self._stopping.is_set():
                log.error("retire_failed", files=len(left), error=str(failed[0][1]),
                          detail="delivered, but left in new/: sent again at the next start")
                break
            if time.monotonic() - self._logged_waiting_at >= LOG_INTERVAL_S:
                self._logged_waiting_at = time.monotonic()
                log.error("retire_waiting", files=len(left), error=str(failed[0][1]),
                          detail="delivered records wait in new/ until they can be removed")
            self._stopping.wait(pause)
            pause = min(RETRY_MAX_S, 2 * pause)
        self._done.put(names)


def _short_of_resources(error: Exception) -> bool:
    return isinstance(error, OSError) and error.errno in RESOURCE_ERRNOS
