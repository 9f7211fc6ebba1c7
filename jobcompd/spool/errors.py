"""What goes wrong in the spool, as exceptions (SPEC.md, "What the daemon takes from new/")."""

from __future__ import annotations


class SpoolError(Exception):
    """A spool operation failed; the message says what and what to do."""


class RejectedFile(SpoolError):
    """A file in `new/` that can never be a record: the caller moves it to `failed/`.

    `reason` is a short code for the reason file and the metrics: bad_name, symlink,
    not_regular, hardlink, owner, too_large, unreadable.
    """

    def __init__(self, name: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.reason = reason


class Unreadable(SpoolError):
    """A record the daemon may not open because of its owner or mode: not bad data. It stays
    in new/ and is taken once someone runs ``fix`` (a chown or chmod command)."""

    def __init__(self, name: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.name = name
        self.fix = fix
