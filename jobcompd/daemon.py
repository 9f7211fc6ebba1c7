"""The daemon: wires spool → record → delivery → acknowledgement and owns the lifecycle.

One thread does all the work (the main loop); watchdog's thread and the signal handlers only record
what happened and wake it through a pipe (gunicorn's arbiter does the same). The loop:

1. acts on signals (SIGHUP reload, SIGTERM/SIGINT stop);
2. takes new names from inotify, rescans ``new/`` when due;
3. fills the window: reads, parses and produces records, oldest first, while fewer than
   ``max_inflight`` are unacknowledged (back-pressure: the spool holds the rest on disk);
4. serves librdkafka's callbacks and acts on the recorded delivery reports: unlink on success,
   retry or dead-letter on failure;
5. watches the producer's health: a fatal error, or no delivery report for ``stall_timeout``
   while the broker answers, replaces the producer and re-sends everything unacknowledged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import os
import select
import signal
import time
from collections import deque
from pathlib import Path

import structlog
from confluent_kafka import KafkaError, KafkaException

from jobcompd import config as configmod
from jobcompd import log as logmod
from jobcompd import metrics as metricsmod
from jobcompd import notify, record, spool, state
from jobcompd import status as statusmod
from jobcompd.config import Config, ConfigError
from jobcompd.delivery import (
    PERMANENT,
    PRODUCER,
    Message,
    Producer,
    Report,
    classify,
    is_purge,
    is_timeout,
)
from jobcompd.httpintake import HttpIntake, HttpIntakeError
from jobcompd.spool.retirer import Retirer
from jobcompd.spool.unreadable import UnreadableRecords
from jobcompd.spool.watch import PendingQueue, SpoolWatcher, scan_into
from jobcompd.throttle import LogThrottle, broker_of

log = structlog.get_logger("jobcompd")

EX_OK = 0
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_CONFIG = 78

#: How many names the intake keeps in memory at most; more files wait on disk for a rescan.
QUEUE_LIMIT = 100_000
#: Records read, then produced, per loop pass: small enough that librdkafka sends one batch
#: while the next is read, and that delivery reports keep being served during a burst.
FILL_BATCH = 256
#: How long one poll waits while messages are on the wire. A poll returns at once for a
#: delivery report, but a new record in the spool only wakes the select() of an idle loop,
#: so while records keep arriving the wait is short: it is what a new record may wait
#: before it is read (bench/latency.py), and a quiet outage need not spin at that rate.
BUSY_POLL_S = 0.005
ARRIVING_POLL_S = 0.001
#: Records count as arriving for this long after inotify last told of one.
ARRIVING_S = 1.0
#: First retry delay after a timed-out delivery; doubles up to retry_backoff_max.
RETRY_BACKOFF_MIN_S = 1.0
#: A file older than this in tmp/ was left by a killed hook (Maildir's rule: 36 hours).
TMP_MAX_AGE_S = 36 * 3600
#: How often the gauges, STATUS= and the status file are brought up to date.
TICK_S = 2.0
#: How often the node_exporter textfile and the dead-letter count are refreshed.
SLOW_TICK_S = 10.0
#: librdkafka statistics interval when metrics are on and JobCompLoc sets none.
STATS_INTERVAL_MS = 30_000
#: Timeout of the metadata request that tells a stalled producer from an unreachable broker.
PROBE_TIMEOUT_S = 3.0

#: Config attributes a reload does not change: the spool the hooks write into, and the lock,
#: state and status files, move only with a restart.
RESTART_KEYS = ("spool_dir", "state_dir")

#: A record read and not yet parsed: its file's name, what the name says, and its bytes.
_Item = tuple[str, spool.SpoolName, bytes]
#: What parsing gives per record: the record, or why it is not one.
_Parsed = record.Record | str


class Daemon:
    """The long-running service. ``run()`` returns the process exit code."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.spool = spool.Spool(
            config.spool_dir,
            max_record_bytes=config.params.max_record_bytes,
            # The daemon's own files (HTTP intake, `failed retry` as this user) are always fine.
            allowed_uids=config.spool_owners | {os.geteuid()},
        )
        self.lock = state.InstanceLock(config.state_dir)
        self.queue = PendingQueue(QUEUE_LIMIT)
        #: every unacknowledged record, by spool name: produced, waiting to be, or backing off.
        self.window: dict[str, Message] = {}
        #: ready to produce (first ones first): re-sends after a rebuild, BufferError leftovers.
        self.ready: deque[Message] = deque()
        #: (retry_at, seq, message): timed-out records waiting for their backoff.
        self.retries: list[tuple[float, int, Message]] = []
        self._retry_seq = 0
        self.producer: Producer | None = None
        self.http: HttpIntake | None = None
        self.counters: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        self._maybe_delivered: set[str] = set()
        self._suspects_left = 0  # after a crash: how many first sends may be duplicates
        self._stopping = False
        self._reload_requested = False
        self._rescan_requested = True
        self._next_rescan = 0.0
        self._arrived_at = -ARRIVING_S
        self._progress_at = time.monotonic()
        self._next_probe = 0.0
        self._rebuild_reason: str | None = None
        self._broker_up: bool | None = None
        self._broker_down_at = 0.0
        #: repeats of one Kafka error reach the log once a minute, with their count.
        self.log_throttle = LogThrottle()
        self._last_error: str | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watcher = SpoolWatcher(self.spool.new, self.wake)
        self.retirer = Retirer(self.spool)
        self.unreadable = UnreadableRecords(os.fspath(self.spool.new))
        self.metrics = metricsmod.Metrics()
        self.watchdog = notify.WatchdogTimer.from_env()
        self._started_at = time.time()
        self._phase = "starting"
        self._next_tick = 0.0
        self._next_slow_tick = 0.0
        self._status_text = ""
        self._last_error_at: float | None = None
        self._dead_letters: int | None = None
        #: keys a reload changed but could not apply, with their configured values.
        self.restart_needed: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.lock.acquire()
        except state.LockError as e:
            log.error("already_running", error=str(e))
            return EX_TEMPFAIL
        except OSError as e:
            log.error("state_dir_unusable", path=str(self.config.state_dir),
                      error=f"{e.strerror}: {e.filename or self.config.state_dir}",
                      detail="StateSaveLocation must exist and be writable by jobcompd's user "
                      "(the unit's StateDirectory= makes /var/lib/jobcompd); jobcompd check "
                      "names the fix")
            return EX_CANTCREAT
        try:
            self.spool.refuse_segments()
        except spool.SpoolError as e:
            log.error("start_failed", error=str(e))
            self.lock.release()
            return EX_CONFIG
        try:
            self._start()
        except (OSError, spool.SpoolError, KafkaException, HttpIntakeError) as e:
            log.error("start_failed", error=str(e))
            if self.http is not None:
                self.http.stop()
            self.lock.release()
            if isinstance(e, HttpIntakeError):
                return EX_UNAVAILABLE
            return EX_CONFIG if isinstance(e, KafkaException) else EX_CANTCREAT
        try:
            self._loop()
        finally:
            self._shutdown()
            self.lock.release()
        return EX_OK

    def _start(self) -> None:
        cfg = self.config
        for warning in cfg.warnings:
            log.warning("config_warning", detail=warning)
        for warning in self.spool.ensure_dirs():
            log.warning("spool_warning", detail=warning)
        for name in self.spool.clean_tmp(older_than_s=TMP_MAX_AGE_S):
            log.warning("stale_tmp_removed", file=name,
                        detail="left in tmp/ by a hook that was killed before its rename")
        self._load_state()
        self._save_state(clean=False)
        self._start_http(cfg)
        self.producer = Producer(producer_config(cfg), stats=self.metrics.librdkafka_stats,
                                 throttle=self.log_throttle)
        self._serve_metrics(cfg)
        self._install_signals()
        self.retirer.start()
        self.watcher.start()  # before the scan: a file arriving during the scan is not missed
        self._rescan(time.monotonic())
        log.info(
            "started",
            pid=os.getpid(),
            spool=str(cfg.spool_dir),
            backlog=len(self.queue),
            topic=cfg.params.topic,
            kafka=cfg.redacted_kafka(),
        )
        self._phase = "running"
        self._tick(time.monotonic(), force=True)
        notify.ready(self._status_text)

    def _start_http(self, cfg: Config) -> None:
        """The jobcomp/elasticsearch intake (HttpListen), writing into the spool."""
        if cfg.http_listen is None:
            return
        self.http = HttpIntake(self.spool, cfg.http_listen,
                               max_body=cfg.params.max_record_bytes, cluster=cfg.cluster_name)
        self.http.start()
        host, port = self.http.address
        log.info("http_listening", address=f"{host}:{port}")

    def _serve_metrics(self, cfg: Config) -> None:
        """(Re)start the metrics endpoint when MetricsListen is set; a failure is logged."""
        if cfg.metrics_listen is None:
            self.metrics.stop_serving()
            return
        try:
            host, port = self.metrics.serve(*cfg.metrics_listen)
        except metricsmod.MetricsError as e:
            self._note_error(str(e))
            log.error("metrics_unavailable", error=str(e))
            return
        log.info("metrics_listening", address=f"{host}:{port}")

    def _load_state(self) -> None:
        try:
            saved = state.load(self.config.state_dir)
        except state.StateError as e:
            moved = state.move_aside(self.config.state_dir)
            log.error(
                "state_file_unusable",
                error=str(e),
                moved_to=str(moved),
                detail="continuing from the spool; nothing is lost, re-sends are not annotated",
            )
            return
        if saved is None:
            return
        self.counters = dict(saved.counters)
        self._attempts = dict(saved.attempts)
        self._maybe_delivered = set(saved.in_flight)
        if not saved.clean:
            self._suspects_left = self.config.params.max_inflight
            log.warning(
                "unclean_stop",
                detail="the last run did not stop cleanly; its in-flight records are re-sent "
                "with the redelivery header",
                suspects=self._suspects_left,
            )

    def _save_state(self, *, clean: bool, pending: list[str] | None = None,
                    in_flight: list[str] | None = None) -> None:
        st = state.State(
            clean=clean,
            pending=pending or [],
            in_flight=in_flight or [],
            attempts={n: m.attempts for n, m in self.window.items() if m.attempts > 0},
            counters=dict(self.counters),
        )
        try:
            state.save(self.config.state_dir, st)
        except OSError as e:
            log.error("state_save_failed", path=str(self.config.state_dir), error=str(e))

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, _frame: object) -> None:
        self._reload_requested = True

    def wake(self) -> None:
        """Interrupt the main loop's wait; callable from any thread."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"w")

    @property
    def _trace(self) -> bool:
        """DebugFlags=JobComp: log every record's journey. Checked before building the event,
        since even a filtered structlog call costs more than the rest of a record's work."""
        return self.config.debug_jobcomp

    # -- the main loop --------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            self.retirer.collect()
            self._take_watch_events()
            if self._rescan_requested or now >= self._next_rescan or (
                self.queue.truncated and not self.queue
            ):
                self._rescan(now)
            self._produce_due(now)
            self._fill_window()
            assert self.producer is not None
            busy = self.producer.outstanding() > 0
            self._handle_reports(self.producer.poll(self._busy_poll_s(now) if busy else 0))
            now = time.monotonic()
            self._check_producer(now)
            self.watchdog.maybe_ping(now)
            if now >= self._next_tick:
                self._tick(now)
            if not busy and not self._has_work():
                self._wait(self._idle_timeout(time.monotonic()))
            else:
                self._drain_wake_pipe()

    def _busy_poll_s(self, now: float) -> float:
        return ARRIVING_POLL_S if now - self._arrived_at < ARRIVING_S else BUSY_POLL_S

    def _has_work(self) -> bool:
        room = len(self.window) < self.config.params.max_inflight
        return bool(self.ready) or self._stopping or (room and bool(self.queue))

    def _idle_timeout(self, now: float) -> float:
        timeout = min(float(self.config.params.poll_interval_s or 1), self._next_rescan - now)
        if self.retries:
            timeout = min(timeout, self.retries[0][0] - now)
        timeout = min(timeout, self._next_tick - now, self.watchdog.time_left(now))
        return max(0.0, timeout)

    def _wait(self, timeout: float) -> None:
        with contextlib.suppress(InterruptedError):
            select.select([self._wake_r], [], [], timeout)
        self._drain_wake_pipe()

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    # -- intake ---------------------------------------------------------------------------

    def _take_watch_events(self) -> None:
        names, overflowed = self.watcher.take()
        if overflowed:
            log.warning("inotify_overflow", detail="rescanning the spool")
            self._rescan_requested = True
        if names:
            self._arrived_at = time.monotonic()
        for name in names:
            if not self._on_its_way(name):
                self.queue.add(name)

    def _on_its_way(self, name: str) -> bool:
        """Whether a spool name is in the window or acknowledged and being unlinked: such a
        name seen again (a rescan, a late inotify event) must not be sent twice."""
        return name in self.window or name in self.retirer.pending

    def _rescan(self, now: float) -> None:
        self._rescan_requested = False
        self._next_rescan = now + self.config.params.rescan_interval_s
        try:
            # Acknowledged files still waiting for their unlink are not new ones.
            queued = scan_into(self.queue, self.spool.scan,
                               self.window.keys() | self.retirer.pending)
        except OSError as e:
            log.error("spool_scan_failed", path=str(self.spool.new), error=str(e))
            return
        log.debug("rescanned", queued=queued, in_flight=len(self.window),
                  truncated=self.queue.truncated)

    def _fill_window(self) -> None:
        """Read a batch of records, parse it, then produce it in one go.

        Producing back to back, rather than between file reads, lets librdkafka batch them
        and wake its broker thread once per batch instead of once per record.
        """
        room = min(self.config.params.max_inflight - len(self.window), FILL_BATCH)
        items: list[_Item] = []
        while len(items) < room and not self.ready and self.queue:
            item = self._read(self.queue.pop())
            if item is not None:
                items.append(item)
        if items:
            self._admit(items, self._parse(items))

    def _parse(self, items: list[_Item]) -> list[_Parsed]:
        """Each record's message, or the reason it is not one, with the configuration in force."""
        cfg = self.config
        out: list[_Parsed] = []
        for _, meta, data in items:
            try:
                out.append(record.parse_record(
                    data, meta.fmt, cluster=cfg.cluster_name, event_hint=meta.event,
                    send_script=cfg.params.send_script, send_comment=cfg.params.send_comment))
            except record.RecordError as e:
                out.append(str(e))
        return out

    def _admit(self, items: list[_Item], results: list[_Parsed]) -> None:
        """Put parsed records into the window and produce them, in order."""
        batch: list[Message] = []
        for (name, meta, _), parsed in zip(items, results, strict=True):
            msg = self._message(name, meta, parsed)
            if msg is not None:
                self.window[msg.name] = msg
                self._count("ingested")
                self.metrics.ingested()
                batch.append(msg)
        if self.ready:
            self.ready.extend(batch)
            return
        for i, msg in enumerate(batch):
            if not self._send(msg):  # it went back to the front of `ready`; the rest follow
                self.ready.extend(batch[i + 1:])
                return

    def _read(self, name: str) -> _Item | None:
        """Read one spool file; dead-letter what cannot be a record."""
        if self._on_its_way(name):
            return None  # never produced twice
        try:
            meta = spool.parse_name(name)
        except spool.RejectedFile as e:
            # A bad name is refused before the file is opened: a second event for a name
            # already dead-lettered (created, then closed) must not dead-letter it twice.
            if os.path.lexists(self.spool.new / name):
                self._dead_letter(name, e.reason, str(e), job_id=None)
            return None
        try:
            data = self.spool.read(name)
        except FileNotFoundError:
            return None  # retired meanwhile (a late inotify event, or removed by hand)
        except spool.Unreadable as e:
            if self.unreadable.notice(name, meta.job_id, e.fix, time.monotonic()):
                log.warning("record_unreadable", job_id=meta.job_id, job_event=meta.event,
                            file=name, error=str(e), fix=e.fix)
            return None
        except spool.RejectedFile as e:
            self._dead_letter(name, e.reason, str(e), job_id=meta.job_id)
            return None
        except OSError as e:
            # Out of file descriptors or memory: the process's trouble, not the file's. It stays
            # in new/ and the next rescan brings it back.
            log.error("spool_read_failed", job_id=meta.job_id, file=name, error=str(e))
            self._rescan_requested = True
            return None
        if self.unreadable:
            self.unreadable.forget(name)
        return name, meta, data

    def _message(self, name: str, meta: spool.SpoolName, parsed: _Parsed) -> Message | None:
        """The Message of a parsed record; dead-letter what did not parse, retire what needs
        no sending."""
        cfg = self.config
        if isinstance(parsed, str):
            self._dead_letter(name, "malformed", f"{self.spool.new / name}: {parsed}",
                              meta.job_id)
            return None
        rec = parsed
        trace = self._trace
        if rec.event == record.EVENT_START and not cfg.params.enable_job_start:
            if trace:
                log.debug("start_record_skipped", job_id=rec.job_id, job_event=rec.event, file=name,
                          detail="enable_job_start is off")
            self.retirer.retire(name)
            return None
        msg = Message(
            name=name,
            job_id=rec.job_id,
            event=rec.event,
            key=f"{cfg.cluster_name}:{rec.job_id}".encode(),
            value=rec.value,
            record_id=rec.record_id,
            arrived_ns=meta.ns,
            attempts=self._attempts.pop(name, 0),
        )
        if name in self._maybe_delivered:
            self._maybe_delivered.discard(name)
            msg.redelivery = True
        elif self._suspects_left > 0:
            msg.redelivery = True
        if self._suspects_left > 0:
            self._suspects_left -= 1
        if trace:
            log.debug("ingested", job_id=msg.job_id, job_event=msg.event, file=name)
        return msg

    # -- producing ------------------------------------------------------------------------

    def _topic_for(self, event: str) -> str:
        p = self.config.params
        return p.topic_job_start if event == record.EVENT_START else p.topic

    def _send(self, msg: Message) -> bool:
        """Produce one message; False when librdkafka's queue is full (try again later)."""
        assert self.producer is not None
        msg.topic = self._topic_for(msg.event)
        if self.producer.outstanding() == 0:
            self._progress_at = time.monotonic()
        try:
            self.producer.produce(msg)
        except BufferError:
            self.ready.appendleft(msg)
            return False
        except KafkaException as e:
            err: KafkaError = e.args[0]
            kind = classify(err)
            if kind == PRODUCER:
                self.ready.appendleft(msg)
                self._rebuild_reason = f"producer error: {err.str()}"
                return False
            if kind == PERMANENT:
                self._dead_letter_msg(msg, f"kafka:{err.name()}", err.str())
            else:
                self._retry_later(msg, err)
            return True
        msg.attempts += 1
        if self._trace:
            log.debug("produced", job_id=msg.job_id, job_event=msg.event, file=msg.name,
                      topic=msg.topic, attempt=msg.attempts)
        return True

    def _produce_due(self, now: float) -> None:
        while self.retries and self.retries[0][0] <= now:
            _, _, msg = heapq.heappop(self.retries)
            if msg.name in self.window:
                msg.retry_at = 0.0
                self.ready.append(msg)
        while self.ready:
            msg = self.ready.popleft()
            if msg.name not in self.window:
                continue
            if not self._send(msg):
                return

    # -- delivery reports -----------------------------------------------------------------

    def _handle_reports(self, reports: list[Report]) -> None:
        if not reports:
            return
        assert self.producer is not None
        gen = self.producer.generation
        probe: bool | None = None
        for rep in reports:
            msg = rep.message
            if rep.generation != gen or msg.generation != rep.generation:
                continue  # from a producer that was replaced: its message was sent again
            if self.window.get(msg.name) is not msg:
                continue
            self._progress_at = time.monotonic()
            err = rep.error
            if err is None:
                self._delivered(msg, rep)
            elif is_timeout(err):
                if probe is None:
                    probe = self.producer.probe(PROBE_TIMEOUT_S)
                    self._set_broker_up(probe)
                self._timed_out(msg, err, broker_answers=probe)
            elif is_purge(err):
                msg.generation = -1  # only during shutdown: stays in the spool
            else:
                self._failed(msg, err)

    def _delivered(self, msg: Message, rep: Report) -> None:
        del self.window[msg.name]
        self.retirer.retire(msg.name)
        if self._broker_up is not True:
            self._set_broker_up(True)
        self._count("delivered")
        self.metrics.delivered(msg.arrived_ns)
        if self._trace:
            log.debug("delivered", job_id=msg.job_id, job_event=msg.event, file=msg.name,
                      topic=msg.topic, partition=rep.partition, offset=rep.offset,
                      attempts=msg.attempts)

    def _timed_out(self, msg: Message, err: KafkaError, *, broker_answers: bool) -> None:
        msg.generation = -1
        msg.redelivery = True  # the broker may have written it and lost only the ack
        if broker_answers:
            # The broker answers but this message timed out: the producer is wedged (for example
            # an idempotent producer whose broker forgot its state). A new one delivers.
            self.ready.append(msg)
            self._rebuild_reason = "messages time out while the broker answers"
            return
        if not self.config.params.requeue_on_msg_timeout:
            self._dead_letter_msg(msg, "timeout", err.str())
            return
        self._retry_later(msg, err)

    def _failed(self, msg: Message, err: KafkaError) -> None:
        """A delivery failed with something other than a timeout."""
        self._note_error(err.str())
        msg.generation = -1
        kind = classify(err)
        if kind == PRODUCER:
            msg.redelivery = True
            self.ready.append(msg)
            self._rebuild_reason = f"producer error: {err.str()}"
        elif kind == PERMANENT:
            self._dead_letter_msg(msg, f"kafka:{err.name()}", err.str())
        else:
            msg.redelivery = True
            self._retry_later(msg, err)

    def _retry_later(self, msg: Message, err: KafkaError) -> None:
        """Send again after a backoff that doubles with each attempt."""
        delay = min(
            self.config.params.retry_backoff_max_s,
            RETRY_BACKOFF_MIN_S * 2 ** min(msg.attempts - 1, 16),
        )
        msg.retry_at = time.monotonic() + delay
        self._retry_seq += 1
        heapq.heappush(self.retries, (msg.retry_at, self._retry_seq, msg))
        self._count("retried")
        self.metrics.retried()
        if self._trace:
            log.debug("delivery_retry", job_id=msg.job_id, job_event=msg.event, file=msg.name,
                      error=err.str(), retry_in=round(delay, 1), attempts=msg.attempts)
        held = self.log_throttle.admit(("delivery_retry", err.name()))
        if held is not None:
            log.warning("deliveries_retrying", error=err.str(), code=err.name(),
                        retry_in=round(delay, 1), **({"repeated": held} if held else {}),
                        detail="the records stay in new/ and are sent again; "
                        "DebugFlags=JobComp logs each one")

    def _dead_letter_msg(self, msg: Message, reason: str, message: str) -> None:
        self.window.pop(msg.name, None)
        self._dead_letter(msg.name, reason, message, msg.job_id, attempts=msg.attempts,
                          job_event=msg.event)

    def _dead_letter(self, name: str, reason: str, message: str, job_id: int | None,
                     attempts: int = 0, job_event: str | None = None) -> None:
        try:
            self.spool.dead_letter(name, reason, message, attempts=attempts, job_id=job_id)
        except (OSError, ValueError) as e:
            log.error("dead_letter_failed", job_id=job_id, file=name, reason=reason,
                      error=str(e),
                      detail="the file stays in new/ and is retried at the next rescan")
            return
        self._report_dead_letter(name, reason, message, job_id=job_id, job_event=job_event)

    def _report_dead_letter(self, where: str, reason: str, message: str,
                            **fields: object) -> None:
        """Count, log and remember a dead letter, whatever it came from."""
        self._count(f"dead_lettered:{reason}")
        self.metrics.dead_lettered(reason)
        self._note_error(message)
        log.error("dead_lettered", file=where, reason=reason, error=message,
                  failed_dir=str(self.spool.failed), **fields)

    # -- producer health ------------------------------------------------------------------

    def _check_producer(self, now: float) -> None:
        assert self.producer is not None
        health = self.producer.health
        if health.errors:
            for err in health.errors:
                self._note_error(err.str())
                self._log_kafka_error(err)
                if err.code() == KafkaError._ALL_BROKERS_DOWN:
                    self._set_broker_up(False)
            health.errors.clear()
        if health.fatal is not None and self._rebuild_reason is None:
            self._rebuild_reason = f"fatal producer error: {health.fatal.str()}"
        if self._rebuild_reason is None and self._stalled(now):
            up = self.producer.probe(PROBE_TIMEOUT_S)
            self._set_broker_up(up)
            if up:
                self._rebuild_reason = (
                    f"no delivery report for {self.config.params.stall_timeout_s:g} s while "
                    "the broker answers"
                )
            else:
                self._next_probe = time.monotonic() + self.config.params.stall_timeout_s
        if self._rebuild_reason is not None:
            reason, self._rebuild_reason = self._rebuild_reason, None
            self._rebuild(reason)

    def _log_kafka_error(self, err: KafkaError) -> None:
        """One line per distinct error (code and broker) per minute, fatal ones always."""
        held = 0
        if not err.fatal():
            held = self.log_throttle.admit(("kafka_error", err.name(), broker_of(err.str())))
            if held is None:
                return
        fields = {"repeated": held} if held else {}
        log.warning("kafka_error", error=err.str(), code=err.name(), fatal=err.fatal(), **fields)

    def _set_broker_up(self, up: bool) -> None:
        """Whether a broker answers; the changes are logged, not every report."""
        was, self._broker_up = self._broker_up, up
        if up == was:
            return
        now = time.monotonic()
        if not up:
            self._broker_down_at = now
            log.warning("broker_unreachable", error=self._last_error,
                        detail="records stay in the spool and are sent once a broker answers")
            return
        held = self.log_throttle.reset()
        if was is False:
            log.info("broker_reachable", down_s=round(now - self._broker_down_at, 1),
                     repeats_not_logged=held)

    def _stalled(self, now: float) -> bool:
        stall = self.config.params.stall_timeout_s
        return (
            now >= self._next_probe
            and now - self._progress_at >= stall
            and any(m.generation >= 0 for m in self.window.values())
        )

    def _rebuild(self, reason: str, conf: dict[str, str] | None = None, *,
                 intended: bool = False) -> bool:
        """Replace the producer and queue every unacknowledged record to be sent again.

        ``intended``: asked for by the operator (a reload with new librdkafka properties), so
        logged at info and not counted with the rebuilds that mean trouble (the churn alert).
        """
        assert self.producer is not None
        old_gen = self.producer.generation
        try:
            reports = self.producer.rebuild(conf)
        except KafkaException as e:
            log.error("producer_rebuild_failed", reason=reason, error=str(e))
            return False
        if not intended:
            self._count("producer_rebuilds")
            self.metrics.rebuilt()
        self.metrics.forget_librdkafka_stats()
        unsent = self._settle(reports, old_gen)
        resend = [m for m in self.window.values() if m.generation == old_gen]
        for msg in resend:
            msg.generation = -1
            if msg.name not in unsent:
                msg.redelivery = True  # it was on the wire: it may have arrived
        self.ready.extendleft(reversed(resend))
        self._progress_at = time.monotonic()
        self._next_probe = 0.0
        (log.info if intended else log.warning)(
            "producer_rebuilt", reason=reason, resent=len(resend),
            generation=self.producer.generation)
        return True

    def _settle(self, reports: list[Report], generation: int) -> set[str]:
        """Act on what a purged producer reported: a delivery still counts. Returns the names
        purged from librdkafka's queue before they were ever sent (so not possibly delivered)."""
        unsent: set[str] = set()
        for rep in reports:
            msg = rep.message
            if rep.generation != generation or self.window.get(msg.name) is not msg:
                continue
            if rep.error is None:
                self._delivered(msg, rep)
            elif rep.error.code() == KafkaError._PURGE_QUEUE:
                unsent.add(msg.name)
        return unsent

    # -- reload ---------------------------------------------------------------------------

    def _reload(self) -> None:
        notify.reloading()
        self._phase = "reloading"
        try:
            self._apply_reload()
        finally:
            self._phase = "running"
            self._tick(time.monotonic(), force=True)
            notify.ready(self._status_text)

    def _apply_reload(self) -> None:
        old = self.config
        try:
            new = configmod.load(old.path)
        except ConfigError as e:
            self._note_error(str(e))
            self.metrics.reloaded(False)
            log.error("reload_failed", error=str(e), detail="the running configuration is kept")
            return
        new, pending = _keep_restart_keys(new, old)
        if new.kafka_changed(old) and not self._rebuild(
            "librdkafka properties changed", producer_config(new), intended=True
        ):
            self.metrics.reloaded(False)
            log.error("reload_failed", error="the new librdkafka properties were refused",
                      detail="the running configuration is kept")
            return
        self.config = new
        if pending != self.restart_needed:
            if pending:
                log.warning("reload_needs_restart", configured=pending,
                            running={k: str(getattr(old, k)) for k in pending},
                            detail="kept in force until jobcompd restarts "
                            "(systemctl restart jobcompd)")
            self.restart_needed = pending
        logmod.configure(debug=new.debug_jobcomp, log_format=new.log_format,
                         target=new.log_target)
        if new.metrics_listen != old.metrics_listen:
            self._serve_metrics(new)
        if new.http_listen != old.http_listen:
            if self.http is not None:
                self.http.stop()
                self.http = None
            try:
                self._start_http(new)
            except HttpIntakeError as e:
                self.http = None
                self._note_error(str(e))
                log.error("http_unavailable", error=str(e))
        elif self.http is not None:
            self.http.max_body = new.params.max_record_bytes
        for warning in new.warnings:
            log.warning("config_warning", detail=warning)
        self._count("reloads")
        self.metrics.reloaded(True)
        log.info("reloaded", topic=new.params.topic, topic_job_start=new.params.topic_job_start,
                 kafka=new.redacted_kafka())

    # -- shutdown -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop intake, purge what was never sent, flush, save the state file."""
        self._phase = "stopping"
        notify.stopping(self.config.params.flush_timeout_ms)
        if self.http is not None:
            self.http.stop()  # what it accepted is in the spool; Slurm retries the rest
        self.watcher.stop()
        if self.producer is None:
            return
        gen = self.producer.generation
        flush_ms = self.config.params.flush_timeout_ms
        reports = self.producer.shutdown(flush_ms)
        purged_queue = self._settle(reports, gen)
        pending, in_flight = [], []
        for name, msg in self.window.items():
            if msg.generation == gen and name not in purged_queue:
                in_flight.append(name)
            else:
                pending.append(name)
        self.producer.abandon()
        self.retirer.stop()
        self._save_state(clean=True, pending=sorted(pending), in_flight=sorted(in_flight))
        self._phase = "stopped"
        self._tick(time.monotonic(), force=True)
        self.metrics.close()
        log.info("stopped", pending=len(pending), in_flight=len(in_flight),
                 delivered=self.counters.get("delivered", 0))

    # -- status: STATUS=, the status file, the gauges ---------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _note_error(self, message: str) -> None:
        self._last_error = message
        self._last_error_at = time.time()

    def _oldest_pending_ns(self) -> int | None:
        """Spool time stamp of the oldest record not yet acknowledged (window or queue)."""
        oldest = min((m.arrived_ns for m in self.window.values()), default=None)
        head = self.queue.peek()
        if head is not None:
            with contextlib.suppress(ValueError):
                ns = int(head.split(".", 1)[0])
                oldest = ns if oldest is None else min(oldest, ns)
        return oldest

    def _count_dead_letters(self) -> int | None:
        """Records waiting in failed/ for an operator (their .reason files not counted)."""
        try:
            with os.scandir(self.spool.failed) as it:
                return sum(1 for e in it if not e.name.endswith(spool.REASON_SUFFIX))
        except OSError:
            return None

    def _remind_unreadable(self, now: float) -> None:
        """Once an hour while records in new/ cannot be opened: how many, and the fix."""
        reminder = self.unreadable.reminder(now)
        if reminder is not None:
            log.warning("records_unreadable", count=reminder.count,
                        oldest_s=round(reminder.oldest_s), files=reminder.files,
                        fix="; ".join(reminder.fixes),
                        detail="they stay in new/ and are sent once jobcompd can read them")

    def _tick(self, now: float, force: bool = False) -> None:
        """Bring STATUS=, the status file and the gauges up to date (every TICK_S)."""
        self._next_tick = now + TICK_S
        slow = force or now >= self._next_slow_tick
        if slow:
            self._next_slow_tick = now + SLOW_TICK_S
            self._dead_letters = self._count_dead_letters()
            self._remind_unreadable(now)
        backlog, truncated = len(self.queue), self.queue.truncated
        in_flight = len(self.window)
        oldest = self._oldest_pending_ns()
        dead = sum(v for k, v in self.counters.items() if k.startswith("dead_lettered"))
        text = notify.format_status(
            backlog=backlog, in_flight=in_flight, delivered=self.counters.get("delivered", 0),
            failed=dead, broker_up=self._broker_up, last_error=self._last_error,
            backlog_truncated=truncated,
        )
        if text != self._status_text:
            self._status_text = text
            notify.status(text)
        self.metrics.set_state(backlog=backlog, in_flight=in_flight, oldest_pending_ns=oldest,
                               broker_up=self._broker_up, backlog_truncated=truncated,
                               dead_letters=self._dead_letters, unreadable=len(self.unreadable),
                               restart_needed=bool(self.restart_needed))
        doc = statusmod.build_status(
            state=self._phase, started_at=self._started_at, backlog=backlog,
            in_flight=in_flight, oldest_pending_ns=oldest, broker_up=self._broker_up,
            counters=self.counters, config=statusmod.config_summary(self.config),
            last_error=self._last_error, last_error_at=self._last_error_at,
            backlog_truncated=truncated, dead_letters=self._dead_letters, interval_s=TICK_S,
            unreadable=len(self.unreadable), restart_needed=self.restart_needed,
        )
        try:
            statusmod.write_status(self.config.state_dir, doc)
        except OSError as e:
            log.warning("status_file_unwritable", path=str(self.config.state_dir), error=str(e))
        if slow and self.config.metrics_textfile is not None:
            try:
                self.metrics.write_textfile(self.config.metrics_textfile)
            except metricsmod.MetricsError as e:
                log.warning("metrics_textfile_unwritable", error=str(e))


