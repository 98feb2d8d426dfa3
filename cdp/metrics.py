"""`cdp run --metrics ADDR:PORT`: the journal's health as Prometheus metrics.

The drain service computes a :class:`journal.health.Health` each time it
publishes its status (about once a second) and hands it here; a scrape
reports the newest one, so a scrape never touches the journal and never
waits on the drain. The figures are those `cdp status --check` judges, so
an alert rule and the check agree: ``cdp_lag_seconds`` (the recovery point
objective right now), ``cdp_up``, the newest point's time, the journal's
filesystem fill, dropped writes. ``cdp_last_report_timestamp_seconds``
lets a rule notice a service that stopped reporting (``time() - ... > 30``).

prometheus-client serves the text format and the HTTP endpoint; this
module only says what the numbers are. It is imported only when
``--metrics`` is given, so a minimal guest without the package can still
run the service.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from journal.health import Health
from journal.units import NS


class HealthCollector:
    """Holds the newest Health of one journal; a registry collects it on each scrape."""

    def __init__(self, journal: str) -> None:
        self._journal = journal
        self._latest: Health | None = None
        self._lock = threading.Lock()

    def update(self, health: Health) -> None:
        """Take the service's newest figures (called from the drain thread)."""
        with self._lock:
            self._latest = health

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            h = self._latest
        labels = ["journal"]
        values = [self._journal]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily | None:
            if value is None:
                return None
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, value)
            return g

        up = gauge("cdp_up", "1 while the drain service runs and reports", 1.0 if h is not None else 0.0)
        yield up  # type: ignore[misc]
        if h is None:
            return
        dropped = CounterMetricFamily("cdp_dropped_writes", "writes the producer dropped since it attached",
                                      labels=labels)
        dropped.add_metric(values, h.dropped)
        corrupt = CounterMetricFamily("cdp_corrupt_ring_records", "ring records that failed their checks "
                                      "in this run", labels=labels)
        corrupt.add_metric(values, h.corrupt)
        for metric in (
            gauge("cdp_last_report_timestamp_seconds", "when the service last computed these figures",
                  h.now_ns / NS),
            gauge("cdp_lag_seconds", "age of the oldest write not yet journaled (the RPO right now)",
                  h.lag_seconds),
            gauge("cdp_lag_bytes", "ring bytes not yet journaled", h.lag_bytes),
            gauge("cdp_oldest_point_timestamp_seconds", "the oldest moment a restore can reach",
                  h.oldest_ts_ns / NS),
            gauge("cdp_newest_point_timestamp_seconds", "the newest moment a restore can reach",
                  h.newest_ts_ns / NS),
            gauge("cdp_journal_records", "records in the journal", h.records),
            gauge("cdp_journal_disk_bytes", "bytes the journal uses on disk", h.disk_bytes),
            gauge("cdp_filesystem_size_bytes", "size of the filesystem holding the journal", h.fs_bytes),
            gauge("cdp_filesystem_free_bytes", "bytes still free there (for unprivileged writers)",
                  h.fs_free_bytes),
            gauge("cdp_filesystem_fill_ratio", "how full that filesystem is, 0..1", h.fs_fill),
            gauge("cdp_dropping", "1 while the ring is full and writes are being dropped", float(h.dropping)),
            gauge("cdp_resync_pending_bytes", "dropped ranges still to copy from the device",
                  h.resync_pending_bytes),
            gauge("cdp_interrupted_restores", "device restores from this journal that never finished",
                  h.interrupted_restores),
            gauge("cdp_journal_max_size_bytes", "the retention policy's cap on the journal's size",
                  h.max_size),
            gauge("cdp_retention_horizon_timestamp_seconds", "the oldest point retention keeps",
                  None if h.horizon_ts_ns is None else h.horizon_ts_ns / NS),
            gauge("cdp_compacting", "1 while a compaction is under way", float(h.compacting is not None)),
            gauge("cdp_checkpoint_behind_records", "records newer than the block-map checkpoint restores "
                  "read (absent: none built yet)", h.checkpoint_behind),
            dropped, corrupt,
        ):
            if metric is not None:
                yield metric


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[::1]:9477`` for IPv6, ``:9477`` for every address) -> (addr, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"cannot read {text!r}; give ADDR:PORT, e.g. 127.0.0.1:9477 or :9477")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def serve(listen: str, journal: str) -> tuple[HealthCollector, str]:
    """Start the metrics endpoint; returns the collector to feed and the URL it serves."""
    host, port = parse_listen(listen)
    registry = CollectorRegistry()
    collector = HealthCollector(journal)
    registry.register(collector)  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    try:
        server, _thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {listen}: {exc.strerror}") from None
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    return collector, f"http://{shown}:{bound_port}/metrics"
