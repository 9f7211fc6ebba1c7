"""Where the main loop sleeps, and what wakes it: signals and other threads.

Signal handlers only set a flag (gunicorn's arbiter does the same): the loop acts on it at its
next pass. ``signal.set_wakeup_fd`` and ``wake()`` (inotify's thread, the HTTP intake) write
to one non-blocking pipe that the idle loop waits on, so neither a signal nor a new record
waits for the loop's timeout.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal


class Wakeup:
    """The stop and reload requests, and the pipe that interrupts the loop's wait."""

    def __init__(self) -> None:
        self.stop_requested = False
        self.reload_requested = False
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install_signals(self) -> None:
        """SIGTERM and SIGINT ask to stop, SIGHUP to reload; each wakes the loop."""
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, _signum: int, _frame: object) -> None:
        self.stop_requested = True

    def _on_hup(self, _signum: int, _frame: object) -> None:
        self.reload_requested = True

    def take_reload(self) -> bool:
        """Whether a reload was asked for since the last call."""
        asked, self.reload_requested = self.reload_requested, False
        return asked

    def wake(self) -> None:
        """Interrupt the loop's wait; callable from any thread."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"w")

    def wait(self, timeout: float) -> None:
        """Sleep until woken or ``timeout`` seconds have passed."""
        with contextlib.suppress(InterruptedError):
            select.select([self._r], [], [], timeout)
        self.drain()

    def drain(self) -> None:
        """Forget the wake-ups so far (the loop is about to look at everything anyway)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass
