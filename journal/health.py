"""Is this journal protecting its device right now? The figures an admin alerts on.

One :class:`Health` gathers what `cdp status` shows, `cdp status --check`
judges and `cdp run --metrics` exports, so the three always agree: whether
the drain service runs and when it last said so, the lag (how far the
journal is behind the device: the recovery point objective right now),
the oldest and newest point, the journal's size and how full the
filesystem holding it is, and what is wrong (writes being dropped,
points that are not whole, damaged ring records, unfinished restores).

With a retention policy (``cdp retain``) the journal's size has a cap and
the oldest point moves forward: Health carries the cap, the horizon and
whether a compaction is under way. :func:`problems` turns a Health and
the admin's limits into the lines a monitoring check prints.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from journal.status import RUNNING, Service
from journal.units import NS, format_bytes, format_duration

#: Defaults of `cdp status --check`: lag and fill limits, and how old the
#: service's last report may be before it counts as stalled.
DEFAULT_MAX_LAG_NS = 30 * NS
DEFAULT_MAX_FILL = 0.90
DEFAULT_MAX_SILENCE_NS = 30 * NS


@dataclass(frozen=True, slots=True)
class Health:
    """The journal and its service as of ``now_ns``; None where a figure is not known."""

    now_ns: int
    #: a process holds the journal's writer lock
    running: bool
    #: seconds since the service's last status record (None: it never published one)
    report_age_seconds: float | None
    #: how far the journal is behind the device, while the service runs
    lag_seconds: float | None
    lag_bytes: int | None
    #: the oldest and newest moments a restore can reach
    oldest_ts_ns: int
    newest_ts_ns: int
    records: int
    #: bytes the journal uses on disk (segments and index)
    disk_bytes: int
    #: the filesystem holding the journal: its size, what is free, how full it is (0..1)
    fs_bytes: int
    fs_free_bytes: int
    fs_fill: float
    #: writes the producer dropped since it attached, and whether it is dropping now
    dropped: int
    dropping: bool
    #: bytes of overflow windows still to copy from the device (points in them are not whole)
    resync_pending_bytes: int
    #: ring records that failed their checks in the last run
    corrupt: int
    #: device restores from this journal that never finished
    interrupted_restores: int
    #: the retention policy's size cap (None: none), the oldest point kept (None: nothing folded
    #: yet), and the step of a compaction under way (None: none)
    max_size: int | None = None
    horizon_ts_ns: int | None = None
    compacting: str | None = None
    #: the seq of the block-map checkpoint restores read (None: none built yet), and how many
    #: records are newer than it (a restore of the newest point fetches their entries one by one)
    checkpoint_seq: int | None = None
    checkpoint_behind: int | None = None

    def as_record(self) -> dict[str, Any]:
        """The fields as a JSON-ready map (`cdp status --json`'s ``health``)."""
        return asdict(self)


def assess(journal: Any, service: Service, now_ns: int, interrupted_restores: int = 0) -> Health:
    """The Health of ``journal`` (an open :class:`journal.JournalReader`) and its ``service``."""
    stats = journal.stats()
    vfs = os.statvfs(journal.path)
    fs_bytes = vfs.f_blocks * vfs.f_frsize
    free = vfs.f_bavail * vfs.f_frsize
    # full as df counts it: used over used + what an unprivileged writer could still use
    used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    fill = used / (used + free) if used + free > 0 else 1.0
    status = service.status
    running = service.is_running()
    live = running and status is not None and status.state == RUNNING
    age = None
    if status is not None and status.updated_ns is not None:
        age = max(0.0, (now_ns - status.updated_ns) / NS)
    return Health(
        now_ns=now_ns, running=running, report_age_seconds=age,
        lag_seconds=status.lag_seconds if live and status is not None else None,
        lag_bytes=status.lag_bytes if live and status is not None else None,
        oldest_ts_ns=stats.first_ts_ns, newest_ts_ns=stats.last_ts_ns, records=stats.records,
        disk_bytes=stats.disk_bytes, fs_bytes=fs_bytes, fs_free_bytes=free, fs_fill=round(fill, 4),
        dropped=(status.dropped or 0) if status is not None else 0,
        dropping=bool(live and status is not None and status.overflow),
        resync_pending_bytes=(status.resync_pending_bytes or 0) if status is not None else 0,
        corrupt=(status.corrupt or 0) if status is not None else 0,
        interrupted_restores=interrupted_restores,
        **_retention(journal),
        **_checkpoint(journal, stats.last_seq),
    )


def _checkpoint(journal: Any, last_seq: int) -> dict[str, Any]:
    """The checkpoint fields of a Health (:mod:`journal.heads`)."""
    from journal import heads

    with journal.index.read() as txn:
        cp = heads.state(journal.index, txn)
    if cp is None or not cp.complete:
        return {}
    return {"checkpoint_seq": cp.seq, "checkpoint_behind": max(0, last_seq - cp.seq)}


def _retention(journal: Any) -> dict[str, Any]:
    """The retention fields of a Health, from the journal's index."""
    from journal.points import retained

    index = journal.index
    with index.read() as txn:
        policy = index.get_meta(txn, "retention") or {}
        sel = retained(index, txn)
        pending = index.get_meta(txn, "compaction")
    return {"max_size": policy.get("max_size"), "horizon_ts_ns": None if sel is None else sel.horizon_ts,
            "compacting": None if pending is None else pending.get("stage")}


def problems(health: Health, *, max_lag_ns: int = DEFAULT_MAX_LAG_NS, max_fill: float = DEFAULT_MAX_FILL,
             max_silence_ns: int = DEFAULT_MAX_SILENCE_NS) -> list[str]:
    """What is wrong, one short phrase each, worst first; empty when all is well."""
    out: list[str] = []
    if not health.running:
        out.append("the drain service is not running: writes are not being journaled")
    else:
        age = health.report_age_seconds
        if age is None:
            out.append("the drain service has not reported yet")
        elif age * NS > max_silence_ns:
            out.append(f"the drain service last reported {format_duration(int(age * NS))} ago (stalled?)")
        if health.lag_seconds is not None and health.lag_seconds * NS > max_lag_ns:
            out.append(f"lag {format_duration(int(health.lag_seconds * NS))} > "
                       f"{format_duration(max_lag_ns)}")
    if health.dropping:
        out.append("the ring is full: writes are being dropped (points are not whole until resynced)")
    elif health.resync_pending_bytes:
        out.append(f"{format_bytes(health.resync_pending_bytes)} of dropped writes still to copy from "
                   "the device (recent points are not whole)")
    if health.fs_fill > max_fill:
        out.append(f"the journal's filesystem is {health.fs_fill * 100:.0f}% full > {max_fill * 100:.0f}% "
                   f"({format_bytes(health.fs_free_bytes)} free)")
    if health.max_size is not None and health.disk_bytes > health.max_size * 1.2:
        out.append(f"the journal is {format_bytes(health.disk_bytes)}, over its cap of "
                   f"{format_bytes(health.max_size)} (compaction failing, or pinned marks hold it?)")
    if health.corrupt:
        out.append(f"{health.corrupt} damaged ring record(s) in the last run (see the service's log)")
    if health.interrupted_restores:
        out.append(f"{health.interrupted_restores} device restore(s) from this journal never finished")
    return out


def summary(health: Health) -> str:
    """The figures of a passing check, for its one line."""
    parts = []
    if health.lag_seconds is not None:
        parts.append(f"lag {format_duration(int(health.lag_seconds * NS))}")
    parts.append(f"newest point {format_duration(max(0, health.now_ns - health.newest_ts_ns))} ago")
    parts.append(f"journal {format_bytes(health.disk_bytes)}, filesystem {health.fs_fill * 100:.0f}% full")
    return ", ".join(parts)


__all__ = ["DEFAULT_MAX_FILL", "DEFAULT_MAX_LAG_NS", "DEFAULT_MAX_SILENCE_NS", "Health", "assess",
           "problems", "summary"]
