"""A small HTTP server that a hostile client cannot starve or exhaust, for MetricsListen and
HttpListen alike.

Neither endpoint has authentication, so anyone who can connect can try to hold it: open
connections and say nothing, drip the headers a byte at a time, announce a body and send it
slowly, or simply open more connections than the process has file descriptors. What keeps that
from hurting the daemon:

- **A cap.** At most ``max_connections`` connections are served at once, each by a thread of
  its own, so the endpoint never holds more than a few descriptors and threads, however many
  clients connect. Connections beyond that wait in the kernel's listen queue, not in the
  process.
- **Deadlines.** The request line and headers must arrive within ``header_timeout_s``, a
  body at ``min_body_rate`` bytes a second on average (after ``body_grace_s``), and the whole
  request within ``total_timeout_s``: each read waits only until the deadline of its phase,
  however the client spreads its bytes.
- **Eviction.** When all slots are taken and a new connection arrives, the oldest connection
  still sending its request is cut, so that connections which renew themselves to sit in the
  slots cannot lock out a client that sends its request at once (Slurm, Prometheus). A
  connection whose request is complete (``commit``) is never cut: its answer is on its way.
- **Refusal.** Only when every slot is busy answering is a new connection refused, with the
  server's ``busy_response`` (503 and Retry-After) and one log line a minute at most.
- **Resource errors are weather.** Out of descriptors or memory while accepting (EMFILE,
  ENFILE, ENOBUFS, ENOMEM), or no thread to be had: logged once a minute, retried after a
  short pause; connections wait in the listen queue meanwhile.

A handler subclasses :class:`Handler` (http.server's BaseHTTPRequestHandler), answers one
request per connection, and reads a body only through :meth:`Handler.read_body`.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import io
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from jobcompd.service.throttle import LogThrottle

__all__ = ["RESOURCE_ERRNOS", "BoundedServer", "Handler", "Limits"]

log = structlog.get_logger("jobcompd.httpserver")

#: errnos that say the process (or the system) is short of a resource, not that anything is
#: wrong with what it was doing: back off and try again.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Pauses of the accept loop while it gets a resource error: from the first to the longest.
_ACCEPT_PAUSE_MIN_S = 0.05
_ACCEPT_PAUSE_MAX_S = 1.0
#: A reply is given at least this long to be written, whatever is left of the deadline.
_MIN_WRITE_S = 1.0
#: After an early answer, unread body bytes are read and dropped (this much, this long) before
#: the close, so that the kernel does not answer them with a reset that destroys the answer.
_DRAIN_BYTES = 4 * 1024 * 1024
_DRAIN_S = 1.0
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may take of a server."""

    max_connections: int = 8
    header_timeout_s: float = 2.0
    total_timeout_s: float = 10.0
    min_body_rate: float = 64 * 1024
    body_grace_s: float = 2.0
    max_header_bytes: int = 16 * 1024
    listen_backlog: int = 64

    def __post_init__(self) -> None:
        for name in ("max_connections", "header_timeout_s", "total_timeout_s",
                     "min_body_rate", "max_header_bytes", "listen_backlog"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.body_grace_s < 0:
            raise ValueError(f"body_grace_s must not be negative, not {self.body_grace_s}")


class HeadersTooLarge(Exception):
    """The request line and headers are longer than ``max_header_bytes``."""


class _Conn:
    """One accepted connection, as the accept loop and its handler thread share it."""

    def __init__(self, sock: socket.socket, addr: Any, limits: Limits) -> None:
        self.sock = sock
        self.addr = addr
        self.accepted = time.monotonic()
        self.deadline = self.accepted + limits.total_timeout_s
        self.evictable = True
        self.evicted = False
        self.closed = False
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def evict(self, *, force: bool = False) -> bool:
        """Cut the connection if it is still sending its request (or ``force``); the handler's
        next read or write fails at once. The lock keeps this off a descriptor already
        closed and perhaps reused."""
        with self._lock:
            if self.closed or not (self.evictable or force):
                return False
            self.evicted = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            return True

    def commit(self) -> bool:
        """The request is complete: from now on the connection is not cut. False when it was
        cut already."""
        with self._lock:
            if self.evicted:
                return False
            self.evictable = False
            return True

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.sock.close()


class _Reader(io.RawIOBase):
    """The socket's read side, with a deadline for every read and a byte budget for the
    headers: a client can make no read wait past its phase's deadline."""

    def __init__(self, conn: _Conn, deadline: float, budget: int) -> None:
        super().__init__()
        self._sock = conn.sock
        self.deadline = deadline
        self.budget: int | None = budget
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise TimeoutError("the client was too slow")
        view = memoryview(buffer)
        if self.budget is not None:
            if self.budget <= 0:
                raise HeadersTooLarge("request headers too large")
            view = view[:self.budget]
        self._sock.settimeout(left)
        try:
            n = self._sock.recv_into(view)
        except TimeoutError:
            self.timed_out = True
            raise
        if self.budget is not None:
            self.budget -= n
        return n


class _Writer:
    """The socket's write side: each write gets what is left of the connection's deadline,
    at least _MIN_WRITE_S; nothing is written to a connection that was cut."""

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn

    def write(self, data: bytes) -> int:
        conn = self._conn
        if conn.evicted:
            raise ConnectionAbortedError(errno.ECONNABORTED, "connection cut")
        conn.sock.settimeout(max(_MIN_WRITE_S, conn.deadline - time.monotonic()))
        conn.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


class Handler(http.server.BaseHTTPRequestHandler):
    """One request per connection, read within the server's Limits.

    A method listed in ``body_methods`` stays open to eviction until :meth:`read_body` has
    its body; any other request is committed as soon as its headers are in.
    """

    protocol_version = "HTTP/1.1"  # so that curl's "Expect: 100-continue" gets its answer
    server_version = "jobcompd"
    sys_version = ""
    body_methods: frozenset[str] = frozenset()
    server: BoundedServer  # type: ignore[assignment]
    request: _Conn  # type: ignore[assignment]

    def setup(self) -> None:
        conn, limits = self.request, self.server.limits
        self.conn = conn
        self.connection = conn.sock
        header_deadline = min(conn.deadline, conn.accepted + limits.header_timeout_s)
        self._reader = _Reader(conn, header_deadline, limits.max_header_bytes)
        self.rfile = io.BufferedReader(self._reader, 8192)
        self.wfile = _Writer(conn)  # type: ignore[assignment]
        self.body_unread = False

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.handle_one_request()
        except HeadersTooLarge:
            self.body_unread = True
            self.send_error(431, "request headers too large")
        except OSError:
            pass  # the client went away, or was cut: nobody to answer
        if self._reader.timed_out and not self.conn.evicted:
            self.server.note("timed_out", "a client was too slow sending its request",
                             client=self.client_address[0])

    def finish(self) -> None:
        if self.body_unread and not self.conn.evicted:
            _drain(self.conn)

    def parse_request(self) -> bool:
        """http.server's parsing, then the headers' deadline and budget give way to the
        body's (or the request is complete)."""
        ok = super().parse_request()
        self._reader.budget = None
        self._reader.deadline = self.conn.deadline
        if ok and self.command not in self.body_methods and not self.conn.commit():
            return False
        return ok

    def read_body(self, length: int) -> bytes | None:
        """Exactly ``length`` body bytes, or None when the client stops, sends slower than
        the minimum rate or misses the deadline, or the connection is cut. The request is
        committed once the body is in."""
        limits = self.server.limits
        self._reader.deadline = min(self.conn.deadline, time.monotonic()
                                    + limits.body_grace_s + length / limits.min_body_rate)
        self.body_unread = True
        chunks: list[bytes] = []
        left = length
        try:
            while left > 0:
                chunk = self.rfile.read1(min(left, _READ_CHUNK))
                if not chunk:
                    return None
                chunks.append(chunk)
                left -= len(chunk)
        except OSError:
            return None
        self.body_unread = False
        if not self.conn.commit():
            return None
        return b"".join(chunks)

    def time_left(self) -> float:
        """Seconds left of the connection's total deadline."""
        return self.conn.deadline - time.monotonic()

    def peer_gone(self) -> bool:
        """Whether the client has closed or reset the connection: an answer would not reach
        it (a client that only half-closes looks the same, and is taken for gone)."""
        try:
            self.conn.sock.settimeout(0.0)  # a socket with a timeout would wait to be readable
            return self.conn.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: a handler logs what matters in its own structured lines."""

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: http.server's own access log goes to stderr unstructured."""


def _drain(conn: _Conn) -> None:
    """Read and drop what the client still sends, briefly, before the socket closes."""
    with contextlib.suppress(OSError):
        conn.sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + _DRAIN_S
        total = 0
        while total < _DRAIN_BYTES and (left := end - time.monotonic()) > 0:
            conn.sock.settimeout(left)
            chunk = conn.sock.recv(_READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)


def show_addr(host: str, port: int) -> str:
    """host:port, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket on host:port (IPv6 only for an IPv6 address). Raises OSError
    (socket.gaierror for a name that does not resolve)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class BoundedServer:
    """Serves ``handler`` on host:port from a thread of its own, within ``limits``.

    ``name`` is what its log lines say (``metrics``, ``http_intake``); ``busy_response`` the
    whole HTTP answer a refused connection gets; ``context`` is for the handler
    (``self.server.context``). ``start()`` raises OSError when the address cannot be used.
    """

    def __init__(self, host: str, port: int, handler: type[Handler], *, name: str,
                 limits: Limits, busy_response: bytes, context: Any = None) -> None:
        self.host, self.port = host, port
        self.handler = handler
        self.name = name
        self.limits = limits
        self.busy_response = busy_response
        self.context = context
        self._conns: dict[int, _Conn] = {}  # in the order they were accepted
        self._lock = threading.Lock()
        self._throttle = LogThrottle()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        # The accept loop's own (its thread only):
        self._sel: selectors.BaseSelector | None = None
        self._lingering: dict[socket.socket, float] = {}  # refused socket -> when to close
        self._pause = 0.0
        self._resume_at: float | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) bound; only after start()."""
        if self._listener is None:
            raise RuntimeError("the address is known only after start()")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._listener = _listen(self.host, self.port, self.limits.listen_backlog)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name=f"jobcompd-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, grace: float = 2.0) -> int:
        """Stop accepting, cut the connections still sending their requests, give the others
        ``grace`` seconds to answer, then cut them too. Returns how many were cut unanswered
        after the grace."""
        if self._thread is None:
            return 0
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        assert self._listener is not None
        self._listener.close()
        return self._finish_connections(grace)

    def _finish_connections(self, grace: float) -> int:
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            conn.evict()
        deadline = time.monotonic() + grace
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(max(0.0, deadline - time.monotonic()))
        late = [c for c in conns if c.thread is not None and c.thread.is_alive()]
        for conn in late:
            conn.evict(force=True)
            conn.thread.join(_MIN_WRITE_S)  # type: ignore[union-attr]
        return len(late)

    def note(self, what: str, event: str, **fields: Any) -> None:
        """Log ``event`` about the connections (refused, cut, timed out, accept failing) at
        most once a minute per kind, with how many more there were meanwhile."""
        held = self._throttle.admit(what)
        if held is not None:
            log.warning(f"{self.name}_connections_{what}", detail=event, repeated=held,
                        max_connections=self.limits.max_connections, **fields)

    # -- the accept loop ----------------------------------------------------------------

    def _serve(self) -> None:
        """Accept connections, and let refused ones linger until their clients have read the
        busy answer; pause accepting while the process is out of descriptors or memory."""
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            sel.register(self._listener, selectors.EVENT_READ)
            self._sel = sel
            while not self._stopping:
                for key, _ in sel.select(self._timeout()):
                    if key.fileobj is self._listener:
                        self._accept_all()
                    elif key.data is not None:
                        self._linger(key.fileobj)  # type: ignore[arg-type]
                self._tend(time.monotonic())
            for sock in list(self._lingering):
                self._unlinger(sock)
            self._sel = None

    def _timeout(self) -> float | None:
        """How long the loop may wait: until the next lingering socket or pause ends."""
        ends = list(self._lingering.values())
        if self._resume_at is not None:
            ends.append(self._resume_at)
        return max(0.0, min(ends) - time.monotonic()) if ends else None

    def _tend(self, now: float) -> None:
        """Close lingering sockets whose time is up; accept again after a pause."""
        for sock in [s for s, end in self._lingering.items() if end <= now]:
            self._unlinger(sock)
        if self._resume_at is not None and now >= self._resume_at:
            self._resume_at = None
            assert self._sel is not None and self._listener is not None
            self._sel.register(self._listener, selectors.EVENT_READ)

    def _accept_all(self) -> None:
        """Take the connections waiting in the listen queue (a backlog's worth at most)."""
        for _ in range(self.limits.listen_backlog):
            if not self._accept():
                return

    def _accept(self) -> bool:
        """Take one connection if one waits; False when none did. A resource error stops
        accepting for a pause that grows while they last; connections wait in the listen
        queue meanwhile."""
        assert self._listener is not None and self._sel is not None
        try:
            sock, addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            if e.errno not in RESOURCE_ERRNOS:
                self.note("failing", "accepting a connection failed", error=str(e))
                return False
            self.note("waiting", "out of file descriptors or memory: connections wait in "
                      "the listen queue and are taken once there is room", error=str(e))
            self._pause = min(_ACCEPT_PAUSE_MAX_S, max(_ACCEPT_PAUSE_MIN_S, 2 * self._pause))
            self._resume_at = time.monotonic() + self._pause
            self._sel.unregister(self._listener)
            return False
        self._pause = 0.0
        self._admit(sock, addr)
        return True

    def _admit(self, sock: socket.socket, addr: Any) -> None:
        """Serve the new connection in a thread of its own, cutting the oldest one still
        sending its request when all slots are taken; refuse it when none can be cut."""
        conn = _Conn(sock, addr, self.limits)
        cap = self.limits.max_connections
        with self._lock:
            live = [c for c in self._conns.values() if not c.evicted]
            victim = None
            if len(live) >= cap:
                victim = next((c for c in live if c.evictable), None)
                if victim is None or len(self._conns) >= 2 * cap:
                    victim = conn
            if victim is not conn:
                self._conns[id(conn)] = conn
        if victim is conn:
            self._refuse(conn)
            return
        if victim is not None and victim.evict():
            self.note("cut", "all slots taken: the oldest connection still sending its "
                      "request was cut", client=victim.addr[0])
        conn.thread = threading.Thread(target=self._run, args=(conn,),
                                       name=f"jobcompd-{self.name}-conn", daemon=True)
        try:
            conn.thread.start()
        except RuntimeError as e:  # no thread to be had: a resource, like a descriptor
            self._forget(conn)
            self._refuse(conn)
            self.note("threadless", "cannot start a thread for a connection", error=str(e))

    def _refuse(self, conn: _Conn) -> None:
        """Answer busy without blocking, then let the socket linger briefly, reading what the
        client still sends: closing with unread bytes would reset the connection and could
        destroy the answer before the client reads it. At most twice the slots linger."""
        self.note("refused", "all slots busy answering: a new connection was refused",
                  client=conn.addr[0])
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.send(self.busy_response)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if self._sel is None or len(self._lingering) >= 2 * self.limits.max_connections:
            sock.close()
            return
        self._lingering[sock] = time.monotonic() + _DRAIN_S
        self._sel.register(sock, selectors.EVENT_READ, "linger")

    def _linger(self, sock: socket.socket) -> None:
        """Drop what a refused client sent; close once it closes."""
        try:
            while sock.recv(_READ_CHUNK):
                pass
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._unlinger(sock)

    def _unlinger(self, sock: socket.socket) -> None:
        self._lingering.pop(sock, None)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
        sock.close()

    def _run(self, conn: _Conn) -> None:
        try:
            self.handler(conn, conn.addr, self)  # type: ignore[arg-type]
        except Exception as e:  # a handler bug must not end the thread silently
            log.error(f"{self.name}_request_crashed", error=repr(e))
        finally:
            conn.close()
            self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.pop(id(conn), None)

    def connections(self) -> int:
        """Connections being served (for tests and the curious)."""
        with self._lock:
            return len(self._conns)
