"""The status bar's data: the journal's counters and the drain service's state."""

from __future__ import annotations

from dataclasses import dataclass

from journal import Journal
from journal.status import RUNNING, ServiceStatus, read_service
from journal.units import NS

#: A stopped service whose last report is older than this is said to have gone quiet.
STALE_NS = 5 * NS


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """One refresh of the status bar."""

    device: str
    disk_bytes: int
    records: int
    data_bytes: int
    last_seq: int
    lag_bytes: int | None
    lag_ns: int | None
    rate_bps: float | None
    ring_fill: float | None
    #: open overflow windows: points after their start are not whole
    overflow: bool
    running: bool
    #: why the service counts as stopped ('' when running)
    stopped_why: str


def read_status(j: Journal, now_ns: int) -> StatusSnapshot:
    """Journal counters plus the service's last published status.

    Whether the service runs is :meth:`journal.status.Service.is_running`
    (a process holds the journal's writer lock), as in `cdp status`; the
    status record only explains why not: it never ran, it said it stopped,
    it went quiet :data:`STALE_NS` before the end, or its pid is gone.
    """
    stats = j.stats()
    service = read_service(j)
    status = service.status or ServiceStatus()
    windows = [w for w in j.overflow_windows() if w.resync_seq is None]
    running = service.is_running()
    if running:
        why = ""
    elif service.status is None:
        why = "it has not run on this journal"
    elif status.state not in (None, RUNNING):
        why = f"it is {status.state}"
    elif status.updated_ns is not None and now_ns - status.updated_ns > STALE_NS:
        why = f"no report for {(now_ns - status.updated_ns) // NS} s"
    elif status.pid is not None:
        why = f"pid {status.pid} is gone"
    else:
        why = "it stopped without saying so"
    # the journal's own open windows always count; the ring's flag only while the service is alive
    overflow = bool(windows) or (running and bool(status.overflow))
    device = str(status.device or j.info.source or "(no device recorded)")
    return StatusSnapshot(
        device, stats.disk_bytes, stats.records, stats.data_bytes, stats.last_seq,
        status.lag_bytes, None if status.lag_seconds is None else int(status.lag_seconds * NS),
        None if status.rate_bytes is None else float(status.rate_bytes),
        None if status.ring_fill is None else float(status.ring_fill), overflow, running, why)
