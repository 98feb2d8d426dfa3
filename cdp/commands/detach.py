"""`cdp detach`: take the dm-cdp filter off a device, whichever way it went in.

The in-place filter (:func:`cdp.filter.detach`) is asked first, by the ring's
name; without one, the dm target (:func:`cdp.attach.detach`).
"""

from __future__ import annotations

import argparse
import sys

from cdp.commands._common import add_verb

ORDER = 31


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp detach`."""
    d = add_verb(
        subparsers, "detach", cmd_detach, journal=False, help="take the dm-cdp filter off a device",
        description="Take the in-place filter of ring NAME off its device; or remove\n"
                    "/dev/mapper/NAME (a device cdp attach --via dm created); or, for a live\n"
                    "insertion, load the volume's original table back and remove NAME-real.\n"
                    "The drain service sees the ring detach, journals what is left and exits.",
        epilog="example:\n  cdp detach sdb")
    d.add_argument("name", metavar="NAME")


def cmd_detach(args: argparse.Namespace) -> int:
    """Remove the filter; the drain service finishes on its own."""
    from cdp import attach
    from cdp import filter as cdpfilter

    attach.check_name(args.name)
    if cdpfilter.status(name=args.name) is not None:
        cdpfilter.detach(args.name)
        how = "in-place filter"
    else:
        attach.detach(args.name)
        how = "dm target"
    print(f"cdp: detach: {args.name} is no longer filtered ({how} removed)", file=sys.stderr)
    return 0
