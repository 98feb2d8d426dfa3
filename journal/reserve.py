"""The journal's reserve: room set aside for the day its filesystem is full.

A compaction needs a little room itself (its records, the index's
copy-on-write pages, the live versions it moves), and a full filesystem has
none: the reserve file is given up then (``journal.maintain.make_room``)
and taken back once there is room again.
"""

from __future__ import annotations

import os
from pathlib import Path

#: A file of zeros the journal keeps beside its segments, given up when the filesystem is full so a
#: compaction has room to make more (the ballast a database keeps for the same reason).
RESERVE = "reserve"
RESERVE_BYTES = 32 << 20


def keep_reserve(path: Path, spare: int = 4) -> None:
    """Make the reserve file (at most 4% of the filesystem) if it is missing and ``spare`` times it is free.

    At open the reserve waits for four times its size (it is for a full
    filesystem, not a cause of one); right after a fold made room on a full
    one (``spare=2``) it is taken back sooner, or the next full filesystem
    would find no room for the compaction that makes more.
    """
    target = path / RESERVE
    if target.exists():
        return
    vfs = os.statvfs(path)
    size = min(RESERVE_BYTES, vfs.f_blocks * vfs.f_frsize // 25)
    if vfs.f_bavail * vfs.f_frsize < spare * size:
        return  # not while room is short: the reserve is for then, not a cause of it
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        target.unlink(missing_ok=True)
        return
    os.close(fd)
