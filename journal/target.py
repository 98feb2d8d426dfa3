"""A restore target, inspected before anything is written to it.

A restore overwrites its target whole, so both user interfaces look at the
target first, through :func:`inspect_target`, and see the same facts:
whether it exists, whether it is a block device, what uses that device
(a mounted file system on it or on one of its partitions, swap, a holder
such as device-mapper or md, another program that opened it exclusively),
and whether it can never be a target (it lies inside the journal, it is a
directory or a symbolic link to anything but a block device, its directory
is missing or read-only, ...). What to do with
the facts is each interface's policy: `cdp restore` overwrites an existing
target only with ``--force``, the TUI asks first and never writes a device
in use.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from journal.mounts import mount_table, unescape
from journal.output import link_to_other_than_device


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What a path is, seen as the place to write a restore (the writing: :mod:`journal.output`)."""

    path: Path
    #: something is there (a restore would overwrite it)
    exists: bool
    #: it is a block device
    is_device: bool
    #: this process may write it (for a new file: create it)
    writable: bool
    #: what uses the device: 'mounted on /srv (partition sdb1)', 'used as swap (/dev/sdb2)', ...
    users: tuple[str, ...] = ()
    #: why nothing may be written there whatever the user says; '' when it may
    problem: str = ""

    @property
    def in_use(self) -> str:
        """'/dev/sdb is mounted on /srv; used as swap (...)', or '' for a target nobody uses."""
        return f"{self.path} is {'; '.join(self.users)}" if self.users else ""


def inspect_target(path: str | os.PathLike[str], journal_dir: str | os.PathLike[str] | None = None) -> TargetInfo:
    """Look at ``path`` without writing anything; ``journal_dir`` is the journal being restored from."""
    target = Path(path)
    if journal_dir is not None and _inside(target, Path(journal_dir)):
        return TargetInfo(target, target.exists(), False, False,
                             problem=f"{target} is inside the journal {journal_dir}; restoring there would destroy it")
    if link_to_other_than_device(target):
        # journal.output writes a file aside and renames it: it never follows a link to a file
        return TargetInfo(target, target.exists(), False, False,
                          problem=f"{target} is a symbolic link; give the real path of the file to write")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            return TargetInfo(target, False, False, False,
                                 problem=f"cannot create {target}: {parent} is not a directory")
        if not os.access(parent, os.W_OK):
            return TargetInfo(target, False, False, False,
                                 problem=f"cannot create {target}: {parent} is not writable")
        return TargetInfo(target, False, False, True)
    except OSError as exc:
        return TargetInfo(target, False, False, False, problem=f"cannot use {target}: {exc.strerror}")
    writable = os.access(target, os.W_OK)
    if stat.S_ISDIR(st.st_mode):
        return TargetInfo(target, True, False, writable,
                             problem=f"{target} is a directory; give the path of a file or a block device")
    if stat.S_ISBLK(st.st_mode):
        return TargetInfo(target, True, True, writable, tuple(device_users(target, st.st_rdev)))
    if not stat.S_ISREG(st.st_mode):
        return TargetInfo(target, True, False, writable,
                             problem=f"{target} is neither a regular file nor a block device")
    return TargetInfo(target, True, False, writable)


def _inside(target: Path, directory: Path) -> bool:
    """Whether ``target`` is ``directory`` or lies under it (symlinks resolved)."""
    try:
        target.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def device_users(path: Path, rdev: int) -> list[str]:
    """What holds a block device or one of its partitions: mounts, swap, holders, an exclusive opener."""
    devs = {rdev: str(path)} | _partitions(rdev)
    found: list[str] = []
    for mount in mount_table():
        dev = mount.dev if mount.dev in devs else _source_dev(mount.source)
        if dev in devs:
            found.append(f"mounted on {mount.mount_point}" + ("" if devs[dev] == str(path) else f" ({devs[dev]})"))
    found += [f"used as swap ({name})" for name in _swaps() if _source_dev(name) in devs]
    for dev in devs:
        holders = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/holders")
        try:
            names = sorted(p.name for p in holders.iterdir())
        except OSError:
            names = []
        if names:
            found.append(f"held by {', '.join(names)}")
    if not found:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_EXCL)
            os.close(fd)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                found.append("in use (opened exclusively by another program)")
    return found


def _partitions(rdev: int) -> dict[int, str]:
    """The partitions of a whole disk, as {dev_t: 'partition NAME'}, from sysfs."""
    base = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    out: dict[int, str] = {}
    try:
        for child in base.iterdir():
            dev_file = child / "dev"
            if (child / "partition").exists() and dev_file.exists():
                major, minor = dev_file.read_text().strip().split(":")
                out[os.makedev(int(major), int(minor))] = f"partition {child.name}"
    except OSError:
        pass
    return out


def _source_dev(source: str) -> int | None:
    """The device number of a block device named by path (a mount's source, a swap area)."""
    if not source.startswith("/"):
        return None
    try:
        st = os.stat(source)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISBLK(st.st_mode) else None


def _swaps() -> list[str]:
    """The swap areas in use, from /proc/swaps (files and devices)."""
    try:
        with open("/proc/swaps") as fh:
            lines = list(fh)[1:]
    except OSError:
        return []
    return [unescape(line.split()[0]) for line in lines if line.split()]
