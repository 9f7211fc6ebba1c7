"""Prometheus metrics: the exposition, the HTTP endpoint, the textfile, and a daemon scraped."""

from __future__ import annotations

import gzip
import json
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from jobcompd.service import metrics as metricsmod
from jobcompd.service.metrics import Metrics, MetricsError, parse_librdkafka_stats
from tests.broker import free_port, wait_for
from tests.support import DATA, DaemonUnderTest, read_env_fixture

STATS = DATA / "metrics" / "librdkafka-stats.json"


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str | bytes, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


# --------------------------------------------------------------------------- exposition


def test_a_fresh_process_exports_zeros_and_leaves_unknowns_out():
    m = Metrics(process_metrics=False)
    text = m.exposition()
    assert value(text, "jobcompd_records_ingested_total") == 0
    assert value(text, "jobcompd_records_delivered_total") == 0
    assert value(text, "jobcompd_records_dead_lettered_total", reason="malformed") == 0
    assert value(text, "jobcompd_reloads_total", result="failed") == 0
    assert value(text, "jobcompd_oldest_pending_age_seconds") == 0
    assert value(text, "jobcompd_delivery_latency_seconds_count") == 0
    # Not known yet: absent rather than a misleading 0.
    assert value(text, "jobcompd_broker_up") is None
    assert value(text, "jobcompd_last_delivery_timestamp_seconds") is None
    assert not any(name.startswith("jobcompd_librdkafka_") for name, _ in samples(text))
    assert value(text, "jobcompd_start_time_seconds") == pytest.approx(time.time(), abs=60)


def test_counters_count_what_the_daemon_reports():
    m = Metrics(process_metrics=False)
    for _ in range(7):
        m.ingested()
    now = time.time_ns()
    for _ in range(5):
        m.delivered(now - 2_000_000_000, now_ns=now)
    m.retried()
    m.retried()
    m.dead_lettered("malformed")
    m.dead_lettered("kafka:MSG_SIZE_TOO_LARGE")
    m.dead_lettered("kafka:MSG_SIZE_TOO_LARGE")
    m.reloaded()
    m.reloaded(ok=False)
    m.rebuilt()
    text = m.exposition()
    assert value(text, "jobcompd_records_ingested_total") == 7
    assert value(text, "jobcompd_records_delivered_total") == 5
    assert value(text, "jobcompd_delivery_retries_total") == 2
    assert value(text, "jobcompd_records_dead_lettered_total", reason="malformed") == 1
    assert value(text, "jobcompd_records_dead_lettered_total",
                 reason="kafka:MSG_SIZE_TOO_LARGE") == 2
    assert value(text, "jobcompd_reloads_total", result="ok") == 1
    assert value(text, "jobcompd_reloads_total", result="failed") == 1
    assert value(text, "jobcompd_producer_rebuilds_total") == 1
    assert value(text, "jobcompd_last_delivery_timestamp_seconds") == pytest.approx(now / 1e9)


def test_latency_histogram_buckets_are_cumulative_with_prometheus_boundaries():
    m = Metrics(process_metrics=False, latency_buckets=(0.1, 1.0, 10.0))
    now = 10**18
    for latency in (0.05, 0.1, 0.5, 1.0, 3.0, 100.0):
        m.delivered(now - int(latency * 1e9), now_ns=now)
    m.delivered(now + 5_000_000_000, now_ns=now)  # a file from the future (clock step): 0 s
    text = m.exposition()
    bucket = "jobcompd_delivery_latency_seconds_bucket"
    # le is "less than or equal": 0.1 falls into the 0.1 bucket, 1.0 into the 1.0 bucket.
    assert value(text, bucket, le="0.1") == 3
    assert value(text, bucket, le="1.0") == 5
    assert value(text, bucket, le="10.0") == 6
    assert value(text, bucket, le="+Inf") == 7
    assert value(text, "jobcompd_delivery_latency_seconds_count") == 7
    assert value(text, "jobcompd_delivery_latency_seconds_sum") == pytest.approx(104.65)


