"""The in-place device filter's control device, ``/dev/cdpctl`` (kernel/cdp_filter_abi.h).

Three ioctls, shaped after the blkfilter proposal: ATTACH a filter to a block
device by its path (the device keeps its node and its users), DETACH it by
ring name or device, and CTL (status). The ring the filter feeds is the same
``/dev/cdp/NAME`` the dm target feeds, read by the same ``cdp run``.

Every errno the module answers with becomes one :class:`CdpError` line that
says what is wrong with *this* request. Standard library only (the test
guests run it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

from cdp.errors import CdpError

CTL_PATH = "/dev/cdpctl"
PATH_MAX = 256
NAME_MAX = 32
OPTS_MAX = 256
CTL_STATUS = 1
BLKFLSBUF = 0x1261      # <linux/fs.h>: _IO(0x12, 97)
# struct cdp_filter_ioc: cmd, reserved, device[256], name[32], opts[256]
IOC_STRUCT = struct.Struct(f"<II{PATH_MAX}s{NAME_MAX}s{OPTS_MAX}s")


def _ioc(direction: int, nr: int, size: int) -> int:
    """The _IOC() macro of <linux/ioctl.h> for type 'C'."""
    return (direction << 30) | (size << 16) | (ord("C") << 8) | nr


IOC_ATTACH = _ioc(1, 16, IOC_STRUCT.size)   # _IOW
IOC_DETACH = _ioc(1, 17, IOC_STRUCT.size)   # _IOW
IOC_CTL = _ioc(3, 18, IOC_STRUCT.size)      # _IOWR


@dataclass(frozen=True)
class FilterStatus:
    """What CTL STATUS says of one attached filter."""

    name: str
    device: str          # the kernel's name of the filtered device, e.g. "vda1"
    counters: dict[str, str]


def _field(value: str, size: int, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) >= size:
        raise CdpError(f"{what} is longer than {size - 1} bytes: {value[:40]!r}")
    return raw


def _pack(*, device: str = "", name: str = "", opts: str = "", cmd: int = 0) -> bytearray:
    return bytearray(IOC_STRUCT.pack(cmd, 0, _field(device, PATH_MAX, "the device path"),
                                     _field(name, NAME_MAX, "the name"), _field(opts, OPTS_MAX, "the options")))


def _call(request: int, buf: bytearray) -> int:
    """One ioctl on the control device; 0 or the errno it failed with."""
    try:
        fd = os.open(CTL_PATH, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CdpError(f"{CTL_PATH} is missing: the dm-cdp module is not loaded (modprobe dm-cdp)") from None
    except OSError as exc:
        raise CdpError(f"cannot open {CTL_PATH}: {exc.strerror} (needs root)") from None
    try:
        fcntl.ioctl(fd, request, buf, True)
        return 0
    except OSError as exc:
        return exc.errno or errno.EIO
    finally:
        os.close(fd)


def attach(device: str, name: str, options: list[str]) -> None:
    """Attach a filter to ``device`` feeding the ring ``/dev/cdp/NAME``; one line per refusal."""
    err = _call(IOC_ATTACH, _pack(device=device, name=name, opts=" ".join(options)))
    if err:
        raise CdpError(attach_error(err, device, name))


def attach_error(err: int, device: str, name: str) -> str:
    """The one line for an errno of ATTACH."""
    why = {
        errno.EEXIST: f"{device} already has a cdp filter",
        errno.EBUSY: f"{device}: its disk or one of its partitions already has a cdp filter (one per disk),"
                     " or another module hooks submit_bio_noacct (see dmesg)",
        errno.EADDRINUSE: f"the name {name} is taken by another cdp ring (dm target or filter)",
        errno.EOPNOTSUPP: f"{device} is a zoned device: the filter does not support zoned devices",
        errno.EINVAL: "the kernel refused the name or an option (dmesg says which)",
        errno.ENOTBLK: f"{device} is not a block device",
        errno.ENOENT: f"{device} does not exist",
        errno.ENXIO: f"{device} has no device behind it",
        errno.EPERM: "attaching a filter needs root (CAP_SYS_ADMIN)",
        errno.ENOMEM: "the kernel could not allocate the ring (try a smaller --ring-mb)",
    }.get(err)
    return f"filter attach {device}: {why or os.strerror(err)}"


def flush_device_cache(device: str) -> None:
    """Drop the device's clean cached blocks (BLKFLSBUF) before the baseline copy reads it.

    With the filter the baseline is read from the very device in use, through
    its page cache, and a filesystem's data writes bypass that cache: a block
    read (and cached) long ago can since have been rewritten on the device.
    Dropping the clean pages makes the copy read the device; a write after
    this is in the ring anyway.
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CdpError(f"cannot open {device}: {exc.strerror}") from None
    try:
        fcntl.ioctl(fd, BLKFLSBUF)
    except OSError as exc:
        raise CdpError(f"cannot drop the cache of {device}: {exc.strerror}") from None
    finally:
        os.close(fd)


def detach(name: str) -> None:
    """Detach the filter feeding ``/dev/cdp/NAME``: its ring gets DETACHED, ``cdp run`` finishes."""
    err = _call(IOC_DETACH, _pack(name=name))
    if err == errno.ENOENT:
        raise CdpError(f"filter detach: no cdp filter is attached under the name {name}")
    if err:
        raise CdpError(f"filter detach {name}: {os.strerror(err)}")


def status(*, name: str = "", device: str = "") -> FilterStatus | None:
    """The filter under ``name`` (or on ``device``), None when there is none (or no module)."""
    buf = _pack(name=name, device=device, cmd=CTL_STATUS)
    try:
        err = _call(IOC_CTL, buf)
    except CdpError:
        return None
    if err in (errno.ENOENT, errno.ENOTBLK, errno.ENXIO):
        return None
    if err:
        raise CdpError(f"filter status {name or device}: {os.strerror(err)}")
    _cmd, _res, dev, nm, opts = IOC_STRUCT.unpack(buf)

    def text(raw: bytes) -> str:
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    counters = dict(w.split("=", 1) for w in text(opts).split() if "=" in w)
    return FilterStatus(text(nm), text(dev), counters)
