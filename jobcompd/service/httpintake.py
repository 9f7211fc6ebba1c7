"""The HTTP intake: Slurm's jobcomp/elasticsearch as a transport into the spool.

slurmctld's jobcomp/elasticsearch plugin (any Slurm since 15.08) POSTs one JSON document per
finished job to the URL in ``JobCompLoc`` and keeps the record, retrying every 30 s and across
restarts (``StateSaveLocation/elasticsearch_state``), until it gets HTTP 200 or 201. Pointing
that URL at this server gives jobcompd Slurm's own full rendering of every job (TRES, ntasks,
alloc_node, script) with no hook script at all.

The promise is the spool's: a 201 is sent only after the body is in ``SpoolDir/new/`` through
:meth:`Spool.write_record` (fsync of the file, rename, fsync of ``new/``). Anything else makes
Slurm keep the record and send it again, so every failure answers a status Slurm retries on:

- 400 body not a JSON object with an integer ``jobid``; 411 no Content-Length; 413 body over
  ``max_body``; 405 a method other than POST, GET or HEAD;
- 507 the spool's disk is full (ENOSPC, EDQUOT, EFBIG), 503 any other write failure or all
  connection slots busy.

GET and HEAD answer 200 with a short description: older Slurm (seen in the 15.08 to 20.02
sources) sends a HEAD to the URL when the plugin starts or is reconfigured and only checks that
the connection works; 22.05 sends nothing but the POSTs.

Bounded: at most ``max_connections`` connections are served at once (more get 503 at once),
each connection carries one request and lives at most ``timeout_s`` seconds however slowly the
client sends, and a body is never read beyond ``max_body`` bytes.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import socket
import socketserver
import threading
import time
from typing import Any

import structlog

from jobcompd.records import RecordError, parse_record
from jobcompd.spool import Spool, SpoolError

__all__ = ["HttpIntake", "HttpIntakeError"]

log = structlog.get_logger("jobcompd.httpintake")

#: errnos that mean "the spool's disk is full": 507 Insufficient Storage, Slurm retries.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_ALLOWED = "POST, GET, HEAD"
_READ_CHUNK = 64 * 1024
#: After an early rejection, unread body bytes are drained (up to this much) before the close,
#: so the kernel does not answer them with a reset that could destroy our response in flight.
_DRAIN_LIMIT = 4 * 1024 * 1024
_DRAIN_SECONDS = 1.0


class HttpIntakeError(Exception):
    """The intake cannot start (for example the address is taken); the message says why."""


class HttpIntake:
    """A small HTTP server that writes jobcomp/elasticsearch POST bodies into the spool.

    ``start()`` binds and serves from a background thread; ``stop()`` closes the listening
    socket and gives requests in flight ``grace`` seconds to finish their spool write.
    ``address`` is the bound (host, port), so ``listen=("127.0.0.1", 0)`` picks a free port.
    """

    def __init__(
        self,
        spool: Spool,
        listen: tuple[str, int],
        *,
        max_body: int,
        cluster: str,
        max_connections: int = 8,
        timeout_s: float = 10.0,
    ) -> None:
        if max_body < 1:
            raise ValueError(f"max_body must be positive, not {max_body}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be positive, not {max_connections}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.spool = spool
        self.listen = listen
        self.max_body = max_body
        self.cluster = cluster
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._rejecters = threading.BoundedSemaphore(4 * max_connections)
        # Spool.write_record keeps a last-time-stamp; one writer at a time keeps names unique.
        self._write_lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._workers_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server is bound to; only after start()."""
        if self._server is None:
            raise RuntimeError("HttpIntake.address is known only after start()")
        host, port = self._server.server_address[:2]
        return host, port

    def start(self) -> None:
        """Bind and start serving in a background thread. Raises HttpIntakeError."""
        if self._server is not None:
            raise RuntimeError("HttpIntake already started")
        host, port = self.listen
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise HttpIntakeError(
                f"HttpListen={_show_addr(host, port)}: cannot resolve {host!r}: {e.strerror}"
            ) from None
        family, _, _, _, sockaddr = infos[0]
        try:
            self._server = _Server(sockaddr, family, self)
        except OSError as e:
            raise HttpIntakeError(
                f"HttpListen={_show_addr(host, port)}: cannot listen: {e.strerror}"
                + ("; another program (Elasticsearch itself?) holds that port: stop it or "
                   "choose another port in HttpListen and JobCompLoc"
                   if e.errno == errno.EADDRINUSE else "")
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name="jobcompd-http", daemon=True)
        self._thread.start()
        bound_host, bound_port = self.address
        log.info("http_intake_listening", address=_show_addr(bound_host, bound_port),
                 max_body=self.max_body)

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, close the socket, wait up to ``grace`` s for requests in flight.

        A request cut off after that gets no answer, so Slurm sends its record again; if its
        write had already completed, that is a duplicate with the same jobcompd-id.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        deadline = time.monotonic() + grace
        with self._workers_lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        left = sum(1 for w in workers if w.is_alive())
        log.info("http_intake_stopped", unfinished_requests=left)

    # -- used by the server's threads ------------------------------------------------------

    def _spawn(self, request: socket.socket, client_address: Any, server: _Server) -> None:
        """Serve one connection in its own thread, or answer 503 when all slots are busy."""
        if not self._slots.acquire(blocking=False):
            log.error("http_request_rejected", status=503, error="all connection slots busy",
                      max_connections=self.max_connections)
            with contextlib.suppress(OSError):
                request.sendall(_BUSY_RESPONSE)
            if self._rejecters.acquire(blocking=False):
                # Drain what the client still sends before closing, in a short-lived thread
                # (bounded too), so that our 503 is not destroyed by a reset.
                threading.Thread(target=self._close_rejected, args=(request, server),
                                 name="jobcompd-http-busy", daemon=True).start()
            else:
                server.shutdown_request(request)
            return

        def serve() -> None:
            try:
                server.finish_request(request, client_address)
            except Exception as e:  # a handler bug must not kill the thread silently
                log.error("http_request_crashed", error=repr(e))
            finally:
                server.shutdown_request(request)
                self._slots.release()
                with self._workers_lock:
                    self._workers.discard(threading.current_thread())

        worker = threading.Thread(target=serve, name="jobcompd-http-request", daemon=True)
        with self._workers_lock:
            self._workers.add(worker)
        worker.start()

    def _close_rejected(self, request: socket.socket, server: _Server) -> None:
        try:
            _drain(request)
            server.shutdown_request(request)
        finally:
            self._rejecters.release()

    def _spool_body(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Validate one POST body and write it into the spool: (HTTP status, reply)."""
        try:
            rec = parse_record(body, "json", cluster=self.cluster, event_hint="end")
        except RecordError as e:
            return 400, {"error": f"not a jobcomp record: {e}"}
        try:
            with self._write_lock:
                name = self.spool.write_record(body, job_id=rec.job_id, event="end", fmt="json")
        except OSError as e:
            status = 507 if e.errno in _FULL_ERRNOS else 503
            return status, {"job_id": rec.job_id,
                            "error": f"cannot write to the spool: {e.strerror or e}"}
        except SpoolError as e:
            return 503, {"job_id": rec.job_id, "error": f"cannot write to the spool: {e}"}
        return 201, {"result": "created", "job_id": rec.job_id, "file": name}


_BUSY_BODY = b'{"error":"busy: too many connections, retry later"}'
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\n\r\n".encode()
    + _BUSY_BODY
)


def _drain(sock: socket.socket) -> None:
    """Read and drop what the client still sends, briefly, before the socket closes."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(_DRAIN_SECONDS)
        end = time.monotonic() + _DRAIN_SECONDS
        total = 0
        while total < _DRAIN_LIMIT and time.monotonic() < end:
            chunk = sock.recv(_READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)


def _show_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Server(http.server.HTTPServer):
    """HTTPServer with our own thread per connection (bounded by the intake's slots)."""

    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, sockaddr: Any, family: int, intake: HttpIntake) -> None:
        self.address_family = family
        self.intake = intake
        super().__init__(sockaddr, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup that can hang.
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        self.intake._spawn(request, client_address, self)


class _Handler(http.server.BaseHTTPRequestHandler):
    """One request per connection; every answer is a small JSON object."""

    protocol_version = "HTTP/1.1"  # so that curl's "Expect: 100-continue" gets its answer
    server: _Server
    server_version = "jobcompd"
    sys_version = ""

    def setup(self) -> None:
        intake = self.server.intake
        self.timeout = intake.timeout_s  # each socket operation
        self._body_read = True
        self._deadline = time.monotonic() + intake.timeout_s
        # The whole connection, however slowly the client drips bytes: cut it at the deadline.
        self._killer = threading.Timer(intake.timeout_s, self._expire)
        self._killer.daemon = True
        self._killer.start()
        super().setup()

    def finish(self) -> None:
        self._killer.cancel()
        with contextlib.suppress(OSError):
            super().finish()
        if not self._body_read:
            _drain(self.connection)

    def _expire(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- methods ---------------------------------------------------------------------------

    def do_POST(self) -> None:
        length = self._content_length()
        if length is None:
            return
        body = self._read_body(length)
        if body is None:
            self._log_error(400, "client closed the connection or was too slow while sending "
                            f"the body ({self.server.intake.timeout_s:g} s limit)")
            self.close_connection = True
            return
        status, reply = self.server.intake._spool_body(body)
        self._reply(status, reply)

    def do_GET(self) -> None:
        self._reply(200, {"name": "jobcompd", "intake": "jobcomp/elasticsearch",
                          "accepts": "POST of one JSON job record per request"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def _method_not_allowed(self) -> None:
        self._reply(405, {"error": f"method {self.command} not allowed; Slurm's "
                                   "jobcomp/elasticsearch sends POST"},
                    headers={"Allow": _ALLOWED})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _method_not_allowed

    # -- request checks --------------------------------------------------------------------

    def handle_expect_100(self) -> bool:
        """Answer "Expect: 100-continue" only for a body we will take; else reject now."""
        if self.command == "POST" and self._content_length() is None:
            return False
        return super().handle_expect_100()

    def _content_length(self) -> int | None:
        """The body length, or None after answering 411/413/400."""
        if self.headers.get("Transfer-Encoding") is not None:
            self._body_read = False
            self._reply(411, {"error": "chunked or encoded bodies are not accepted; send the "
                                       "record with a Content-Length"})
            return None
        values = self.headers.get_all("Content-Length") or []
        if not values:
            self._reply(411, {"error": "Content-Length is required"})
            return None
        if len(set(values)) != 1 or not values[0].strip().isdigit():
            self._body_read = False
            self._reply(400, {"error": f"bad Content-Length {', '.join(values)!r}"})
            return None
        length = int(values[0].strip())
        if length > self.server.intake.max_body:
            self._body_read = False
            self._reply(413, {"error": f"body of {length} bytes is over the limit of "
                                       f"{self.server.intake.max_body} bytes (max_record_bytes "
                                       "in JobCompParams)"})
            return None
        return length

    def _read_body(self, length: int) -> bytes | None:
        """Exactly ``length`` bytes, or None if the client stops or the deadline passes."""
        chunks: list[bytes] = []
        left = length
        self._body_read = False
        try:
            while left > 0:
                if time.monotonic() >= self._deadline:
                    return None
                chunk = self.rfile.read1(min(left, _READ_CHUNK))
                if not chunk:
                    return None
                chunks.append(chunk)
                left -= len(chunk)
        except OSError:
            return None
        self._body_read = True
        return b"".join(chunks)


    # -- answers ---------------------------------------------------------------------------

    def _reply(self, status: int, payload: dict[str, Any],
               headers: dict[str, str] | None = None) -> None:
        status = int(status)  # http.server's own errors come as HTTPStatus
        body = json.dumps(payload, ensure_ascii=False).encode() + b"\n"
        self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError as e:  # the client is gone (or was cut off at its deadline)
            log.warning("http_reply_failed", status=status, job_id=payload.get("job_id"),
                        error=str(e))
            return
        if status < 400:
            log.debug("http_request", job_id=payload.get("job_id"), status=status,
                      method=self.command, path=self.path, file=payload.get("file"))
        else:
            self._log_error(status, str(payload.get("error", "")), payload.get("job_id"))

    def _log_error(self, status: int, error: str, job_id: int | None = None) -> None:
        log.error("http_request_rejected", job_id=job_id, status=status, error=error,
                  method=self.command, path=getattr(self, "path", None),
                  client=_show_addr(*self.client_address[:2]))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        """http.server's own errors (bad request line, too many headers...) as JSON too."""
        if not hasattr(self, "command") or self.command is None:
            self.command = ""
        self._body_read = False
        self._reply(code, {"error": message or explain or self.responses.get(code, ("",))[0]})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: _reply logs one structured line per request instead."""

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: http.server's own access log goes to stderr unstructured."""
