"""Prometheus metrics: what an operator graphs and alerts on.

The daemon's hot path handles 10,000+ records a second, so a per-record call here is a plain
integer increment (and, on delivery, one bisect into the latency buckets): no locks, no
prometheus_client metric objects. The numbers are turned into metric families only when
someone reads them (a scrape of ``MetricsListen``, or a ``MetricsTextfile`` write), by this
module's own collector in its own CollectorRegistry (never the process-global one).

Only the main loop writes these numbers; the HTTP server's threads only read them. Reading an
int another thread is incrementing is safe under the GIL; at worst a scrape sees a histogram
whose sum lags its count by one observation.

Counters count since the process started (Prometheus's convention; ``rate()`` handles the
reset at a restart); the lifetime totals are in the state and status files.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from jobcompd import __version__
from jobcompd.service.httpserver import BoundedServer, Handler, Limits
from jobcompd.spool.deadletters import REASONS

log = structlog.get_logger("jobcompd.metrics")

#: Drop-to-ack latency buckets (seconds): milliseconds when all is well, up to a day when the
#: broker was down and the backlog drains.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0, 900.0, 3600.0, 14400.0, 86400.0)
#: Dead-letter reasons exported from the start (at 0), so that ``increase()`` sees the first one.
KNOWN_DEAD_LETTER_REASONS = REASONS
#: What scrapers may take of MetricsListen: a few at once (Prometheus scrapes one at a time),
#: each with httpserver's deadlines; a GET has no body.
SERVER_LIMITS = Limits(max_connections=8)
#: Mode of the textfile: metrics are not secret, and node_exporter runs as another user.
TEXTFILE_MODE = 0o644


class MetricsError(Exception):
    """A metrics output could not be set up or written; the message names it and says why."""


# --------------------------------------------------------------------------- librdkafka stats


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """One broker connection, from the ``brokers`` object of librdkafka's statistics."""

    name: str
    nodeid: int
    state: str
    outbuf_requests: float
    outbuf_messages: float
    waitresp_requests: float
    waitresp_messages: float
    tx_requests: float
    tx_errors: float
    tx_retries: float
    request_timeouts: float
    rx_errors: float
    connects: float
    disconnects: float
    rtt_avg_s: float | None  # None until a request got an answer
    rtt_p99_s: float | None


@dataclass(frozen=True, slots=True)
class PartitionStats:
    """One topic partition (-1 is librdkafka's "not yet assigned" partition)."""

    topic: str
    partition: int
    queued_messages: float  # msgq_cnt: waiting in the partition queue
    xmit_messages: float  # xmit_msgq_cnt: ready to go out to the leader
    inflight_messages: float
    tx_messages: float
    tx_bytes: float


@dataclass(frozen=True, slots=True)
class LibrdkafkaStats:
    """The useful parts of one ``stats_cb`` document (librdkafka's STATISTICS.md)."""

    client: str
    queue_messages: float  # msg_cnt: messages held by the producer (queued or in flight)
    queue_bytes: float  # msg_size
    queue_max_messages: float  # msg_max (queue.buffering.max.messages)
    queue_max_bytes: float  # msg_size_max
    reply_queue: float  # replyq: callbacks waiting for poll()
    tx_requests: float
    tx_bytes: float
    rx_requests: float
    rx_bytes: float
    tx_messages: float
    tx_message_bytes: float
    idempotence_state: str | None  # eos.idemp_state: "Assigned" when the producer id is valid
    brokers: tuple[BrokerStats, ...]
    partitions: tuple[PartitionStats, ...]


