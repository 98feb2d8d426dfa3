"""`cdp mark`: name a moment, by time in the journal or through the filter's ring device.

A mark by time is one small index transaction, safe while `cdp run`
appends; a mark through the ring (``--ring``) is a MARK record the kernel
filter orders exactly among the writes (:func:`cdp.attach.mark`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat

from cdp.commands._common import add_json_option, add_verb, open_journal, parse_time_arg, point_json, print_json
from cdp.errors import CdpError, UsageError

ORDER = 13


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp mark`."""
    p = add_verb(
        subparsers, "mark", cmd_mark, help="name a moment, to restore to it later by name",
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
               "  cdp mark golden-image --keep-forever              # retention never drops it\n"
               "  cdp mark after-migration --ring /dev/cdp/sdb     # through the attached filter\n"
               "  cdp mark app-consistent --ring sdb --freeze /srv  # with /srv's filesystem frozen")
    p.add_argument("name", metavar="NAME", help="the mark's name (UTF-8, at most 255 bytes, no newline)")
    p.add_argument("--at", metavar="TIME", help="put the mark at TIME instead of now")
    p.add_argument("--ring", metavar="DEVICE",
                   help="send the mark through the attached filter's ring device (/dev/cdp/NAME): "
                        "it is then ordered exactly among the writes; no --journal needed")
    p.add_argument("--freeze", metavar="MOUNTPOINT",
                   help="freeze the filesystem mounted there (FIFREEZE) while the mark is taken, then "
                        "thaw it: the mark is an application-consistent point, a clean filesystem")
    p.add_argument("--keep-forever", action="store_true",
                   help="pin the mark: retention ('cdp retain') never drops it, however old it gets")
    add_json_option(p)


def cmd_mark(args: argparse.Namespace) -> int:
    """Add a user mark by time, or a MARK record through the filter's ring device."""
    from journal.units import format_ts

    if args.freeze is not None and args.at is not None:
        raise UsageError("--freeze marks the present moment; it cannot be used with --at")
    if args.ring is not None:
        if args.keep_forever:
            raise UsageError("--keep-forever pins a mark by time; it cannot be used with --ring")
        return _mark_through_ring(args)
    with open_journal(args, marks=True) as journal:
        ts = parse_time_arg(args.at, journal, option="--at") if args.at else None
        with _maybe_frozen(args.freeze):
            point = journal.pin_mark(args.name, ts) if args.keep_forever else journal.add_mark(args.name, ts)
    if args.json:
        print_json(point_json(point))
    else:
        print(f"marked {point.name!r} at {format_ts(point.ts_ns)} (journal now at seq {point.seq})"
              + ("; kept forever" if args.keep_forever else "")
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
