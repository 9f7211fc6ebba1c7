"""The configuration's two tables (jobcompd.conf's keys, JobCompParams' options), tested alone,
and everything that must agree with them: the Config it fills, the status file's summary."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from jobcompd import config
from jobcompd.config import KEYS, OPTIONS, Config, Params, docs, load, parse_params
from jobcompd.config.keys import Context
from jobcompd.service import statusfile as status

KAFKA_OK = "bootstrap.servers=127.0.0.1:9092\n"


def write(folder: Path, main: str = "") -> Path:
    (folder / "rdkafka.conf").write_text(KAFKA_OK)
    (folder / "rdkafka.conf").chmod(0o600)
    path = folder / "jobcompd.conf"
    path.write_text(f"ClusterName=test\nJobCompLoc=rdkafka.conf\n{main}")
    return path


# --------------------------------------------------------------------------- jobcompd.conf


def test_every_config_attribute_comes_from_one_key() -> None:
    attrs = [k.attr for k in KEYS]
    assert len(set(attrs)) == len(attrs)
    derived = {"path", "kafka", "warnings"}  # the file itself, and what its keys lead to
    assert set(attrs) | derived == {f.name for f in dataclasses.fields(Config)}


def test_key_names_are_unique_whatever_their_case() -> None:
    assert len({k.name.lower() for k in KEYS}) == len(KEYS)


def test_every_key_has_a_default_or_says_what_applies() -> None:
    for key in KEYS:
        assert key.doc and "\n" not in key.doc, key.name
        assert (key.default is None) == bool(key.default_doc), key.name


def test_an_empty_value_is_allowed_exactly_where_the_default_is_empty() -> None:
    for key in KEYS:
        assert (key.empty_hint is None) == (key.default == ""), key.name


@pytest.mark.parametrize("key", [k for k in KEYS if k.default], ids=lambda k: k.name)
def test_a_written_default_means_the_same_as_no_line(tmp_path: Path, key) -> None:
    absent = load(write(tmp_path))
    written = load(write(tmp_path, f"{key.name}={key.default}\n"))
    assert getattr(written, key.attr) == getattr(absent, key.attr)


def test_literal_defaults_parse_alone(tmp_path: Path) -> None:
    ctx = Context(tmp_path / "jobcompd.conf", {})
    parsed = {k.name: k.parse(k.default, "where", ctx) for k in KEYS
              if k.default and k.name != "JobCompParams"}
    assert parsed == {"SpoolDir": config.DEFAULT_SPOOL_DIR, "SpoolMinFreeBytes": 64 << 20,
                      "StateSaveLocation": config.DEFAULT_STATE_DIR,
                      "LogTarget": "auto", "LogFormat": "logfmt", "Standby": False}
    assert ctx.warnings == []


def test_only_the_spool_and_the_state_folder_wait_for_a_restart() -> None:
    from jobcompd.service import reload

    assert config.RESTART_ATTRS == ("spool_dir", "state_dir")
    assert tuple(reload.RESTART_KEYS) == config.RESTART_ATTRS


# --------------------------------------------------------------------------- JobCompParams


def test_every_params_field_comes_from_one_option() -> None:
    attrs = [o.attr for o in OPTIONS if o.attr is not None]
    assert len(set(attrs)) == len(attrs)
    assert set(attrs) == {f.name for f in dataclasses.fields(Params)}


def test_option_defaults_lie_in_their_ranges() -> None:
    for o in OPTIONS:
        if o.kind == "number":
            assert o.low <= o.default <= o.high, o.name
            assert o.unit and o.placeholder, o.name
        elif o.kind == "flag":
            assert o.default is False, o.name
        assert o.doc and "\n" not in o.doc, o.name


def test_no_options_means_every_default() -> None:
    params, warnings = parse_params("", "c1", "where")
    assert warnings == []
    for o in OPTIONS:
        if o.kind in ("number", "flag"):
            assert getattr(params, str(o.attr)) == o.default, o.name
    assert (params.topic, params.topic_job_start) == ("c1", "c1-job-start")
    assert isinstance(params.rescan_interval_s, float) and isinstance(params.poll_interval_s, int)


# --------------------------------------------------------------------------- status summary


def test_the_status_summary_shows_every_key(tmp_path: Path) -> None:
    main = ("MetricsListen=[::1]:9817\nHttpListen=127.0.0.1:9200\nSpoolOwners=4242\n"
            "MetricsTextfile=m.prom\nDebugFlags=JobComp\n")
    cfg = load(write(tmp_path, main))
    summary = status.config_summary(cfg)
    assert set(summary) == {"path", "kafka"} | {k.attr for k in KEYS}
    assert summary["path"] == str(cfg.path)
    assert summary["cluster_name"] == "test"
    assert summary["job_comp_loc"] == str(tmp_path / "rdkafka.conf")
    assert summary["slurm_conf"] is None
    assert summary["spool_dir"] == "/var/spool/jobcompd"
    assert summary["metrics_listen"] == "[::1]:9817"
    assert summary["http_listen"] == "127.0.0.1:9200"
    assert summary["metrics_textfile"] == str(tmp_path / "m.prom")
    assert summary["spool_owners"] == [0, 4242]
    assert summary["debug_flags"] == ["JobComp"]
    assert summary["params"]["max_inflight"] == 10000
    assert summary["params"]["topic"] == "test"
    assert summary["kafka"]["bootstrap.servers"] == "127.0.0.1:9092"


# --------------------------------------------------------------------------- the documents

ROOT = Path(__file__).resolve().parent.parent
ETC = (ROOT / "etc" / "jobcompd.conf").read_text()


def _etc_blocks() -> dict[str, str]:
    """etc/jobcompd.conf's block of each key ("# Key — ..." up to the next one), its comment
    lines joined by spaces and its setting lines kept as lines."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in ETC.splitlines():
        m = re.match(r"# ([A-Za-z]+) — ", line)
        if m:
            current = m.group(1)
            blocks[current] = []
        if current is not None:
            blocks[current].append(line)
    return {k: "\n".join(v) for k, v in blocks.items()}


