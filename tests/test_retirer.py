"""The retirer: acknowledged files unlinked off the main loop, and kept from a rescan's eyes
until they are gone, even while the process is short of file descriptors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from jobcompd.spool import Spool
from jobcompd.spool.retirer import Retirer
from tests.broker import wait_for


class _ShortSpool(Spool):
    """A spool whose first ``failures`` unlink rounds fail as a process out of descriptors."""

    def __init__(self, root: Path, failures: int, errnum: int = errno.EMFILE) -> None:
        super().__init__(root, max_record_bytes=1024, allowed_uids=None)
        self.ensure_dirs()
        self.failures = failures
        self.errnum = errnum
        self.rounds = 0

    def retire_all(self, names: list[str]) -> list[tuple[str, Exception]]:
        self.rounds += 1
        if self.rounds <= self.failures:
            return [(n, OSError(self.errnum, os.strerror(self.errnum))) for n in names]
        return super().retire_all(names)


def _records(sp: Spool, count: int) -> list[str]:
    names = [f"{1_000_000_000_000_000_000 + i}.{i + 1}.end.env" for i in range(count)]
    for name in names:
        (sp.new / name).write_bytes(b"JOBID=1\0")
    return names


def test_files_that_cannot_be_unlinked_for_want_of_descriptors_stay_pending(tmp_path):
    """Released while still in new/, they would be taken for new records and sent again."""
    sp = _ShortSpool(tmp_path / "spool", failures=3)
    names = _records(sp, 5)
    retirer = Retirer(sp)
    retirer.start()
    try:
        for name in names:
            retirer.retire(name)
        retirer.collect()
        wait_for(lambda: sp.rounds >= 2, 20, what="a failed round")
        retirer.collect()
        assert retirer.pending == set(names)
        wait_for(lambda: (retirer.collect(), not retirer.pending)[1], 30,
                 what="the names released once removed")
        assert os.listdir(sp.new) == []
    finally:
        retirer.stop()


def test_other_errors_release_the_names_and_stop_leaves_what_it_cannot_remove(tmp_path):
    sp = _ShortSpool(tmp_path / "spool", failures=100, errnum=errno.EIO)
    names = _records(sp, 2)
    retirer = Retirer(sp)
    retirer.start()
    for name in names:
        retirer.retire(name)
    retirer.stop()
    assert not retirer.pending and sp.rounds == 1  # logged, not retried
    short = _ShortSpool(tmp_path / "other", failures=100)
    names = _records(short, 2)
    retirer = Retirer(short)
    retirer.start()
    for name in names:
        retirer.retire(name)
    retirer.stop()  # gives up at stop: the files are sent again at the next start
    assert not retirer.pending and sorted(os.listdir(short.new)) == names
