"""Putting the dm-cdp filter on a block device and taking it off again.

Two forms, both undone by :func:`detach`:

- a plain device (``/dev/sdb``, an image's loop device): a new device-mapper
  device ``/dev/mapper/NAME`` with the table
  ``0 <sectors> cdp <device> NAME [options]``; the user writes through it;
- a device-mapper device (an LVM volume, say): the filter goes in *live*
  under the same name. The volume's table moves to ``NAME-real``; ``NAME``
  is suspended, loaded with ``cdp /dev/mapper/NAME-real`` and resumed, so
  mounted filesystems keep running. Detaching loads the original table back
  and removes ``NAME-real``.

Also the two ioctls of the ring device ``/dev/cdp/NAME`` (see
kernel/cdp_ring_abi.h): MARK, ordered exactly among the writes, and INFO;
and the two facts a journal needs of a device, its size and its logical
block size.
This module uses only the standard library (it runs in the test guests).
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import subprocess
from dataclasses import dataclass

from cdp.errors import CdpError

# struct cdp_ioc_mark: seq, ts_ns (out), name_len, reserved, name[256]
IOC_MARK_STRUCT = struct.Struct("<QQII256s")
# struct cdp_ioc_info: see kernel/cdp_ring_abi.h
IOC_INFO_STRUCT = struct.Struct("<IIQQII9QII64s")


def _ioc(direction: int, nr: int, size: int) -> int:
    """The _IOC() macro of <linux/ioctl.h> for type 'C'."""
    return (direction << 30) | (size << 16) | (ord("C") << 8) | nr


CDP_IOC_MARK = _ioc(3, 1, IOC_MARK_STRUCT.size)   # _IOWR
CDP_IOC_INFO = _ioc(2, 2, IOC_INFO_STRUCT.size)   # _IOR
POLICIES = {0: "block", 1: "overflow"}
_BLKGETSIZE64 = 0x80081272
_BLKSSZGET = 0x1268  # <linux/fs.h>: logical sector size of a block device
MAX_NAME = 31


@dataclass(frozen=True)
class TargetInfo:
    """What CDP_IOC_INFO reports about one target."""

    version: int
    policy: str
    device_bytes: int
    data_size: int
    block_size: int
    wait_ms: int
    records: int
    write_bytes: int
    dropped: int
    overflow_records: int
    committed: int
    discarded: int
    head: int
    tail: int
    last_seq: int
    flags: int
    name: str


def ring_path(name: str) -> str:
    return f"/dev/cdp/{name}"


def _ring_fd(ring: str, *, write: bool = False) -> int:
    path = ring if "/" in ring else ring_path(ring)
    try:
        return os.open(path, (os.O_WRONLY if write else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as exc:
        raise CdpError(f"cannot open {path}: {exc.strerror} (is the filter attached?)") from None


def mark(ring: str, label: str) -> tuple[int, int]:
    """Add a MARK record through the ring device; returns its (seq, ts_ns)."""
    raw = label.encode("utf-8")
    if not 1 <= len(raw) <= 255:
        raise CdpError("a mark name is 1 to 255 bytes")
    fd = _ring_fd(ring, write=True)  # the filter takes a MARK only from a descriptor open for writing
    try:
        buf = bytearray(IOC_MARK_STRUCT.pack(0, 0, len(raw), 0, raw))
        try:
            fcntl.ioctl(fd, CDP_IOC_MARK, buf, True)
        except OSError as exc:
            raise CdpError(f"mark on {ring}: {exc.strerror}") from None
        seq, ts, *_ = IOC_MARK_STRUCT.unpack(buf)
        return seq, ts
    finally:
        os.close(fd)


def info(ring: str) -> TargetInfo:
    """Sizes, settings and counters of an attached filter."""
    fd = _ring_fd(ring)
    try:
        buf = bytearray(IOC_INFO_STRUCT.size)
        try:
            fcntl.ioctl(fd, CDP_IOC_INFO, buf, True)
        except OSError as exc:
            raise CdpError(f"info on {ring}: {exc.strerror}") from None
    finally:
        os.close(fd)
    v = IOC_INFO_STRUCT.unpack(buf)
    return TargetInfo(v[0], POLICIES.get(v[1], str(v[1])), v[2], v[3], v[4], v[5], *v[6:15], v[15],
                      v[17].split(b"\0", 1)[0].decode("utf-8", "replace"))


def device_bytes(path: str) -> int:
    """Size of a block device (or a regular file) in bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CdpError(f"cannot open {path}: {exc.strerror}") from None
    try:
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            buf = bytearray(8)
            fcntl.ioctl(fd, _BLKGETSIZE64, buf, True)
            return struct.unpack("<Q", buf)[0]
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def logical_block_size(path: str) -> int:
    """The device's logical sector size (BLKSSZGET); 512 for a regular file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            return 512
        raw = fcntl.ioctl(fd, _BLKSSZGET, struct.pack("I", 0))
        return struct.unpack("I", raw)[0]
    finally:
        os.close(fd)


def _dmsetup(*args: str) -> str:
    try:
        p = subprocess.run(["dmsetup", *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise CdpError("dmsetup is not installed (Debian: apt-get install dmsetup)") from None
    if p.returncode != 0:
        msg = " ".join((p.stderr or p.stdout).split())[:300]
        raise CdpError(f"dmsetup {args[0]} {args[1] if len(args) > 1 else ''}: {msg}".rstrip())
    return p.stdout


def dm_table(name: str) -> str:
    """The live table of a device-mapper device."""
    return _dmsetup("table", name).strip()


def dm_name_of(device: str) -> str | None:
    """The device-mapper name of ``device`` (a /dev/mapper path or a dm-N node), else None."""
    try:
        st = os.stat(device)
    except OSError as exc:
        raise CdpError(f"cannot stat {device}: {exc.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        return None
    sysname = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/dm/name"
    try:
        with open(sysname) as f:
            return f.read().strip()
    except OSError:
        return None


def check_name(name: str) -> None:
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    if not name or len(name) > MAX_NAME or name[0] == "." or not set(name) <= ok:
        raise CdpError(f"bad name {name!r}: 1-31 of [A-Za-z0-9_.-], not starting with '.'")


def _options(options: list[str] | None) -> str:
    opts = [o for o in (options or []) if o]
    return (" " + " ".join(opts)) if opts else ""


def attach_new(device: str, name: str, *, options: list[str] | None = None, sectors: int | None = None) -> str:
    """Create /dev/mapper/NAME: the cdp target over ``device``. Returns the new path."""
    check_name(name)
    if sectors is None:
        sectors = device_bytes(device) // 512
    _dmsetup("create", name, "--table", f"0 {sectors} cdp {device} {name}{_options(options)}")
    return f"/dev/mapper/{name}"


def attach_live(name: str, *, options: list[str] | None = None) -> str:
    """Insert the filter under the device-mapper device NAME without unmounting it."""
    check_name(name)
    table = dm_table(name)
    if not table:
        raise CdpError(f"{name} has no live table")
    if " cdp " in f" {table} ":
        raise CdpError(f"{name} already has the cdp filter")
    sectors = sum(int(line.split()[1]) for line in table.splitlines())
    real = f"{name}-real"
    _dmsetup("create", real, "--table", table)
    try:
        _dmsetup("suspend", name)
        try:
            _dmsetup("load", name, "--table", f"0 {sectors} cdp /dev/mapper/{real} {name}{_options(options)}")
        finally:
            _dmsetup("resume", name)   # the new table if load worked, else the old one again
    except CdpError:
        if dm_table(name).split()[2:3] != ["cdp"]:
            _dmsetup("remove", real)
        raise
    return f"/dev/mapper/{name}"


def detach(name: str) -> None:
    """Undo :func:`attach_new` (remove the device) or :func:`attach_live` (restore the table)."""
    check_name(name)
    real = f"{name}-real"
    if not os.path.exists(f"/dev/mapper/{real}") and subprocess.run(
            ["dmsetup", "info", real], capture_output=True).returncode != 0:
        _dmsetup("remove", name)
        return
    table = dm_table(real)
    _dmsetup("suspend", name)
    try:
        _dmsetup("load", name, "--table", table)
    finally:
        _dmsetup("resume", name)
    _dmsetup("remove", real)


def way_of(device: str | None) -> str:
    """How ``device`` (a journal's source) is filtered now: ``filter`` (in place), ``dm`` (a cdp
    target: /dev/mapper/NAME or a live insertion), ``none``, or ``unknown`` (no way to ask: not root,
    no dmsetup, no such device)."""
    from cdp import filter as cdpfilter

    if not device:
        return "unknown"
    try:
        if not stat.S_ISBLK(os.stat(device).st_mode):
            return "none"
        if cdpfilter.status(device=device) is not None:
            return "filter"
        name = dm_name_of(device)
        if name is not None and " cdp " in f" {dm_table(name)} ":
            return "dm"
    except (OSError, CdpError):
        return "unknown"
    return "none"
