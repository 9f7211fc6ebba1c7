"""Spool to records: which names in new/ are waiting, reading them, and turning each into the
Message the window takes; what can never be a record goes to failed/.

Names come from inotify (SpoolWatcher) and from rescans of new/ (at start, every
``rescan_interval``, after an inotify overflow or a read error). A name already in the window,
or delivered and waiting for its unlink, is never taken again: that is what keeps a rescan or a
late inotify event from sending a record twice.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from jobcompd import records, spool
from jobcompd.config import Config
from jobcompd.service.httpserver import RESOURCE_ERRNOS
from jobcompd.service.producer import Message
from jobcompd.service.telemetry import Telemetry
from jobcompd.service.throttle import LogThrottle
from jobcompd.service.window import Window
from jobcompd.spool.retirer import Retirer
from jobcompd.spool.unreadable import UnreadableRecords
from jobcompd.spool.watch import PendingQueue, SpoolWatcher, scan_into

log = structlog.get_logger("jobcompd")

#: How many names the intake keeps in memory at most; more files wait on disk for a rescan.
QUEUE_LIMIT = 100_000
#: Records count as arriving for this long after inotify last told of one.
ARRIVING_S = 1.0
#: After running short of file descriptors or memory, the spool is scanned again this soon.
RESOURCE_RETRY_S = 1.0

#: A record read and not yet parsed: its file's name, what the name says, and its bytes.
_Item = tuple[str, spool.SpoolName, bytes]


class DeadLetters:
    """Moves what can never be sent into failed/, and says so once it is there."""

    def __init__(self, sp: spool.Spool, telemetry: Telemetry) -> None:
        self._spool = sp
        self._telemetry = telemetry

    def put(self, name: str, reason: str, message: str, job_id: int | None, *,
            attempts: int = 0, job_event: str | None = None) -> bool:
        """Move new/``name`` to failed/ with its reason; False (logged) when it could not be
        moved, in which case it stays in new/ and a later rescan tries again."""
        try:
            self._spool.dead_letter(name, reason, message, attempts=attempts, job_id=job_id)
        except (OSError, ValueError) as e:
            log.error("dead_letter_failed", job_id=job_id, file=name, reason=reason,
                      error=str(e),
                      detail="the file stays in new/ and is retried at the next rescan")
            return False
        self._telemetry.dead_lettered(reason)
        self._telemetry.note_error(message)
        log.error("dead_lettered", job_id=job_id, job_event=job_event, file=name, reason=reason,
                  error=message, failed_dir=str(self._spool.failed))
        return True


class Carryover:
    """What the last run left in the state file, applied to the records as they come back:
    their produce attempts, and whether they may have reached Kafka already (the redelivery
    header). After an unclean stop nobody knows which records were on the wire, so the first
    ``max_inflight`` records sent are marked."""

    def __init__(self, attempts: dict[str, int] | None = None,
                 maybe_delivered: set[str] | None = None, suspects: int = 0) -> None:
        self._attempts = dict(attempts or {})
        self._maybe_delivered = set(maybe_delivered or ())
        self.suspects = suspects

    def annotate(self, msg: Message) -> None:
        msg.attempts = self._attempts.pop(msg.name, 0)
        if msg.name in self._maybe_delivered:
            self._maybe_delivered.discard(msg.name)
            msg.redelivery = True
        elif self.suspects > 0:
            msg.redelivery = True
        if self.suspects > 0:
            self.suspects -= 1


class Intake:
    """The names waiting in new/, and their reading and parsing into Messages."""

    def __init__(self, sp: spool.Spool, config: Config, *, window: Window, retirer: Retirer,
                 dead_letters: DeadLetters, wake: Callable[[], None]) -> None:
        self.spool = sp
        self.config = config
        self.queue = PendingQueue(QUEUE_LIMIT)
        self.watcher = SpoolWatcher(sp.new, wake)
        self.unreadable = UnreadableRecords(os.fspath(sp.new))
        self.carryover = Carryover()
        self._window = window
        self._retirer = retirer
        self._dead_letters = dead_letters
        self.rescan_requested = True
        self.next_rescan = 0.0
        #: rescan this often while nothing waits (a shared spool: inotify does not see the
        #: other host's writes); None: only every rescan_interval.
        self.idle_rescan_s: float | None = None
        self._last_rescan = 0.0
        self.arrived_at = -ARRIVING_S
        self._throttle = LogThrottle()

    def _retry_soon(self, now: float, *, forget: bool = True) -> None:
        """The process is short of descriptors or memory: rescan in a moment, not at once
        (which would spin) and not a whole rescan_interval later. ``forget``: drop the names
        queued (they are all in new/) rather than fail on each of them meanwhile."""
        if forget:
            self.queue = PendingQueue(QUEUE_LIMIT)
        self.next_rescan = min(self.next_rescan, now + RESOURCE_RETRY_S)

    def arriving(self, now: float) -> bool:
        """inotify told of a record a moment ago: more are likely to follow."""
        return now - self.arrived_at < ARRIVING_S

    def rescan_due(self, now: float) -> bool:
        q = self.queue
        idle = self.idle_rescan_s is not None and not q and not q.truncated
        return (self.rescan_requested or now >= self.next_rescan or (q.truncated and not q)
                or (idle and now >= self._last_rescan + (self.idle_rescan_s or 0.0)))

    def on_its_way(self, name: str) -> bool:
        """Whether a spool name is in the window or acknowledged and being unlinked: such a
        name seen again (a rescan, a late inotify event) must not be sent twice."""
        return name in self._window or name in self._retirer.pending

    def oldest_pending_ns(self) -> int | None:
        """Spool time stamp of the oldest record not yet acknowledged (window or queue)."""
        oldest = self._window.oldest_arrived_ns()
        head = self.queue.peek()
        if head is not None:
            with contextlib.suppress(ValueError):
                ns = int(head.split(".", 1)[0])
                oldest = ns if oldest is None else min(oldest, ns)
        return oldest

    def remind_unreadable(self, now: float) -> None:
        """Once an hour while records in new/ cannot be opened: how many, and the fix."""
        reminder = self.unreadable.reminder(now)
        if reminder is not None:
            log.warning("records_unreadable", count=reminder.count,
                        oldest_s=round(reminder.oldest_s), files=reminder.files,
                        fix="; ".join(reminder.fixes),
                        detail="they stay in new/ and are sent once jobcompd can read them")

    def take_events(self) -> None:
        names, overflowed = self.watcher.take()
        if overflowed:
            log.warning("inotify_overflow", detail="rescanning the spool")
            self.rescan_requested = True
        if names:
            self.arrived_at = time.monotonic()
        for name in names:
            if not self.on_its_way(name):
                self.queue.add(name)

    def rescan(self, now: float) -> None:
        self.rescan_requested = False
        self._last_rescan = now
        self.next_rescan = now + self.config.params.rescan_interval_s
        try:
            # Acknowledged files still waiting for their unlink are not new ones.
            queued = scan_into(self.queue, self.spool.scan,
                               self._window.names() | self._retirer.pending)
        except OSError as e:
            if self._throttle.admit(("spool_scan_failed", e.errno)) is not None:
                log.error("spool_scan_failed", path=str(self.spool.new), error=str(e))
            if e.errno in RESOURCE_ERRNOS:
                self._retry_soon(now)
            return
        if self.idle_rescan_s is not None and not self.queue:
            self.next_rescan = min(self.next_rescan, now + self.idle_rescan_s)
        log.debug("rescanned", queued=queued, in_flight=len(self._window),
                  truncated=self.queue.truncated)

    def read_batch(self, room: int) -> list[Message]:
        """Up to ``room`` records read, parsed and made Messages, oldest first. Reading a batch
        before producing any lets librdkafka batch them; bad records are dead-lettered and
        start records retired quietly when start events are off."""
        items: list[_Item] = []
        while len(items) < room and self.queue:
            item = self._read(self.queue.pop())
            if item is not None:
                items.append(item)
        out = []
        for name, meta, data in items:
            msg = self._message(name, meta, self._parse(meta, data))
            if msg is not None:
                out.append(msg)
        return out

    def _read(self, name: str) -> _Item | None:
        """Read one spool file; dead-letter what cannot be a record."""
        if self.on_its_way(name):
            return None  # never produced twice
        try:
            meta = spool.parse_name(name)
        except spool.RejectedFile as e:
            # A bad name is refused before the file is opened: a second event for a name
            # already dead-lettered (created, then closed) must not dead-letter it twice.
            if os.path.lexists(Path(self.spool.new) / name):
                self._dead_letters.put(name, e.reason, str(e), job_id=None)
            return None
        try:
            data = self.spool.read(name)
        except FileNotFoundError:
            return None  # retired meanwhile (a late inotify event, or removed by hand)
        except spool.Unreadable as e:
            if self.unreadable.notice(name, meta.job_id, e.fix, time.monotonic()):
                log.warning("record_unreadable", job_id=meta.job_id, job_event=meta.event,
                            file=name, error=str(e), fix=e.fix)
            return None
        except spool.RejectedFile as e:
            self._dead_letters.put(name, e.reason, str(e), job_id=meta.job_id)
            return None
        except OSError as e:
            # Out of file descriptors or memory: the process's trouble, not the file's. It stays
            # in new/ and a rescan brings it back once the trouble is over.
            if self._throttle.admit(("spool_read_failed", e.errno)) is not None:
                log.error("spool_read_failed", job_id=meta.job_id, file=name, error=str(e),
                          detail="the record stays in new/ and is read again shortly")
            self._retry_soon(time.monotonic())
            return None
        if self.unreadable:
            self.unreadable.forget(name)
        return name, meta, data

    def _parse(self, meta: spool.SpoolName, data: bytes
               ) -> records.Record | records.RecordError | None:
        """The record, or why it is not one, with the configuration in force."""
        cfg = self.config
        try:
            return records.parse_record(
                data, meta.fmt, cluster=cfg.cluster_name, event_hint=meta.event,
                send_script=cfg.params.send_script, send_comment=cfg.params.send_comment)
        except records.RecordError as e:
            return e
        except MemoryError:  # the process's trouble, not the record's: read it again later
            if self._throttle.admit("parse_out_of_memory") is not None:
                log.error("record_parse_failed", job_id=meta.job_id, error="out of memory",
                          detail="the record stays in new/ and is read again shortly")
            self._retry_soon(time.monotonic(), forget=False)
            return None

    def _message(self, name: str, meta: spool.SpoolName,
                 parsed: records.Record | records.RecordError | None) -> Message | None:
        """The Message of a parsed record; dead-letter what did not parse (under the
        error's reason code: malformed, too_many_keys), retire what needs no sending."""
        cfg = self.config
        if parsed is None:
            return None  # not parsed for want of memory: it stays in new/
        if isinstance(parsed, records.RecordError):
            self._dead_letters.put(name, parsed.reason, f"{self.spool.new / name}: {parsed}",
                                   meta.job_id)
            return None
        trace = cfg.debug_jobcomp
        if parsed.event == records.EVENT_START and not cfg.params.enable_job_start:
            if trace:
                log.debug("start_record_skipped", job_id=parsed.job_id, job_event=parsed.event,
                          file=name, detail="enable_job_start is off")
            self._retirer.retire(name)
            return None
        msg = Message(
            name=name,
            job_id=parsed.job_id,
            event=parsed.event,
            key=f"{cfg.cluster_name}:{parsed.job_id}".encode(),
            value=parsed.value,
            record_id=parsed.record_id,
            arrived_ns=meta.ns,
        )
        self.carryover.annotate(msg)
        if trace:
            log.debug("ingested", job_id=msg.job_id, job_event=msg.event, file=name)
        return msg
