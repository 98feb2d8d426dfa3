"""`cdp reindex`: rebuild a journal's index from its segments.

Turns the arguments into one call of :func:`journal.reindex.reindex` and
its result into a line (or JSON). The segments are the truth: a damaged,
truncated or lost index costs the time of this command, never history.
"""

from __future__ import annotations

import argparse
import time

from cdp.commands._common import add_json_option, add_verb, existing_journal_path, print_json

ORDER = 75


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp reindex`."""
    p = add_verb(
        subparsers, "reindex", cmd_reindex, help="rebuild the index from the segments (after 'cdp verify' finds it damaged)",
        description="Rebuild the journal's LMDB index from its segment files, the marker file and\n"
                    "the user marks log, beside the old one, and swap it in once complete. Use it\n"
                    "when 'cdp verify' or a restore reports the index damaged, or to bring a\n"
                    "journal of an older schema to this one. The drain service must be stopped.\n"
                    "A damaged segment record stops it with the old index untouched.",
        epilog="example:\n  systemctl stop cdp@sdb; cdp reindex --journal /var/lib/cdp/sdb; systemctl start cdp@sdb")
    add_json_option(p)


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild the index and say what it holds."""
    from cdp.progress import progress_bar
    from journal.reindex import reindex
    from journal.units import NS, format_bytes, format_duration

    path = existing_journal_path(args)
    started = time.monotonic()
    with progress_bar("reindex") as progress:
        result = reindex(path, progress)
    elapsed = time.monotonic() - started
    if args.json:
        print_json({"records": result.records, "last_seq": result.last_seq, "segments": result.segments,
                    "marks": result.marks, "bytes": result.bytes_scanned, "kept_cursor": result.kept_cursor,
                    "seconds": round(elapsed, 3)})
    else:
        print(f"reindexed: {result.records} records up to seq {result.last_seq} in {result.segments} "
              f"segment(s), {result.marks} user mark(s), {format_bytes(result.bytes_scanned)} read in "
              f"{format_duration(int(elapsed * NS))}")
        if not result.kept_cursor:
            print("note: the drain service's resume point was lost with the old index; its next run "
                  "resyncs the device from the ring's start")
    return 0
