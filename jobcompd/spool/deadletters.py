"""Dead letters: entries of `new/` that cannot be sent, moved to `failed/` with a reason file
beside them (SPEC.md, "Dead letters"); listing them and moving them back for ``jobcompd
failed``.

`failed/<name>` is the entry itself, moved by rename (never its target); `failed/<name>.reason`
is a JSON object. The reason file is written first, so failed/ never holds an entry without
its reason; jobcompd never overwrites or deletes a dead letter.
"""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from jobcompd.spool.durable import fsync_dir, replace_file, unlink_quietly
from jobcompd.spool.errors import SpoolError
from jobcompd.spool.names import check_entry_name

REASON_SUFFIX = ".reason"
#: The reasons jobcompd dead-letters a record for, besides ``kafka:<ERROR>`` (the broker's
#: refusal): what the spool refuses, what records refuse, and ``timeout`` (dead_letter_after).
REASONS = ("malformed", "too_many_keys", "bad_name", "symlink", "not_regular", "hardlink",
           "owner", "too_large", "unreadable", "timeout")
_MAX_REASON_BYTES = 1 << 20


def _reason_info(name: str, reason: str, message: str,
                 detail: dict[str, object]) -> dict[str, object]:
    """What a reason file says about a dead letter."""
    return {"name": name, "reason": reason, "message": message,
            "time": datetime.now(UTC).isoformat(timespec="seconds"), **detail}


def _reason_body(info: dict[str, object]) -> bytes:
    """The reason file: readable UTF-8 JSON. A name that is not valid UTF-8 (os.fsdecode gives
    lone surrogates for its bytes) falls back to \\u escapes, which still round-trip to the
    name."""
    try:
        text = json.dumps(info, default=str, ensure_ascii=False, indent=1)
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        return json.dumps(info, default=str, ensure_ascii=True, indent=1).encode() + b"\n"


def dead_letter(new: Path, failed: Path, name: str, reason: str, message: str,
                detail: dict[str, object]) -> None:
    """Move new/`name` to failed/ and write failed/`name`.reason (JSON) beside it.

    rename() moves the entry itself, whatever it is (a symlink, never its target; a FIFO;
    a directory). If new/`name` is already gone, only the reason file is written.
    The reason file is written first: when that fails (a full disk), nothing has moved,
    the entry stays in new/ for a later attempt, and failed/ never holds a dead letter
    without its reason.
    Raises OSError (FileExistsError when failed/ already holds that name: jobcompd never
    overwrites a dead letter) for the caller to log; the entry then stays in new/.
    """
    check_entry_name(name)
    source, target = new / name, failed / name
    present = os.path.lexists(source)
    if present and os.path.lexists(target):
        raise FileExistsError(errno.EEXIST,
                              f"cannot dead-letter {source}: {target} already exists;"
                              " move one of them away", str(target))
    info = _reason_info(name, reason, message, detail)
    if not present:
        info["vanished"] = True
    reason_name = name + REASON_SUFFIX
    replace_file(failed, reason_name, _reason_body(info))
    if present:
        try:
            os.rename(source, target)
        except FileNotFoundError:
            info["vanished"] = True
            replace_file(failed, reason_name, _reason_body(info))
        except BaseException:
            unlink_quietly(failed / reason_name)
            raise
    fsync_dir(failed)


def entries(failed: Path) -> list[tuple[str, dict]]:
    """Dead letters in name order, each with its reason (a dict; {} if none was written).

    A reason file that cannot be read or parsed gives {"reason": "unknown", "message": ...}.
    """
    with os.scandir(failed) as it:
        names = {entry.name for entry in it if entry.name[0] != "."}
    letters = {n for n in names if not n.endswith(REASON_SUFFIX) or n + REASON_SUFFIX in names}
    # A reason file alone: its record vanished before it could be moved.
    orphans = {n[: -len(REASON_SUFFIX)] for n in names - letters
               if n[: -len(REASON_SUFFIX)] not in names}
    return [(n, _read_reason(failed, n) if n + REASON_SUFFIX in names else {})
            for n in sorted(letters | orphans)]


def _read_reason(failed: Path, name: str) -> dict:
    path = failed / (name + REASON_SUFFIX)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            raw = os.read(fd, _MAX_REASON_BYTES)
        finally:
            os.close(fd)
        info = json.loads(raw)
    except (OSError, ValueError) as e:
        return {"reason": "unknown", "message": f"cannot read {path}: {e}"}
    if not isinstance(info, dict):
        return {"reason": "unknown", "message": f"{path} does not hold a JSON object"}
    return info


def retry(new: Path, failed: Path, name: str) -> str:
    """Move dead letter failed/`name` back into new/ under the same name (so it keeps its
    place in time order) and drop its reason file. Returns the name."""
    check_entry_name(name)
    stem = name[: -len(REASON_SUFFIX)]
    if name.endswith(REASON_SUFFIX) and os.path.lexists(failed / stem):
        raise SpoolError(f"{name} is the reason file of {stem}; retry that one")
    source = failed / name
    if not os.path.lexists(source):
        if os.path.lexists(failed / (name + REASON_SUFFIX)):
            raise SpoolError(f"{name} vanished before it reached {failed}; only its "
                             f"reason file is left, remove {name}{REASON_SUFFIX}")
        raise SpoolError(f"no dead letter {name!r} in {failed}; "
                         "'jobcompd failed list' shows them")
    target = new / name
    if os.path.lexists(target):
        raise SpoolError(f"{target} already exists; not replacing a pending record")
    os.rename(source, target)
    fsync_dir(new)
    unlink_quietly(failed / (name + REASON_SUFFIX))
    return name


def count_dead_letters(failed: Path) -> int | None:
    """Records waiting in failed/ for an operator (their reason files not counted); None when
    failed/ cannot be listed."""
    try:
        with os.scandir(failed) as it:
            return sum(1 for e in it if not e.name.endswith(REASON_SUFFIX))
    except OSError:
        return None
