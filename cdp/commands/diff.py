"""`cdp diff`: the byte ranges that changed between two points, from the index alone.

No device data is read: the records between the two points name their
ranges (see :mod:`journal.changes`), so the answer costs what the history
between them costs, whatever the device's size. A rewrite of identical bytes
counts as a change; a range whose writes were dropped (an overflow window
between the points) is reported whole.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from cdp.commands._common import add_json_option, add_verb, open_journal, parse_time_arg, print_json

if TYPE_CHECKING:
    from cdp.extfiles import FileChange
    from journal import Journal
    from journal.changes import Changes

ORDER = 36


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp diff`."""
    p = add_verb(
        subparsers, "diff", cmd_diff, help="list the byte ranges that changed between two points",
        description="List the byte ranges of the device written between two points in time,\n"
                    "from the journal's index alone (no device data is read). Ranges are merged\n"
                    "and sorted; a rewrite of the same bytes counts as a change, and a range\n"
                    "whose writes were dropped (an overflow window between the points) is\n"
                    "reported whole. The order of --from and --to does not matter.",
        time_help=True,
        epilog="examples:\n"
               "  cdp diff --from mark:before-upgrade --to mark:after-upgrade\n"
               "  cdp diff --from -1h --to -5m --json")
    p.add_argument("--from", dest="from_", metavar="TIME", required=True, help="one point (see TIME above)")
    p.add_argument("--to", metavar="TIME", required=True, help="the other point")
    p.add_argument("--files", action="store_true",
                   help="ext2/3/4: name the files and directories those ranges belong to (restores both\n"
                        "points into temporary sparse images under $TMPDIR and reads them with debugfs)")
    add_json_option(p)


def cmd_diff(args: argparse.Namespace) -> int:
    """Resolve both points, list the ranges between them."""
    from cdp.commands.restore import describe_point
    from journal.changes import changed_between
    from journal.units import format_bytes

    with open_journal(args) as journal:
        a_ns = parse_time_arg(args.from_, journal, option="--from")
        b_ns = parse_time_arg(args.to, journal, option="--to")
        with journal.index.read() as txn:
            a_seq, _ = journal.target(txn, None, a_ns)
            b_seq, _ = journal.target(txn, None, b_ns)
        changes = changed_between(journal, a_seq, a_ns, b_seq, b_ns)
        points = [describe_point(journal, s) for s in (a_seq, b_seq)]
        whole = [journal.is_whole(a_seq, a_ns), journal.is_whole(b_seq, b_ns)]
        files = _files(journal, changes) if args.files else None
    if args.json:
        doc: dict[str, Any] = {
            "from": {**points[0], "whole": whole[0]}, "to": {**points[1], "whole": whole[1]},
            "ranges": [{"offset": o, "length": n} for o, n in changes.ranges],
            "bytes": changes.bytes, "records": changes.records, "overflow_windows": changes.windows}
        if files is not None:
            doc["files"] = [{"path": f.path, "inode": f.inode, "change": f.change} for f in files]
        print_json(doc)
    else:
        def name(p: dict[str, Any]) -> str:
            what = p["kind"] + (f" {p['name']!r}" if p["name"] else "")
            return f"seq {p['seq']} ({what}) of {p['time']}"

        print(f"{name(points[0])} -> {name(points[1])}: {len(changes.ranges)} range(s), "
              f"{format_bytes(changes.bytes)} changed by {changes.records} record(s)")
        if files is None:
            for offset, length in changes.ranges:
                print(f"{offset:>16} {length:>12}  ({format_bytes(length)})")
        else:
            mark = {"modified": "M", "added": "+", "deleted": "-"}
            for f in files:
                print(f"{mark[f.change]} {f.path}")
    if changes.windows:
        print(f"cdp: diff: warning: writes were dropped between these points; "
              f"{changes.windows} overflow range(s) reported whole", file=sys.stderr)
    if not all(whole):
        print("cdp: diff: warning: a point lies inside an overflow window; the device there is not "
              "exactly known", file=sys.stderr)
    return 0


def _files(journal: Journal, changes: Changes) -> list[FileChange]:
    """Restore both points into sparse temporary images and ask debugfs (see :mod:`cdp.extfiles`)."""
    from cdp.extfiles import files_between

    return files_between(journal, changes)
