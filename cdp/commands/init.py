"""`cdp init`: create a journal for a device and copy its baseline."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time

from cdp.commands._common import (
    add_compress_option,
    add_json_option,
    add_verb,
    compression_of,
    journal_path,
    print_json,
)
from cdp.errors import CdpError

ORDER = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp init`."""
    p = add_verb(
        subparsers, "init", cmd_init, help="create a journal for a device and copy its baseline",
        description="Create a journal for a device (or an image file) and copy the device's\n"
                    "present content into it as the baseline: the state every later write is\n"
                    "applied to. Zero blocks are not stored. Run it before the first 'cdp run',\n"
                    "while the device is quiet (or before the filter is attached).",
        epilog="examples:\n"
               "  cdp init --journal /var/lib/cdp/sdb --device /dev/sdb\n"
               "  CDP_JOURNAL=./j cdp init --device disk.img --json")
    p.add_argument("--device", "-d", metavar="PATH", required=True,
                   help="the block device or image file to protect")
    p.add_argument("--block-size", type=int, choices=(512, 4096), default=None,
                   help="logical block size (default: the device's own, 512 for files)")
    add_compress_option(p)
    add_json_option(p)


def cmd_init(args: argparse.Namespace) -> int:
    """Create the journal; remove what was made if the baseline copy fails."""
    from cdp.attach import logical_block_size
    from cdp.progress import progress_bar
    from journal import Journal, device_size
    from journal.journal import occupied, unfinished_create
    from journal.format import MARKER, SECTOR
    from journal.units import NS, format_bytes, format_duration

    path = journal_path(args)
    device = args.device
    try:
        st = os.stat(device)
    except OSError as exc:
        raise CdpError(f"cannot use device {device}: {exc.strerror}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise CdpError(f"{device} is neither a block device nor a regular file")
    size = device_size(device)
    if size == 0 or size % SECTOR:
        raise CdpError(f"{device} holds {size} bytes; a device is a non-zero multiple of {SECTOR} bytes")
    block_size = args.block_size or logical_block_size(device)
    again = unfinished_create(path)  # a create killed before its marker file: Journal.create starts it over
    if occupied(path):
        what = "a journal already" if (path / MARKER).exists() else "not an empty directory"
        raise CdpError(f"{path} exists and is {what}; give a new path")
    from journal.identity import device_id

    started = time.monotonic()
    # a failed or interrupted copy leaves nothing behind: Journal.create undoes itself
    with progress_bar(f"baseline of {device}") as progress:
        journal = Journal.create(path, device_bytes=size, block_size=block_size,
                                 device_id=device_id(device), source=device, progress=progress,
                                 compression=compression_of(args))
    if again:
        print(f"cdp: init: {path} held a journal whose creation was cut short (no {MARKER} file): "
              "started over", file=sys.stderr)
    with journal:
        stats = journal.stats()
        info = journal.info
    elapsed = time.monotonic() - started
    if args.json:
        print_json({"journal": str(path), "device": device, "device_bytes": info.device_bytes,
                    "block_size": info.block_size, "baseline_bytes": stats.data_bytes,
                    "disk_bytes": stats.disk_bytes, "created_ns": info.created_ns,
                    "compression": journal.compression.to_meta(),
                    "seconds": round(elapsed, 3)})
    else:
        print(f"created journal {path} for {device} ({format_bytes(size)}, {block_size}-byte blocks); "
              f"baseline copied in {format_duration(int(elapsed * NS))}, {format_bytes(stats.disk_bytes)} on disk")
        print(f"next: cdp run --journal {path} --ring RING")
    return 0
