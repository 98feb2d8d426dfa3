"""`cdp attach`: put the dm-cdp filter on a device and start its journal.

Two ways in, one ring: a device-mapper device gets the ``cdp`` target
inserted live (:mod:`cdp.attach`: dmsetup tables), any other block device
the in-place filter (:mod:`cdp.filter`: the module's control device), so
the user keeps writing to the same node either way; ``--via`` forces one
(``--via dm`` on a plain device creates ``/dev/mapper/NAME`` as before the
filter existed). This verb adds the journal: attach inserts the filter
first and copies the baseline second, so a write that races the copy is also
in the ring and is applied after it.
"""

from __future__ import annotations

import argparse
import os
import sys

from cdp.commands._common import add_verb, journal_path
from cdp.errors import CdpError, UsageError

ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp attach`."""
    p = add_verb(
        subparsers, "attach", cmd_attach, help="put the dm-cdp filter on a block device and start its journal",
        description="Put the dm-cdp kernel filter on DEVICE and create the journal with the\n"
                    "device's present content as the baseline. A device-mapper device (an LVM\n"
                    "volume) gets the cdp target inserted live under its own name (its table\n"
                    "moves to NAME-real); any other block device gets the in-place filter: no\n"
                    "new device, keep writing to DEVICE. Mounted filesystems keep running either\n"
                    "way. --via dm on a plain device creates /dev/mapper/NAME to write through\n"
                    "instead. Then run the drain service:\n"
                    "--run here, or 'systemctl start cdp@NAME' (kernel/systemd/cdp@.service).\n"
                    "Needs root and the dm-cdp module (make -C kernel install, or dkms).",
        epilog="examples:\n"
               "  cdp attach /dev/sdb --name sdb --journal /var/lib/cdp/sdb\n"
               "  cdp attach /dev/vg0/data --journal /var/lib/cdp/data --run   # live, under vg0-data\n"
               "  cdp attach /dev/sdb --via dm --name sdb --journal /var/lib/cdp/sdb   # /dev/mapper/sdb")
    p.add_argument("device", metavar="DEVICE", help="the block device to protect")
    p.add_argument("--name", "-n", metavar="NAME", default=None,
                   help="dm and ring name (default: the dm name of a dm DEVICE, else its basename)")
    p.add_argument("--ring-mb", type=int, default=16, metavar="N", help="ring size in MiB, a power of two (16)")
    p.add_argument("--policy", choices=("block", "overflow"), default="block",
                   help="full ring: wait up to --wait-ms then drop (block), or drop at once (overflow)")
    p.add_argument("--wait-ms", type=int, default=1000, metavar="MS", help="longest wait for room (1000)")
    p.add_argument("--via", choices=WAYS, default=None,
                   help="force the way in: dm (the cdp target) or filter (in place); default: dm for a "
                        "device-mapper device, filter otherwise")
    p.add_argument("--run", action="store_true", help="drain in the foreground until detached")


WAYS = ("dm", "filter")


def choose_way(dm_name: str | None, via: str | None) -> str:
    """The way in: ``via`` when given, else dm for a device-mapper device (``dm_name``), else the filter."""
    if via is not None:
        if via not in WAYS:
            raise UsageError(f"--via must be one of {', '.join(WAYS)}")
        return via
    return "dm" if dm_name is not None else "filter"


def default_name(device: str, dm_name: str | None, name: str | None) -> str:
    """The ring's name: --name, else the dm name of a dm device, else the device's basename."""
    if name is not None:
        return name
    return dm_name or os.path.basename(device.rstrip("/"))


def _options(args: argparse.Namespace) -> list[str]:
    if args.ring_mb < 1 or args.ring_mb > 1024 or args.ring_mb & (args.ring_mb - 1):
        raise UsageError("--ring-mb must be a power of two from 1 to 1024")
    if not 0 <= args.wait_ms <= 60000:
        raise UsageError("--wait-ms must be between 0 and 60000")
    return [f"ring_mb={args.ring_mb}", f"policy={args.policy}", f"wait_ms={args.wait_ms}"]


def cmd_attach(args: argparse.Namespace) -> int:
    """Filter first, baseline second, then (with --run) drain until detached."""
    from cdp import attach

    jpath = journal_path(args)
    if jpath.exists():
        raise CdpError(f"{jpath} already exists; give a new --journal directory")
    from journal.identity import device_id

    try:
        did = device_id(args.device)
    except (OSError, ValueError) as exc:
        raise CdpError(f"cannot use {args.device}: {getattr(exc, 'strerror', None) or exc}") from None
    # the ring names the device it protects: 'cdp run' refuses a ring of another
    options = [*_options(args), f"device_id={did.hex()}"]
    dm_name = attach.dm_name_of(args.device)
    way = choose_way(dm_name, args.via)
    name = default_name(args.device, dm_name, args.name)
    attach.check_name(name)
    if way == "filter":
        from cdp import filter as cdpfilter

        if not os.path.exists(args.device):
            raise CdpError(f"{args.device} does not exist")
        cdpfilter.attach(args.device, name, options)
        path = args.device
        try:
            cdpfilter.flush_device_cache(path)   # the baseline is read from the device in use
        except CdpError:
            cdpfilter.detach(name)
            raise
        how = f"filter attached in place on {path} (keep writing to it; ring {attach.ring_path(name)})"
    elif dm_name is not None:
        if args.name not in (None, dm_name):
            raise UsageError(f"{args.device} is the dm device {dm_name}: a live insertion keeps that name")
        path = attach.attach_live(name, options=options)
        how = f"dm target inserted live under {path} (original table now in {name}-real)"
    else:
        path = attach.attach_new(args.device, name, options=options)
        how = f"dm target: created {path}: write through it"
    try:
        from journal import Journal
        from journal.errors import JournalError
        from journal.units import format_bytes
        nbytes = attach.device_bytes(path)
        block = attach.info(name).block_size or 512
        try:
            Journal.create(jpath, device_bytes=nbytes, block_size=block, device_id=did, source=path).close()
        except JournalError as exc:
            raise CdpError(str(exc)) from None
    except BaseException:
        _undo(way, name)
        raise
    print(f"cdp: attach: {how}; journal {jpath} holds the baseline ({format_bytes(nbytes)})", file=sys.stderr)
    run = f"cdp run --journal {jpath} --ring {attach.ring_path(name)} --device {path} --until-detached"
    if not args.run:
        print(f"cdp: attach: now start the drain service: systemctl start cdp@{name}  (or: {run})",
              file=sys.stderr)
        return 0
    from cdp.commands.run import run_service

    return run_service(jpath, attach.ring_path(name), device=path, until_detached=True)



def _undo(way: str, name: str) -> None:
    """Take the filter off again after a failed journal creation."""
    if way == "filter":
        from cdp import filter as cdpfilter

        cdpfilter.detach(name)
    else:
        from cdp import attach

        attach.detach(name)
