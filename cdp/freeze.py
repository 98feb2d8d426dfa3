"""Freeze a mounted filesystem around a mark, for an application-consistent point.

FIFREEZE makes the filesystem flush everything and hold new writes; a mark
taken while it is frozen names a moment at which the device holds a clean
filesystem (no journal replay needed after a restore). FITHAW lets writes
go on. The window is kept to the mark alone, with SIGINT and SIGTERM held
off so that an interrupt cannot leave the filesystem frozen; a SIGKILL can,
and then ``fsfreeze -u MOUNTPOINT`` thaws it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from cdp.errors import CdpError

#: _IOWR('X', 119, int) and _IOWR('X', 120, int) from <linux/fs.h>
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


@contextmanager
def frozen(mountpoint: str) -> Iterator[None]:
    """Hold ``mountpoint``'s filesystem frozen for the body of the ``with``."""
    if not os.path.ismount(mountpoint):
        raise CdpError(f"--freeze: {mountpoint} is not a mount point")
    try:
        fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise CdpError(f"--freeze: cannot open {mountpoint}: {exc.strerror}") from None
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as exc:
            reason = {errno.EBUSY: "it is frozen already", errno.EOPNOTSUPP: "this filesystem cannot be frozen",
                      errno.EPERM: "freezing needs root"}.get(exc.errno, exc.strerror)
            raise CdpError(f"--freeze: cannot freeze {mountpoint}: {reason}") from None
        try:
            yield
        finally:
            fcntl.ioctl(fd, FITHAW, 0)
    finally:
        os.close(fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
