"""The state file as the daemon uses it (service/checkpoint.py), and the loop's wake-up
(service/wakeup.py): alone, without a daemon. The daemon's use of both is tested black-box in
tests/faults/test_state_files.py, tests/test_standby.py and tests/test_daemon.py."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import structlog.testing

from jobcompd.config import Config, load
from jobcompd.service import checkpoint, statefile
from jobcompd.service.producer import Message
from jobcompd.service.wakeup import Wakeup


def config(tmp_path: Path, standby: bool = False, max_inflight: int = 2) -> Config:
    (tmp_path / "rdkafka.conf").write_text("bootstrap.servers=127.0.0.1:9\n")
    path = tmp_path / "jobcompd.conf"
    path.write_text(f"ClusterName=test\nJobCompLoc=rdkafka.conf\nStateSaveLocation={tmp_path}\n"
                    f"SpoolDir={tmp_path / 'spool'}\nStandby={'yes' if standby else 'no'}\n"
                    f"JobCompParams=max_inflight={max_inflight}\n")
    (tmp_path / "spool").mkdir(exist_ok=True)
    return load(path)


def message(name: str) -> Message:
    return Message(name=name, job_id=1, event="job_end", key=b"k", value=b"{}",
                   record_id="id", arrived_ns=0)


def test_a_clean_stop_gives_back_counters_and_attempts_without_suspects(tmp_path):
    cfg = config(tmp_path)
    checkpoint.save(cfg, clean=True, attempts={"a": 3}, counters={"delivered": 7},
                    in_flight=["b"])
    counters, carry = checkpoint.restore(cfg)
    assert counters == {"delivered": 7}
    first, second, third = message("a"), message("b"), message("c")
    for m in (first, second, third):
        carry.annotate(m)
    assert (first.attempts, first.redelivery) == (3, False)
    assert second.redelivery  # it was on the wire at the stop: it may have arrived
    assert not third.redelivery


def test_after_an_unclean_stop_the_first_window_is_marked_as_redelivery(tmp_path):
    cfg = config(tmp_path, max_inflight=2)
    checkpoint.save(cfg, clean=False, attempts={}, counters={})
    _, carry = checkpoint.restore(cfg)
    msgs = [message(n) for n in "abc"]
    for m in msgs:
        carry.annotate(m)
    assert [m.redelivery for m in msgs] == [True, True, False]


def test_with_a_standby_the_state_file_follows_the_spool(tmp_path):
    cfg = config(tmp_path, standby=True)
    checkpoint.save(cfg, clean=True, attempts={}, counters={"ingested": 1})
    assert (tmp_path / "spool" / statefile.SHARED_STATE_FILE).exists()
    assert not (tmp_path / statefile.STATE_FILE).exists()
    assert checkpoint.restore(cfg)[0] == {"ingested": 1}


def test_an_unusable_state_file_is_moved_aside_and_the_run_goes_on(tmp_path):
    cfg = config(tmp_path)
    (tmp_path / statefile.STATE_FILE).write_bytes(b"{not json")
    assert checkpoint.restore(cfg) is None
    assert not (tmp_path / statefile.STATE_FILE).exists()
    assert [p.name for p in tmp_path.glob(f"{statefile.STATE_FILE}.bad-*")] != []
    assert checkpoint.restore(config(tmp_path)) is None  # nothing left: a first start


def test_a_failed_save_is_logged_not_raised(tmp_path):
    cfg = dataclasses.replace(config(tmp_path), state_dir=tmp_path / "gone" / "away")
    with structlog.testing.capture_logs() as logs:
        checkpoint.save(cfg, clean=True, attempts={}, counters={})
    assert [(e["event"], e["path"]) for e in logs] == [
        ("state_save_failed", str(tmp_path / "gone" / "away"))]


def test_wakeup_wait_ends_early_when_woken_or_signalled():
    wakeup = Wakeup()
    wakeup.wake()
    began = time.monotonic()
    wakeup.wait(30)
    assert time.monotonic() - began < 5
    previous = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    old_fd = signal.set_wakeup_fd(-1)
    try:
        wakeup.install_signals()
        os.kill(os.getpid(), signal.SIGHUP)
        began = time.monotonic()
        wakeup.wait(30)
        assert time.monotonic() - began < 5
        assert wakeup.take_reload() and not wakeup.take_reload()
        assert not wakeup.stop_requested
        os.kill(os.getpid(), signal.SIGTERM)
        wakeup.wait(30)
        assert wakeup.stop_requested
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
