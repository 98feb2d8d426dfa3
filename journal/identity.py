"""Which device a journal protects, said so that another device of the same size cannot pass for it.

A journal and the ring that feeds it each carry a 16-byte device id (the
ring ABI's ``device_id``); the drain service refuses a ring whose id is not
its journal's. The id is the first 16 bytes of the SHA-256 of an identity
string that names the device by what stays the same across reboots:

- a whole disk: its WWN or serial (sysfs ``device/wwid``, ``device/serial``,
  ``wwid``), else its device number;
- a partition: its disk's identity and the partition number;
- a device-mapper device (LVM): its dm UUID;
- a loop device: the identity of its backing file and its offset;
- a regular file (an image, the simulator's device): its filesystem's
  device number and its inode, so a copy of the image is another device.

The device number (``dev:MAJ:MIN``) is the last resort: it can change
across reboots, and then a reattach says so instead of guessing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

ID_BYTES = 16


def identity(path: str | os.PathLike[str]) -> str:
    """The identity string of a block device or regular file (see the module docstring)."""
    st = os.stat(path)
    if stat.S_ISREG(st.st_mode):
        return f"file:{os.major(st.st_dev)}:{os.minor(st.st_dev)}:{st.st_ino}"
    if not stat.S_ISBLK(st.st_mode):
        raise ValueError(f"{path} is neither a block device nor a regular file")
    return _block_identity(os.major(st.st_rdev), os.minor(st.st_rdev))


def device_id(path: str | os.PathLike[str]) -> bytes:
    """The 16-byte id of the device or file at ``path``."""
    return id_of(identity(path))


def id_of(text: str) -> bytes:
    """The 16-byte id of an identity string."""
    return hashlib.sha256(text.encode()).digest()[:ID_BYTES]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _block_identity(major: int, minor: int) -> str:
    sys_dir = Path(f"/sys/dev/block/{major}:{minor}")
    if (sys_dir / "partition").exists():
        parent = sys_dir.resolve().parent
        dev = _read(parent / "dev")
        if dev and ":" in dev:
            pmaj, pmin = (int(x) for x in dev.split(":"))
            return f"{_block_identity(pmaj, pmin)}:part{_read(sys_dir / 'partition')}"
    uuid = _read(sys_dir / "dm" / "uuid")
    if uuid:
        return f"dm:{uuid}"
    backing = _read(sys_dir / "loop" / "backing_file")
    if backing:
        try:
            return f"loop:{identity(backing)}:{_read(sys_dir / 'loop' / 'offset') or 0}"
        except (OSError, ValueError):
            pass
    for name in ("device/wwid", "wwid", "device/serial", "serial"):
        value = _read(sys_dir / name)
        if value:
            return f"disk:{value}"
    return f"dev:{major}:{minor}"
