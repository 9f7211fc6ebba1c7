"""The errors a record raises when jobcompd cannot send it, and the bounded renderings of
input that their messages quote (a message quoting a megabyte of input helps nobody)."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "NoRecord",
    "RecordError",
    "TooManyKeys",
    "UnknownName",
    "show_bytes",
    "show_json",
    "show_text",
]


class RecordError(ValueError):
    """The input is not a record jobcompd can send; the message says what and where."""

    #: The dead-letter reason code of the record (docs/design.md, "Dead letters").
    reason = "malformed"


class TooManyKeys(RecordError):
    """The record holds more members than a record may (records.parse.MAX_RECORD_MEMBERS).

    Raised before anything is decoded, so an oversized record costs one pass over its bytes;
    the daemon dead-letters it under its own reason code.
    """

    reason = "too_many_keys"


class NoRecord(RecordError):
    """The job is fine but its state gives no record of the event asked for (pending,
    still running, never started)."""


class UnknownName(RecordError):
    """A user or group sacct names (or leaves unnamed) does not resolve to an id here."""


def show_text(value: str, limit: int = 60) -> str:
    """A bounded, printable rendering of a value."""
    if len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


def show_bytes(raw: bytes, limit: int = 60) -> str:
    """A bounded, printable rendering of raw bytes."""
    return show_text(raw[: limit + 1].decode("utf-8", "replace"), limit)


def show_json(value: Any, limit: int = 60) -> str:
    """A decoded JSON value shown as JSON text, bounded."""
    try:
        text = msgspec.json.encode(value).decode("utf-8", "replace")
    except (TypeError, ValueError, OverflowError):
        return f"(a JSON {type(value).__name__})"
    return text[:limit] + ("…" if len(text) > limit else "")
