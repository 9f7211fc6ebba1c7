"""Fixtures of the fault matrix: a broker of the test's own (so it may be paused, stopped or
restarted without disturbing the session broker other tests share) and a daemon bound to it."""

from __future__ import annotations

import pytest

from tests.broker import Tansu
from tests.support import DaemonUnderTest


@pytest.fixture
def own_broker(tmp_path):
    tansu = Tansu(log_path=tmp_path / "tansu.log").start()
    yield tansu
    tansu.stop()


@pytest.fixture
def dut(tmp_path, own_broker):
    """A jobcompd in tmp_path against this test's own broker; killed after the test."""
    d = DaemonUnderTest(root=tmp_path / "jobcompd", bootstrap=own_broker.bootstrap)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill()
