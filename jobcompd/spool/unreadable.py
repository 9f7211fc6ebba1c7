"""Records in new/ that the daemon may not open (their owner or mode): not bad data.

A record written by another trusted user (root, say) with mode 0600 is whole and valid; only
its permissions keep the daemon out. Moving it to failed/ would turn a permission slip into a
record that nobody sends, so it stays in new/, is tried again at every rescan, and is taken as
soon as someone runs the chown or chmod it needs. Each one is logged once when first seen, and
while any remain a reminder is logged every hour with the commands that fix them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: How often the reminder is logged while unreadable records remain.
REPORT_INTERVAL_S = 3600.0
#: Records named in one reminder; the rest are counted.
REPORT_NAMES = 5


@dataclass(slots=True)
class _Entry:
    job_id: int
    fix: str
    first_seen: float


@dataclass(frozen=True, slots=True)
class Reminder:
    """What the hourly reminder says."""

    count: int
    oldest_s: float
    files: list[str]
    fixes: list[str]


class UnreadableRecords:
    """The names of new/ that could not be opened, with the command that fixes each."""

    def __init__(self, new_dir: str) -> None:
        self._new_dir = new_dir
        self._entries: dict[str, _Entry] = {}
        self._next_report = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def notice(self, name: str, job_id: int, fix: str, now: float) -> bool:
        """Remember ``name``; True the first time (the caller logs it then, and only then)."""
        if name in self._entries:
            return False
        self._entries[name] = _Entry(job_id, fix, now)
        if len(self._entries) == 1:
            self._next_report = now + REPORT_INTERVAL_S
        return True

    def forget(self, name: str) -> None:
        """The record was read after all (its permissions were fixed)."""
        self._entries.pop(name, None)

    def reminder(self, now: float) -> Reminder | None:
        """Once an hour while unreadable records remain: what to tell the operator. Records
        that left new/ meanwhile (removed or moved by hand) are forgotten first."""
        if not self._entries or now < self._next_report:
            return None
        self._next_report = now + REPORT_INTERVAL_S
        for name in [n for n in self._entries if not os.path.lexists(f"{self._new_dir}/{n}")]:
            del self._entries[name]
        if not self._entries:
            return None
        names = sorted(self._entries)[:REPORT_NAMES]
        return Reminder(
            count=len(self._entries),
            oldest_s=now - min(e.first_seen for e in self._entries.values()),
            files=names,
            fixes=[self._entries[n].fix for n in names],
        )
