"""`cdp detach`: take the dm-cdp filter off a device (see :func:`cdp.attach.detach`)."""

from __future__ import annotations

import argparse
import sys

from cdp.commands._common import add_verb

ORDER = 31


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp detach`."""
    d = add_verb(
        subparsers, "detach", cmd_detach, journal=False, help="take the dm-cdp filter off a device",
        description="Remove /dev/mapper/NAME (a device cdp attach created), or, for a live\n"
                    "insertion, load the volume's original table back and remove NAME-real.\n"
                    "The drain service sees the ring detach, journals what is left and exits.",
        epilog="example:\n  cdp detach sdb")
    d.add_argument("name", metavar="NAME")


def cmd_detach(args: argparse.Namespace) -> int:
    """Remove the filter; the drain service finishes on its own."""
    from cdp import attach

    attach.detach(args.name)
    print(f"cdp: detach: {args.name} is no longer filtered", file=sys.stderr)
    return 0
