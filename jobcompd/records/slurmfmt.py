"""Slurm's own value formats, as its jobcomp plugins print them: the "not set" and
"unlimited" sentinels, times, exit codes, cpu_hours and TRES strings.

Pure functions shared by every source (environment dumps and job objects), so that each
source turns Slurm's values into the message's values the same way.
"""

from __future__ import annotations

import functools
import struct
import time

from msgspec import UNSET, UnsetType

from jobcompd.records.errors import RecordError

__all__ = [
    "INFINITE",
    "INFINITE64",
    "INT64_MAX",
    "NO_CONSUME_VAL64",
    "NO_VAL",
    "NO_VAL64",
    "UINT32_MAX",
    "convert_mega",
    "cpu_hours",
    "elapsed",
    "finish_start",
    "format_time",
    "named_tres_value",
    "queue_wait",
    "raw_tres_from_named",
    "to_float32",
    "wait_status_pair",
]

NO_VAL = 0xFFFFFFFE  # Slurm's "not set" for 32-bit values
INFINITE = 0xFFFFFFFF  # Slurm's "unlimited" for 32-bit values
NO_VAL64 = 2**64 - 2
INFINITE64 = 2**64 - 1
NO_CONSUME_VAL64 = 2**64 - 3
UINT32_MAX = 0xFFFFFFFF
INT64_MAX = 2**63 - 1

# ------------------------------------------------------------------------------------------
# Times


def format_time(epoch: int, name: str) -> str | UnsetType:
    """UTC 'YYYY-MM-DDTHH:MM:SS', or unset for 0/NO_VAL/INFINITE (Slurm omits those).

    ``name`` is the source's name of the value, for the error an unrepresentable time raises.
    """
    if epoch in (0, NO_VAL, INFINITE):
        return UNSET
    day, second = divmod(epoch, 86400)
    try:
        date = _date_of(day)
    except (OverflowError, OSError, ValueError):
        raise RecordError(f"{name}={epoch}: not a representable epoch time") from None
    minute, second = divmod(second, 60)
    return date + _HOUR_MINUTE[minute] + _SECOND[second]


#: 'HH:MM:' of each minute of a day and 'SS' of each second: joining them costs much less than
#: formatting three numbers, and a record has four times.
_HOUR_MINUTE = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(24 * 60))
_SECOND = tuple(f"{s:02d}" for s in range(60))


@functools.lru_cache(maxsize=64)
def _date_of(day: int) -> str:
    """'YYYY-MM-DDT' of a day since the epoch. The jobs of a batch end on a few days, so
    formatting each day once spares strftime and gmtime on every time of every record."""
    return time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))


def finish_start(start: int, end: int, name: str) -> str | UnsetType:
    """@start of an end record: omitted when the job never started (0, or start > end)."""
    if end and start > end:
        return UNSET
    return format_time(start, name)


def elapsed(start: int, end: int) -> int:
    """Run time in seconds; 0 unless both times are set and start < end."""
    return end - start if start and end and start < end else 0


def queue_wait(start: int, eligible: int) -> int | UnsetType:
    """Seconds from eligible to start; unset unless both are set and the wait is >= 0."""
    if start and eligible and start >= eligible:
        return start - eligible
    return UNSET


# ------------------------------------------------------------------------------------------
# Exit codes and CPU hours


def wait_status_pair(status: int) -> str:
    """Slurm's 'exit:signal' for a raw wait(2) status (NO_VAL, stopped or odd gives '0:0')."""
    exit_code = signal = 0
    if status != NO_VAL:
        low = status & 0x7F
        if low == 0:  # WIFEXITED
            exit_code = (status >> 8) & 0xFF
        elif low != 0x7F:  # WIFSIGNALED
            signal = low
    return f"{exit_code}:{signal}"


def cpu_hours(elapsed: int, total_cpus: int) -> float:
    """Slurm's ``(elapsed * total_cpus) / 3600.0f``: the product and the quotient are floats.

    Computing in double and rounding to single after each step gives the correctly rounded
    single-precision result (double has more than 2*24+2 bits).
    """
    product = to_float32(float(elapsed * total_cpus))
    return to_float32(product / 3600.0)


