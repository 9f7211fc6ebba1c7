"""Parsing records in a worker process while a backlog drains.

Turning a record's bytes into its message (record.parse_record) is most of what the main loop
does per record, and it holds the GIL: a drain is bound by one core while the other is idle
(bench/: the machine 43% idle during a drain of segments). A worker process parses big
batches of frames instead, so that reading, producing and parsing overlap on two cores. Small
batches (steady operation, a handful of records per loop round) are parsed in the main loop as
before: a round trip to the worker would only add latency.

The daemon talks to the worker over two pipes that its main loop reads and writes without
blocking (``pump``), as it does everything else: no thread in between. (With
concurrent.futures' ProcessPoolExecutor, its two helper threads in the daemon cost 0.74 s of
CPU per 100,000 records, and their GIL hand-offs with the main loop left the machine 13%
idle during a drain of segments, 5% without them: bench/.)

The worker is started at the first big batch, is a child of the daemon (it dies with it:
PR_SET_PDEATHSIG) and ignores the signals meant for the daemon. If it cannot be started or
dies, the daemon logs it once and parses in the main loop from then on: nothing depends on it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import multiprocessing
import os
import pickle
import select
import signal
import struct
import time
from collections import deque
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import structlog

from jobcompd import record

log = structlog.get_logger("jobcompd.parsepool")

#: A batch of frames at least this big goes to the worker (a drain reads 256 per round). A
#: backlog of files does not: its unlinks need the second core (daemon._worth_a_worker).
OFFLOAD_MIN = 64
#: Batches handed to the worker and not yet back: enough that it is never idle while the main
#: loop produces (bench/: 3 left it idle a third of the time), few enough to bound memory
#: (12 x 256 records of at most max_record_bytes).
MAX_BATCHES = 12
#: Batches waiting in all (the worker's, and the ones the main loop parsed itself while the
#: worker was busy, queued behind them to keep the order): bounds the daemon's memory. Room
#: for as many as the worker's: with 2, the main loop sat waiting for the worker a fifth of
#: a drain of segments (bench/: 8,700 records/s; 9,100 with room for 12).
MAX_QUEUED = MAX_BATCHES + 12
#: Pipe size asked for (Linux caps it at /proc/sys/fs/pipe-max-size for other than root): a
#: few batches fit, so the main loop rarely keeps bytes back for the next round.
PIPE_BYTES = 1 << 20

#: What parse_batch returns per record: the message, or the error message of a bad record.
Parsed = record.Record | str
#: One record to parse: its bytes, its format (env/json) and the event its name gives.
Item = tuple[bytes, str, str]

_PR_SET_PDEATHSIG = 1
#: Each message on a pipe: its length (unsigned 64-bit, network order), then a pickle.
_HEADER = struct.Struct("!Q")
_READ_BYTES = 1 << 20


class WorkerGone(Exception):
    """The worker died, could not be started, or broke the protocol."""


def parse_batch(items: list[Item], cluster: str, send_script: bool,
                send_comment: bool) -> list[Parsed]:
    """Parse records (in the worker, or in the main loop when there is none)."""
    out: list[Parsed] = []
    for data, fmt, hint in items:
        try:
            out.append(record.parse_record(data, fmt, cluster=cluster, event_hint=hint,
                                           send_script=send_script,
                                           send_comment=send_comment))
        except record.RecordError as e:
            out.append(str(e))
    return out


# -- the worker's side ---------------------------------------------------------------------


def _init_worker(daemon_pid: int) -> None:
    """In the worker: die with the daemon, and leave its signals to it.

    PR_SET_PDEATHSIG only covers a death after it is set: a daemon killed while the worker
    was still starting (spawn imports Python anew) would leave it waiting forever on its
    pipe. So it looks whether its parent is still the daemon.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != daemon_pid:
        os._exit(0)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def _read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from a blocking fd; None at EOF (the daemon closed its end)."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, _READ_BYTES))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _serve(tasks: Connection, results: Connection, daemon_pid: int) -> None:
    """The worker: parse each batch that arrives, send back its results, in order."""
    _init_worker(daemon_pid)
    with contextlib.suppress(OSError):
        fcntl.fcntl(results.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    task_fd, result_fd = tasks.fileno(), results.fileno()
    while (header := _read_exactly(task_fd, _HEADER.size)) is not None:
        body = _read_exactly(task_fd, _HEADER.unpack(header)[0])
        if body is None:
            return
        out = pickle.dumps(parse_batch(*pickle.loads(body)), protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_HEADER.pack(len(out)) + out)
        try:
            while view:
                view = view[os.write(result_fd, view):]
        except BrokenPipeError:  # the daemon stopped, or gave up on the worker
            return


# -- the daemon's side ---------------------------------------------------------------------


class Batch:
    """A batch handed to the worker; ``done()`` once its results are back (or it is lost)."""

    __slots__ = ("_error", "_pool", "_results")

    def __init__(self, pool: ParsePool) -> None:
        self._pool = pool
        self._results: list[Parsed] | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        if self._results is None and self._error is None:
            self._pool.pump()
        return self._results is not None or self._error is not None

    def result(self, timeout: float | None = None) -> list[Parsed]:
        """The parsed records; raises WorkerGone when the worker died before sending them.
        Waits up to ``timeout`` seconds (for ever with None) when they are not back yet."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("the parsing worker did not answer in time")
            self._pool.wait(left)
        if self._error is not None:
            raise self._error
        assert self._results is not None
        return self._results


class ParsePool:
    """One worker process for parsing, started on first use; ``usable`` turns False for good
    once it fails."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.usable = enabled
        self._proc: BaseProcess | None = None
        self._task_fd = -1
        self._result_fd = -1
        self._out = bytearray()  # what is still to be written to the worker
        self._in = bytearray()  # what the worker sent that makes no whole message yet
        self._waiting: deque[Batch] = deque()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self, items: list[Item], cluster: str, send_script: bool,
               send_comment: bool) -> Batch | None:
        """Hand a batch to the worker; None if there is no worker (parse it in the caller)."""
        if not self.usable:
            return None
        try:
            if self._proc is None:
                self._start()
            body = pickle.dumps((items, cluster, send_script, send_comment),
                                protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # whatever it is, parsing goes on without it
            self.failed(e)
            return None
        self._out += _HEADER.pack(len(body))
        self._out += body
        batch = Batch(self)
        self._waiting.append(batch)
        self.pump()
        return batch

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        task_r, task_w = ctx.Pipe(duplex=False)
        result_r, result_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_serve, args=(task_r, result_w, os.getpid()),
                           name="jobcompd-parser", daemon=True)
        try:
            proc.start()
        finally:
            task_r.close()
            result_w.close()
        self._proc = proc
        self._task_fd = os.dup(task_w.fileno())
        self._result_fd = os.dup(result_r.fileno())
        task_w.close()
        result_r.close()
        for fd in (self._task_fd, self._result_fd):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._task_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)

    def pump(self) -> None:
        """Move bytes both ways as far as the pipes take them without blocking."""
        if self._proc is None:
            return
        try:
            self._send()
            self._receive()
        except WorkerGone as e:
            self.failed(e)

    def _send(self) -> None:
        while self._out:
            try:
                sent = os.write(self._task_fd, self._out)
            except BlockingIOError:
                return
            except OSError as e:  # EPIPE: the worker is gone
                raise WorkerGone(f"writing to the parsing worker: {e}") from None
            del self._out[:sent]

    def _receive(self) -> None:
        while True:
            try:
                chunk = os.read(self._result_fd, _READ_BYTES)
            except BlockingIOError:
                break
            if not chunk:
                raise WorkerGone(f"the parsing worker (pid {self.pid}) ended")
            self._in += chunk
        while len(self._in) >= _HEADER.size:
            size = _HEADER.unpack_from(self._in)[0]
            end = _HEADER.size + size
            if len(self._in) < end:
                return
            if not self._waiting:
                raise WorkerGone("the parsing worker sent results nobody asked for")
            results = pickle.loads(memoryview(self._in)[_HEADER.size:end])
            del self._in[:end]
            self._waiting.popleft()._results = results

    def wait(self, timeout: float | None) -> None:
        """Wait until the worker sent something or can take more (for a caller with nothing
        else to do)."""
        read, write = self.wait_fds()
        if read or write:
            select.select(read, write, [], timeout)

    def wait_fds(self) -> tuple[list[int], list[int]]:
        """The fds to watch for the worker's progress: its results, and room for what is
        still to be sent."""
        if self._proc is None or not self._waiting:
            return [], []
        return [self._result_fd], [self._task_fd] if self._out else []

    def failed(self, error: BaseException) -> None:
        """The worker could not be started or died: parse in the main loop from now on."""
        if self.usable:
            log.error("parse_worker_failed", error=f"{type(error).__name__}: {error}",
                      detail="records are parsed in the main loop from now on; nothing is lost")
        self.usable = False
        self._fail_waiting(error if isinstance(error, WorkerGone) else WorkerGone(str(error)))
        self.shutdown(wait=False)

    def _fail_waiting(self, error: WorkerGone) -> None:
        for batch in self._waiting:
            batch._error = error
        self._waiting.clear()

    def shutdown(self, wait: bool = True) -> None:
        """End the worker (letting it finish the batch it is parsing, with ``wait``); the
        batches it had are failed (their records are still in the spool)."""
        self._fail_waiting(WorkerGone("the parsing worker was stopped"))
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Results first: the worker ends at its next answer (EPIPE) or, idle, at EOF.
        for fd in (self._result_fd, self._task_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._task_fd = self._result_fd = -1
        self._out.clear()
        self._in.clear()
        proc.join(5 if wait else 0)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
