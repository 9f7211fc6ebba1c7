"""The HTTP intake: Slurm's jobcomp/elasticsearch as a transport into the spool.

slurmctld's jobcomp/elasticsearch plugin (any Slurm since 15.08) POSTs one JSON document per
finished job to the URL in ``JobCompLoc`` and keeps the record, retrying every 30 s and across
restarts (``StateSaveLocation/elasticsearch_state``), until it gets HTTP 200 or 201. Pointing
that URL at this server gives jobcompd Slurm's own full rendering of every job (TRES, ntasks,
alloc_node, script) with no hook script at all.

The promise is the spool's: a 201 is sent only after the body is in ``SpoolDir/new/`` through
:meth:`Spool.write_record` (fsync of the file, rename, fsync of ``new/``), and a body is stored
only while its 201 can still be sent: not after the connection's deadline, not for a client
that has gone (each such copy would come back with Slurm's retry). Anything else makes Slurm
keep the record and send it again, so every failure answers a status Slurm retries on:

- 400 body not a JSON object with an integer ``jobid``, or a bad Content-Length; 411 no
  Content-Length; 413 body over ``max_body``; 431 headers over 16 KiB; 405 a method other than
  POST, GET or HEAD;
- 507 the spool's disk is full (ENOSPC, EDQUOT, EFBIG), 503 any other write failure (out of
  file descriptors or memory included), the deadline passed, or all connection slots busy.

GET and HEAD answer 200 with a short description: older Slurm (seen in the 15.08 to 20.02
sources) sends a HEAD to the URL when the plugin starts or is reconfigured and only checks that
the connection works; 22.05 sends nothing but the POSTs.

Every check before the write is linear in the request and bounded: headers by their size and
deadline (httpserver.Limits), the length by its digits, the body by ``max_body`` and the
record parser's own limits. What a slow or greedy client can hold is httpserver's business.
"""

from __future__ import annotations

import errno
import json
import re
import socket
import threading
from typing import Any

import structlog

from jobcompd.records import RecordError, parse_record
from jobcompd.service.httpserver import BoundedServer, Handler, Limits, show_addr
from jobcompd.spool import Spool, SpoolError

__all__ = ["HttpIntake", "HttpIntakeError"]

log = structlog.get_logger("jobcompd.httpintake")

#: errnos that mean "the spool's disk is full": 507 Insufficient Storage, Slurm retries.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_ALLOWED = "POST, GET, HEAD"
#: A Content-Length: ASCII digits only (str.isdigit() also takes "²" and other digits that
#: int() refuses), and few enough of them that int() is cheap; max_body is far shorter.
_LENGTH = re.compile(r"[0-9]{1,12}")
_RETRY_AFTER_S = 5


class HttpIntakeError(Exception):
    """The intake cannot start (for example the address is taken); the message says why."""


