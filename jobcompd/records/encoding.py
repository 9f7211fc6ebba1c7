"""A :class:`~jobcompd.records.model.JobRecord` as the exact bytes json-c prints for Slurm's
serializer/json, so that consumers of Slurm's own jobcomp/kafka see the same message."""

from __future__ import annotations

import math

import msgspec
from msgspec import UnsetType

from jobcompd.records.errors import RecordError
from jobcompd.records.model import JobRecord

__all__ = ["encode"]


def encode(rec: JobRecord) -> bytes:
    """The exact message bytes json-c would print for ``rec``.

    msgspec already matches json-c for everything but two details, fixed here: json-c escapes
    ``/`` (a ``/`` can only occur inside strings in JSON text, so a plain replace is exact)
    and prints doubles with ``%.17g`` instead of the shortest round-trip form.
    Control characters match as is: ``\\b \\f \\n \\r \\t`` and lowercase ``\\u00xx``.
    """
    if not isinstance(rec.cpu_hours, UnsetType):
        raw = msgspec.Raw(_json_c_double(rec.cpu_hours))
        rec = msgspec.structs.replace(rec, cpu_hours=raw)
    return msgspec.json.encode(rec).replace(b"/", b"\\/")


def _json_c_double(x: float) -> bytes:
    """Print a double the way json-c does by default: %.17g, '.0' added to bare integers."""
    if not math.isfinite(x):
        raise RecordError(f"cpu_hours={x!r}: expected a finite number")
    text = format(x, ".17g")  # the same conversion as C's "%.17g"
    if "." not in text and "e" not in text:
        text += ".0"
    return text.encode("ascii")