def test_state_gauges_and_an_age_that_keeps_growing():
    m = Metrics(process_metrics=False)
    oldest = time.time_ns() - 90 * 10**9
    m.set_state(backlog=1200, in_flight=300, oldest_pending_ns=oldest, broker_up=False,
                backlog_truncated=True, dead_letters=4)
    text = m.exposition()
    assert value(text, "jobcompd_backlog_records") == 1200
    assert value(text, "jobcompd_backlog_truncated") == 1
    assert value(text, "jobcompd_in_flight_records") == 300
    assert value(text, "jobcompd_broker_up") == 0
    assert value(text, "jobcompd_dead_letters") == 4
    age = value(text, "jobcompd_oldest_pending_age_seconds")
    assert 90 <= age < 100
    # computed at scrape time: later scrapes see an older record without a new set_state.
    m2 = Metrics(process_metrics=False)
    m2.set_state(backlog=1, in_flight=0, oldest_pending_ns=time.time_ns() - 10**9,
                 broker_up=True)
    first = value(m2.exposition(), "jobcompd_oldest_pending_age_seconds")
    wait_for(lambda: value(m2.exposition(), "jobcompd_oldest_pending_age_seconds")
             >= first + 0.05, 5, what="the age to grow")
    assert value(m2.exposition(), "jobcompd_broker_up") == 1


def test_the_hot_path_is_cheap():
    """10,000 records a second must not be slowed down by their metrics: a record costs one
    ingested() and one delivered() call. Generous bound (a shared CI machine), but an
    implementation with a lock and a label lookup per call is several times slower."""
    m = Metrics(process_metrics=False)
    now = time.time_ns()
    n = 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        m.ingested()
        m.delivered(now, now_ns=now)
    per_record = (time.perf_counter() - t0) / n
    assert per_record < 20e-6, f"{per_record * 1e6:.2f} µs per record"
    assert m.records_delivered == n


# --------------------------------------------------------------------------- librdkafka statistics


def test_librdkafka_statistics_are_picked_apart():
    st = parse_librdkafka_stats(STATS.read_text())
    assert st.client == "rdkafka#producer-1"
    assert st.tx_messages == 10
    assert st.queue_max_messages == 100000
    assert st.idempotence_state == "Assigned"
    (broker,) = st.brokers
    assert broker.name == "127.0.0.1:9092/111" and broker.nodeid == 111
    assert broker.state == "UP"
    assert broker.rtt_avg_s == pytest.approx(916e-6)
    assert {(p.topic, p.partition) for p in st.partitions} == {
        ("stats-topic", n) for n in (-1, 0, 1, 2, 3)}
    assert sum(p.tx_messages for p in st.partitions) == 10


def test_librdkafka_statistics_in_the_exposition():
    m = Metrics(process_metrics=False)
    m.librdkafka_stats(STATS.read_text())
    text = m.exposition()
    broker = {"broker": "127.0.0.1:9092/111", "nodeid": "111"}
    assert value(text, "jobcompd_librdkafka_tx_messages_total") == 10
    assert value(text, "jobcompd_librdkafka_queue_messages") == 0
    assert value(text, "jobcompd_librdkafka_broker_up", **broker) == 1
    assert value(text, "jobcompd_librdkafka_broker_rtt_avg_seconds", **broker) == \
        pytest.approx(916e-6)
    assert value(text, "jobcompd_librdkafka_broker_tx_errors_total", **broker) == 0
    assert value(text, "jobcompd_librdkafka_partition_tx_messages_total",
                 topic="stats-topic", partition="1") == 10
    assert value(text, "jobcompd_librdkafka_idempotent_producer_ready") == 1

    doc = json.loads(STATS.read_text())
    doc["brokers"]["127.0.0.1:9092/111"]["state"] = "DOWN"
    doc["msg_cnt"] = 42
    m.librdkafka_stats(json.dumps(doc))
    text = m.exposition()
    assert value(text, "jobcompd_librdkafka_broker_up", **broker) == 0
    assert value(text, "jobcompd_librdkafka_queue_messages") == 42

    m.forget_librdkafka_stats()
    assert value(m.exposition(), "jobcompd_librdkafka_queue_messages") is None


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"msg_cnt": "many"}', "stats.msg_cnt is 'many'"),
        ('{"brokers": {"b/1": {"tx": null}}}', "brokers['b/1'].tx is None"),
        ('{"brokers": []}', "stats.brokers is not a JSON object"),
    ],
)
def test_unusable_statistics_are_reported_not_raised_into_poll(text, complaint):
    with pytest.raises(MetricsError, match=complaint.replace("[", r"\[").replace("(", r"\(")):
        parse_librdkafka_stats(text)
    m = Metrics(process_metrics=False)
    m.librdkafka_stats(STATS.read_text())
    m.librdkafka_stats(text)  # never raises: it runs inside confluent-kafka's poll()
    assert value(m.exposition(), "jobcompd_librdkafka_queue_messages") is None


