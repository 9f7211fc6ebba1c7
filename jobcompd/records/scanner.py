"""The byte-level JSON scanner: where values, strings and object members begin and end, found
without decoding them.

Records use it to count the members of a JSON object before anything is decoded, and to cut
members out of one byte for byte; backfill uses it to find the documents of a concatenated
dump and the jobs of a broken one. It matches quotes and brackets without validating what lies
between them, so it reads broken input as far as it goes: a value that the input stops inside
has no end (None). Every function makes one pass over the bytes it looks at, jumping from one
quote or bracket to the next with regular expressions, so hostile input costs time in
proportion to its size and no more.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator

__all__ = [
    "Buffer",
    "Member",
    "count_members",
    "documents",
    "elements",
    "member_value",
    "members",
    "skip_ws",
    "string_end",
    "value_end",
]

#: What the scanner reads: bytes, or a file mapped into memory (a dump larger than RAM).
Buffer = bytes | mmap.mmap

_WS = b" \t\r\n"
_NOT_WS = re.compile(rb"[^ \t\r\n]")
_SPECIAL = re.compile(rb'["{}\[\]]')
_SCALAR_END = re.compile(rb"[,}\] \t\r\n]")
_QUOTE, _BACKSLASH, _COLON, _COMMA, _CLOSE_ARRAY = 0x22, 0x5C, 0x3A, 0x2C, 0x5D
_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_SCALAR = rb'[^,}\] \t\r\n"{\[][^,}\] \t\r\n]*'
_SEPARATOR_TEXT = rb"[ \t\r\n]*(?:,[ \t\r\n]*)?"
#: What separates one member or element from the next: whitespace and one comma.
_SEPARATOR = re.compile(_SEPARATOR_TEXT)
#: A member whose value is a string or a scalar, and the separator after it, matched whole:
#: the common case, one match instead of a walk. A member it does not match (a container
#: value, broken input) is walked.
_FLAT_MEMBER = re.compile(
    rb"(" + _STRING + rb")[ \t\r\n]*:[ \t\r\n]*(" + _STRING + rb"|" + _SCALAR + rb")"
    + _SEPARATOR_TEXT,
    re.DOTALL,
)


#: One ``"key": value`` member of an object, by byte offsets: (start, key, value, end). start
#: is the key's opening quote, key the key as written (JSON string syntax, quotes and escapes
#: included), value the value's first byte, end just past the value. A plain tuple: members
#: come by the thousand and a tuple is the cheapest object to build.
Member = tuple[int, bytes, int, int]


def skip_ws(data: Buffer, pos: int) -> int:
    """The first position at or after ``pos`` that is not JSON whitespace."""
    if pos >= len(data) or data[pos] not in _WS:
        return pos
    found = _NOT_WS.search(data, pos)
    return found.start() if found else len(data)


def string_end(data: Buffer, pos: int) -> int | None:
    """Index just past the string opening at ``pos``; None when it never closes."""
    i = pos + 1
    while True:
        j = data.find(b'"', i)
        if j < 0:
            return None
        backslashes = 0
        while data[j - 1 - backslashes] == _BACKSLASH:
            backslashes += 1
        if backslashes % 2 == 0:
            return j + 1
        i = j + 1


def value_end(data: Buffer, pos: int) -> int | None:
    """Index just past the value starting at ``pos``, matching brackets without validating
    what is between them (so a broken job does not hide the next one); None when cut off.

    A scalar ends at the first comma, closing bracket or whitespace: where none starts (a
    stray ``}``), it ends where it began.
    """
    first = data[pos : pos + 1]
    if first == b'"':
        return string_end(data, pos)
    if first not in (b"{", b"["):
        found = _SCALAR_END.search(data, pos)
        return found.start() if found else len(data)
    depth = 0
    i = pos
    while True:
        found = _SPECIAL.search(data, i)
        if found is None:
            return None
        i = found.start()
        if data[i] == _QUOTE:
            end = string_end(data, i)
            if end is None:
                return None
            i = end
            continue
        depth += 1 if data[i : i + 1] in (b"{", b"[") else -1
        i += 1
        if depth == 0:
            return i


def documents(data: Buffer) -> Iterator[tuple[int, int | None]]:
    """(start, end) of each top-level JSON value; end None when the input stops inside one."""
    pos = skip_ws(data, 0)
    while pos < len(data):
        end = value_end(data, pos)
        yield pos, end
        if end is None:
            return
        pos = skip_ws(data, end)


def members(data: Buffer, start: int) -> Iterator[Member]:
    """The members of the object whose ``{`` is at ``start``, in order, up to its end or to
    the first one that is broken or cut off."""
    pos = skip_ws(data, start + 1)
    while pos < len(data) and data[pos] == _QUOTE:
        flat = _FLAT_MEMBER.match(data, pos)
        if flat is not None:
            yield pos, flat[1], flat.start(2), flat.end(2)
            pos = flat.end()
            continue
        head = _member_head(data, pos)
        if head is None:
            return
        end = value_end(data, head[1])
        if end is None:
            return
        yield pos, head[0], head[1], end
        pos = _after_item(data, end)


def member_value(data: Buffer, start: int, key: bytes, opening: bytes = b"") -> int | None:
    """Where the value of the first member named ``key`` (as written, quotes included) whose
    value opens with ``opening`` begins, in the object at ``start``, even when the input stops
    inside that value; None when the object has no such member before it ends or breaks."""
    pos = skip_ws(data, start + 1)
    while pos < len(data) and data[pos] == _QUOTE:
        head = _member_head(data, pos)
        if head is None:
            return None
        if head[0] == key and data[head[1] : head[1] + len(opening)] == opening:
            return head[1]
        end = value_end(data, head[1])
        if end is None:
            return None
        pos = _after_item(data, end)
    return None


def count_members(data: Buffer, limit: int) -> int:
    """How many members the top-level object of ``data`` has, counted up to ``limit``; 0 when
    ``data`` does not start with an object. Members inside values are not counted."""
    start = skip_ws(data, 0)
    if data[start : start + 1] != b"{":
        return 0
    count = 0
    for _ in members(data, start):
        count += 1
        if count >= limit:
            break
    return count


def elements(data: Buffer, start: int) -> Iterator[tuple[int, int | None]]:
    """(start, end) of each element of the array whose ``[`` is at ``start``; end None when
    the input stops inside the element, which is the last one then. Missing commas are
    tolerated; a stray closing bracket where an element should start ends the array."""
    pos = skip_ws(data, start + 1)
    while pos < len(data) and data[pos] != _CLOSE_ARRAY:
        end = value_end(data, pos)
        yield pos, end
        if end is None:
            return
        after = skip_ws(data, end)
        if after < len(data) and data[after] == _COMMA:
            after = skip_ws(data, after + 1)
        elif end == pos:
            return
        pos = after


def _member_head(data: Buffer, pos: int) -> tuple[bytes, int] | None:
    """(key as written, start of the value) of the member whose key opens at ``pos``."""
    key_end = string_end(data, pos)
    if key_end is None:
        return None
    colon = skip_ws(data, key_end)
    if colon >= len(data) or data[colon] != _COLON:
        return None
    return data[pos:key_end], skip_ws(data, colon + 1)


def _after_item(data: Buffer, end: int) -> int:
    """Where the next member or element starts: past whitespace and one comma."""
    found = _SEPARATOR.match(data, end)
    return found.end() if found else end