def _prose(block: str) -> str:
    return " ".join(ln.lstrip("#").strip() for ln in block.splitlines() if ln.startswith("# "))


def test_the_readme_tables_are_the_generated_ones() -> None:
    readme = (ROOT / "README.md").read_text()
    configure = readme[readme.index("## Configure"):readme.index("## Run and operate")]
    assert docs.BEGIN in configure and docs.END in configure
    assert docs.update_readme(readme) == readme, (
        "README.md's configuration tables differ from the tables in jobcompd/config/; "
        "run: python -m jobcompd.config.docs README.md")


def test_the_readme_shows_every_key_and_option_with_its_default() -> None:
    tables = docs.readme_tables()
    for key in KEYS:
        assert f"| `{key.name}` | {docs.key_default(key)} |" in tables, key.name
    for option in OPTIONS:
        assert f"`{option.usage()}`" in tables, option.name
    assert "| `max_inflight=<n>` | 10000 |" in tables
    assert "| `SpoolDir` | `/var/spool/jobcompd` |" in tables


def test_etc_documents_every_key_in_table_order_and_nothing_else() -> None:
    assert list(_etc_blocks()) == [k.name for k in KEYS]
    written = re.findall(r"(?m)^#?([A-Z][A-Za-z]+)=", ETC)
    assert set(written) == {k.name for k in KEYS}


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.name)
def test_etc_gives_each_key_its_default(key) -> None:
    block = _etc_blocks()[key.name]
    prose = _prose(block)
    if key.default:
        assert re.search(rf"(?m)^#{key.name}={re.escape(key.default)}$", block), block
        assert "Default:" in prose
    elif key.default == "":
        assert "Default: empty" in prose, prose
    elif key.default_doc == "required":
        assert "Required" in prose, prose
    else:
        assert f"Default: {key.default_doc.replace('`', '')}" in prose, prose


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_etc_gives_each_option_its_default_and_range(option) -> None:
    lines = ETC.splitlines()
    (start,) = [i for i, ln in enumerate(lines)
                if re.match(rf"#   (\S+, )*{re.escape(option.usage())}(,|\s|$)", ln)]
    end = start + 1
    while end < len(lines) and re.match(r"#\s{6,}\S", lines[end]):
        end += 1
    text = _prose("\n".join(lines[start:end]))
    if option.kind == "number":
        assert f"Default {option.default};" in text, text
        assert f"{option.low}..{option.high}" in text, text
    elif option.kind == "topic":
        assert f"Default: {option.default}" in text, text