def to_float32(x: float) -> float:
    """Round to single precision (inputs stay below 2**127, so this never overflows)."""
    return struct.unpack("f", struct.pack("f", x))[0]


# ------------------------------------------------------------------------------------------
# TRES strings

#: Slurm's fixed TRES ids (src/common/slurmdb_defs.h TRES_*); GRES, licenses and burst
#: buffers get ids the site's database assigns.
_FIXED_TRES_IDS = {"cpu": 1, "mem": 2, "energy": 3, "node": 4, "billing": 5, "fs/disk": 6,
                   "vmem": 7, "pages": 8}  # fmt: skip
_ENERGY_ID = 3
_UNIT_POWER = {"M": 0, "G": 1, "T": 2, "P": 3, "E": 4}


def raw_tres_from_named(named: str | None, *, energy_unset: bool) -> str | None:
    """The ``*_raw`` string ("1=8,2=16000") Slurm makes beside a named one, where it can be
    told: every TRES must have a fixed id (GRES, licenses and burst buffers have ids the
    site's database assigns), and memory must convert back to whole MB.

    ``energy_unset``: a batch job's end record carries energy as NO_VAL64 when no energy
    plugin measured it, an entry Slurm keeps in the raw string and drops from the named one
    (assoc_mgr_make_tres_str_from_array), so it is put back in its place (id 3).
    """
    if named is None:
        return None
    pairs: list[tuple[int, int]] = []
    for item in named.split(","):
        name, _, value = item.partition("=")
        tres_id = _FIXED_TRES_IDS.get(name)
        count = _named_count(value, mega=name == "mem")
        if tres_id is None or count is None:
            return None
        pairs.append((tres_id, count))
    if energy_unset and all(tres_id != _ENERGY_ID for tres_id, _ in pairs):
        at = sum(1 for tres_id, _ in pairs if tres_id < _ENERGY_ID)
        pairs.insert(at, (_ENERGY_ID, NO_VAL64))
    return ",".join(f"{tres_id}={count}" for tres_id, count in pairs)


def _named_count(value: str, *, mega: bool) -> int | None:
    """A count of a named TRES string; memory in MB from Slurm's exact unit form
    ("16000M", "16G", "1.50G"). None when it is not one of those."""
    if value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    if not mega or value[-1:] not in _UNIT_POWER:
        return None
    number, power = value[:-1], _UNIT_POWER[value[-1]]
    whole, _, fraction = number.partition(".")
    if not (whole.isascii() and whole.isdigit() and len(whole) <= 19):
        return None
    if fraction not in ("", "00", "50"):  # convert_num_unit's exact forms: N, N.00, N.50
        return None
    return (int(whole) * 2 + (fraction == "50")) * 1024**power // 2


def named_tres_value(kind: str, count: int) -> str:
    """One count of a named TRES string: memory and burst buffers (in MB) in a larger unit
    when exact, NO_CONSUME_VAL64 as 0, anything else as it is."""
    if count == NO_CONSUME_VAL64:
        return "0"
    return convert_mega(count) if kind.lower() in ("mem", "bb") else str(count)


def convert_mega(count: int) -> str:
    """Slurm's convert_num_unit(count, UNIT_MEGA, NO_VAL, CONVERT_NUM_UNIT_EXACT).

    Divide by 1024 while the value is at least 1024 and a multiple of 512 (so halves such as
    1.5G still count as exact), then print an integer, or two decimals for a half.
    """
    units = "KMGTP"
    num = float(count)
    unit = 1  # "M" in units
    while num >= 1024 and int(num) % 512 == 0:
        num /= 1024
        unit += 1
    suffix = units[unit] if unit < len(units) else "?"
    if float(int(num)) == num:
        return f"{int(num)}{suffix}"
    return f"{num:.2f}{suffix}"
