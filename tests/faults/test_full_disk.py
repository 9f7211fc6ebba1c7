"""Fault 4: a full file system under the spool, and under StateSaveLocation.

Each is a small tmpfs mounted by the test (root only, as in CI) and filled to the last byte.
The hook fails loudly and leaves nothing behind; the daemon keeps delivering what it already
had, logs what it cannot write, and catches up once space returns.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from jobcompd.spool import Spool
from tests.broker import wait_for
from tests.faults.common import (
    assert_alive,
    drain,
    end_env,
    fill,
    small_filesystem,
    tally,
)

pytestmark = [pytest.mark.broker, pytest.mark.faults]


def test_full_spool(dut, own_broker, tmp_path):
    """SpoolMinFreeBytes=0: the check off, the disk itself runs full (with the threshold:
    tests/faults/test_spool_capacity.py)."""
    dut.params.update(rescan_interval="1")
    dut.extra_conf["SpoolMinFreeBytes"] = "0"
    dut.write_config()
    with small_filesystem(dut.spool, "2m"):
        dut.start()
        sent = []
        for i in range(20):
            dut.hook(end_env(4_000_000 + i))
            sent.append(4_000_000 + i)
        assert len(dut.consume(20)) == 20

        # The daemon holds records it cannot deliver yet when the disk fills up.
        own_broker.pause()
        try:
            for i in range(20, 120):
                dut.hook(end_env(4_000_000 + i))
                sent.append(4_000_000 + i)
            filler = fill(dut.spool)

            # The hook fails loudly and leaves no partial record anywhere.
            res = dut.hook(end_env(4_999_999), check=False)
            assert res.returncode == 74, res
            assert b"disk full" in res.stderr, res.stderr
            assert not [n for n in dut.new_files() if ".4999999." in n]
            assert (dut.spool / "tmp").exists() and not list((dut.spool / "tmp").iterdir())

            # A bad record cannot be dead-lettered without room for its reason: it stays in
            # new/ and the daemon says so.
            bad = "1000000000000000001.4999998.end.env"
            (dut.spool / "new" / bad).touch()  # an empty record: malformed
            (line, *_) = dut.wait_log("dead_letter_failed")
            assert bad in line and "No space left on device" in line
            assert bad in dut.new_files()
            assert not dut.failed_files()
        finally:
            own_broker.resume()

        # Everything the daemon had still goes out, starting on the full disk: delivering needs
        # no space. Each delivered record frees its file, so the bad record's next attempt may
        # already find room for its reason file; either way it leaves new/ only for failed/.
        assert len(dut.consume(120)) == 120
        wait_for(lambda: set(dut.new_files()) <= {bad}, 60, interval=0.1,
                 what="new/ down to the bad record at most")
        assert set(dut.failed_files()) <= {bad, bad + ".reason"}
        assert_alive(dut)

        filler.unlink()  # space returns, whatever the deliveries freed
        for i in range(120, 140):
            dut.hook(end_env(4_000_000 + i))
            sent.append(4_000_000 + i)
        wait_for(lambda: sorted(dut.failed_files()) == [bad, bad + ".reason"], 20,
                 what="the bad record dead-lettered once there is room")
        reason = json.loads((dut.spool / "failed" / (bad + ".reason")).read_text())
        assert reason["reason"] == "malformed"
        assert len(dut.log_lines("dead_lettered")) == 1, dut.log_lines("dead_lettered")
        got = drain(dut, sent)  # the topic from its beginning
        assert_alive(dut)
        t = tally("full_spool", sent, got, dut)
        assert t.lost == 0, f"lost {t.missing[:20]}"
        assert t.dead_lettered == 1  # the bad one
        assert dut.stop() == 0


def test_full_state_save_location(dut, own_broker):
    dut.params["flush_timeout"] = "500"
    dut.write_config()
    sent: list[int] = []
    with small_filesystem(dut.state, "64k"):
        dut.start()
        filler = fill(dut.state)
        for i in range(20):
            dut.hook(end_env(4_100_000 + i))
            sent.append(4_100_000 + i)
        assert len(dut.consume(20)) == 20
        # SIGHUP and SIGTERM on a full disk: the daemon says the state was not saved and
        # exits cleanly; the spool is the truth.
        dut.signal(signal.SIGHUP)
        dut.wait_log("reloaded")
        dut.signal(signal.SIGTERM)
        assert dut.wait_exit(10) == 0
        (line,) = dut.log_lines("state_save_failed")
        assert "No space left on device" in line and str(dut.state) in line

        # It starts again on the still full disk and delivers.
        dut.start()
        for i in range(20, 40):
            dut.hook(end_env(4_100_000 + i))
            sent.append(4_100_000 + i)
        assert len(dut.consume(40)) == 40
        assert_alive(dut)

        assert len(dut.log_lines("state_save_failed")) == 1  # the start-up save

        filler.unlink()  # space returns: the state file is written again
        dut.signal(signal.SIGTERM)
        assert dut.wait_exit(10) == 0
        assert len(dut.log_lines("state_save_failed")) == 1
        state = json.loads((dut.state / "jobcompd_state").read_text())
        assert state["clean"] is True
    t = tally("full_state_dir", sent, dut.consume(40, settle=0.5), dut)
    assert t.lost == 0 and t.duplicates == 0


def test_first_start_on_a_full_state_save_location(dut, own_broker):
    """No lock file yet and not a byte free: the state is optional, so the daemon runs."""
    with small_filesystem(dut.state, "64k"):
        fill(dut.state)
        dut.start(wait_ready=False)
        try:
            dut.wait_log("started", timeout=20)
        except AssertionError:
            pytest.fail("jobcompd refuses to start when StateSaveLocation is full:\n"
                        + dut.log_text()[-2000:])
        dut.hook(end_env(4_200_000))
        assert len(dut.consume(1)) == 1
        assert dut.log_lines("state_save_failed")
        assert dut.stop() == 0


def test_dead_letter_on_a_full_disk_moves_nothing(tmp_path):
    """Spool level: no room for the reason file means the record stays where it was."""
    with small_filesystem(tmp_path / "spool", "64k"):
        sp = Spool(tmp_path / "spool", max_record_bytes=1 << 20, allowed_uids=None)
        sp.ensure_dirs()
        name = "1000000000000000001.7.end.env"
        (sp.new / name).write_bytes(b"garbage")
        fill(sp.root)
        with pytest.raises(OSError, match="No space left"):
            sp.dead_letter(name, "malformed", "x" * 10_000)
        assert (sp.new / name).read_bytes() == b"garbage"
        assert sorted(p.name for p in sp.failed.iterdir()) == []
        assert not subprocess.run(["ls", "-A", str(sp.failed)], capture_output=True,
                                  text=True).stdout
