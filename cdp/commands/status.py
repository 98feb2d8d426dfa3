"""`cdp status`: what the journal holds and how the drain service is doing."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdp.commands._common import add_json_option, add_verb, journal_path, open_journal, print_json

if TYPE_CHECKING:
    from journal import JournalInfo, JournalStats
    from journal.status import Service, ServiceStatus

ORDER = 11
#: `cdp status`'s words for how the journal's device is filtered now (cdp.attach.way_of).
MODES = {"filter": "filter (in place on the device)", "dm": "dm (the cdp device-mapper target)",
         "none": "not attached", "unknown": "unknown (needs root and the device to tell)"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp status`."""
    p = add_verb(
        subparsers, "status", cmd_status, help="what the journal holds and how the service is doing",
        description="Show the journal's size and time span, and the drain service's live\n"
                    "figures: whether it runs, how far it lags behind the device (bytes and\n"
                    "seconds), write rates and how full the ring is.\n\n"
                    "With --check, judge instead, for a monitoring system: one line and the\n"
                    "exit status of a Nagios/Icinga plugin: 0 OK, 2 CRITICAL (the service is\n"
                    "not running or stalled, the lag or the journal's filesystem is over its\n"
                    "limit, writes are being dropped or still to resync, damaged ring records,\n"
                    "an unfinished device restore), 3 UNKNOWN (the journal cannot be read).\n"
                    "The mode line says how the device is filtered now (filter, dm, not attached).",
        epilog="examples:\n"
               "  cdp status --journal /var/lib/cdp/sdb\n"
               "  cdp status --json | jq .service.lag_seconds\n"
               "  cdp status --check --max-lag 5s --max-fill 80%    # in cron or a monitoring agent\n"
               "  cdp run ... --metrics 127.0.0.1:9477               # the same figures for Prometheus")
    add_json_option(p)
    p.add_argument("--check", action="store_true",
                   help="print one line and exit 0 (OK), 2 (CRITICAL) or 3 (UNKNOWN)")
    p.add_argument("--max-lag", metavar="DURATION", default=None,
                   help="with --check: the most the journal may lag behind the device "
                        "(default 30s; e.g. 5s, 2m)")
    p.add_argument("--max-fill", metavar="PERCENT", default=None,
                   help="with --check: how full the journal's filesystem may be (default 90%%)")


def cmd_status(args: argparse.Namespace) -> int:
    """Print the journal's counters and the service's last published status (or judge them)."""
    limits = _limits(args)
    if args.check:
        return _check(args, limits)
    from journal.health import assess, problems
    from journal.output import interrupted_restores
    from journal.status import read_service

    from cdp.attach import way_of

    path = journal_path(args)
    now = time.time_ns()
    interrupted = interrupted_restores(path)
    from cdp.commands.retain import retention_doc, retention_lines

    with open_journal(args) as journal:
        info, stats, service = journal.info, journal.stats(), read_service(journal)
        health = assess(journal, service, now, len(interrupted))
        retention = retention_doc(journal)
        compression = journal.compression
    mode = way_of(info.source)
    if args.json:
        print_json({**_status_doc(path, info, stats, service, now), "mode": mode,
                    "compression": compression.to_meta(),
                    "interrupted_restores": interrupted, "retention": retention,
                    "health": health.as_record(), "problems": problems(health, **limits)})
    else:
        _print_status(path, info, stats, service, now)
        print(f"mode      {MODES.get(mode, mode)}")
        print(f"compress  {compression.describe()}")
        _print_health(health)
        for line in retention_lines(retention):
            print(line)
        for line in interrupted:
            print(f"warning   {line}")
    return 0


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    """--max-lag and --max-fill as :func:`journal.health.problems` takes them."""
    from cdp.errors import UsageError
    from journal.timespec import parse_duration

    limits: dict[str, Any] = {}
    if args.max_lag is not None:
        try:
            limits["max_lag_ns"] = parse_duration(args.max_lag)
        except ValueError as exc:
            raise UsageError(f"--max-lag: {exc}") from None
    if args.max_fill is not None:
        text = args.max_fill.strip().removesuffix("%")
        try:
            percent = float(text)
        except ValueError:
            percent = -1.0
        if not 0 <= percent <= 100:
            raise UsageError(f"--max-fill: cannot read {args.max_fill!r}; give a percentage from 0 to 100, "
                             "e.g. 90%")
        limits["max_fill"] = percent / 100
    return limits


