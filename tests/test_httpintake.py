"""The HTTP intake for jobcomp/elasticsearch, with real HTTP requests and a real spool."""

from __future__ import annotations

import errno
import http.client
import json
import os
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import structlog

from jobcompd.service.httpintake import HttpIntake, HttpIntakeError, _too_late
from jobcompd.service.httpserver import Limits
from jobcompd.spool import Spool, parse_name
from tests.broker import free_port, wait_for
from tests.support import DATA, DaemonUnderTest

ES_BODIES = sorted((DATA / "records" / "elasticsearch").glob("es-*.json"))
URL_PATH = "/slurm/jobcomp"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool", max_record_bytes=64 * 1024, allowed_uids=None)
    s.ensure_dirs()
    return s


@pytest.fixture
def intake(spool: Spool):
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=spool.max_record_bytes, cluster="tc")
    it.start()
    yield it
    it.stop()


def post(intake: HttpIntake, body: bytes, path: str = URL_PATH,
         headers: dict[str, str] | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
    """POST like Slurm's libcurl does; returns (status, JSON reply, response)."""
    host, port = intake.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", path, body=body,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    return resp.status, (json.loads(raw) if raw else {}), resp


def raw_exchange(intake: HttpIntake, data: bytes, timeout: float = 10,
                 half_close: bool = True) -> bytes:
    """Send raw bytes, half-close (a client that does is taken for gone before the store),
    return everything the server answered."""
    with socket.create_connection(intake.address, timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        return recv_all(s)


def recv_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def spooled(spool: Spool) -> list[str]:
    return sorted(os.listdir(spool.new))


# -- the happy path ----------------------------------------------------------------------


def test_every_captured_slurm_body_is_spooled_byte_for_byte_before_the_201(intake, spool):
    assert len(ES_BODIES) == 13
    for path in ES_BODIES:
        body = path.read_bytes()
        status, reply, resp = post(intake, body)
        assert status == 201, (path.name, reply)
        assert resp.getheader("Content-Type") == "application/json"
        # The file is in new/ when the 201 arrives: the reply names it.
        name = reply["file"]
        assert (spool.new / name).read_bytes() == body
        parts = parse_name(name)
        assert (parts.job_id, parts.event, parts.fmt) == (json.loads(body)["jobid"], "end",
                                                           "json")
        assert reply["job_id"] == parts.job_id
    assert len(spooled(spool)) == len(ES_BODIES)
    assert os.listdir(spool.tmp) == []


@pytest.mark.parametrize("path", ["/", "/slurm/jobcomp", "/slurm/_doc?refresh=true",
                                  "/slurm/jobcomp/slurm/jobcomp"])
def test_any_path_is_accepted(intake, spool, path):
    status, _, _ = post(intake, b'{"jobid":7,"state":"COMPLETED"}', path=path)
    assert status == 201
    assert len(spooled(spool)) == 1


def test_any_content_type_is_accepted_because_old_slurm_sends_none(intake, spool):
    # Old Slurm (the 15.08 sources) sets no Content-Type: libcurl then sends form-urlencoded.
    status, _, _ = post(intake, b'{"jobid":8}',
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 201


def test_a_body_with_slurm_2311s_trailing_nul_is_accepted(intake, spool):
    status, _, _ = post(intake, b'{"jobid":9}\0')
    assert status == 201


# -- bodies that are not records --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "array"),
        (b'{"state":"COMPLETED"}', "no 'jobid'"),
        (b'{"jobid":"12"}', "jobid"),
        (b'{"jobid":0}', "jobid"),
        (b"", "empty"),
        (b"jobid=4&state=x", "not valid JSON"),
    ],
)
def test_a_body_that_is_not_a_json_record_gets_400_with_the_reason(intake, spool, body, words):
    status, reply, _ = post(intake, body)
    assert status == 400
    assert words in reply["error"]
    assert "not a jobcomp record" in reply["error"]
    assert spooled(spool) == []


def test_a_body_over_the_limit_gets_413_and_is_not_read(spool):
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=100, cluster="tc", timeout_s=2.0)
    it.start()
    try:
        body = b'{"jobid":5,"script":"' + b"x" * 200 + b'"}'
        status, reply, _ = post(it, body)
        assert status == 413
        assert "over the limit of 100 bytes" in reply["error"]
        status, _, _ = post(it, b'{"jobid":5}')
        assert status == 201
    finally:
        it.stop()
    assert len(spooled(spool)) == 1


