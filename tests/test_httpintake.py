"""The HTTP intake for jobcomp/elasticsearch, with real HTTP requests and a real spool."""

from __future__ import annotations

import errno
import http.client
import json
import os
import select
import shutil
import socket
import time
from pathlib import Path

import pytest
import structlog

from jobcompd.service.httpintake import HttpIntake, HttpIntakeError
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


def raw_exchange(intake: HttpIntake, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, half-close, return everything the server answered."""
    with socket.create_connection(intake.address, timeout=timeout) as s:
        s.sendall(data)
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


@pytest.mark.parametrize("length", ["abc", "-1", "1, 2"])
def test_a_bad_content_length_gets_400(intake, length):
    answer = raw_exchange(
        intake, f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 ")


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


def test_when_all_slots_are_busy_a_new_connection_gets_503_at_once(spool):
    it = HttpIntake(spool, ("127.0.0.1", 0), max_body=1024, cluster="tc", max_connections=1,
                    timeout_s=1.0)
    it.start()
    try:
        with socket.create_connection(it.address, timeout=10) as hog:
            hog.sendall(b"POST / HTTP/1.1\r\n")  # holds the only slot
            status, reply, resp = wait_for(lambda: _busy(post(it, b'{"jobid":21}')), 20,
                                           interval=0.05, what="a 503 while the slot is held")
            assert status == 503
            assert resp.getheader("Retry-After") == "5"
            assert "busy" in reply["error"]
        # Once the hog is gone (closed, or cut at its deadline), requests get through again.
        wait_for(lambda: post(it, b'{"jobid":21}')[0] == 201, 20, interval=0.1,
                 what="a free slot")
    finally:
        it.stop()
    assert len(spooled(spool)) == 1


def _busy(answer: tuple[int, dict, http.client.HTTPResponse]):
    return answer if answer[0] == 503 else None


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
