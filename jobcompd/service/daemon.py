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

import os
import time
from os import EX_CANTCREAT, EX_CONFIG, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE
from pathlib import Path

import structlog
from confluent_kafka import KafkaException

from jobcompd import config as configmod
from jobcompd import log as logmod
from jobcompd import spool
from jobcompd.config import Config, ConfigError
from jobcompd.service import checkpoint, notify, reload, standby, statefile
from jobcompd.service import metrics as metricsmod
from jobcompd.service.delivery import Delivery, producer_config
from jobcompd.service.httpintake import HttpIntakeError
from jobcompd.service.intake import DeadLetters, Intake
from jobcompd.service.listeners import Listeners
from jobcompd.service.producer import Producer
from jobcompd.service.spoollock import SpoolLock, SpoolLockLost
from jobcompd.service.statusfile import Role
from jobcompd.service.supervisor import Supervisor
from jobcompd.service.telemetry import TICK_S, Snapshot, Telemetry
from jobcompd.service.wakeup import Wakeup
from jobcompd.service.window import Window
from jobcompd.spool.layout import refuse_segments
from jobcompd.spool.retirer import Retirer
from jobcompd.spool.space import UsageMeter

log = structlog.get_logger("jobcompd")

#: Records read, then produced, per loop pass: small enough that librdkafka sends one batch
#: while the next is read, and that delivery reports keep being served during a burst.
FILL_BATCH = 256
#: How long one poll waits while messages are on the wire. A poll returns at once for a
#: delivery report, but a new record in the spool only wakes the select() of an idle loop,
#: so while records keep arriving the wait is short: it is what a new record may wait
#: before it is read (bench/latency.py), and a quiet outage need not spin at that rate.
BUSY_POLL_S = 0.005
ARRIVING_POLL_S = 0.001
#: A file older than this in tmp/ was left by a killed hook (Maildir's rule: 36 hours).
TMP_MAX_AGE_S = 36 * 3600
#: How often the node_exporter textfile and the dead-letter count are refreshed.
SLOW_TICK_S = 10.0


