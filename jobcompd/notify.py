"""sd_notify: tell systemd (Type=notify) what the daemon is doing.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the daemon calls these
unconditionally.
"""

from __future__ import annotations

import os
import time

from systemd import daemon as sd_daemon


def _send(*lines: str) -> None:
    if os.environ.get("NOTIFY_SOCKET"):
        sd_daemon.notify("\n".join(lines))


def ready(status: str) -> None:
    _send("READY=1", f"STATUS={status}")


def reloading() -> None:
    # systemd >= 253 wants the monotonic time with RELOADING=1 (Type=notify-reload).
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    _send("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> None:
    _send("STOPPING=1", "STATUS=stopping: purging, flushing, saving state")


def status(text: str) -> None:
    _send(f"STATUS={text}")


def watchdog() -> None:
    _send("WATCHDOG=1")
