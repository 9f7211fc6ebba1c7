"""The in-flight window: every record read from the spool and not yet acknowledged.

The window is what bounds the daemon's memory (``max_inflight``: the spool keeps the rest on
disk) and the one place that knows where each record stands:

- ``QUEUED``: waiting to be handed to librdkafka, first come first served (a new record, a
  record to send again after a producer was replaced, or one librdkafka's queue had no room
  for);
- ``SENT``: handed to the producer of generation ``message.generation``; a delivery report
  from that producer settles it;
- ``BACKING_OFF``: failed for a reason worth retrying, sent again at ``message.retry_at``;
- ``HELD``: purged from librdkafka at shutdown; it stays in the spool for the next start.

A record leaves the window when it is delivered or dead-lettered. Pure bookkeeping: no I/O.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator

from jobcompd.service.producer import Message, Report

QUEUED = "queued"
SENT = "sent"
BACKING_OFF = "backing_off"
HELD = "held"


class Window:
    """The unacknowledged records by spool name, with their queue and their backoffs."""

    def __init__(self) -> None:
        self._messages: dict[str, Message] = {}
        self._queue: deque[Message] = deque()
        #: (retry_at, seq, message): the seq keeps equal times in order without comparing
        #: messages.
        self._backoffs: list[tuple[float, int, Message]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._messages)

    def __contains__(self, name: str) -> bool:
        return name in self._messages

    def __iter__(self) -> Iterator[Message]:
        return iter(self._messages.values())

    def names(self) -> set[str]:
        return set(self._messages)

    # -- entering and leaving -------------------------------------------------------------

    def admit(self, msg: Message) -> None:
        """A record just read: queued behind everything already waiting."""
        self._messages[msg.name] = msg
        msg.state = QUEUED
        self._queue.append(msg)

    def remove(self, msg: Message) -> None:
        """Delivered or dead-lettered: the record leaves the window."""
        if self._messages.get(msg.name) is msg:
            del self._messages[msg.name]

    # -- the queue ------------------------------------------------------------------------

    def has_queued(self) -> bool:
        return bool(self._queue)

    def next_queued(self) -> Message | None:
        """The first record waiting to be produced, taken off the queue (None: none)."""
        while self._queue:
            msg = self._queue.popleft()
            if msg.state == QUEUED and self._messages.get(msg.name) is msg:
                return msg
        return None

    def put_back(self, msg: Message) -> None:
        """librdkafka had no room (or its producer must be replaced): first in line again."""
        msg.state = QUEUED
        self._queue.appendleft(msg)

    def requeue(self, msg: Message) -> None:
        """Send again as soon as possible, behind what is already waiting."""
        msg.state = QUEUED
        self._queue.append(msg)

    def sent(self, msg: Message) -> None:
        """Handed to the producer of ``msg.generation``."""
        msg.state = SENT

    # -- backoffs -------------------------------------------------------------------------

    def back_off(self, msg: Message, retry_at: float) -> None:
        msg.state = BACKING_OFF
        msg.retry_at = retry_at
        self._seq += 1
        heapq.heappush(self._backoffs, (retry_at, self._seq, msg))

    def release_due(self, now: float) -> None:
        """Records whose backoff has passed join the queue."""
        while self._backoffs and self._backoffs[0][0] <= now:
            _, _, msg = heapq.heappop(self._backoffs)
            if msg.state == BACKING_OFF and self._messages.get(msg.name) is msg:
                msg.retry_at = 0.0
                self.requeue(msg)

    def next_retry_at(self) -> float | None:
        return self._backoffs[0][0] if self._backoffs else None

    # -- producers ------------------------------------------------------------------------

    def current(self, report: Report) -> Message | None:
        """The record a delivery report settles, or None when the report is stale: the record
        left the window, or was queued or sent again since (on another producer)."""
        msg = report.message
        if (msg.state != SENT or msg.generation != report.generation
                or self._messages.get(msg.name) is not msg):
            return None
        return msg

    def sent_on(self, generation: int) -> list[Message]:
        """The records handed to that producer and not settled, oldest first."""
        return [m for m in self._messages.values()
                if m.state == SENT and m.generation == generation]

    def resend_first(self, msgs: list[Message]) -> None:
        """Records of a replaced producer: queued before everything else, in their order."""
        for msg in reversed(msgs):
            self.put_back(msg)

    def hold(self, msg: Message) -> None:
        """Purged at shutdown: it stays in the spool and is sent at the next start."""
        msg.state = HELD

    def oldest_sent_at(self) -> float | None:
        """When the record that has waited longest for its delivery report was produced
        (monotonic), or None when none waits."""
        return min((m.produced_at for m in self._messages.values() if m.state == SENT),
                   default=None)

    # -- what the status and the state file need ------------------------------------------

    def oldest_arrived_ns(self) -> int | None:
        return min((m.arrived_ns for m in self._messages.values()), default=None)

    def attempts(self) -> dict[str, int]:
        """Produce attempts of the records tried at least once, by name (for the state file)."""
        return {n: m.attempts for n, m in self._messages.items() if m.attempts > 0}
