"""`cdp export`: serve the device as it was at TIME over NBD, at once, whatever its size.

Nothing is copied: nbdkit answers each read from the journal's index and
segments (see :mod:`cdp.export` and :mod:`journal.pointview`), so the first
byte is there in well under a second where a restore takes minutes. The
journal is opened read-only and never written; `cdp run` keeps draining
into it meanwhile, and the export keeps serving its point.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

from cdp.commands._common import add_verb, existing_journal_path, parse_time_arg
from cdp.errors import CdpError, UsageError

ORDER = 33


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp export`."""
    p = add_verb(
        subparsers, "export", cmd_export, help="serve the device as it was at TIME as an NBD block device",
        description="Serve the whole device as it was at TIME over NBD (the network block device\n"
                    "protocol), straight from the journal: no restore first. Prints the NBD URI on\n"
                    "stdout as soon as the server accepts connections, then serves until SIGINT or\n"
                    "SIGTERM. Read-only unless --writable, which keeps every write in a temporary\n"
                    "overlay discarded at exit (a test failover: fsck it, boot it); the journal is\n"
                    "never written. Clients: nbdcopy, nbdinfo, qemu, nbd-client, libnbd.\n"
                    "A TIME inside an overflow window (writes were dropped) is refused unless\n"
                    "--allow-partial is given.",
        time_help=True,
        epilog="examples:\n"
               "  cdp export --at mark:before-upgrade --unix /run/cdp-before.sock\n"
               "  cdp export --at -5m --listen 127.0.0.1:10809 --writable\n"
               "  nbdcopy nbd+unix:///?socket=/run/cdp-before.sock before.img")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", metavar="TIME", help="the moment to serve (see TIME above)")
    when.add_argument("--seq", type=int, metavar="N", help="serve the device as of journal record N")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--unix", metavar="PATH", help="listen on this unix socket (default: a new one in $TMPDIR)")
    where.add_argument("--listen", metavar="ADDR:PORT", help="listen on TCP (port 0: any free port)")
    p.add_argument("--writable", action="store_true",
                   help="accept writes into a temporary copy-on-write overlay, discarded at exit")
    p.add_argument("--allow-partial", action="store_true",
                   help="serve a point inside an overflow window (its content is not exact)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line (uri, point, size) instead of the bare URI")


def cmd_export(args: argparse.Namespace) -> int:
    """Resolve the point, start the server, print the URI, serve until told to stop."""
    from pathlib import Path

    from cdp.commands.restore import describe_point
    from cdp.export import ExportServer, Listen

    if args.seq is not None and args.seq < 0:
        raise UsageError("--seq must be 0 or more")
    listen = None
    if args.unix is not None:
        listen = Listen(unix=Path(args.unix))
    elif args.listen is not None:
        listen = Listen.parse_tcp(args.listen)
    from journal.pointview import open_readonly

    with open_readonly(existing_journal_path(args)) as journal:
        at_ns = parse_time_arg(args.at, journal, option="--at") if args.at is not None else None
        with journal.index.read() as txn:
            seq, ts = journal.target(txn, args.seq, at_ns)
        whole = journal.is_whole(seq, ts)
        if not whole and not args.allow_partial:
            journal.check_whole(seq, ts)
        point = describe_point(journal, seq)
        path = journal.path
        size = journal.info.device_bytes
    server = ExportServer(path, seq, listen, writable=args.writable)
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        signals.append(signum)
        stop.set()

    # SIGHUP too: a closed terminal stops the export cleanly (socket and overlay removed)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    started = time.monotonic()
    try:
        uri = server.start()
        _announce(args, uri, point, whole, size)
        code = server.wait(stop)
        if code is not None and not stop.is_set():
            raise CdpError(f"nbdkit exited with status {code}: {server.failure()}")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    why = signal.Signals(signals[0]).name if signals else "a signal"
    from journal.units import format_duration

    elapsed_ns = int((time.monotonic() - started) * 1e9)
    print(f"cdp: export: stopped by {why} after {format_duration(elapsed_ns)}", file=sys.stderr)
    return 0


def _announce(args: argparse.Namespace, uri: str, point: dict[str, Any], whole: bool, size: int) -> None:
    """The URI on stdout (a JSON line with --json), what is served on stderr."""
    from journal.units import format_bytes

    if args.json:
        doc = {"uri": uri, **point, "whole": whole, "writable": bool(args.writable), "size": size}
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        sys.stdout.write(uri + "\n")
    sys.stdout.flush()
    what = point["kind"] + (f" {point['name']!r}" if point["name"] else "")
    mode = "writable overlay, discarded at exit" if args.writable else "read-only"
    partial = "" if whole else " [partial: writes were dropped then]"
    sys.stderr.write(f"cdp: export: serving seq {point['seq']} ({what}) of {point['time']}{partial}, "
                     f"{format_bytes(size)}, {mode}; stop with Ctrl-C or SIGTERM\n")
    sys.stderr.flush()