def test_internal_pseudo_brokers_are_left_out():
    doc = json.loads(STATS.read_text())
    doc["brokers"][":0/internal"] = {"name": ":0/internal", "nodeid": -1, "source": "internal",
                                     "state": "INIT"}
    st = parse_librdkafka_stats(json.dumps(doc))
    assert [b.name for b in st.brokers] == ["127.0.0.1:9092/111"]


# --------------------------------------------------------------------------- outputs


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(host: str, port: int) -> str:
    url = f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
    with _NO_PROXY.open(url, timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def test_http_endpoint_serves_jobcompd_and_process_metrics():
    m = Metrics()
    host, port = m.serve("127.0.0.1", 0)
    try:
        m.ingested()
        text = scrape(host, port)
        assert value(text, "jobcompd_records_ingested_total") == 1
        assert value(text, "process_resident_memory_bytes") > 0
        m.ingested()
        assert value(scrape(host, port), "jobcompd_records_ingested_total") == 2
    finally:
        m.close()
    with pytest.raises(OSError):
        scrape(host, port)


def test_http_endpoint_on_ipv6_loopback():
    m = Metrics(process_metrics=False)
    try:
        host, port = m.serve("::1", 0)
    except MetricsError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    try:
        assert value(scrape(host, port), "jobcompd_records_ingested_total") == 0
    finally:
        m.close()


def test_an_address_in_use_is_an_error_that_names_it():
    m1, m2 = Metrics(process_metrics=False), Metrics(process_metrics=False)
    host, port = m1.serve("127.0.0.1", 0)
    try:
        with pytest.raises(MetricsError, match=f"127.0.0.1:{port} .MetricsListen.: "):
            m2.serve(host, port)
    finally:
        m1.close()
        m2.close()


def test_serving_again_moves_the_endpoint():
    m = Metrics(process_metrics=False)
    _, port1 = m.serve("127.0.0.1", 0)
    _, port2 = m.serve("127.0.0.1", 0)
    try:
        scrape("127.0.0.1", port2)
        with pytest.raises(OSError):
            scrape("127.0.0.1", port1)
    finally:
        m.close()


def test_idle_connections_cannot_exhaust_the_endpoint():
    """Connections that say nothing once took every descriptor and crashed the daemon
    (tests/faults/test_fd_exhaustion.py has the daemon): now the endpoint holds at most twice
    its slots, cuts the oldest idle one for each new one, logs that once, and still answers
    a scrape."""
    m = Metrics(process_metrics=False)
    host, port = m.serve("127.0.0.1", 0)
    idle: list[socket.socket] = []
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(300):
                idle.append(socket.create_connection((host, port), timeout=10))
            assert m._server is not None and m._server.connections() <= 16
            assert value(scrape(host, port), "jobcompd_records_ingested_total") == 0
        assert [e["event"] for e in logs] == ["metrics_connections_cut"]
    finally:
        for s in idle:
            s.close()
        m.close()


def test_a_client_that_sends_nothing_is_cut_at_the_header_deadline():
    m = Metrics(process_metrics=False)
    host, port = m.serve("127.0.0.1", 0)
    try:
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
            assert s.recv(100) == b""  # closed by the server, long before this socket's 30 s
    finally:
        m.close()


def test_the_endpoint_keeps_prometheus_clients_negotiation():
    """gzip for a scraper that asks, 405 for a POST: prometheus_client's own WSGI app
    answers behind the bounded server."""
    m = Metrics(process_metrics=False)
    host, port = m.serve("127.0.0.1", 0)
    try:
        req = urllib.request.Request(f"http://{host}:{port}/metrics",
                                     headers={"Accept-Encoding": "gzip"})
        with _NO_PROXY.open(req, timeout=10) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            text = gzip.decompress(r.read()).decode()
        assert value(text, "jobcompd_reloads_total", result="ok") == 0
        with pytest.raises(urllib.error.HTTPError) as e:
            _NO_PROXY.open(urllib.request.Request(f"http://{host}:{port}/metrics", data=b"x"),
                           timeout=10)
        assert e.value.code == 405
    finally:
        m.close()


def test_textfile_is_replaced_atomically_and_readable_by_node_exporter(tmp_path):
    m = Metrics()
    path = tmp_path / "jobcompd.prom"
    old_umask = os.umask(0o077)
    try:
        m.write_textfile(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    text = path.read_text()
    assert value(text, "jobcompd_records_ingested_total") == 0
    # No process_* metrics: node_exporter exports its own under those names.
    assert not any(name.startswith(("process_", "python_")) for name, _ in samples(text))

    # A reader never sees a partial file while it is rewritten again and again.
    stop = threading.Event()
    seen: list[str] = []

    def reader():
        while not stop.is_set():
            seen.append(path.read_text())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(200):
            m.ingested()
            m.write_textfile(path)
    finally:
        stop.set()
        t.join()
    assert seen and all(s.endswith("\n") and "jobcompd_build_info" in s for s in seen)
    assert value(path.read_text(), "jobcompd_records_ingested_total") == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobcompd.prom"]


def test_textfile_in_a_folder_jobcompd_may_not_write_names_it(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    m = Metrics(process_metrics=False)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: use a missing folder instead
            folder = tmp_path / "missing"
        with pytest.raises(MetricsError, match=f"{folder}/jobcompd.prom .MetricsTextfile."):
            m.write_textfile(folder / "jobcompd.prom")
    finally:
        (tmp_path / "ro").chmod(0o755)


# --------------------------------------------------------------------------- the daemon, scraped


def end_env_bytes(job_id: int) -> bytes:
    env = read_env_fixture(DATA / "records" / "end-4.env")
    env["JOBID"] = str(job_id)
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


@pytest.mark.broker
def test_a_running_daemon_reports_what_it_did(daemon: DaemonUnderTest, tmp_path: Path):
    """The daemon's wiring: MetricsListen served, the counters called, set_state fed,
    librdkafka's stats_cb, MetricsTextfile written."""
    port = free_port()
    textfile = tmp_path / "jobcompd.prom"
    daemon.extra_conf.update(MetricsListen=f"127.0.0.1:{port}", MetricsTextfile=str(textfile))
    daemon.kafka["statistics.interval.ms"] = "500"  # the operator's opt-in, in JobCompLoc
    daemon.write_config()
    daemon.start()
    n = 25
    new = daemon.spool / "new"
    t_first = time.time_ns()
    for i in range(n):
        name = f"{time.time_ns():019d}.{5000 + i}.end.env"
        (daemon.spool / "tmp" / name).write_bytes(end_env_bytes(5000 + i))
        os.rename(daemon.spool / "tmp" / name, new / name)
    (new / f"{time.time_ns():019d}.5100.end.json").write_bytes(b"{not json")
    assert len(daemon.consume(n)) == n
    wait_for(lambda: not daemon.new_files(), 20, what="spool drained")

    def settled():
        text = scrape("127.0.0.1", port)
        done = (value(text, "jobcompd_records_delivered_total") == n
                and value(text, "jobcompd_broker_up") == 1  # the gauges were refreshed since
                and value(text, "jobcompd_backlog_records") == 0
                and value(text, "jobcompd_in_flight_records") == 0)
        return text if done else None

    text = wait_for(settled, 20, what="the metrics to show the delivery")
    assert value(text, "jobcompd_records_ingested_total") == n
    assert value(text, "jobcompd_records_dead_lettered_total", reason="malformed") == 1
    assert value(text, "jobcompd_broker_up") == 1
    assert value(text, "jobcompd_oldest_pending_age_seconds") == 0
    assert value(text, "jobcompd_delivery_latency_seconds_count") == n
    elapsed = (time.time_ns() - t_first) / 1e9
    assert 0 < value(text, "jobcompd_delivery_latency_seconds_sum") <= n * elapsed
    assert value(text, "jobcompd_last_delivery_timestamp_seconds") == pytest.approx(
        time.time(), abs=30)
    assert value(text, "process_resident_memory_bytes") > 0
    # librdkafka's statistics arrive every statistics.interval.ms.
    text = wait_for(lambda: (t := scrape("127.0.0.1", port))
                    and value(t, "jobcompd_librdkafka_tx_messages_total") and t,
                    60, what="librdkafka statistics")
    assert value(text, "jobcompd_librdkafka_tx_messages_total") >= n
    assert any(name == "jobcompd_librdkafka_broker_up" and v == 1
               for (name, _), v in samples(text).items())
    # The textfile tells the same story.
    wait_for(lambda: textfile.exists() and value(
        textfile.read_text(), "jobcompd_records_delivered_total") == n, 60,
        what="the textfile to be written")
    assert stat.S_IMODE(textfile.stat().st_mode) == metricsmod.TEXTFILE_MODE
    assert daemon.stop() == 0
