"""At most one log line per distinct error per interval, with a count of the ones held back.

A broker that is down makes librdkafka report the same failure every second or so, from its
log, its error callback and every record's delivery report: hundreds of lines a minute that
say one thing. An error is known by a key its caller builds from what does not change between
repeats (the source, the error code, the broker), never from its text, which carries timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

#: Default interval: one line per distinct error per minute.
INTERVAL_S = 60.0
#: Keys remembered at most; older ones are forgotten first (errors are few in practice).
MAX_KEYS = 1024


class LogThrottle:
    """Decides which repeats of an error reach the log."""

    def __init__(self, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        #: key -> (time of the last line logged, repeats held back since)
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def admit(self, key: Hashable) -> int | None:
        """None: hold this repeat back. Otherwise log it now, saying it came this many more
        times since the last line about it (0 the first time)."""
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._seen) >= MAX_KEYS:
            del self._seen[min(self._seen, key=lambda k: self._seen[k][0])]
        self._seen[key] = (now, 0)
        return 0 if last is None else last[1]

    def held_back(self) -> int:
        """Repeats held back and not yet reported, over all keys."""
        return sum(count for _, count in self._seen.values())

    def reset(self) -> int:
        """Forget every key (the trouble is over); return the repeats that were held back."""
        held = self.held_back()
        self._seen.clear()
        return held


def broker_of(text: str) -> str:
    """The broker a librdkafka message names first (``127.0.0.1:9/bootstrap: ...`` or
    ``[thrd:127.0.0.1:9/bootstrap]: ...``), or "" when it names none."""
    if text.startswith("[thrd:"):
        end = text.find("]")
        return text[6:end] if end > 0 else ""
    head, sep, _ = text.partition(": ")
    return head if sep and "/" in head and " " not in head else ""
