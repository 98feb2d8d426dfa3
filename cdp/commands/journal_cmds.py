"""Verbs over the journal alone: init, status, points, mark, verify.

None of them needs the ring or the kernel: they are safe to run while
`cdp run` appends (readers open the journal read-only; a mark is one small
index transaction).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from cdp.commands._common import (
    PointKindChoices,
    add_journal_option,
    add_json_option,
    journal_path,
    kind_label,
    open_journal,
    parse_time_arg,
    point_json,
    print_json,
)
from cdp.errors import CdpError, UsageError

ORDER = 10
_BLKSSZGET = 0x1268  # <linux/fs.h>: logical sector size of a block device


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add init, status, points, mark and verify."""
    _register_init(subparsers)
    _register_status(subparsers)
    _register_points(subparsers)
    _register_mark(subparsers)
    _register_verify(subparsers)


# --------------------------------------------------------------------- init

def _register_init(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "init", help="create a journal for a device and copy its baseline",
        description="Create a journal for a device (or an image file) and copy the device's\n"
                    "present content into it as the baseline: the state every later write is\n"
                    "applied to. Zero blocks are not stored. Run it before the first 'cdp run',\n"
                    "while the device is quiet (or before the filter is attached).",
        epilog="examples:\n"
               "  cdp init --journal /var/lib/cdp/sdb --device /dev/sdb\n"
               "  CDP_JOURNAL=./j cdp init --device disk.img --json")
    add_journal_option(p)
    p.add_argument("--device", "-d", metavar="PATH", required=True,
                   help="the block device or image file to protect")
    p.add_argument("--block-size", type=int, choices=(512, 4096), default=None,
                   help="logical block size (default: the device's own, 512 for files)")
    add_json_option(p)
    p.set_defaults(func=cmd_init)


def logical_block_size(path: str) -> int:
    """The device's logical sector size (BLKSSZGET); 512 for a regular file."""
    import fcntl
    import struct

    fd = os.open(path, os.O_RDONLY)
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            return 512
        raw = fcntl.ioctl(fd, _BLKSSZGET, struct.pack("I", 0))
        return struct.unpack("I", raw)[0]
    finally:
        os.close(fd)


