"""`cdp verify`: check every journaled record against its CRC-32C, and the index against the segments."""

from __future__ import annotations

import argparse
import sys
import time

from cdp.commands._common import add_json_option, add_verb, open_journal, print_json

ORDER = 14


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp verify`."""
    p = add_verb(
        subparsers, "verify", cmd_verify, help="check every journaled record against its checksum",
        description="Read every segment record and check its CRC-32C, and check the index\n"
                    "against the segments (the block-map checkpoint restores read included).\n"
                    "Exit status 0: the journal is sound; 1: damage was\n"
                    "found, each problem printed on its own line with its segment, byte offset\n"
                    "and seq. Safe while 'cdp run' appends.",
        epilog="examples:\n"
               "  cdp verify --journal /var/lib/cdp/sdb\n"
               "  cdp verify --json > report.json || echo damaged")
    add_json_option(p)


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
