"""Removing acknowledged spool files, off the main loop.

An unlink costs a system call that the main loop does not need to wait for: once Kafka has
acknowledged a record, when its file disappears changes nothing but disk usage. So the main loop
hands names to a thread of their own and carries on reading and producing; the thread reports
each name back once it is gone.

Until then the name stays in ``pending``, which intake consults: a rescan or a late inotify event
must not take an acknowledged file for a new one and send it again. A crash before the unlink
only means the file is sent once more after restart, a duplicate the durability contract allows.
"""

from __future__ import annotations

import queue
import threading

import structlog

from jobcompd.spool import Spool

log = structlog.get_logger("jobcompd.retirer")


class Retirer:
    """Unlinks acknowledged files of ``new/`` on a background thread."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._todo: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[str] = queue.SimpleQueue()
        #: names handed over and not yet reported gone (main thread only).
        self.pending: set[str] = set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jobcompd-retirer", daemon=True)
        self._thread.start()

    def retire(self, name: str) -> None:
        self.pending.add(name)
        self._todo.put(name)

    def collect(self) -> None:
        """Forget the names the thread has removed (called by the main loop)."""
        try:
            while True:
                self.pending.discard(self._done.get_nowait())
        except queue.Empty:
            pass

    def stop(self) -> None:
        """Finish every unlink handed over so far, then end the thread."""
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        self.collect()

    def _run(self) -> None:
        while (name := self._todo.get()) is not None:
            try:
                self._spool.retire(name)
            except OSError as e:
                # The record is delivered; a file left behind is sent again at a later start.
                log.error("retire_failed", file=name, error=str(e))
            self._done.put(name)
