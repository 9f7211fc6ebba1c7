"""The gauges that say which daemon of a controller pair drains the spool: ``jobcompd_active``
and ``jobcompd_standby_wait_seconds``, a collector of their own that telemetry registers beside
the daemon's metrics (the endpoint and the node_exporter textfile both show them)."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric


class RoleGauges:
    """prometheus_client's Collector protocol: read at each scrape."""

    def __init__(self) -> None:
        self.active: bool | None = None
        self.waited_s = 0.0

    def set(self, *, active: bool, waited_s: float) -> None:
        """Whether this daemon holds the spool lock (``active``) or stands by for it, and how
        long it has waited for the lock (standby: so far; active: before it took over)."""
        self.active = active
        self.waited_s = waited_s

    def collect(self) -> list[Metric]:
        active = GaugeMetricFamily(
            "jobcompd_active", "1 when this daemon holds the spool lock and drains the spool, "
            "0 while it stands by for it (Standby=yes)")
        if self.active is not None:
            active.add_metric([], 1 if self.active else 0)
        waited = GaugeMetricFamily(
            "jobcompd_standby_wait_seconds", "How long this daemon has waited for the spool "
            "lock: so far while it stands by, before it took over once active",
            value=self.waited_s)
        return [active, waited]
