"""Tests for jobcompd.records.scanner, the byte-level JSON scanner of records and backfill, and
for cutting members out of a record with it (jobcompd.records.passthrough.without_members)."""

from __future__ import annotations

import itertools
import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from jobcompd.records import scanner
from jobcompd.records.passthrough import without_members

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
    | st.sampled_from(['a"b', "back\\slash", '\\"', "{[:,]}", "x\\", "\\\\"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(["jobid", "script", "comment", "a", "", 'q"uote', "sl/ash", "é"])
#: How an object is laid out: its opening, the separators between members and inside one,
#: its closing. Compact as Slurm prints, spaced, indented, and odd but valid.
LAYOUTS = st.sampled_from([
    ("{", ",", ":", "}"),
    ("{ ", ", ", ": ", " }"),
    ("{\n  ", ",\n  ", ": ", "\n}\n"),
    ("\t{\r\n", "\t,\t", " \t:\n", "\t}"),
])


def encoded(pairs: list[tuple[str, object]], layout: tuple[str, str, str, str]) -> bytes:
    """A JSON object with these members in this order (repeated keys kept), in a layout."""
    opening, between, colon, closing = layout
    members = between.join(
        json.dumps(key) + colon + json.dumps(value, ensure_ascii=False) for key, value in pairs
    )
    return (opening + members + closing if pairs else "{}").encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(KEYS, JSON_VALUES), max_size=8), LAYOUTS)
def test_members_are_the_objects_members_in_order(pairs, layout) -> None:
    body = encoded(pairs, layout)
    members = list(scanner.members(body, body.index(b"{")))
    assert [json.loads(key) for _, key, _, _ in members] == [key for key, _ in pairs]
    for (start, key, value, end), (_, expected) in zip(members, pairs, strict=True):
        assert body[start:].startswith(key)
        assert msgspec.json.decode(body[value:end]) == expected
    assert scanner.count_members(body, 1000) == len(pairs)


def old_drop_keys(body: bytes, names: set[str]) -> bytes:
    """The cut stated plainly, as the oracle on small inputs: each kept member's successor is
    looked up with list.index, a cost that grows with the square of the member count."""
    members = [(s, e, msgspec.json.decode(k))
               for s, k, _, e in scanner.members(body, body.index(b"{"))]
    kept = [m for m in members if m[2] not in names]
    out = [body[: members[0][0]]]
    for index, (start, end, _) in enumerate(kept):
        out.append(body[start:end])
        if index + 1 < len(kept):
            following = members.index(kept[index]) + 1
            out.append(body[end : members[following][0]])
    out.append(body[members[-1][1] :])
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(KEYS, JSON_VALUES), max_size=8), LAYOUTS,
       st.sampled_from([{"script"}, {"comment"}, {"script", "comment"}]))
def test_cutting_members_keeps_every_other_byte(pairs, layout, names) -> None:
    pairs = [("jobid", 1), *pairs]
    body = encoded(pairs, layout)
    cut = without_members(body, frozenset(names))
    assert cut == old_drop_keys(body, names)
    assert json.loads(cut) == dict(pair for pair in pairs if pair[0] not in names)


def test_a_key_written_with_an_escape_is_cut_too() -> None:
    body = b'{"jobid":1,"scr\\u0069pt":"echo","x":2}'
    assert without_members(body, frozenset({"script"})) == b'{"jobid":1,"x":2}'


def test_cut_off_input_has_no_end() -> None:
    assert scanner.value_end(b'{"a":[1,2', 0) is None
    assert scanner.string_end(b'"abc\\"', 0) is None
    assert list(scanner.documents(b'{"a":1} [2]\n{"b":')) == [(0, 7), (8, 11), (12, None)]
    assert list(scanner.members(b'{"a":1,"b":[1,', 0)) == [(1, b'"a"', 5, 6)]


def test_member_value_finds_a_member_cut_off_inside_its_value() -> None:
    data = b'{"errors":[],"jobs": "x", "jobs":[{"job_id":1},{"job_'
    assert scanner.member_value(data, 0, b'"jobs"', b"[") == data.index(b"[{")
    assert scanner.member_value(data, 0, b'"nope"') is None


def test_elements_end_at_a_stray_closing_bracket() -> None:
    """An array broken by a '}' where an element should start ends there: walking on would
    find the same nothing again for ever."""
    assert list(itertools.islice(scanner.elements(b"[}", 0), 5)) == [(1, 1)]
    assert list(scanner.elements(b"[1,,2]", 0)) == [(1, 2), (3, 3), (4, 5)]
    assert list(scanner.elements(b'[{"a":1} {"b":2}]', 0)) == [(1, 8), (9, 16)]


def test_the_scanner_reads_a_mapped_file(tmp_path) -> None:
    import mmap

    path = tmp_path / "dump.json"
    path.write_bytes(b'{"jobs": [{"job_id": 1}, {"job_id": 2}]}')
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        at = scanner.member_value(data, 0, b'"jobs"', b"[")
        assert at == 9
        assert list(scanner.elements(data, at)) == [(10, 23), (25, 38)]
        assert [key for _, key, _, _ in scanner.members(data, 0)] == [b'"jobs"']
