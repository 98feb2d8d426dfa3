"""`cdp restore`: rebuild the device as it was at a TIME, into a file or onto a device.

The dangerous part of a restore is the target. :mod:`journal.target` says
what it is and what uses it (the TUI asks the same); the policy is here: an
existing file or any block device is overwritten only with --force, and a
block device that is mounted, used as swap, held by another device
(device-mapper, md, ...) or opened exclusively is named as such before
anything is written. The journal does the writing (sparse for files).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdp.commands._common import (
    add_json_option,
    add_verb,
    open_journal,
    parse_time_arg,
    print_json,
)
from cdp.errors import CdpError, UsageError

if TYPE_CHECKING:
    from journal import Journal

ORDER = 32


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp restore`."""
    p = add_verb(
        subparsers, "restore", cmd_restore, help="write the device as it was at TIME to a file or device",
        description="Rebuild the whole device as it was at TIME: the baseline plus every write\n"
                    "journaled at or before TIME. The target is a new file (written sparse:\n"
                    "zero blocks stay holes) or, with --force, an existing file or a block\n"
                    "device. The point TIME resolved to (its seq, time and kind) is printed.\n"
                    "A TIME inside an overflow window (writes were dropped) is refused unless\n"
                    "--allow-partial is given.",
        time_help=True,
        epilog="examples:\n"
               "  cdp restore --at -5m --to /tmp/5-minutes-ago.img\n"
               "  cdp restore --at mark:before-upgrade --to /tmp/before.img\n"
               "  cdp restore --at 2026-03-01T14:05:09.5+01:00 --to /dev/sdc --force\n"
               "  cdp restore --seq 123456 --to out.img --json")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", metavar="TIME", help="the moment to restore (see TIME above)")
    when.add_argument("--seq", type=int, metavar="N", help="restore as of journal record N exactly")
    p.add_argument("--to", metavar="PATH", required=True, help="the file or block device to write")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing file or a block device, even one in use")
    p.add_argument("--allow-partial", action="store_true",
                   help="restore a point inside an overflow window (its content is not exact)")
    add_json_option(p)


def cmd_restore(args: argparse.Namespace) -> int:
    """Check the target, restore, and say which point was restored."""
    from cdp.progress import progress_bar
    from journal.units import NS, format_bytes, format_duration, format_ts

    target = Path(args.to)
    if args.seq is not None and args.seq < 0:
        raise UsageError("--seq must be 0 or more")
    from journal.timespec import mark_position

    with open_journal(args) as journal:
        at_ns = parse_time_arg(args.at, journal, option="--at") if args.at is not None else None
        seq = args.seq
        position = mark_position(journal, args.at)
        if position is not None:  # a MARK record: the state right after it in seq order
            seq, at_ns = position.seq, None
        overwrite = check_target(target, journal.path, force=args.force)
        started = time.monotonic()
        try:
            with progress_bar(f"restore to {target}") as progress:
                result = journal.restore(target, seq=seq, at_ns=at_ns, progress=progress,
                                         allow_partial=args.allow_partial, overwrite=overwrite)
        except OSError as exc:
            if exc.filename is not None:
                raise
            raise CdpError(f"cannot write {target}: {exc.strerror or exc}") from None
        elapsed = time.monotonic() - started
        point = describe_point(journal, result.seq)
    mark = _mark_name(args.at)
    doc = {**point, "requested": None if at_ns is None else {"ts_ns": at_ns, "time": format_ts(at_ns)},
           "mark": mark, "whole": result.whole, "bytes": result.bytes_written,
           "target": result.target, "seconds": round(elapsed, 3), "notes": list(result.notes)}
    if args.json:
        print_json(doc)
    else:
        what = point["kind"] + (f" {point['name']!r}" if point["name"] else "")
        line = f"seq {point['seq']} ({what}) of {point['time']}"
        if mark and at_ns is None:
            line += f" is the mark {mark!r} itself: the state right after it in the order of writes"
        elif at_ns is not None:
            asked = f"mark {mark!r} ({format_ts(at_ns)})" if mark else format_ts(at_ns)
            line += f" is the last record at or before {asked}"
        print(line + (" [whole]" if result.whole else " [partial: writes were dropped then]"))
        print(f"restored it to {target}: {format_bytes(result.bytes_written)} in {format_duration(int(elapsed * NS))}")
    for note in result.notes:
        print(f"cdp: restore: note: {note}", file=sys.stderr)
    if not result.whole:
        print("cdp: restore: warning: writes were dropped around that time; the result is not exact",
              file=sys.stderr)
    return 0


def _mark_name(at: str | None) -> str | None:
    return at.strip()[5:] if at is not None and at.strip().startswith("mark:") else None


def describe_point(journal: Journal, seq: int) -> dict[str, Any]:
    """Seq, time, kind and name of the record a restore ended at.

    The kind is the point's (flush, mark, ...) when the record is one, and
    the record type's (write, discard, ...) otherwise.
    """
    from journal import RecordType
    from journal.records import PointKind
    from journal.units import format_ts

    if seq == 0:
        ts, kind, name = journal.info.created_ns, PointKind.BASELINE.value, ""
    else:
        info = next(iter(journal.records(seq, seq)), None)
        if info is None:
            raise CdpError(f"record seq {seq} is missing from the index; run 'cdp verify'")
        ts = info.ts_ns
        try:
            kind, name = RecordType(info.type).name.lower().replace("_", "-"), ""
        except ValueError:
            kind, name = f"type-{info.type}", ""
        for p in journal.points(start_ns=ts, end_ns=ts):
            if p.seq == seq and p.kind != PointKind.USER_MARK:
                kind, name = str(p.kind), p.name
    return {"seq": seq, "ts_ns": ts, "time": format_ts(ts), "kind": kind, "name": name}


def check_target(target: Path, journal_dir: Path, *, force: bool) -> bool:
    """Refuse a target that would lose data without --force; return whether it exists.

    A new file is always fine. An existing regular file, or any block device,
    needs --force; a block device in use is named with what uses it. The
    facts come from :func:`journal.target.inspect_target`, as in the TUI.
    """
    from journal.target import inspect_target

    found = inspect_target(target, journal_dir)
    if found.problem:
        raise CdpError(found.problem)
    if found.is_device:
        if found.users and not force:
            raise CdpError(f"{found.in_use}; use --force")
        if not force:
            raise CdpError(f"{target} is a block device and would be overwritten entirely; use --force")
        return True
    if not found.exists:
        return False
    if not force:
        raise CdpError(f"{target} exists; use --force to overwrite it")
    if not found.writable:
        raise CdpError(f"{target} is not writable")
    return True
