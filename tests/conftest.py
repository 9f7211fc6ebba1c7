"""Shared fixtures: one real Tansu broker per test session (per xdist worker)."""

from __future__ import annotations

import pytest

from tests.broker import Tansu
from tests.support import DaemonUnderTest


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    tansu = Tansu(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log").start()
    yield tansu
    tansu.stop()


@pytest.fixture
def daemon(tmp_path, broker):
    """A jobcompd set up in tmp_path against the session broker, stopped after the test."""
    dut = DaemonUnderTest(root=tmp_path, bootstrap=broker.bootstrap)
    yield dut
    if dut.proc is not None and dut.proc.poll() is None:
        dut.kill()