def _check(args: argparse.Namespace, limits: dict[str, Any]) -> int:
    """The monitoring check: one line, exit 0 OK, 2 CRITICAL, 3 UNKNOWN (Nagios plugin statuses)."""
    from journal.health import assess, problems, summary
    from journal.output import interrupted_restores
    from journal.status import read_service
    from cdp.errors import CdpError
    from journal.errors import JournalError

    try:
        path = journal_path(args)
        now = time.time_ns()
        with open_journal(args) as journal:
            health = assess(journal, read_service(journal), now, len(interrupted_restores(path)))
    except (CdpError, JournalError, OSError) as exc:
        print(f"CDP UNKNOWN: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return 3
    found = problems(health, **limits)
    if args.json:
        print_json({"status": "CRITICAL" if found else "OK", "problems": found, "health": health.as_record()})
    elif found:
        print(f"CDP CRITICAL: {'; '.join(found)}")
    else:
        print(f"CDP OK: {summary(health)}")
    return 2 if found else 0


def _print_health(health: Any) -> None:
    """The room left, for people (the span line already says which points a restore reaches)."""
    from journal.units import format_bytes

    cap = (f" of its {format_bytes(health.max_size)} cap" if health.max_size is not None else "")
    print(f"space     journal {format_bytes(health.disk_bytes)}{cap}; its filesystem "
          f"{health.fs_fill * 100:.0f}% full, {format_bytes(health.fs_free_bytes)} free")
    if health.checkpoint_seq is None:
        print("restores  walk the block index (no checkpoint yet: the running service builds one)")
    else:
        print(f"restores  read the block-map checkpoint at seq {health.checkpoint_seq} "
              f"({health.checkpoint_behind} records behind the newest)")


def _status_doc(path: Path, info: JournalInfo, stats: JournalStats, service: Service, now: int) -> dict[str, Any]:
    """What `cdp status --json` prints: the journal's facts and counters, the service's record."""
    from journal.units import NS, format_ts

    live = service.status.as_record() if service.status is not None else {}
    doc: dict[str, Any] = {
        "journal": str(path),
        "device": {"source": info.source, "bytes": info.device_bytes, "block_size": info.block_size,
                   "id": info.device_id.hex()},
        "records": stats.records,
        "last_seq": stats.last_seq,
        "data_bytes": stats.data_bytes,
        "disk_bytes": stats.disk_bytes,
        "segments": stats.segments,
        "created": {"ts_ns": info.created_ns, "time": format_ts(info.created_ns)},
        "first": {"ts_ns": stats.first_ts_ns, "time": format_ts(stats.first_ts_ns)},
        "last": {"ts_ns": stats.last_ts_ns, "time": format_ts(stats.last_ts_ns)},
        "service": {**live, "running": service.is_running(), "pid": service.writer_pid,
                    "state": live.get("state", "never ran")},
    }
    updated = live.get("updated_ns")
    if isinstance(updated, int):
        doc["service"]["status_age_seconds"] = round((now - updated) / NS, 3)
    return doc


def _print_status(path: Path, info: JournalInfo, stats: JournalStats, service: Service, now: int) -> None:
    """The same for people, one labelled line each."""
    from journal.status import RUNNING
    from journal.units import format_bytes, format_duration, format_ts

    print(f"journal   {path}")
    print(f"device    {info.source or '(no source)'}: {format_bytes(info.device_bytes)}, "
          f"{info.block_size}-byte blocks")
    print(f"records   {stats.records} (last seq {stats.last_seq}), {format_bytes(stats.data_bytes)} of data, "
          f"{format_bytes(stats.disk_bytes)} on disk in {stats.segments} segment(s)")
    print(f"span      {format_ts(stats.first_ts_ns)} .. {format_ts(stats.last_ts_ns)} "
          f"(newest {format_duration(max(0, now - stats.last_ts_ns))} ago)")
    status = service.status
    if service.is_running():
        state = f"running (pid {service.writer_pid})"
    elif status is not None and status.state == RUNNING:
        state = "not running (it stopped without saying so: killed or crashed; restart 'cdp run')"
    else:
        state = "not running"
    if status is not None and status.updated_ns is not None:
        # rounded to the millisecond, as --json's status_age_seconds
        state += f"; last report {format_duration(round(now - status.updated_ns, -6))} ago"
    print(f"service   {state}")
    if status is not None:
        for label, line in _service_lines(status, live=service.is_running()):
            print(f"{label:<9} {line}")


def _service_lines(svc: ServiceStatus, *, live: bool) -> list[tuple[str, str]]:
    """Human lines for the figures `cdp run` publishes.

    Lag, rates and ring fill mean something only while the service runs; the
    rest (drops, pending resync, damage) stays true of the journal after it.
    """
    from journal.units import NS, format_bytes, format_duration

    out: list[tuple[str, str]] = []
    if not live:
        if svc.records is not None:
            out.append(("last run", f"{svc.records} records ({format_bytes(svc.bytes or 0)}) "
                                    f"from {svc.ring or 'the ring'}"))
    elif svc.lag_bytes is not None or svc.lag_seconds is not None:
        out.append(("lag", f"{format_bytes(svc.lag_bytes or 0)} and "
                           f"{format_duration(int((svc.lag_seconds or 0.0) * NS))} behind the device"))
    if live and (svc.rate_records is not None or svc.rate_bytes is not None):
        out.append(("rates", f"{svc.rate_records or 0:.0f} records/s, {format_bytes(int(svc.rate_bytes or 0))}/s"))
    if live and svc.ring_fill is not None:
        extra = f" of {format_bytes(svc.ring_size)}" if svc.ring_size is not None else ""
        ring = f"{svc.ring}: " if svc.ring else ""
        out.append(("ring", f"{ring}{svc.ring_fill * 100:.1f}% full{extra}"))
    if svc.overflow or svc.dropped:
        out.append(("dropped", f"{svc.dropped or 0} writes dropped since attach"
                               + ("; dropping now (ring full)" if svc.overflow else "")))
    if svc.resync_pending_bytes:
        out.append(("resync", f"{format_bytes(svc.resync_pending_bytes)} still to copy from the device"))
    if svc.corrupt:
        out.append(("damaged", f"{svc.corrupt} ring records failed their checks (see the service's log)"))
    if live and svc.detached:
        out.append(("producer", "detached"))
    return out