def _number(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetricsError(f"librdkafka statistics: {where}.{key} is {value!r}, not a number")
    return float(value)


def _object(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise MetricsError(f"librdkafka statistics: {where}.{key} is not a JSON object")
    return value


def _rtt(broker: dict[str, Any], where: str) -> tuple[float | None, float | None]:
    rtt = _object(broker, "rtt", where)
    if _number(rtt, "cnt", f"{where}.rtt") <= 0:
        return None, None
    return (_number(rtt, "avg", f"{where}.rtt") / 1e6, _number(rtt, "p99", f"{where}.rtt") / 1e6)


def parse_librdkafka_stats(text: str | bytes) -> LibrdkafkaStats:
    """Pick the useful numbers out of a librdkafka statistics document (the JSON string that
    confluent-kafka hands to ``stats_cb`` every ``statistics.interval.ms``).

    Missing numbers count as 0 (fields come and go between librdkafka versions); a document
    that is not JSON, or a field of the wrong type, raises MetricsError.
    """
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise MetricsError(f"librdkafka statistics are not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise MetricsError("librdkafka statistics are not a JSON object")
    eos = doc.get("eos")
    idemp = eos.get("idemp_state") if isinstance(eos, dict) else None
    return LibrdkafkaStats(
        client=str(doc.get("name", "")),
        queue_messages=_number(doc, "msg_cnt", "stats"),
        queue_bytes=_number(doc, "msg_size", "stats"),
        queue_max_messages=_number(doc, "msg_max", "stats"),
        queue_max_bytes=_number(doc, "msg_size_max", "stats"),
        reply_queue=_number(doc, "replyq", "stats"),
        tx_requests=_number(doc, "tx", "stats"),
        tx_bytes=_number(doc, "tx_bytes", "stats"),
        rx_requests=_number(doc, "rx", "stats"),
        rx_bytes=_number(doc, "rx_bytes", "stats"),
        tx_messages=_number(doc, "txmsgs", "stats"),
        tx_message_bytes=_number(doc, "txmsg_bytes", "stats"),
        idempotence_state=str(idemp) if idemp is not None else None,
        brokers=_broker_stats(doc),
        partitions=_partition_stats(doc),
    )


def _broker_stats(doc: dict[str, Any]) -> tuple[BrokerStats, ...]:
    brokers = []
    for key, b in sorted(_object(doc, "brokers", "stats").items()):
        where = f"brokers[{key!r}]"
        if not isinstance(b, dict):
            raise MetricsError(f"librdkafka statistics: {where} is not a JSON object")
        if b.get("source") in ("internal", "logical"):
            continue  # librdkafka's own pseudo-brokers, never connected
        avg, p99 = _rtt(b, where)
        brokers.append(BrokerStats(
            name=str(b.get("name", key)),
            nodeid=int(_number(b, "nodeid", where)),
            state=str(b.get("state", "")),
            outbuf_requests=_number(b, "outbuf_cnt", where),
            outbuf_messages=_number(b, "outbuf_msg_cnt", where),
            waitresp_requests=_number(b, "waitresp_cnt", where),
            waitresp_messages=_number(b, "waitresp_msg_cnt", where),
            tx_requests=_number(b, "tx", where),
            tx_errors=_number(b, "txerrs", where),
            tx_retries=_number(b, "txretries", where),
            request_timeouts=_number(b, "req_timeouts", where),
            rx_errors=_number(b, "rxerrs", where),
            connects=_number(b, "connects", where),
            disconnects=_number(b, "disconnects", where),
            rtt_avg_s=avg,
            rtt_p99_s=p99,
        ))
    return tuple(brokers)


def _partition_stats(doc: dict[str, Any]) -> tuple[PartitionStats, ...]:
    partitions = []
    for topic_name, t in sorted(_object(doc, "topics", "stats").items()):
        if not isinstance(t, dict):
            raise MetricsError(f"librdkafka statistics: topics[{topic_name!r}] is not an object")
        parts = _object(t, "partitions", f"topics[{topic_name!r}]")
        for part_key, p in sorted(parts.items(), key=lambda kv: int(kv[0])):
            where = f"topics[{topic_name!r}].partitions[{part_key}]"
            if not isinstance(p, dict):
                raise MetricsError(f"librdkafka statistics: {where} is not a JSON object")
            partitions.append(PartitionStats(
                topic=str(topic_name),
                partition=int(part_key),
                queued_messages=_number(p, "msgq_cnt", where),
                xmit_messages=_number(p, "xmit_msgq_cnt", where),
                inflight_messages=_number(p, "msgs_inflight", where),
                tx_messages=_number(p, "txmsgs", where),
                tx_bytes=_number(p, "txbytes", where),
            ))
    return tuple(partitions)


# --------------------------------------------------------------------------- the metrics


def _gauge(name: str, doc: str, value: float | None = None,
           labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, labels=labels)


def _counter(name: str, doc: str, value: float | None = None,
             labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value, labels=labels)


class Metrics:
    """jobcompd's metrics, and the two ways out: an HTTP endpoint and a node_exporter textfile.

    ``registry`` holds jobcompd's own metrics (what the textfile gets: process metrics there
    would clash with node_exporter's own). ``http_registry`` adds the ``process_*`` and
    ``python_*`` metrics of this process for the HTTP endpoint.
    """

    def __init__(self, *, latency_buckets: tuple[float, ...] = LATENCY_BUCKETS,
                 process_metrics: bool = True) -> None:
        self.records_ingested = 0
        self.records_delivered = 0
        self.delivery_retries = 0
        self.producer_rebuilds = 0
        self.reloads_ok = 0
        self.reloads_failed = 0
        self._dead_lettered: dict[str, int] = dict.fromkeys(KNOWN_DEAD_LETTER_REASONS, 0)
        self._bounds = tuple(sorted(latency_buckets))
        self._latency_counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._latency_sum = 0.0
        self._last_delivery_ns: int | None = None
        self._backlog = 0
        self._backlog_truncated = False
        self._in_flight = 0
        self._oldest_pending_ns: int | None = None
        self._broker_up: bool | None = None
        self._dead_letters: int | None = None
        self._unreadable = 0
        self._restart_needed = False
        self._librdkafka: LibrdkafkaStats | None = None
        self._started = time.time()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.http_registry = CollectorRegistry(auto_describe=False)
        self.http_registry.register(self)
        if process_metrics:
            ProcessCollector(registry=self.http_registry)
            PlatformCollector(registry=self.http_registry)
            GCCollector(registry=self.http_registry)
        self._server: BoundedServer | None = None

    # -- the hot path: one call per record event -------------------------------------------

    def ingested(self) -> None:
        """A record was read from new/ and parsed into a message."""
        self.records_ingested += 1

    def delivered(self, arrived_ns: int, now_ns: int | None = None) -> None:
        """Kafka acknowledged a record that the hook wrote at ``arrived_ns`` (epoch ns, from
        the spool file name): counts it and observes the drop-to-ack latency."""
        now = time.time_ns() if now_ns is None else now_ns
        self.records_delivered += 1
        self._last_delivery_ns = now
        latency = max(0.0, (now - arrived_ns) / 1e9)  # a clock step back must not go negative
        self._latency_counts[bisect.bisect_left(self._bounds, latency)] += 1
        self._latency_sum += latency

    def retried(self) -> None:
        """A delivery failed with a retriable error; the record is sent again after a backoff."""
        self.delivery_retries += 1

    def dead_lettered(self, reason: str) -> None:
        """A record moved to failed/ (reason: malformed, too_large, timeout, kafka:…)."""
        self._dead_lettered[reason] = self._dead_lettered.get(reason, 0) + 1

    def reloaded(self, ok: bool = True) -> None:
        """A SIGHUP reload was applied (``ok``) or refused (the old configuration is kept)."""
        if ok:
            self.reloads_ok += 1
        else:
            self.reloads_failed += 1

    def rebuilt(self) -> None:
        """The Kafka producer was replaced (fatal error, stall, changed properties)."""
        self.producer_rebuilds += 1

    # -- state: set every few seconds by the main loop -------------------------------------

    def set_state(self, *, backlog: int, in_flight: int, oldest_pending_ns: int | None,
                  broker_up: bool | None, backlog_truncated: bool = False,
                  dead_letters: int | None = None, unreadable: int = 0,
                  restart_needed: bool = False) -> None:
        """The daemon's gauges.

        ``backlog``: records in new/ not yet handed to Kafka (``backlog_truncated``: that is a
        lower bound). ``in_flight``: handed to Kafka, not yet acknowledged.
        ``oldest_pending_ns``: spool time stamp (epoch ns) of the oldest unacknowledged record,
        None when there is none; its age is computed at each scrape, so it keeps growing even
        if this is not called. ``broker_up``: None until known. ``dead_letters``: records in
        failed/ waiting for an operator (None: not counted, the gauge is left out).
        ``unreadable``: records in new/ the daemon may not open (owner or mode).
        ``restart_needed``: a reload changed a key that applies only at the next start.
        """
        self._unreadable = unreadable
        self._restart_needed = restart_needed
        self._backlog = backlog
        self._backlog_truncated = backlog_truncated
        self._in_flight = in_flight
        self._oldest_pending_ns = oldest_pending_ns
        self._broker_up = broker_up
        self._dead_letters = dead_letters

    def librdkafka_stats(self, text: str | bytes) -> None:
        """Take a statistics document from confluent-kafka's ``stats_cb``. Never raises (it
        runs inside ``poll()``): an unusable document is logged and its metrics dropped."""
        try:
            self._librdkafka = parse_librdkafka_stats(text)
        except MetricsError as e:
            self._librdkafka = None
            log.warning("librdkafka_stats_unusable", error=str(e))

    def forget_librdkafka_stats(self) -> None:
        """Drop the last statistics (for example when the producer is replaced, so that the
        old producer's brokers do not linger until the new one reports)."""
        self._librdkafka = None

    # -- exposition -------------------------------------------------------------------------

    def collect(self) -> list[Metric]:
        """Called by the registry at each scrape (prometheus_client's Collector protocol)."""
        now_ns = time.time_ns()
        out: list[Metric] = []
        info = _gauge("jobcompd_build_info", "jobcompd's version; the value is always 1",
                      labels=["version"])
        info.add_metric([__version__], 1)
        out.append(info)
        out.append(_gauge("jobcompd_start_time_seconds",
                          "When this jobcompd process started (Unix time)", self._started))
        out.append(_counter("jobcompd_records_ingested",
                            "Records read from the spool and parsed", self.records_ingested))
        out.append(_counter("jobcompd_records_delivered",
                            "Records acknowledged by Kafka (their spool files are removed)",
                            self.records_delivered))
        out.append(_counter("jobcompd_delivery_retries",
                            "Deliveries that failed with a retriable error and are retried",
                            self.delivery_retries))
        dead = _counter("jobcompd_records_dead_lettered",
                        "Records moved to SpoolDir/failed/, by reason", labels=["reason"])
        for reason, n in sorted(self._dead_lettered.copy().items()):
            dead.add_metric([reason], n)
        out.append(dead)
        reloads = _counter("jobcompd_reloads", "SIGHUP reloads, by result (ok or failed)",
                           labels=["result"])
        reloads.add_metric(["ok"], self.reloads_ok)
        reloads.add_metric(["failed"], self.reloads_failed)
        out.append(reloads)
        out.append(_counter("jobcompd_producer_rebuilds",
                            "Times the Kafka producer was replaced and its unacknowledged "
                            "records sent again", self.producer_rebuilds))
        out.extend(self._state_families(now_ns))
        out.append(self._latency_family())
        if self._librdkafka is not None:
            out.extend(_librdkafka_families(self._librdkafka))
        return out

    def _state_families(self, now_ns: int) -> list[Metric]:
        """The gauges of the daemon's state, as the last tick left it."""
        out: list[Metric] = []
        out.append(_gauge("jobcompd_backlog_records",
                          "Records in SpoolDir/new/ not yet handed to Kafka", self._backlog))
        out.append(_gauge("jobcompd_backlog_truncated",
                          "1 when jobcompd_backlog_records is only a lower bound",
                          1 if self._backlog_truncated else 0))
        out.append(_gauge("jobcompd_in_flight_records",
                          "Records handed to Kafka and not yet acknowledged", self._in_flight))
        oldest = self._oldest_pending_ns
        out.append(_gauge("jobcompd_oldest_pending_age_seconds",
                          "Age of the oldest unacknowledged record (0 when none is pending)",
                          max(0.0, (now_ns - oldest) / 1e9) if oldest is not None else 0.0))
        up = _gauge("jobcompd_broker_up",
                    "1 when a Kafka broker answers, 0 when none does (absent until known)")
        if self._broker_up is not None:
            up.add_metric([], 1 if self._broker_up else 0)
        out.append(up)
        last = _gauge("jobcompd_last_delivery_timestamp_seconds",
                      "When Kafka last acknowledged a record (Unix time; absent until then)")
        if self._last_delivery_ns is not None:
            last.add_metric([], self._last_delivery_ns / 1e9)
        out.append(last)
        letters = _gauge("jobcompd_dead_letters",
                         "Records in SpoolDir/failed/ waiting for an operator")
        if self._dead_letters is not None:
            letters.add_metric([], self._dead_letters)
        out.append(letters)
        out.append(_gauge("jobcompd_unreadable_records",
                          "Records in SpoolDir/new/ jobcompd may not open (owner or mode); "
                          "they wait for a chown", self._unreadable))
        out.append(_gauge("jobcompd_restart_needed",
                          "1 when a reload changed a setting that applies only after a restart",
                          1 if self._restart_needed else 0))
        return out

    def _latency_family(self) -> HistogramMetricFamily:
        counts = list(self._latency_counts)
        cumulative, buckets = 0, []
        for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
            cumulative += n
            buckets.append((_bound_label(bound), cumulative))
        return HistogramMetricFamily(
            "jobcompd_delivery_latency_seconds",
            "Seconds from the hook writing a record (spool file name) to Kafka's acknowledgement",
            buckets=buckets, sum_value=self._latency_sum)

    def exposition(self) -> bytes:
        """jobcompd's metrics in the Prometheus text format (what the textfile holds)."""
        return generate_latest(self.registry)

    # -- outputs ----------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve ``http_registry`` on host:port (MetricsListen) from a background thread,
        within httpserver's limits (a few connections, each with deadlines); a server
        already running is stopped first. Returns the address bound (port 0 picks a free
        one). Raises MetricsError when the address cannot be bound."""
        self.stop_serving()
        server = BoundedServer(host, port, _MetricsHandler, name="metrics",
                               limits=SERVER_LIMITS, busy_response=_BUSY_RESPONSE,
                               context=make_wsgi_app(self.http_registry))
        try:
            server.start()
        except OSError as e:
            raise MetricsError(
                f"cannot serve metrics on {_hostport(host, port)} (MetricsListen): "
                f"{e.strerror or e}") from None
        self._server = server
        return server.address

    def stop_serving(self) -> None:
        """Stop the HTTP server, if any."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=1.0)

    def write_textfile(self, path: Path) -> None:
        """Write ``registry`` to ``path`` for node_exporter's textfile collector, atomically
        (a hidden temporary file in the same folder, then rename), mode 0644: the collector
        never reads a half-written file. Raises MetricsError naming the path."""
        path = Path(path)
        data = self.exposition()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         TEXTFILE_MODE)
            try:
                os.fchmod(fd, TEXTFILE_MODE)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            hint = ""
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                hint = ("; the folder must be writable by jobcompd's user (under systemd, "
                        "add it to ReadWritePaths=)")
            raise MetricsError(f"cannot write the metrics textfile {path} (MetricsTextfile): "
                               f"{e.strerror or e}{hint}") from None

    def close(self) -> None:
        """Stop serving; the numbers stay readable."""
        self.stop_serving()


def _bound_label(bound: float) -> str:
    if bound == float("inf"):
        return "+Inf"
    return repr(float(bound))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _MetricsHandler(Handler):
    """GET (any path) answers the exposition through prometheus_client's own WSGI app, which
    negotiates the format and gzip; it answers the other methods too."""

    def do_GET(self) -> None:
        app = self.server.context
        path, _, query = self.path.partition("?")
        environ = {"REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
                   "HTTP_ACCEPT": self.headers.get("Accept", ""),
                   "HTTP_ACCEPT_ENCODING": self.headers.get("Accept-Encoding", "")}
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answer.extend((status, headers))

        body = b"".join(app(environ, start_response))
        status, headers = answer
        self.send_response(int(status.split()[0]), status.partition(" ")[2])
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET


_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                  b"Retry-After: 5\r\nConnection: close\r\nContent-Length: 5\r\n\r\nbusy\n")


#: Per-broker families: (kind, name, help, BrokerStats attribute).
_BROKER_FAMILIES: tuple[tuple[type, str, str, str], ...] = (
    (GaugeMetricFamily, "broker_outbuf_requests", "Requests waiting to be sent",
     "outbuf_requests"),
    (GaugeMetricFamily, "broker_outbuf_messages", "Messages waiting to be sent",
     "outbuf_messages"),
    (GaugeMetricFamily, "broker_waitresp_requests", "Requests sent, awaiting a response",
     "waitresp_requests"),
    (GaugeMetricFamily, "broker_waitresp_messages", "Messages sent, awaiting a response",
     "waitresp_messages"),
    (CounterMetricFamily, "broker_tx_requests", "Requests sent", "tx_requests"),
    (CounterMetricFamily, "broker_tx_errors", "Transmission errors", "tx_errors"),
    (CounterMetricFamily, "broker_tx_retries", "Requests retried", "tx_retries"),
    (CounterMetricFamily, "broker_request_timeouts", "Requests timed out",
     "request_timeouts"),
    (CounterMetricFamily, "broker_rx_errors", "Receive errors", "rx_errors"),
    (CounterMetricFamily, "broker_connects", "Connection attempts", "connects"),
    (CounterMetricFamily, "broker_disconnects", "Disconnections", "disconnects"),
    (GaugeMetricFamily, "broker_rtt_avg_seconds", "Average request round-trip time",
     "rtt_avg_s"),
    (GaugeMetricFamily, "broker_rtt_p99_seconds", "99th percentile request round-trip time",
     "rtt_p99_s"),
)
#: Per-partition families: (kind, name, help, PartitionStats attribute).
_PARTITION_FAMILIES: tuple[tuple[type, str, str, str], ...] = (
    (GaugeMetricFamily, "partition_queued_messages",
     "Messages in the partition queue (partition -1: waiting for metadata)",
     "queued_messages"),
    (GaugeMetricFamily, "partition_xmit_messages", "Messages ready to be sent to the leader",
     "xmit_messages"),
    (GaugeMetricFamily, "partition_inflight_messages", "Messages sent, not yet acknowledged",
     "inflight_messages"),
    (CounterMetricFamily, "partition_tx_messages", "Messages sent", "tx_messages"),
    (CounterMetricFamily, "partition_tx_bytes", "Message bytes sent", "tx_bytes"),
)
_RDKAFKA = "jobcompd_librdkafka_"


def _librdkafka_families(st: LibrdkafkaStats) -> list[Metric]:
    """librdkafka's statistics as metric families (prefix ``jobcompd_librdkafka_``).

    Its counters restart at 0 when the producer is rebuilt, which Prometheus treats as any
    counter reset.
    """
    p = _RDKAFKA
    out: list[Metric] = [
        _gauge(p + "queue_messages", "Messages held by the producer (queued or in flight)",
               st.queue_messages),
        _gauge(p + "queue_bytes", "Bytes of messages held by the producer", st.queue_bytes),
        _gauge(p + "queue_max_messages", "Limit of held messages (queue.buffering.max.messages)",
               st.queue_max_messages),
        _gauge(p + "queue_max_bytes", "Limit of held bytes (queue.buffering.max.kbytes)",
               st.queue_max_bytes),
        _gauge(p + "reply_queue", "Callbacks waiting to be served by poll()", st.reply_queue),
        _counter(p + "tx_requests", "Requests sent to brokers", st.tx_requests),
        _counter(p + "tx_bytes", "Bytes sent to brokers", st.tx_bytes),
        _counter(p + "rx_requests", "Responses received from brokers", st.rx_requests),
        _counter(p + "rx_bytes", "Bytes received from brokers", st.rx_bytes),
        _counter(p + "tx_messages", "Messages sent to brokers", st.tx_messages),
        _counter(p + "tx_message_bytes", "Message bytes sent to brokers", st.tx_message_bytes),
    ]
    idemp = _gauge(p + "idempotent_producer_ready",
                   "1 when the idempotent producer holds a valid producer id (eos.idemp_state "
                   "Assigned)")
    if st.idempotence_state is not None:
        idemp.add_metric([], 1 if st.idempotence_state == "Assigned" else 0)
    out.append(idemp)
    return out + _broker_families(st) + _partition_families(st)


def _broker_families(st: LibrdkafkaStats) -> list[Metric]:
    labels = ["broker", "nodeid"]
    up = _gauge(_RDKAFKA + "broker_up", "1 when librdkafka's connection to the broker is UP",
                labels=labels)
    for b in st.brokers:
        up.add_metric([b.name, str(b.nodeid)], 1 if b.state == "UP" else 0)
    out: list[Metric] = [up]
    for kind, name, doc, attr in _BROKER_FAMILIES:
        fam = kind(_RDKAFKA + name, doc, labels=labels)
        for b in st.brokers:
            value = getattr(b, attr)
            if value is not None:
                fam.add_metric([b.name, str(b.nodeid)], value)
        out.append(fam)
    return out


def _partition_families(st: LibrdkafkaStats) -> list[Metric]:
    out: list[Metric] = []
    for kind, name, doc, attr in _PARTITION_FAMILIES:
        fam = kind(_RDKAFKA + name, doc, labels=["topic", "partition"])
        for part in st.partitions:
            fam.add_metric([part.topic, str(part.partition)], getattr(part, attr))
        out.append(fam)
    return out