class Daemon:
    """The long-running service. ``run()`` returns the process exit code."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.spool = spool.Spool(
            config.spool_dir,
            max_record_bytes=config.params.max_record_bytes,
            allowed_uids=reload.spool_owners(config),
        )
        self.lock = statefile.InstanceLock(config.state_dir)
        self.spool_lock = SpoolLock(config.spool_dir)
        #: this daemon's hold on the spool: None until it holds the lock, then how long it
        #: waited for it and who held it before (Standby=yes).
        self.role: Role | None = None
        self._took_over_from: str | None = None
        self._lock_lost = False
        self._exit_code = EX_OK
        #: every unacknowledged record: queued, sent, backing off.
        self.window = Window()
        #: the producing side, made at start (its producer needs the configuration checked)
        self.delivery: Delivery | None = None
        self.wakeup = Wakeup()
        self.retirer = Retirer(self.spool)
        self.spool_usage = UsageMeter(self.spool.new, interval_s=SLOW_TICK_S)
        self.metrics = metricsmod.Metrics()
        self.telemetry = Telemetry(self.metrics)
        self.dead_letters = DeadLetters(self.spool, self.telemetry)
        self.intake = Intake(self.spool, config, window=self.window, retirer=self.retirer,
                             dead_letters=self.dead_letters, wake=self.wakeup.wake)
        self.supervisor = Supervisor(self.telemetry.note_error)
        self.listeners = Listeners(self.spool, self.metrics, self.telemetry)
        self.reloader = reload.Reloader(self.spool, self.intake, self.listeners, self.telemetry)
        self.watchdog = notify.WatchdogTimer.from_env()
        self._phase = "starting"
        self._next_tick = 0.0
        self._next_slow_tick = 0.0
        self._dead_letters: int | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.lock.acquire()
        except statefile.LockError as e:
            log.error("already_running", error=str(e))
            return EX_TEMPFAIL
        except OSError as e:
            log.error("state_dir_unusable", path=str(self.config.state_dir),
                      error=f"{e.strerror}: {e.filename or self.config.state_dir}",
                      detail="StateSaveLocation must exist and be writable by jobcompd's user "
                      "(the unit's StateDirectory= makes /var/lib/jobcompd); jobcompd check "
                      "names the fix")
            return EX_CANTCREAT
        code = self._hold_spool()
        if code is None:
            code = self._run_holding()
        self.listeners.stop_http()
        self.spool_lock.release()
        self.lock.release()
        return code

    def _run_holding(self) -> int:
        """Start and run while this daemon holds the spool lock; the exit code."""
        try:
            refuse_segments(self.spool.root)
        except spool.SpoolError as e:
            log.error("start_failed", error=str(e))
            return EX_CONFIG
        try:
            self._start()
        except (OSError, spool.SpoolError, KafkaException, HttpIntakeError) as e:
            log.error("start_failed", error=str(e))
            if isinstance(e, HttpIntakeError):
                return EX_UNAVAILABLE
            return EX_CONFIG if isinstance(e, KafkaException) else EX_CANTCREAT
        try:
            self._loop()
        finally:
            self._shutdown()
        return self._exit_code

    def _hold_spool(self) -> int | None:
        """Take the spool lock, or wait for it as the standby: None once it is this daemon's,
        else the exit code."""
        held = standby.hold_spool(self.config, self.spool_lock, standby.Hooks(
            stopping=lambda: self.wakeup.stop_requested, pause=self.wakeup.wait,
            ping=self.watchdog.maybe_ping, publish=self._publish_standby,
            begin=self._begin_standby))
        if isinstance(held, int):
            if held == EX_OK and self._phase == "standby":
                self._phase = "stopped"
                self._publish_standby(self.role)
                self.metrics.close()
                log.info("stopped", standby=True)
            return held
        self.role, self._took_over_from = held.role, held.previous
        self.intake.idle_rescan_s = held.rescan_s
        self._phase = "starting"
        return None

    def _begin_standby(self, role: Role) -> None:
        """Stand by as a running service: signals, metrics, READY=1 with STATUS=standby."""
        self._phase = "standby"
        self.wakeup.install_signals()
        self.listeners.serve_metrics(self.config)
        self._publish_standby(role)
        notify.ready(self.telemetry.status_text)

    def _publish_standby(self, role: Role | None) -> None:
        self.role = role
        self.telemetry.publish(Snapshot(
            phase=self._phase, backlog=0, backlog_truncated=False, in_flight=0,
            oldest_pending_ns=None, broker_up=None, dead_letters=None, unreadable=0,
            restart_needed=self.reloader.restart_needed, config=self.config, role=role))

    def _start(self) -> None:
        cfg = self.config
        for warning in cfg.warnings:
            log.warning("config_warning", detail=warning)
        prepare_spool(self.spool, cfg)
        self._restore_state()
        self._save_state(clean=False)
        self.listeners.start_http(cfg)
        producer = Producer(producer_config(cfg), stats=self.metrics.librdkafka_stats,
                            throttle=self.supervisor.throttle)
        self.delivery = Delivery(cfg, producer, window=self.window, supervisor=self.supervisor,
                                 telemetry=self.telemetry, metrics=self.metrics,
                                 retirer=self.retirer, dead_letters=self.dead_letters)
        self.listeners.serve_metrics(cfg)
        self.wakeup.install_signals()
        self.retirer.start()
        # Before the scan: a file arriving during the scan is not missed.
        self.intake.watcher.start()
        self.intake.rescan(time.monotonic())
        log.info(
            "started",
            pid=os.getpid(),
            spool=str(cfg.spool_dir),
            backlog=len(self.intake.queue),
            topic=cfg.params.topic,
            kafka=cfg.redacted_kafka(),
        )
        if self._took_over_from is not None:
            self._log_takeover()
        self._phase = "running"
        # new/'s size takes a stat per record (seconds for a million): the next tick sums it.
        self._tick(time.monotonic(), force=True, measure_usage=False)
        notify.ready(self.telemetry.status_text)

    def _log_takeover(self) -> None:
        assert self.role is not None
        log.warning("took_over", previous=self._took_over_from,
                    waited_s=round(self.role.waited_s, 1), backlog=len(self.intake.queue),
                    backlog_truncated=self.intake.queue.truncated,
                    detail="this daemon now drains the shared spool")

    def _restore_state(self) -> None:
        restored = checkpoint.restore(self.config)
        if restored is not None:
            self.telemetry.counters, self.intake.carryover = restored

    def _save_state(self, *, clean: bool, pending: list[str] | None = None,
                    in_flight: list[str] | None = None) -> None:
        checkpoint.save(self.config, clean=clean, attempts=self.window.attempts(),
                        counters=self.telemetry.counters, pending=pending, in_flight=in_flight)

    # -- the main loop --------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.wakeup.stop_requested:
            now = time.monotonic()
            if self.wakeup.take_reload():
                self._reload()
            self.retirer.collect()
            self.intake.take_events()
            if self.intake.rescan_due(now):
                self.intake.rescan(now)
            delivery = self.delivery
            assert delivery is not None
            delivery.produce_queued(now)
            self._fill_window()
            busy = delivery.producer.outstanding() > 0
            delivery.handle_reports(delivery.producer.poll(self._busy_poll_s(now) if busy else 0))
            now = time.monotonic()
            delivery.check_producer(now)
            self.watchdog.maybe_ping(now)
            if now >= self._next_tick:
                self._tick(now)
            if not busy and not self._has_work():
                self.wakeup.wait(self._idle_timeout(time.monotonic()))
            else:
                self.wakeup.drain()

    def _busy_poll_s(self, now: float) -> float:
        return ARRIVING_POLL_S if self.intake.arriving(now) else BUSY_POLL_S

    def _has_work(self) -> bool:
        room = len(self.window) < self.config.params.max_inflight
        return (self.window.has_queued() or self.wakeup.stop_requested
                or (room and bool(self.intake.queue)))

    def _idle_timeout(self, now: float) -> float:
        timeout = min(float(self.config.params.poll_interval_s or 1),
                      self.intake.next_rescan - now)
        retry_at = self.window.next_retry_at()
        if retry_at is not None:
            timeout = min(timeout, retry_at - now)
        timeout = min(timeout, self._next_tick - now, self.watchdog.time_left(now))
        return max(0.0, timeout)

    # -- intake ---------------------------------------------------------------------------

    def _fill_window(self) -> None:
        """Read a batch of records into the window, then produce it in one go.

        Producing back to back, rather than between file reads, lets librdkafka batch them
        and wake its broker thread once per batch instead of once per record.
        """
        if self.window.has_queued():
            return
        room = min(self.config.params.max_inflight - len(self.window), FILL_BATCH)
        batch = self.intake.read_batch(room) if room > 0 else []
        for msg in batch:
            self.window.admit(msg)
            self.telemetry.ingested()
        if batch:
            assert self.delivery is not None
            self.delivery.produce_queued()

    # -- reload ---------------------------------------------------------------------------

    def _reload(self) -> None:
        notify.reloading()
        self._phase = "reloading"
        try:
            assert self.delivery is not None
            self.config = self.reloader.apply(self.config, self.delivery)
        finally:
            self._phase = "running"
            self._tick(time.monotonic(), force=True)
            notify.ready(self.telemetry.status_text)

    # -- shutdown -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop intake, purge what was never sent, flush, save the state file."""
        self._phase = "stopping"
        notify.stopping(self.config.params.flush_timeout_ms)
        self.listeners.stop_http()
        self.intake.watcher.stop()
        if self.delivery is None:
            return
        pending, in_flight = self.delivery.shut_down()
        self.retirer.stop()
        if not self._lock_lost:  # another daemon may hold the spool and its state now
            self._save_state(clean=True, pending=pending, in_flight=in_flight)
        self._phase = "stopped"
        self._tick(time.monotonic(), force=True)
        self.metrics.close()
        log.info("stopped", pending=len(pending), in_flight=len(in_flight),
                 delivered=self.telemetry.counters.get("delivered", 0))

    # -- status: STATUS=, the status file, the gauges ---------------------------------

    def _tick(self, now: float, force: bool = False, *, measure_usage: bool = True) -> None:
        """Bring STATUS=, the status file and the gauges up to date (every TICK_S)."""
        self._next_tick = now + TICK_S
        self._check_spool_lock()
        slow = force or now >= self._next_slow_tick
        if slow:
            self._next_slow_tick = now + SLOW_TICK_S
            self._dead_letters = spool.count_dead_letters(self.spool.failed)
            self.intake.remind_unreadable(now)
        self.telemetry.publish(Snapshot(
            phase=self._phase, backlog=len(self.intake.queue),
            backlog_truncated=self.intake.queue.truncated,
            in_flight=len(self.window), oldest_pending_ns=self.intake.oldest_pending_ns(),
            broker_up=self.supervisor.broker_up, dead_letters=self._dead_letters,
            unreadable=len(self.intake.unreadable),
            restart_needed=self.reloader.restart_needed,
            config=self.config, role=self.role, spool_free_bytes=self.spool.free_bytes(),
            spool_bytes=self.spool_usage.measure(now) if measure_usage
            else self.spool_usage.value,
        ), textfile=slow)

    def _check_spool_lock(self) -> None:
        """Stop (exit 75, so systemd starts it again as a standby) if the spool lock is no
        longer this daemon's: two daemons draining one spool would send every record twice."""
        if self._phase != "running":
            return
        try:
            self.spool_lock.verify()
        except SpoolLockLost as e:
            log.error("spool_lock_lost", error=str(e),
                      detail="stopping; records in flight stay in the spool")
            self._lock_lost = True
            self.wakeup.stop_requested = True
            self._exit_code = EX_TEMPFAIL


def prepare_spool(spool_: spool.Spool, cfg: Config) -> None:
    """Make the spool's folders, set its free-space floor, remove what killed hooks left in
    tmp/; each finding is logged."""
    for warning in spool_.ensure_dirs():
        log.warning("spool_warning", detail=warning)
    for warning in spool_.set_min_free(cfg.spool_min_free_bytes):
        log.warning("spool_warning", detail=warning)
    for name in spool_.clean_tmp(older_than_s=TMP_MAX_AGE_S):
        log.warning("stale_tmp_removed", file=name,
                    detail="left in tmp/ by a hook that was killed before its rename")


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
