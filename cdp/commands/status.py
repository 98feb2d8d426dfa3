"""`cdp status`: what the journal holds and how the drain service is doing."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from cdp.commands._common import add_json_option, add_verb, journal_path, open_journal, print_json

ORDER = 11


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp status`."""
    p = add_verb(
        subparsers, "status", cmd_status, help="what the journal holds and how the service is doing",
        description="Show the journal's size and time span, and the drain service's live\n"
                    "figures: whether it runs, how far it lags behind the device (bytes and\n"
                    "seconds), write rates and how full the ring is.",
        epilog="examples:\n"
               "  cdp status --journal /var/lib/cdp/sdb\n"
               "  cdp status --json | jq .service.lag_seconds")
    add_json_option(p)


def writer_pid(path: Path) -> int | None:
    """Pid of the process holding the journal's writer lock, from /proc/locks.

    Reading /proc/locks (instead of trying the lock) never disturbs a
    service that is starting at the same moment.
    """
    try:
        st = os.stat(path / "lock")
        with open("/proc/locks") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if "->" in fields:
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want:
            return int(fields[4])
    return None


def _status_doc(journal: Any, path: Path) -> dict[str, Any]:
    from journal.units import NS, format_ts

    info = journal.info
    stats = journal.stats()
    live = journal.status() or {}
    pid = writer_pid(path)
    now = time.time_ns()
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
        "service": {**live, "running": pid is not None, "pid": pid, "state": live.get("state", "never ran")},
    }
    updated = live.get("updated_ns")
    if isinstance(updated, int):
        doc["service"]["status_age_seconds"] = round((now - updated) / NS, 3)
    return doc


def cmd_status(args: argparse.Namespace) -> int:
    """Print the journal's counters and the service's last published status."""
    from journal.units import NS, format_bytes, format_duration

    path = journal_path(args)
    with open_journal(args) as journal:
        doc = _status_doc(journal, path)
    if args.json:
        print_json(doc)
        return 0
    dev = doc["device"]
    svc = doc["service"]
    print(f"journal   {path}")
    print(f"device    {dev['source'] or '(no source)'}: {format_bytes(dev['bytes'])}, {dev['block_size']}-byte blocks")
    print(f"records   {doc['records']} (last seq {doc['last_seq']}), {format_bytes(doc['data_bytes'])} of data, "
          f"{format_bytes(doc['disk_bytes'])} on disk in {doc['segments']} segment(s)")
    print(f"span      {doc['first']['time']} .. {doc['last']['time']}")
    if svc["running"]:
        state = f"running (pid {svc['pid']})"
    elif svc.get("state") == "running":
        state = "not running (it stopped without saying so: killed or crashed; restart 'cdp run')"
    else:
        state = "not running"
    age = svc.get("status_age_seconds")
    if age is not None:
        state += f"; last report {format_duration(int(age * NS))} ago"
    print(f"service   {state}")
    for label, line in _service_lines(svc, live=bool(svc["running"])):
        print(f"{label:<9} {line}")
    return 0


def _service_lines(svc: dict[str, Any], *, live: bool) -> list[tuple[str, str]]:
    """Human lines for the figures `cdp run` publishes (see cdp.service.publish_status).

    Lag, rates and ring fill mean something only while the service runs; the
    rest (drops, pending resync, damage) stays true of the journal after it.
    """
    from journal.units import NS, format_bytes, format_duration

    out: list[tuple[str, str]] = []
    if not live:
        if isinstance(svc.get("records"), int):
            out.append(("last run", f"{svc['records']} records ({format_bytes(int(svc.get('bytes', 0)))}) "
                                    f"from {svc.get('ring') or 'the ring'}"))
    elif "lag_bytes" in svc or "lag_seconds" in svc:
        out.append(("lag", f"{format_bytes(int(svc.get('lag_bytes', 0)))} and "
                           f"{format_duration(int(float(svc.get('lag_seconds', 0.0)) * NS))} behind the device"))
    if live and ("rate_records" in svc or "rate_bytes" in svc):
        out.append(("rates", f"{float(svc.get('rate_records', 0)):.0f} records/s, "
                             f"{format_bytes(int(svc.get('rate_bytes', 0)))}/s"))
    if live and "ring_fill" in svc:
        size = svc.get("ring_size")
        extra = f" of {format_bytes(size)}" if isinstance(size, int) else ""
        ring = f"{svc.get('ring', '')}: " if svc.get("ring") else ""
        out.append(("ring", f"{ring}{float(svc['ring_fill']) * 100:.1f}% full{extra}"))
    if svc.get("overflow") or svc.get("dropped"):
        out.append(("dropped", f"{svc.get('dropped', 0)} writes dropped since attach"
                               + ("; dropping now (ring full)" if svc.get("overflow") else "")))
    if svc.get("resync_pending_bytes"):
        out.append(("resync", f"{format_bytes(int(svc['resync_pending_bytes']))} still to copy from the device"))
    if svc.get("corrupt"):
        out.append(("damaged", f"{svc['corrupt']} ring records failed their checks (see the service's log)"))
    if live and svc.get("detached"):
        out.append(("producer", "detached"))
    return out
