"""`cdp compact`: apply the retention policy now."""

from __future__ import annotations

import argparse
import sys
import time

from cdp.commands._common import add_json_option, add_verb, existing_journal_path, print_json
from cdp.errors import CdpError

ORDER = 16
#: How long a running service has to take the request up (it looks every second).
TAKE_SECONDS = 5.0
#: How long to wait for its answer once it has.
WAIT_SECONDS = 600.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp compact`."""
    p = add_verb(
        subparsers, "compact", cmd_compact, help="apply the retention policy now, giving space back",
        description="Fold the history the retention policy ('cdp retain') no longer keeps\n"
                    "into the base, thin the older points, move what is still live out of\n"
                    "mostly-dead segments and delete the segments nothing uses. Every kept\n"
                    "point restores exactly as before. Safe to interrupt (kill -9 included):\n"
                    "the journal stays exact and the next compaction finishes the job.\n\n"
                    "While 'cdp run' holds the journal, the service does the work (it also\n"
                    "does it by itself every minute): this asks it to and waits for its answer.",
        epilog="examples:\n"
               "  cdp compact --journal /var/lib/cdp/sdb\n"
               "  cdp compact --json | jq .bytes_freed")
    p.add_argument("--no-wait", action="store_true",
                   help="while the service runs: ask it to compact and return at once")
    add_json_option(p)


def cmd_compact(args: argparse.Namespace) -> int:
    """Compact here when the journal is free, else ask the running service."""
    from journal import Journal
    from journal.errors import JournalBusy

    path = existing_journal_path(args)
    try:
        journal = Journal.open(path)
    except JournalBusy:
        return _ask_service(args, path)
    from journal.maintain import compact_now

    with journal:
        stages: list[str] = []

        def on_step(stage: str) -> None:
            if not args.json and sys.stderr.isatty() and stage not in stages:
                stages.append(stage)
                print(f"compact: {stage}...", file=sys.stderr, flush=True)

        result, why = compact_now(journal, on_step=on_step)
    _report(args, None if result is None else result.describe(), why)
    return 0


def _ask_service(args: argparse.Namespace, path: object) -> int:
    """Leave a request in the journal for the drain service, and wait for its answer."""
    from journal import Journal
    from journal.maintain import ANSWER_META, REQUEST_META, TAKEN_META

    request = time.time_ns()
    with Journal.open(path, readonly=True, marks=True) as journal:  # type: ignore[arg-type]
        index = journal.index
        if index.readonly:
            raise CdpError(f"{path} is read-only here: the service cannot be asked to compact")
        index.write(lambda txn: index.put_meta(txn, REQUEST_META, request))
        if args.no_wait:
            if not args.json:
                print("the drain service holds the journal: it was asked to compact and will within a second")
            else:
                print_json({"requested_ns": request})
            return 0
        started = time.monotonic()
        taken = False
        while True:
            with index.read() as txn:
                answer = index.get_meta(txn, ANSWER_META) or {}
                taken = taken or index.get_meta(txn, TAKEN_META) == request
            if answer.get("request_ns") == request:
                _report(args, answer.get("result"), "policy")
                return 0
            waited = time.monotonic() - started
            if not taken and waited > TAKE_SECONDS:
                raise CdpError(f"another process holds {path} and did not take the request up within "
                               f"{TAKE_SECONDS:.0f}s (a 'cdp run' older than retention, a reindex, or stuck): "
                               "stop it and run 'cdp compact' again")
            if waited > WAIT_SECONDS:
                raise CdpError(f"the drain service took the request up but did not answer within "
                               f"{WAIT_SECONDS:.0f}s (is 'cdp run' stuck?)")
            time.sleep(0.2)


def _report(args: argparse.Namespace, result: dict | None, why: str) -> None:
    from journal.units import format_bytes, format_ts

    if args.json:
        print_json({"compacted": result is not None, **(result or {}), "reason": why})
        return
    if result is None:
        print("nothing to fold: the retention policy keeps all the journal holds "
              "(see 'cdp retain')")
        return
    print(f"compacted: the oldest point is now {format_ts(result['horizon_ts_ns'])} (seq "
          f"{result['horizon_seq']}), {result['kept_points']} points kept up to seq {result['fold_seq']}; "
          f"{result['segments_deleted']} segments deleted, {format_bytes(result['bytes_freed'])} freed, "
          f"{format_bytes(result['bytes_moved'])} moved, in {result['seconds']:.1f}s")
    if why != "policy":
        print(f"note: {why}")