def cmd_init(args: argparse.Namespace) -> int:
    """Create the journal; remove what was made if the baseline copy fails."""
    from cdp.progress import progress_bar
    from journal import Journal, device_size
    from journal.format import MARKER
    from journal.units import NS, format_bytes, format_duration

    path = journal_path(args)
    device = args.device
    try:
        st = os.stat(device)
    except OSError as exc:
        raise CdpError(f"cannot use device {device}: {exc.strerror}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise CdpError(f"{device} is neither a block device nor a regular file")
    size = device_size(device)
    if size == 0 or size % 512:
        raise CdpError(f"{device} holds {size} bytes; a device is a non-zero multiple of 512 bytes")
    block_size = args.block_size or logical_block_size(device)
    existed = path.exists()
    if existed and (not path.is_dir() or any(path.iterdir())):
        what = "a journal already" if (path / MARKER).exists() else "not an empty directory"
        raise CdpError(f"{path} exists and is {what}; give a new path")
    started = time.monotonic()
    try:
        with progress_bar(f"baseline of {device}") as progress:
            journal = Journal.create(path, device_bytes=size, block_size=block_size,
                                     source=device, progress=progress)
    except BaseException:
        # Only what this run made is removed: the path was absent or empty before.
        if path.is_dir() and not (path / MARKER).exists():
            _remove_partial(path, keep_dir=existed)
        raise
    with journal:
        stats = journal.stats()
        info = journal.info
    elapsed = time.monotonic() - started
    if args.json:
        print_json({"journal": str(path), "device": device, "device_bytes": info.device_bytes,
                    "block_size": info.block_size, "baseline_bytes": stats.data_bytes,
                    "disk_bytes": stats.disk_bytes, "created_ns": info.created_ns,
                    "seconds": round(elapsed, 3)})
    else:
        print(f"created journal {path} for {device} ({format_bytes(size)}, {block_size}-byte blocks); "
              f"baseline copied in {format_duration(int(elapsed * NS))}, {format_bytes(stats.disk_bytes)} on disk")
        print(f"next: cdp run --journal {path} --ring RING")
    return 0


def _remove_partial(path: Path, *, keep_dir: bool) -> None:
    """Undo a journal that never got its marker file (the copy failed or was interrupted)."""
    import shutil

    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if not keep_dir:
        path.rmdir()


# ------------------------------------------------------------------- status

def _register_status(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status", help="what the journal holds and how the service is doing",
        description="Show the journal's size and time span, and the drain service's live\n"
                    "figures: whether it runs, how far it lags behind the device (bytes and\n"
                    "seconds), write rates and how full the ring is.",
        epilog="examples:\n"
               "  cdp status --journal /var/lib/cdp/sdb\n"
               "  cdp status --json | jq .service.lag_seconds")
    add_journal_option(p)
    add_json_option(p)
    p.set_defaults(func=cmd_status)


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


# ------------------------------------------------------------------- points

def _register_points(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "points", help="list the rewind points (flushes, marks, ...)",
        description="List the moments the device can be restored to, oldest first: the\n"
                    "baseline, every completed cache flush (crash-consistent points), marks\n"
                    "(named points from the device or 'cdp mark'), overflow windows and their\n"
                    "resyncs. A point marked 'partial' lies where writes were dropped; restoring\n"
                    "it needs --allow-partial. Times are exact to the nanosecond, so any of them\n"
                    "can be pasted into 'cdp restore --at'.",
        time_help=True,
        epilog="examples:\n"
               "  cdp points --since -1h\n"
               "  cdp points --marks\n"
               "  cdp points --since 2026-03-01T09:00 --until 2026-03-01T10:00 --json")
    add_journal_option(p)
    p.add_argument("--since", metavar="TIME", help="only points at or after TIME")
    p.add_argument("--until", metavar="TIME", help="only points at or before TIME")
    p.add_argument("--marks", action="store_true", help="only marks (from the device and from 'cdp mark')")
    p.add_argument("--kind", action="append", choices=PointKindChoices(), metavar="KIND",
                   help="only points of this kind (repeatable): %(choices)s")
    p.add_argument("--limit", type=int, metavar="N", help="at most N points")
    p.add_argument("--newest-first", action="store_true", help="newest point first")
    add_json_option(p)
    p.set_defaults(func=cmd_points)


def cmd_points(args: argparse.Namespace) -> int:
    """Print the points in the asked-for window."""
    from journal.records import MARK_KINDS
    from journal.units import format_ts

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    kinds: set[str] | None = set(args.kind) if args.kind else None
    if args.marks:
        kinds = (kinds or set(MARK_KINDS)) & MARK_KINDS
        if not kinds:
            raise UsageError("--marks and --kind select nothing together")
    with open_journal(args) as journal:
        now = time.time_ns()
        since = parse_time_arg(args.since, journal, option="--since", now_ns=now) if args.since else None
        until = parse_time_arg(args.until, journal, option="--until", now_ns=now) if args.until else None
        if since is not None and until is not None and since > until:
            raise UsageError("--since is after --until")
        points = journal.points(kinds=kinds, start_ns=since, end_ns=until,
                                reverse=args.newest_first, limit=args.limit)
    if args.json:
        print_json([point_json(p) for p in points])
        return 0
    if not points:
        print("no points in that range", file=sys.stderr)
        return 0
    width = max(3, max(len(str(p.seq)) for p in points))
    out = [f"{'SEQ':>{width}}  {'TIME':<35}  {'KIND':<12}  NAME"]
    for p in points:
        name = p.name + ("" if p.whole else ("  " if p.name else "") + "(partial)")
        out.append(f"{p.seq:>{width}}  {format_ts(p.ts_ns):<35}  {kind_label(p.kind):<12}  {name}".rstrip())
    sys.stdout.write("\n".join(out) + "\n")
    return 0


# --------------------------------------------------------------------- mark

def _register_mark(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mark", help="name a moment, to restore to it later by name",
        description="Record a named rewind point at the present moment (or at --at TIME).\n"
                    "Restore to it with 'cdp restore --at mark:NAME'. Safe while 'cdp run'\n"
                    "is draining. A mark names a moment: restoring it gives every write made up\n"
                    "to then, including writes the service had not journaled yet when the mark\n"
                    "was made. (A mark sent through the device, as the kernel filter or the\n"
                    "simulator does, is instead ordered exactly among the writes.)",
        time_help=True,
        epilog="examples:\n"
               "  cdp mark before-upgrade\n"
               "  cdp mark nightly-check --at 2026-03-01T02:00:00Z\n"
               "  cdp mark after-migration --ring /dev/cdp/sdb     # through the attached filter\n"
               "  cdp mark app-consistent --ring sdb --freeze /srv  # with /srv's filesystem frozen")
    add_journal_option(p)
    p.add_argument("name", metavar="NAME", help="the mark's name (UTF-8, at most 255 bytes, no newline)")
    p.add_argument("--at", metavar="TIME", help="put the mark at TIME instead of now")
    p.add_argument("--ring", metavar="DEVICE",
                   help="send the mark through the attached filter's ring device (/dev/cdp/NAME): "
                        "it is then ordered exactly among the writes; no --journal needed")
    p.add_argument("--freeze", metavar="MOUNTPOINT",
                   help="freeze the filesystem mounted there (FIFREEZE) while the mark is taken, then "
                        "thaw it: the mark is an application-consistent point, a clean filesystem")
    add_json_option(p)
    p.set_defaults(func=cmd_mark)


def cmd_mark(args: argparse.Namespace) -> int:
    """Add a user mark by time, or a MARK record through the filter's ring device."""
    from journal.units import format_ts

    if args.freeze is not None and args.at is not None:
        raise UsageError("--freeze marks the present moment; it cannot be used with --at")
    if args.ring is not None:
        return _mark_through_ring(args)
    with open_journal(args, marks=True) as journal:
        ts = parse_time_arg(args.at, journal, option="--at") if args.at else None
        with _maybe_frozen(args.freeze):
            point = journal.add_mark(args.name, ts)
    if args.json:
        print_json(point_json(point))
    else:
        print(f"marked {point.name!r} at {format_ts(point.ts_ns)} (journal now at seq {point.seq})"
              + ("" if point.whole else "; the device is not whole there (writes were dropped)"))
    return 0


def _maybe_frozen(mountpoint: str | None) -> contextlib.AbstractContextManager[None]:
    """FIFREEZE/FITHAW around the mark when --freeze names a mount point."""
    if mountpoint is None:
        return contextlib.nullcontext()
    from cdp.freeze import frozen

    return frozen(mountpoint)


def _mark_through_ring(args: argparse.Namespace) -> int:
    """MARK via the kernel's ioctl: the filter stamps it between two writes."""
    from cdp import attach
    from journal.units import format_ts

    if args.at is not None:
        raise UsageError("--at cannot be used with --ring: the filter stamps the mark itself")
    ring = args.ring if "/" in args.ring else attach.ring_path(args.ring)
    try:
        mode = os.stat(ring).st_mode
    except OSError as exc:
        raise CdpError(f"cannot use ring {ring}: {exc.strerror} (is the filter attached?)") from None
    if not stat.S_ISCHR(mode):
        raise CdpError(f"{ring} is not a filter's ring device; a ring file's marks come from its producer")
    with _maybe_frozen(args.freeze):
        seq, ts = attach.mark(ring, args.name)
    if args.json:
        print_json({"ring": ring, "ring_seq": seq, "ts_ns": ts, "time": format_ts(ts), "name": args.name})
    else:
        print(f"marked {args.name!r} at {format_ts(ts)} through {ring} (ring seq {seq}); "
              "it is a rewind point once 'cdp run' has journaled it")
    return 0


# ------------------------------------------------------------------- verify

def _register_verify(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify", help="check every journaled record against its checksum",
        description="Read every segment record and check its CRC-32C, and check the index\n"
                    "against the segments. Exit status 0: the journal is sound; 1: damage was\n"
                    "found, each problem printed on its own line with its segment, byte offset\n"
                    "and seq. Safe while 'cdp run' appends.",
        epilog="examples:\n"
               "  cdp verify --journal /var/lib/cdp/sdb\n"
               "  cdp verify --json > report.json || echo damaged")
    add_journal_option(p)
    add_json_option(p)
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the journal; exit 1 when anything is wrong."""
    from cdp.progress import progress_bar
    from journal.units import NS, format_bytes, format_duration

    started = time.monotonic()
    with open_journal(args) as journal, progress_bar("verify") as progress:
        report = journal.verify(progress=progress)
    elapsed = time.monotonic() - started
    if args.json:
        print_json({"ok": report.ok, "records": report.records, "bytes": report.bytes,
                    "seconds": round(elapsed, 3),
                    "problems": [{"segment": p.segment, "offset": p.offset, "seq": p.seq,
                                  "message": p.message} for p in report.problems]})
    elif report.ok:
        print(f"ok: {report.records} records, {format_bytes(report.bytes)} checked in {format_duration(int(elapsed * NS))}")
    else:
        for problem in report.problems:
            print(str(problem))
        print(f"cdp: verify: {len(report.problems)} problem(s) in {report.records} records", file=sys.stderr)
    return 0 if report.ok else 1
