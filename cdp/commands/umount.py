"""`cdp umount`: undo `cdp mount` (unmount, disconnect the nbd device, stop the export)."""

from __future__ import annotations

import argparse

from cdp.commands._common import add_verb

ORDER = 35


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp umount`."""
    p = add_verb(subparsers, "umount", cmd_umount, journal=False, help="undo 'cdp mount'",
                 description="Unmount, disconnect the nbd device and stop the export\n"
                             "that 'cdp mount' set up for MOUNTPOINT.")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")


def cmd_umount(args: argparse.Namespace) -> int:
    """Undo every step `cdp mount` took for the mount point."""
    from pathlib import Path

    from cdp import mount

    state = mount.umount(Path(args.mountpoint))
    print(f"unmounted {state.mountpoint}; {state.device} disconnected, export stopped")
    return 0
