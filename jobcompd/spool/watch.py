"""Finding records in `new/` to send: the start-up scan, inotify (watchdog), periodic rescans.

No single mechanism is trusted alone. inotify tells about new files at once but can overflow and
drop events; a directory scan sees everything but costs a pass over ``new/``. So the intake keeps
an in-memory queue of names, oldest first, fed by both: inotify for speed, a scan at start, every
``rescan_interval``, after an inotify overflow, and whenever the queue was truncated and runs dry.

Memory stays bounded on a huge backlog: the queue holds at most ``limit`` names (the oldest ones);
when more files exist it remembers that it is *truncated* and scans again once it has drained.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
from collections.abc import Callable, Set
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
)
from watchdog.observers.api import EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter


class PendingQueue:
    """Names waiting to be read, oldest (smallest name) first, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[str] = []
        self._members: set[str] = set()
        #: more files exist in new/ than the queue holds: scan again once it drains.
        self.truncated = False

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def add(self, name: str) -> None:
        if name in self._members:
            return
        if len(self._heap) >= self.limit:
            self.truncated = True
            return
        heapq.heappush(self._heap, name)
        self._members.add(name)

    def replace(self, names: list[str], truncated: bool) -> None:
        """Take a fresh scan result (already sorted, excluding what is in flight)."""
        merged = set(names) | self._members
        if len(merged) > self.limit:
            keep = heapq.nsmallest(self.limit, merged)
            truncated = True
        else:
            keep = sorted(merged)
        self._heap = keep  # a sorted list is a valid heap
        self._members = set(keep)
        self.truncated = truncated

    def peek(self) -> str | None:
        """The oldest name, without taking it."""
        return self._heap[0] if self._heap else None

    def pop(self) -> str:
        name = heapq.heappop(self._heap)
        self._members.discard(name)
        return name


class SpoolWatcher:
    """inotify on ``new/`` through watchdog; every event only records a name and
    wakes the loop.

    watchdog handles an inotify queue overflow internally and only logs a warning about it; the
    watcher listens for that warning and asks for a rescan, so a burst never goes unnoticed for
    longer than it takes the main loop to wake up.
    """

    def __init__(self, new_dir: Path, wake: Callable[[], None]) -> None:
        self._dir = os.fspath(new_dir)
        self._wake = wake
        self._lock = threading.Lock()
        self._names: list[str] = []
        self._overflowed = False
        self._emitter: InotifyEmitter | None = None
        self._overflow_hook = _OverflowHook(self._on_overflow)

    def start(self) -> None:
        # Only renames into new/ (the hook's way; watchdog reports a rename from an unwatched
        # folder as a creation), creations and files closed after writing: the kernel then
        # never queues the open, close and delete events of the daemon's own reads and
        # unlinks. watchdog's emitter hands each event straight to _Sink on its own thread;
        # an Observer would pass it on once more, to a thread of its own, which costs CPU at
        # every event (docs/performance.md).
        kinds = [FileMovedEvent, FileCreatedEvent, FileClosedEvent, DirMovedEvent,
                 DirCreatedEvent]
        watch = ObservedWatch(self._dir, recursive=False, event_filter=kinds)
        emitter = InotifyEmitter(_Sink(self._dir, self._on_name), watch, event_filter=kinds)
        emitter.daemon = True
        logging.getLogger("watchdog.observers.inotify_c").addFilter(self._overflow_hook)
        emitter.start()
        self._emitter = emitter

    def stop(self) -> None:
        logging.getLogger("watchdog.observers.inotify_c").removeFilter(self._overflow_hook)
        if self._emitter is not None:
            self._emitter.stop()
            self._emitter.join(timeout=5)
            self._emitter = None

    def take(self) -> tuple[list[str], bool]:
        """Names seen since the last call, and whether inotify overflowed meanwhile."""
        with self._lock:
            names, self._names = self._names, []
            overflowed, self._overflowed = self._overflowed, False
        return names, overflowed

    def _on_name(self, name: str) -> None:
        with self._lock:
            first = not self._names
            self._names.append(name)
        if first:
            self._wake()

    def _on_overflow(self) -> None:
        with self._lock:
            self._overflowed = True
        self._wake()


class _Sink(EventQueue):
    """Takes watchdog's events as its emitter queues them: the name of a file moved in,
    created or closed after writing in the watched folder, not a dot file."""

    def __init__(self, directory: str, on_name: Callable[[str], None]) -> None:
        super().__init__()
        self._dir = directory
        self._on_name = on_name

    def put(self, item: tuple[FileSystemEvent, ObservedWatch], block: bool = True,
            timeout: float | None = None) -> None:
        event = item[0]
        path = event.dest_path if isinstance(event, (FileMovedEvent, DirMovedEvent)) else \
            event.src_path
        directory, name = os.path.split(os.fsdecode(path))
        if directory == self._dir and not name.startswith("."):
            self._on_name(name)


class _OverflowHook(logging.Filter):
    """Turns watchdog's "Inotify queue overflowed" warning into a rescan request."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__()
        self._on_overflow = on_overflow

    def filter(self, record: logging.LogRecord) -> bool:
        if "overflow" in str(record.msg).lower():
            self._on_overflow()
        return True


def scan_into(
    queue: PendingQueue,
    scan: Callable[[int, Set[str]], tuple[list[str], bool]],
    in_window: Set[str],
) -> int:
    """Refill ``queue`` from a directory scan; return how many names it now holds."""
    names, truncated = scan(queue.limit, in_window)
    queue.replace(names, truncated)
    return len(queue)