def _keep_restart_keys(new: Config, running: Config) -> tuple[Config, dict[str, str]]:
    """The reloaded configuration with the settings that only a restart can move (the spool
    the hooks write, the lock and state file) kept as they run, and the configured values
    that wait for that restart."""
    pending = {k: str(getattr(new, k)) for k in RESTART_KEYS
               if getattr(new, k) != getattr(running, k)}
    kept = dataclasses.replace(new, **{k: getattr(running, k) for k in pending})
    return kept, pending


def producer_config(cfg: Config) -> dict[str, str]:
    """The Config's producer properties, plus librdkafka statistics every
    STATS_INTERVAL_MS when metrics are exported and the operator chose no interval."""
    conf = cfg.producer_config()
    metrics_on = cfg.metrics_listen is not None or cfg.metrics_textfile is not None
    if metrics_on and "statistics.interval.ms" not in conf:
        conf["statistics.interval.ms"] = str(STATS_INTERVAL_MS)
    return conf


def run(config_path: Path) -> int:
    """``jobcompd run``: load the configuration, set up logging, run until stopped."""
    try:
        cfg = configmod.load(config_path)
    except ConfigError as e:
        logmod.configure()
        log.error("config_invalid", error=str(e))
        return EX_CONFIG
    logmod.configure(debug=cfg.debug_jobcomp, log_format=cfg.log_format, target=cfg.log_target)
    return Daemon(cfg).run()
