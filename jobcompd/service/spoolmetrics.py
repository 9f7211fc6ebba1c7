"""The gauges of the spool's capacity: ``jobcompd_spool_free_bytes``, ``jobcompd_spool_bytes``
and ``jobcompd_spool_min_free_bytes``, a collector of their own that telemetry registers beside
the daemon's metrics (the endpoint and the node_exporter textfile both show them).

A long outage fills the spool's file system; below SpoolMinFreeBytes every writer refuses new
records (jobcompd/spool/SPEC.md, "Free space"). These say how close that is, so that an alert
fires while there is still time to act.
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric


class SpoolGauges:
    """prometheus_client's Collector protocol: read at each scrape. A figure not known (yet)
    is left out rather than shown as 0, which would look like a full disk."""

    def __init__(self) -> None:
        self.free_bytes: int | None = None
        self.new_bytes: int | None = None
        self.min_free_bytes: int | None = None

    def set(self, *, free_bytes: int | None, new_bytes: int | None,
            min_free_bytes: int | None) -> None:
        """The free space of the spool's file system for an unprivileged writer, the disk
        space the records in new/ take, and the threshold in force."""
        self.free_bytes = free_bytes
        self.new_bytes = new_bytes
        self.min_free_bytes = min_free_bytes

    def collect(self) -> list[Metric]:
        return [
            _gauge("jobcompd_spool_free_bytes",
                   "Bytes free on SpoolDir's file system for an unprivileged writer (statvfs "
                   "f_bavail: root's reserved blocks not counted)", self.free_bytes),
            _gauge("jobcompd_spool_bytes",
                   "Disk space the records in SpoolDir/new/ take (allocated blocks; summed "
                   "every 10 s, less often in a large backlog)", self.new_bytes),
            _gauge("jobcompd_spool_min_free_bytes",
                   "SpoolMinFreeBytes: below this free space the hooks and jobcompd's own "
                   "writers refuse new records (0: never)", self.min_free_bytes),
        ]


def _gauge(name: str, doc: str, value: int | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family
