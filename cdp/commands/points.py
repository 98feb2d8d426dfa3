"""`cdp points`: list the rewind points, oldest first (or newest first)."""

from __future__ import annotations

import argparse
import sys
import time

from cdp.commands._common import (
    PointKindChoices,
    add_json_option,
    add_verb,
    kind_label,
    open_journal,
    parse_time_arg,
    point_json,
    print_json,
)
from cdp.errors import UsageError

ORDER = 12


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp points`."""
    p = add_verb(
        subparsers, "points", cmd_points, help="list the rewind points (flushes, marks, ...)",
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
    p.add_argument("--since", metavar="TIME", help="only points at or after TIME")
    p.add_argument("--until", metavar="TIME", help="only points at or before TIME")
    p.add_argument("--marks", action="store_true", help="only marks (from the device and from 'cdp mark')")
    p.add_argument("--kind", action="append", choices=PointKindChoices(), metavar="KIND",
                   help="only points of this kind (repeatable): %(choices)s")
    p.add_argument("--limit", type=int, metavar="N", help="at most N points")
    p.add_argument("--newest-first", action="store_true", help="newest point first")
    add_json_option(p)


def cmd_points(args: argparse.Namespace) -> int:
    """Print the points in the asked-for window."""
    from journal.records import MARK_KINDS
    from journal.units import format_ts, printable

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    kinds: set[str] | None = set(args.kind) if args.kind else None
    if args.marks:
        kinds = (kinds or set(MARK_KINDS)) & MARK_KINDS
        if not kinds:
            raise UsageError("--marks and --kind select nothing together")
    with open_journal(args) as journal:
        journal.index.check_tree()  # a damaged page is one line here, not an LMDB assertion
        now = time.time_ns()
        since = parse_time_arg(args.since, journal, option="--since", now_ns=now) if args.since else None
        until = parse_time_arg(args.until, journal, option="--until", now_ns=now) if args.until else None
        if since is not None and until is not None and since > until:
            raise UsageError("--since is after --until")
        points = journal.points(kinds=kinds, start_ns=since, end_ns=until,
                                reverse=args.newest_first, limit=args.limit)
        with journal.index.read() as txn:
            from journal.points import retained

            sel = retained(journal.index, txn)
    if args.json:
        print_json([point_json(p) for p in points])
        return 0
    if not points:
        print("no points in that range", file=sys.stderr)
        return 0
    width = max(3, max(len(str(p.seq)) for p in points))
    out = [f"{'SEQ':>{width}}  {'TIME':<35}  {'KIND':<12}  NAME"]
    for p in points:
        name = printable(p.name) + ("" if p.whole else ("  " if p.name else "") + "(partial)")
        out.append(f"{p.seq:>{width}}  {format_ts(p.ts_ns):<35}  {kind_label(p.kind):<12}  {name}".rstrip())
    sys.stdout.write("\n".join(out) + "\n")
    if sel is not None:
        print(f"retention: nothing before {format_ts(sel.horizon_ts)} is kept but pinned marks; older "
              "points were thinned ('cdp retain' shows the policy)", file=sys.stderr)
    return 0
