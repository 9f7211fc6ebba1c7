"""Tests for `jobcompd schema` and the checked-in docs/message-schema.json."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobcompd.cli import main as cli
from jobcompd.cli import schema as schema_cmd

ROOT = Path(__file__).parent.parent
CHECKED_IN = ROOT / "docs" / "message-schema.json"
DATA = Path(__file__).parent / "data"
REGENERATE = ".venv/bin/jobcompd schema > docs/message-schema.json"


def run_schema_command(argv: list[str]) -> tuple[int, str, str]:
    args = cli.build_parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def test_checked_in_schema_is_up_to_date():
    assert CHECKED_IN.read_text(encoding="utf-8") == schema_cmd.schema_text(), (
        f"{CHECKED_IN.relative_to(ROOT)} is out of date with the model in jobcompd/records/; "
        f"regenerate it with: {REGENERATE}"
    )


def test_schema_command_prints_the_schema_without_a_configuration(monkeypatch):
    monkeypatch.setenv("JOBCOMPD_CONFIG", "/nonexistent/jobcompd.conf")  # not needed, not read
    code, out, _ = run_schema_command(["schema"])
    assert code == 0
    assert out == schema_cmd.schema_text()
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"


def test_a_configuration_given_with_c_is_checked(tmp_path):
    """``schema -c /wrong/path`` is a mistake to tell, not to pass over with exit 0."""
    code, out, err = run_schema_command(["schema", "-c", "/nonexistent/jobcompd.conf"])
    assert (code, out) == (78, "")
    assert err.startswith("jobcompd: /nonexistent/jobcompd.conf: cannot read config file: "
                          "No such file or directory; give its path with -c PATH")
    (tmp_path / "rdkafka.conf").write_text("bootstrap.servers=127.0.0.1:9092\n")
    conf = tmp_path / "jobcompd.conf"
    conf.write_text(f"ClusterName=c\nJobCompLoc={tmp_path / 'rdkafka.conf'}\n")
    code, out, err = run_schema_command(["schema", "-c", str(conf)])
    assert (code, err) == (0, "")
    assert out == schema_cmd.schema_text()


def test_schema_help_lists_its_exit_status():
    res = subprocess.run([sys.executable, "-m", "jobcompd", "schema", "--help"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0
    assert "exit status:\n  0   printed\n  78  the configuration given with -c is invalid" \
        in res.stdout


def test_every_field_has_a_description_and_the_versions_are_noted():
    props = schema_cmd.message_schema()["properties"]
    assert all(p["description"] for p in props.values())
    for key, version in (
        ("priority", "24.05"),
        ("sluid", "26.05"),
        ("admin_comment", "26.05"),
        ("comment", "26.05"),
        ("script", "25.05"),
        ("tres_req_raw", "23.11.1"),
        ("partition", "25.05"),
        ("elapsed", "23.11.1"),
        ("@queue_wait", "23.11.9"),
    ):
        assert version in props[key]["description"], key


def test_required_keys_are_the_ones_slurm_always_writes():
    schema = schema_cmd.message_schema()
    assert schema["required"] == [
        "jobid", "container", "username", "user_id", "groupname", "group_id", "partition",
        "alloc_node", "nodes", "total_cpus", "total_nodes", "state",
    ]  # fmt: skip
    assert schema["properties"]["cpu_hours"]["type"] == "number"


def golden_messages() -> list[tuple[str, dict]]:
    """Every expected message of the golden tests (env, hand-made, job objects)."""
    found = []
    for path in sorted((DATA / "records" / "expected").glob("*.json")):
        found.append((path.name, json.loads(path.read_bytes())))
    for path in sorted((DATA / "records" / "handmade" / "expected").glob("*.json")):
        found.append((path.name, json.loads(path.read_bytes())))
    for path in sorted((DATA / "jobjson" / "expected").glob("*.expected")):
        for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            event, _, value = line.partition("\t")
            if event != "error":
                found.append((f"{path.name}:{index + 1}", json.loads(value)))
    return found


GOLDEN = golden_messages()
SCHEMA = schema_cmd.message_schema()


def test_there_are_golden_messages_to_check():
    assert len(GOLDEN) > 150


@pytest.mark.parametrize(("name", "msg"), GOLDEN, ids=[name for name, _ in GOLDEN])
def test_golden_message_fits_the_schema(name: str, msg: dict):
    """Required keys present; known keys in the schema's order with its types."""
    schema = SCHEMA
    props = list(schema["properties"])
    for key in schema["required"]:
        assert key in msg, key
    known = [k for k in msg if k in schema["properties"]]
    assert known == sorted(known, key=props.index)
    types = {"integer": int, "string": str, "number": float, "null": type(None)}
    for key in known:
        spec = schema["properties"][key]
        allowed = [s["type"] for s in spec.get("anyOf", [spec])]
        assert any(
            isinstance(msg[key], types[t]) and not isinstance(msg[key], bool) for t in allowed
        ), (key, msg[key])
