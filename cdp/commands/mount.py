"""`cdp mount`: a rewind point as a read-only filesystem, through the kernel's nbd driver.

The work is in :mod:`cdp.mount` (`cdp umount` undoes it); this module
parses and reports. Without the nbd module it says so in one line: use
`cdp export` with a userspace NBD client then.
"""

from __future__ import annotations

import argparse

from cdp.commands._common import add_verb, open_journal, parse_time_arg
from cdp.errors import UsageError

ORDER = 34


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp mount`."""
    p = add_verb(
        subparsers, "mount", cmd_mount, help="mount the device as it was at TIME, read-only (needs the nbd module)",
        description="Export the device as it was at TIME (as 'cdp export' does), connect it to a\n"
                    "free /dev/nbdN with nbd-client and mount its filesystem read-only, with the\n"
                    "options that never replay a filesystem journal (ext4 noload, xfs\n"
                    "norecovery). 'cdp umount MOUNTPOINT' undoes all of it. Needs root, the\n"
                    "kernel's nbd module and nbd-client.",
        time_help=True,
        epilog="examples:\n"
               "  cdp mount --at mark:before-upgrade /mnt/before\n"
               "  cdp umount /mnt/before")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", metavar="TIME", help="the moment to mount (see TIME above)")
    when.add_argument("--seq", type=int, metavar="N", help="mount the device as of journal record N")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory")
    p.add_argument("--fs-options", metavar="OPTS", help="more mount options, comma-separated")
    p.add_argument("--allow-partial", action="store_true",
                   help="mount a point inside an overflow window (its content is not exact)")


def cmd_mount(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cdp import mount

    mount.check_nbd_support()  # before anything else: the commonest failure, said plainly
    if args.seq is not None and args.seq < 0:
        raise UsageError("--seq must be 0 or more")
    with open_journal(args) as journal:
        at_ns = parse_time_arg(args.at, journal, option="--at") if args.at is not None else None
        with journal.index.read() as txn:
            seq, ts = journal.target(txn, args.seq, at_ns)
        if not args.allow_partial:
            journal.check_whole(seq, ts)
        path = journal.path
    state = mount.mount(path, seq, Path(args.mountpoint), fs_options=args.fs_options,
                        allow_partial=args.allow_partial)
    print(f"mounted seq {state.seq} ({state.fstype}, read-only) on {state.mountpoint} via {state.device}")
    return 0

