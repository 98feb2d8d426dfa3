"""The mount table, from ``/proc/self/mountinfo``: what is mounted where, from which device.

Two questions need it: whether a restore target (or one of its
partitions) is mounted (:mod:`journal.target`), and which superblock holds
the journal's lock file (:mod:`journal.status`, to find the lock in
``/proc/locks``). A line of mountinfo is::

    36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)         (6)       (7)      (8) (9)  (10)      (11)

(3) is the device of the mounted superblock, (5) the mount point, (10)
the source as the file system names it (``/dev/sdb1`` for a block device;
on btrfs (3) is an anonymous device, so the source is what names the disk).
Paths are escaped as octal (``\\040`` for a space).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of the mount table."""

    #: the mounted superblock's device (st_dev of the files under it, except on btrfs subvolumes)
    dev: int
    mount_point: str
    #: what was mounted: a device path, or a name such as 'tmpfs'
    source: str


def mount_table() -> list[Mount]:
    """Every mount this process sees, in mount order; empty if the table cannot be read."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        major, _, minor = fields[2].partition(":")
        source = fields[sep + 2] if len(fields) > sep + 2 else ""
        out.append(Mount(os.makedev(int(major), int(minor)), unescape(fields[4]), unescape(source)))
    return out


def mount_of(path: str | os.PathLike[str]) -> Mount | None:
    """The mount that holds ``path`` (symlinks resolved): the one with the longest mount point above it."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for mount in mount_table():
        top = mount.mount_point.rstrip("/") + "/"
        if (real == mount.mount_point or real.startswith(top)) and (
                best is None or len(mount.mount_point) >= len(best.mount_point)):
            best = mount
    return best


def unescape(text: str) -> str:
    """Undo the octal escapes (``\\040`` for a space) of the kernel's mount tables."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)
