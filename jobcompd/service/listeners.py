"""The daemon's two TCP endpoints: the HTTP intake (HttpListen) and the metrics endpoint
(MetricsListen), started, moved on reload and stopped in one place.

A listener that cannot start after a reload is logged and noted in the status; the daemon keeps
delivering without it (the spool and the hooks do not depend on either).
"""

from __future__ import annotations

import structlog

from jobcompd import spool
from jobcompd.config import Config
from jobcompd.service import metrics as metricsmod
from jobcompd.service.httpintake import HttpIntake, HttpIntakeError
from jobcompd.service.telemetry import Telemetry

log = structlog.get_logger("jobcompd")


class Listeners:
    """The HTTP intake, writing into the spool, and the metrics endpoint."""

    def __init__(self, spool_: spool.Spool, metrics: metricsmod.Metrics,
                 telemetry: Telemetry) -> None:
        self.spool = spool_
        self.metrics = metrics
        self.telemetry = telemetry
        self.http: HttpIntake | None = None

    def start_http(self, cfg: Config) -> None:
        """Start the jobcomp/elasticsearch intake when HttpListen is set. HttpIntakeError
        when its address cannot be bound."""
        if cfg.http_listen is None:
            return
        self.http = HttpIntake(self.spool, cfg.http_listen,
                               max_body=cfg.params.max_record_bytes, cluster=cfg.cluster_name)
        self.http.start()
        host, port = self.http.address
        log.info("http_listening", address=f"{host}:{port}")

    def serve_metrics(self, cfg: Config) -> None:
        """(Re)start the metrics endpoint when MetricsListen is set; a failure is logged."""
        if cfg.metrics_listen is None:
            self.metrics.stop_serving()
            return
        try:
            host, port = self.metrics.serve(*cfg.metrics_listen)
        except metricsmod.MetricsError as e:
            self.telemetry.note_error(str(e))
            log.error("metrics_unavailable", error=str(e))
            return
        log.info("metrics_listening", address=f"{host}:{port}")

    def reconfigure(self, cfg: Config, *, metrics_moved: bool, http_moved: bool) -> None:
        """Apply a reloaded configuration: move what changed address, update the rest."""
        if metrics_moved:
            self.serve_metrics(cfg)
        if http_moved:
            self._restart_http(cfg)
        elif self.http is not None:
            self.http.max_body = cfg.params.max_record_bytes
            self.http.cluster = cfg.cluster_name

    def _restart_http(self, cfg: Config) -> None:
        self.stop_http()
        try:
            self.start_http(cfg)
        except HttpIntakeError as e:
            self.http = None
            self.telemetry.note_error(str(e))
            log.error("http_unavailable", error=str(e))

    def stop_http(self) -> None:
        """Stop taking records over HTTP: what it accepted is in the spool, and Slurm's
        jobcomp/elasticsearch retries what it did not."""
        if self.http is not None:
            self.http.stop()
            self.http = None
