"""`cdp demo`: see cdp work end to end on a simulated device (see :mod:`cdp.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cdp.errors import UsageError

ORDER = 90


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp demo`."""
    p = subparsers.add_parser(
        "demo", help="run the whole system on a simulated device, in seconds",
        description="Make a simulated 64 MiB device, create its journal, start 'cdp run' in\n"
                    "another process, and run a workload of a few thousand writes, flushes and\n"
                    "three named marks on it for a few seconds. Then restore the device at each\n"
                    "mark, check every restore against the sha256 the device had at that\n"
                    "moment, and print the rewind points with the commands to browse and\n"
                    "restore them yourself. Needs no kernel module and no root.\n"
                    "Exit status 0: every restore matched.",
        epilog="examples:\n"
               "  cdp demo\n"
               "  cdp demo --dir ./cdp-demo --seconds 10")
    p.add_argument("--dir", metavar="DIR", type=Path, default=None,
                   help="where to put the device, ring and journal (absent or empty; "
                        "default: a new directory under $TMPDIR)")
    p.add_argument("--seconds", metavar="N", type=float, default=5.0,
                   help="how long the workload runs (default: 5)")
    p.add_argument("--keep", action="store_true",
                   help="also keep the ring file and the service's log (the device image and the "
                        "journal are always kept, for the printed commands)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    if not 0.5 <= args.seconds <= 600:
        raise UsageError("--seconds must be between 0.5 and 600")
    from cdp.demo import run_demo

    return run_demo(args.dir, seconds=args.seconds, keep=args.keep)