class HttpIntake:
    """A small HTTP server that writes jobcomp/elasticsearch POST bodies into the spool.

    ``start()`` binds and serves from a background thread; ``stop()`` closes the listening
    socket and gives requests in flight ``grace`` seconds to finish their spool write.
    ``address`` is the bound (host, port), so ``listen=("127.0.0.1", 0)`` picks a free port.
    ``timeout_s`` is a connection's whole life, ``header_timeout_s`` the time its request line
    and headers may take, ``min_body_rate`` (bytes/s) the slowest its body may come.
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
        header_timeout_s: float = 2.0,
        min_body_rate: float = 64 * 1024,
    ) -> None:
        if max_body < 1:
            raise ValueError(f"max_body must be positive, not {max_body}")
        self.spool = spool
        self.listen = listen
        self.max_body = max_body
        self.cluster = cluster
        self.limits = Limits(max_connections=max_connections, total_timeout_s=timeout_s,
                             header_timeout_s=min(header_timeout_s, timeout_s),
                             min_body_rate=min_body_rate)
        # Spool.write_record keeps a last-time-stamp; one writer at a time keeps names unique.
        self._write_lock = threading.Lock()
        self._server: BoundedServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server is bound to; only after start()."""
        if self._server is None:
            raise RuntimeError("HttpIntake.address is known only after start()")
        return self._server.address

    def start(self) -> None:
        """Bind and start serving in a background thread. Raises HttpIntakeError."""
        if self._server is not None:
            raise RuntimeError("HttpIntake already started")
        host, port = self.listen
        server = BoundedServer(host, port, _Handler, name="http_intake", limits=self.limits,
                               busy_response=_BUSY_RESPONSE, context=self)
        try:
            server.start()
        except socket.gaierror as e:
            raise HttpIntakeError(
                f"HttpListen={show_addr(host, port)}: cannot resolve {host!r}: {e.strerror}"
            ) from None
        except OSError as e:
            raise HttpIntakeError(
                f"HttpListen={show_addr(host, port)}: cannot listen: {e.strerror}"
                + ("; another program (Elasticsearch itself?) holds that port: stop it or "
                   "choose another port in HttpListen and JobCompLoc"
                   if e.errno == errno.EADDRINUSE else "")
            ) from None
        self._server = server
        log.info("http_intake_listening", address=show_addr(*server.address),
                 max_body=self.max_body)

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, close the socket, wait up to ``grace`` s for requests in flight.

        A request cut off after that gets no answer, so Slurm sends its record again; if its
        write had already completed, that is a duplicate with the same jobcompd-id.
        """
        server, self._server = self._server, None
        if server is None:
            return
        left = server.stop(grace)
        log.info("http_intake_stopped", unfinished_requests=left)

    def connections(self) -> int:
        """Connections being served now."""
        return 0 if self._server is None else self._server.connections()

    def _spool_body(self, body: bytes, handler: _Handler) -> tuple[int, dict[str, Any]]:
        """Validate one POST body and write it into the spool while its answer can still be
        sent: (HTTP status, reply)."""
        try:
            rec = parse_record(body, "json", cluster=self.cluster, event_hint="end")
        except RecordError as e:
            return 400, {"error": f"not a jobcomp record: {e}"}
        with self._write_lock:
            late = _too_late(handler)
            if late is not None:
                return 503, {"job_id": rec.job_id, "error": f"not stored: {late}"}
            try:
                name = self.spool.write_record(body, job_id=rec.job_id, event="end",
                                               fmt="json")
            except OSError as e:
                status = 507 if e.errno in _FULL_ERRNOS else 503
                return status, {"job_id": rec.job_id,
                                "error": f"cannot write to the spool: {e.strerror or e}"}
            except SpoolError as e:
                return 503, {"job_id": rec.job_id, "error": f"cannot write to the spool: {e}"}
        return 201, {"result": "created", "job_id": rec.job_id, "file": name}


def _too_late(handler: _Handler) -> str | None:
    """Why the answer to this request could no longer be sent, if it could not."""
    if handler.time_left() <= 0:
        return (f"the request took longer than its deadline "
                f"({handler.server.limits.total_timeout_s:g} s)")
    if handler.peer_gone():
        return "the client closed the connection before the answer"
    return None


_BUSY_BODY = b'{"error":"busy: too many connections, retry later"}'
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    + f"Retry-After: {_RETRY_AFTER_S}\r\n".encode()
    + b"Connection: close\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\n\r\n".encode()
    + _BUSY_BODY
)


class _Handler(Handler):
    """One request per connection; every answer is a small JSON object."""

    body_methods = frozenset({"POST"})

    @property
    def intake(self) -> HttpIntake:
        return self.server.context  # type: ignore[no-any-return]

    # -- methods ---------------------------------------------------------------------------

    def do_POST(self) -> None:
        length = self._content_length()
        if length is None:
            return
        body = self.read_body(length)
        if body is None:
            if not self.conn.evicted:
                self._log_error(400, "client closed the connection or was too slow while "
                                "sending the body")
            return
        status, reply = self.intake._spool_body(body, self)
        self._reply(status, reply,
                    headers={"Retry-After": str(_RETRY_AFTER_S)} if status == 503 else None)

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
            self.body_unread = True
            self._reply(411, {"error": "chunked or encoded bodies are not accepted; send the "
                                       "record with a Content-Length"})
            return None
        values = [v.strip(" \t") for v in self.headers.get_all("Content-Length") or []]
        if not values:
            self._reply(411, {"error": "Content-Length is required"})
            return None
        if len(set(values)) != 1 or not _LENGTH.fullmatch(values[0]):
            self.body_unread = True
            shown = ", ".join(values)
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            self._reply(400, {"error": f"bad Content-Length {shown!r}: ASCII digits only"})
            return None
        length = int(values[0])
        if length > self.intake.max_body:
            self.body_unread = True
            self._reply(413, {"error": f"body of {length} bytes is over the limit of "
                                       f"{self.intake.max_body} bytes (max_record_bytes "
                                       "in JobCompParams)"})
            return None
        return length

    # -- answers ---------------------------------------------------------------------------

    def _reply(self, status: int, payload: dict[str, Any],
               headers: dict[str, str] | None = None) -> None:
        status = int(status)  # http.server's own errors come as HTTPStatus
        body = json.dumps(payload, ensure_ascii=False).encode() + b"\n"
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
        except OSError as e:  # the client is gone (or was cut off)
            if not self.conn.evicted:
                log.warning("http_reply_failed", status=status, job_id=payload.get("job_id"),
                            error=str(e), answer=payload.get("error"))
            return
        if status < 400:
            log.debug("http_request", job_id=payload.get("job_id"), status=status,
                      method=self.command, path=self.path, file=payload.get("file"))
        else:
            self._log_error(status, str(payload.get("error", "")), payload.get("job_id"))

    def _log_error(self, status: int, error: str, job_id: int | None = None) -> None:
        log.error("http_request_rejected", job_id=job_id, status=status, error=error,
                  method=self.command, path=getattr(self, "path", None),
                  client=show_addr(*self.client_address[:2]))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        """http.server's own errors (bad request line, too many headers...) as JSON too."""
        if getattr(self, "command", None) is None:
            self.command = ""
        self.body_unread = True
        self._reply(code, {"error": message or explain or self.responses.get(code, ("",))[0]})
