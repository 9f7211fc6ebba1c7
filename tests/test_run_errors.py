"""``jobcompd run`` with a bad configuration: exit 78 and a message that says what to fix."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(conf):
    return subprocess.run([sys.executable, "-m", "jobcompd", "run", "-c", str(conf)],
                          capture_output=True, text=True, timeout=60)


def _setup(tmp_path, params="", rdkafka="bootstrap.servers=127.0.0.1:9\n", extra=""):
    (tmp_path / "rdkafka.conf").write_text(rdkafka)
    conf = tmp_path / "jobcompd.conf"
    conf.write_text(
        f"ClusterName=c1\nJobCompLoc={tmp_path / 'rdkafka.conf'}\nJobCompParams={params}\n"
        f"SpoolDir={tmp_path / 'spool'}\nStateSaveLocation={tmp_path}\nSpoolOwners=root\n{extra}"
    )
    return conf


@pytest.mark.parametrize(
    ("params", "rdkafka", "extra", "must_say"),
    [
        ("no_such_option", None, "", ["no_such_option"]),
        ("flush_timeout=abc", None, "", ["flush_timeout", "abc"]),
        ("max_inflight=0", None, "", ["max_inflight", "0"]),
        ("poll_interval=-5", None, "", ["poll_interval", "-5"]),
        ("", "linger.ms=5\n", "", ["bootstrap.servers"]),
        ("", "bootstrap.servers=x:1\nno.such.property=1\n", "", ["no.such.property", ":2"]),
        ("", "bootstrap.servers=x:1\nlinger.ms=banana\n", "", ["linger.ms", "banana", ":2"]),
        ("", None, "Bogus=1\n", ["Bogus", ":7"]),
    ],
)
def test_bad_config_exits_78_naming_the_problem(tmp_path, params, rdkafka, extra, must_say):
    kwargs = {"params": params, "extra": extra}
    if rdkafka is not None:
        kwargs["rdkafka"] = rdkafka
    res = _run(_setup(tmp_path, **kwargs))
    assert res.returncode == 78, res.stderr
    for word in must_say:
        assert word in res.stderr, (word, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1


def test_missing_jobcomploc_file_exits_78(tmp_path):
    conf = _setup(tmp_path)
    (tmp_path / "rdkafka.conf").unlink()
    res = _run(conf)
    assert res.returncode == 78
    assert "rdkafka.conf" in res.stderr


def test_missing_config_file_exits_78(tmp_path):
    res = _run(tmp_path / "nope.conf")
    assert res.returncode == 78
    assert "nope.conf" in res.stderr
