"""Fault 5: an unusable state file (corrupt, truncated, empty, from a future release, of the
wrong shape, not a file). It is moved aside with an error that names it; the daemon carries on
from the spool and nothing is lost."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.faults.common import assert_alive, drain, end_env, tally

pytestmark = [pytest.mark.broker, pytest.mark.faults]


def _corrupt(good: bytes) -> bytes:
    return bytes(range(256)) * 4


def _truncated(good: bytes) -> bytes:
    return good[: len(good) // 2]


def _empty(good: bytes) -> bytes:
    return b""


def _future(good: bytes) -> bytes:
    state = json.loads(good)
    state["version"] = 99
    state["something_new"] = {"x": 1}
    return json.dumps(state).encode()


def _wrong_shape(good: bytes) -> bytes:
    state = json.loads(good)
    state["pending"] = 5
    state["counters"] = ["delivered"]
    return json.dumps(state).encode()


BAD_STATES = {
    "corrupt": _corrupt,
    "truncated": _truncated,
    "empty": _empty,
    "future_version": _future,
    "wrong_shape": _wrong_shape,
    "directory": None,
}


@pytest.mark.parametrize("kind", list(BAD_STATES))
def test_unusable_state_file_is_moved_aside(daemon, kind):
    base = 5_000_000 + 1000 * list(BAD_STATES).index(kind)
    daemon.start()
    daemon.hook(end_env(base))
    assert len(daemon.consume(1)) == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    path = daemon.state / "jobcompd_state"
    good = path.read_bytes()
    assert json.loads(good)["clean"] is True

    make = BAD_STATES[kind]
    if make is None:
        path.unlink()
        path.mkdir()
        (path / "inside").write_bytes(b"x")
        bad = None
    else:
        bad = make(good)
        path.write_bytes(bad)
    sent = [base]
    for i in range(1, 30):  # records that wait in the spool while the daemon is down
        daemon.hook(end_env(base + i))
        sent.append(base + i)

    daemon.start()
    (line,) = daemon.wait_log("state_file_unusable")
    aside = [n for n in os.listdir(daemon.state) if n.startswith("jobcompd_state.bad-")]
    assert len(aside) == 1, os.listdir(daemon.state)
    assert str(path) in line and aside[0] in line
    if bad is not None:
        assert (daemon.state / aside[0]).read_bytes() == bad
    got = drain(daemon, sent)  # the topic from its beginning
    assert_alive(daemon)
    t = tally(f"state_{kind}", sent, got, daemon)
    assert t.lost == 0, f"lost {t.missing}"
    assert t.dead_lettered == 0
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    assert json.loads(path.read_bytes())["clean"] is True  # a good one written again
