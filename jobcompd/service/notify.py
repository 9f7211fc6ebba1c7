"""sd_notify: tell systemd (Type=notify) what the daemon is doing.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the daemon calls these
unconditionally. The messages are those of sd_notify(3): READY=1 once the spool is scanned and
the producer exists, STATUS= for ``systemctl status``, RELOADING=1/READY=1 around a reload,
STOPPING=1, and WATCHDOG=1 from the main loop while it is healthy (``WatchdogSec=``).
"""

from __future__ import annotations

import os
import socket
import time

import structlog

from jobcompd.service.throttle import LogThrottle

log = structlog.get_logger("jobcompd")

#: Time asked for on top of flush_timeout when stopping: saving the state file, exiting.
STOP_MARGIN_S = 5.0
#: ``systemctl status`` shows STATUS= on one line; a long Kafka error is cut to this length.
STATUS_ERROR_CHARS = 120


#: One datagram socket for the process's life: a message, the watchdog's included, must not
#: need a new file descriptor, which the process may be short of (EMFILE) when it matters.
_socket: socket.socket | None = None
_throttle = LogThrottle()


def _send(*lines: str) -> None:
    """Send one message to NOTIFY_SOCKET (a path, or @ for the abstract namespace). A failure
    is logged once a minute and otherwise ignored: the next message goes as usual."""
    global _socket
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        if _socket is None:
            _socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _socket.sendto("\n".join(lines).encode(), target)
    except OSError as e:
        held = _throttle.admit(e.errno)
        if held is not None:
            log.warning("sd_notify_failed", error=str(e), repeated=held,
                        detail="systemd missed a message (STATUS=, WATCHDOG=1, ...); the "
                        "next one is sent as usual")


def ready(status: str) -> None:
    _send("READY=1", f"STATUS={status}")


def reloading() -> None:
    # systemd >= 253 wants the monotonic time with RELOADING=1 (Type=notify-reload).
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    _send("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping(flush_timeout_ms: int | None = None) -> None:
    """Say the daemon is stopping; with ``flush_timeout_ms`` (>= 0), also ask systemd to wait
    that long plus a margin (EXTEND_TIMEOUT_USEC), so an operator who raised flush_timeout
    above TimeoutStopSec= does not see the flush cut short by SIGKILL. It never shortens the
    unit's own timeout."""
    lines = ["STOPPING=1", "STATUS=stopping: purging, flushing, saving state"]
    if flush_timeout_ms is not None and flush_timeout_ms >= 0:
        usec = int((flush_timeout_ms / 1000.0 + STOP_MARGIN_S) * 1_000_000)
        lines.append(f"EXTEND_TIMEOUT_USEC={usec}")
    _send(*lines)


def standby_status(holder: str) -> str:
    """STATUS= of a standby: who holds the spool lock it waits for."""
    return f"standby, waiting for the lock held by {holder}"


def status(text: str) -> None:
    _send(f"STATUS={text}")


def watchdog() -> None:
    _send("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between two WATCHDOG=1 pings, or None when systemd set no watchdog for us.

    systemd passes the period in WATCHDOG_USEC and, when it knows it, the pid it applies to in
    WATCHDOG_PID (a child that inherited the variables must not ping). Pinging at half the
    period, as sd_watchdog_enabled(3) advises, leaves room for one late loop pass.
    """
    usec_text = os.environ.get("WATCHDOG_USEC", "")
    if not usec_text or not os.environ.get("NOTIFY_SOCKET"):
        return None
    pid_text = os.environ.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            if int(pid_text) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


class WatchdogTimer:
    """Sends WATCHDOG=1 at most every ``interval`` seconds, from the main loop only.

    The loop calls ``maybe_ping(now)`` on every pass, and caps its idle wait with
    ``time_left(now)`` so that a quiet daemon still pings in time. A loop that stops
    passing stops pinging, and systemd restarts the service: that is the point.
    """

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self._next = 0.0

    @classmethod
    def from_env(cls) -> WatchdogTimer:
        return cls(watchdog_interval())

    def maybe_ping(self, now: float) -> bool:
        """Ping if due (``now`` is time.monotonic()); True when a ping was sent."""
        if self.interval is None or now < self._next:
            return False
        watchdog()
        self._next = now + self.interval
        return True

    def time_left(self, now: float) -> float:
        """Seconds until the next ping is due (infinity without a watchdog)."""
        if self.interval is None:
            return float("inf")
        return max(0.0, self._next - now)


def format_status(
    *,
    backlog: int,
    in_flight: int,
    delivered: int,
    failed: int,
    broker_up: bool | None,
    last_error: str | None = None,
    backlog_truncated: bool = False,
) -> str:
    """The one-line STATUS= text: what an operator looks for first in ``systemctl status``.

    ``backlog_truncated`` marks a backlog that is only a lower bound (``12000+``).
    """
    broker = {None: "unknown", True: "up", False: "down"}[broker_up]
    text = (
        f"backlog {backlog}{'+' if backlog_truncated else ''}, in flight {in_flight}, "
        f"delivered {delivered}, failed {failed}, broker {broker}"
    )
    if last_error:
        error = " ".join(last_error.split())
        if len(error) > STATUS_ERROR_CHARS:
            error = error[: STATUS_ERROR_CHARS - 1] + "…"
        text += f"; last error: {error}"
    return text