def test_no_content_length_gets_411(intake, spool):
    answer = raw_exchange(intake, b"POST /slurm/jobcomp HTTP/1.1\r\nHost: x\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert spooled(spool) == []


def test_a_chunked_body_gets_411(intake, spool):
    host, port = intake.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST", URL_PATH, body=iter([b'{"jobid":3}']), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 411
    assert "Content-Length" in json.loads(resp.read())["error"]
    conn.close()
    assert spooled(spool) == []


@pytest.mark.parametrize("length", ["abc", "-1", "1, 2", "+5", "0x10", "1_0", "5 5",
                                    "\u00b2", "\u0663", "\uff15", "9" * 5000, "0" * 13])
def test_a_bad_content_length_gets_400_with_a_status_line(intake, spool, length):
    """Superscript two and other Unicode digits pass str.isdigit() but not int(); 5,000
    digits pass both but int() refuses them: each once crashed the handler (no answer)."""
    answer = raw_exchange(intake, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "
                          + length.encode() + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"ASCII digits only" in answer
    assert post(intake, b'{"jobid":5}')[0] == 201  # and the intake goes on
    assert len(spooled(spool)) == 1


def test_a_content_length_with_leading_zeros_is_a_length(intake, spool):
    body = b'{"jobid":5}'
    answer = raw_exchange(intake, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 000"
                          + str(len(body)).encode() + b"\r\n\r\n" + body, half_close=False)
    assert answer.startswith(b"HTTP/1.1 201 ")


# -- other methods ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_405_with_allow(intake, spool, method):
    host, port = intake.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, URL_PATH, body=b'{"jobid":3}')
    resp = conn.getresponse()
    assert resp.status == 405
    assert resp.getheader("Allow") == "POST, GET, HEAD"
    assert method in json.loads(resp.read())["error"]
    conn.close()
    assert spooled(spool) == []


def test_head_and_get_answer_200_so_old_slurms_start_up_check_passes(intake):
    host, port = intake.address
    for method in ("HEAD", "GET"):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request(method, URL_PATH)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert (body == b"") if method == "HEAD" else (json.loads(body)["name"] == "jobcompd")
        conn.close()


def test_expect_100_continue_is_answered_before_the_body(intake, spool):
    body = b'{"jobid":44}'
    head = (f"POST {URL_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(intake.address, timeout=10) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(body)
        answer = recv_all(s)
    assert b"HTTP/1.1 201 Created\r\n" in answer
    assert len(spooled(spool)) == 1


def test_expect_100_continue_with_a_body_over_the_limit_gets_413_at_once(intake, spool):
    head = (f"POST {URL_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
            "Expect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(intake.address, timeout=10) as s:
        s.sendall(head)
        answer = recv_all(s)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


# -- write failures: Slurm must keep the record and retry --------------------------------


class _FullSpool(Spool):
    def __init__(self, root: Path, err: int) -> None:
        super().__init__(root, max_record_bytes=1024, allowed_uids=None)
        self.err = err

    def write_record(self, data: bytes, *, job_id: int, event: str, fmt: str) -> str:
        raise OSError(self.err, os.strerror(self.err))


@pytest.mark.parametrize(("err", "status"), [(errno.ENOSPC, 507), (errno.EDQUOT, 507),
                                             (errno.EIO, 503)])
def test_a_failed_write_is_not_acknowledged(tmp_path, err, status):
    it = HttpIntake(_FullSpool(tmp_path, err), ("127.0.0.1", 0), max_body=1024, cluster="tc")
    it.start()
    try:
        got, reply, _ = post(it, b'{"jobid":12}')
    finally:
        it.stop()
    assert got == status
    assert reply["job_id"] == 12
    assert os.strerror(err) in reply["error"]


def test_a_spool_without_tmp_gets_503_and_leaves_nothing_in_new(intake, spool):
    shutil.rmtree(spool.tmp)
    status, reply, _ = post(intake, b'{"jobid":13}')
    assert status == 503
    assert "cannot write to the spool" in reply["error"]
    assert spooled(spool) == []
    spool.tmp.mkdir()
    assert post(intake, b'{"jobid":13}')[0] == 201  # Slurm's retry then succeeds


# -- slow and greedy clients --------------------------------------------------------------


def test_a_client_that_stalls_is_cut_off_at_the_deadline(spool):
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=1024, cluster="tc", timeout_s=0.5)
    it.start()
    try:
        with socket.create_connection(it.address, timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"jobid\":")
            answer = recv_all(s)  # returns when the server closes the connection
            assert time.monotonic() - t0 < 15  # 0.5 s, with room for a loaded machine
        assert b"201" not in answer
    finally:
        it.stop()
    assert spooled(spool) == []


def test_a_client_dripping_header_bytes_cannot_hold_the_connection(spool):
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=1024, cluster="tc", timeout_s=0.6)
    it.start()
    try:
        with socket.create_connection(it.address, timeout=10) as s:
            t0 = time.monotonic()
            closed = False
            for _ in range(300):  # one byte every 0.1 s: each read is quick, the sum is not
                try:
                    s.sendall(b"X")
                except OSError:
                    closed = True
                    break
                readable, _, _ = select.select([s], [], [], 0.1)
                if readable and s.recv(100) == b"":
                    closed = True
                    break
            assert closed
            assert time.monotonic() - t0 < 15  # 0.6 s, with room for a loaded machine
    finally:
        it.stop()


class _SlowSpool(Spool):
    """A spool whose writes wait for the test: a request stays busy answering meanwhile."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, max_record_bytes=1024, allowed_uids=None)
        self.ensure_dirs()
        self.writing = threading.Event()
        self.go_on = threading.Event()

    def write_record(self, data: bytes, *, job_id: int, event: str, fmt: str) -> str:
        self.writing.set()
        assert self.go_on.wait(30), "the test never let the write go on"
        return super().write_record(data, job_id=job_id, event=event, fmt=fmt)


def _post_in_thread(it: HttpIntake, body: bytes) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(post(it, body)), daemon=True)
    thread.start()
    return thread, answers


def test_when_every_slot_is_busy_answering_a_new_connection_gets_503_at_once(tmp_path):
    slow = _SlowSpool(tmp_path / "spool")
    it = HttpIntake(slow, ("127.0.0.1", 0), max_body=1024, cluster="tc", max_connections=1)
    it.start()
    try:
        writer, answers = _post_in_thread(it, b'{"jobid":21}')
        assert slow.writing.wait(20)  # the only slot is storing a body
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                status, reply, resp = post(it, b'{"jobid":22}')
                assert status == 503
                assert resp.getheader("Retry-After") == "5"
                assert "busy" in reply["error"]
        # One line for the five refusals: an attacker cannot flood the log either.
        assert [e["event"] for e in logs] == ["http_intake_connections_refused"]
        slow.go_on.set()
        writer.join(20)
        assert answers[0][0] == 201
        assert post(it, b'{"jobid":23}')[0] == 201
    finally:
        slow.go_on.set()
        it.stop()
    assert len(spooled(slow)) == 2


def test_idle_connections_cannot_hold_the_slots_the_oldest_one_is_cut(spool):
    """200 connections that say nothing, renewed as they are cut: a client that sends its
    request at once still gets through, and the intake never holds more than twice its slots."""
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=1024, cluster="tc", max_connections=4,
                    timeout_s=60, header_timeout_s=30)
    it.start()
    idle: list[socket.socket] = []
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(200):
                idle.append(socket.create_connection(it.address, timeout=10))
                assert it.connections() <= 8
            for i in range(20):
                assert post(it, f'{{"jobid":{300 + i}}}'.encode())[0] == 201
                idle.append(socket.create_connection(it.address, timeout=10))
        assert it.connections() <= 8
        cut = [e for e in logs if e["event"] == "http_intake_connections_cut"]
        assert len(cut) == 1 and "oldest" in cut[0]["detail"]  # once a minute at most
        # The first ones were cut: their reads see the end of the connection, not a wait.
        assert recv_all(idle[0]) == b""
    finally:
        for s in idle:
            s.close()
        it.stop()
    assert len(spooled(spool)) == 20


def test_a_client_that_sends_no_headers_is_cut_at_the_header_deadline(spool):
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=1024, cluster="tc", timeout_s=300,
                    header_timeout_s=0.3)
    it.start()
    try:
        with socket.create_connection(it.address, timeout=30) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            assert recv_all(s) == b""  # closed long before the 300 s deadline or the socket's
    finally:
        it.stop()


def test_a_body_slower_than_the_minimum_rate_is_cut_and_not_stored(spool):
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=1024, cluster="tc", timeout_s=300,
                    min_body_rate=1000)
    it.start()
    body = b'{"jobid":31,"pad":"' + b"x" * 900 + b'"}'
    try:
        with socket.create_connection(it.address, timeout=30) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode())
            closed = False
            for i in range(len(body)):  # 20 bytes a second: it would take 46 s
                try:
                    s.sendall(body[i:i + 1])
                except OSError:
                    closed = True
                    break
                readable, _, _ = select.select([s], [], [], 0.05)
                if readable and s.recv(100) == b"":
                    closed = True
                    break
            assert closed
    finally:
        it.stop()
    assert spooled(spool) == []


def test_a_body_whose_client_left_before_the_answer_is_not_stored(tmp_path):
    """Slurm's libcurl gives up and closes while the spool is slow: storing the body then
    would only add a copy to the one Slurm sends again."""
    slow = _SlowSpool(tmp_path / "spool")
    it = HttpIntake(slow, ("127.0.0.1", 0), max_body=1024, cluster="tc", max_connections=2)
    it.start()
    try:
        writer, answers = _post_in_thread(it, b'{"jobid":41}')
        assert slow.writing.wait(20)  # the first one holds the spool
        body = b'{"jobid":42}'
        with socket.create_connection(it.address, timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            wait_for(lambda: it.connections() == 2, 20, what="the second request waiting")
        with structlog.testing.capture_logs() as logs:
            slow.go_on.set()
            writer.join(20)
            wait_for(lambda: it.connections() == 0, 20, what="both requests done")
        assert answers[0][0] == 201
        # Its 503 may or may not reach the socket the client closed; either way it is logged.
        (line,) = [e for e in logs if e.get("job_id") == 42]
        assert line["status"] == 503 and "closed the connection" in str(line)
    finally:
        slow.go_on.set()
        it.stop()
    assert [parse_name(n).job_id for n in spooled(slow)] == [41]


def test_a_body_past_the_connections_deadline_is_not_stored():
    class LateHandler:
        server = type("S", (), {"limits": Limits(total_timeout_s=10)})()

        def time_left(self) -> float:
            return -0.1

        def peer_gone(self) -> bool:
            return False

    assert "deadline" in str(_too_late(LateHandler()))  # type: ignore[arg-type]


def test_request_headers_over_16_kib_get_431(intake, spool):
    answer = raw_exchange(intake, b"POST / HTTP/1.1\r\nHost: x\r\n"
                          + b"X-Pad: " + b"p" * 20_000 + b"\r\nContent-Length: 11\r\n\r\n"
                          + b'{"jobid":5}')
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert spooled(spool) == []


# -- lifecycle ----------------------------------------------------------------------------


def test_port_zero_binds_a_free_port_and_stop_is_quick_and_frees_it(spool):
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=1024, cluster="tc")
    with pytest.raises(RuntimeError):
        _ = it.address
    it.start()
    host, port = it.address
    assert host == "127.0.0.1" and port > 0
    # an idle keep-alive-less connection in progress must not make stop() slow
    idle = socket.create_connection((host, port), timeout=10)
    t0 = time.monotonic()
    it.stop(grace=0.5)
    assert time.monotonic() - t0 < 5  # the idle connection would hold it 10 s
    idle.close()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))  # free again
    it.stop()  # a second stop is harmless


def test_a_taken_port_is_a_clear_error(spool):
    port = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        it = HttpIntake(spool, ("127.0.0.1", port), max_body=1024, cluster="tc")
        with pytest.raises(HttpIntakeError, match=rf"HttpListen=127\.0\.0\.1:{port}: cannot "
                                                  r"listen: Address already in use; another"):
            it.start()


def test_ipv6_loopback(spool):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    it = HttpIntake(spool, ("::1", 0), max_body=1024, cluster="tc")
    try:
        it.start()
    except HttpIntakeError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    try:
        assert it.address[0] == "::1"
        assert post(it, b'{"jobid":61}')[0] == 201
    finally:
        it.stop()


def test_one_log_line_per_request_debug_for_success_error_for_rejection(intake):
    with structlog.testing.capture_logs() as logs:
        post(intake, b'{"jobid":71}')
        post(intake, b'{"nojobid":1}')
        # The server logs right after its answer is sent, so maybe after post() returned, and
        # each request on a thread of its own: the two lines may come in either order.
        wait_for(lambda: len(logs) >= 2, 30, what="two log lines")
    lines = sorted((e["log_level"], e["event"], e["status"], e["job_id"]) for e in logs)
    assert lines == [
        ("debug", "http_request", 201, 71),
        ("error", "http_request_rejected", 400, None),
    ]


# -- with the daemon: the spooled body is what arrives in Kafka ---------------------------


@pytest.mark.broker
def test_posted_records_reach_kafka_unchanged(tmp_path, broker):
    dut = DaemonUnderTest(root=tmp_path, bootstrap=broker.bootstrap)
    dut.start()
    spool = Spool(dut.spool, max_record_bytes=64 * 1024, allowed_uids=None)
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=64 * 1024, cluster=dut.cluster)
    it.start()
    try:
        for path in ES_BODIES:
            assert post(it, path.read_bytes())[0] == 201
        got = dut.consume(len(ES_BODIES), settle=0.5)
    finally:
        it.stop()
        dut.stop()
    # Slurm's own bytes, except the batch script (the last key of a 22.05 body here; srun
    # jobs have none), which jobcompd sends only with send_script, like jobcomp/kafka 25.05+.
    def without_script(body: bytes) -> bytes:
        cut = body.find(b',"script":')
        return body if cut < 0 else body[:cut] + b"}"

    assert sorted(r.value for r in got) == sorted(without_script(p.read_bytes())
                                                  for p in ES_BODIES)
    assert {r.headers["event"] for r in got} == {b"job_end"}
