"""Real block devices for tests: loop devices, partitioned, mounted or used as swap.

Everything here needs root and util-linux; :func:`needs` turns a missing
tool into a skip. Every context manager undoes what it did, in reverse
order, even when the test fails: a mount, a swap area or a loop device left
behind would outlive the test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def needs(*tools: str) -> pytest.MarkDecorator:
    """Skip unless running as root with every tool on PATH."""
    missing = [t for t in ("losetup", *tools) if shutil.which(t) is None]
    return pytest.mark.skipif(os.geteuid() != 0 or bool(missing),
                              reason=f"needs root and {', '.join(missing) or 'losetup'}")


def _run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.fspath(a) for a in args], capture_output=True, text=True)


@contextmanager
def loop_device(backing: Path, size: int, *, partitions: tuple[str, ...] | None = None) -> Iterator[Path]:
    """A loop device over a new ``size``-byte file; detached afterwards.

    With ``partitions`` (sfdisk lines such as ``",4MiB,L"``) the file gets a
    DOS partition table with them first and the device is attached with
    ``-P``; partition N is :func:`partition` (dev, N).
    """
    with open(backing, "wb") as fh:
        fh.truncate(size)
    if partitions is not None:
        script = "label: dos\n" + "".join(f"{line}\n" for line in partitions)
        made = subprocess.run(["sfdisk", "-q", str(backing)], input=script, capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"sfdisk failed: {made.stderr.strip()}")
    attached = _run("losetup", "-f", "--show", *(["-P"] if partitions is not None else []), backing)
    if attached.returncode != 0:
        pytest.skip(f"losetup failed: {attached.stderr.strip()}")
    dev = Path(attached.stdout.strip())
    try:
        if partitions is not None:
            _wait_for_partitions(dev, len(partitions))
        yield dev
    finally:
        _run("losetup", "-d", dev)


def partition(dev: Path, number: int) -> Path:
    """The device node of partition ``number`` of a loop device."""
    return Path(f"{dev}p{number}")


def _wait_for_partitions(dev: Path, count: int) -> None:
    """The kernel's partition scan may not have run (or made nodes) yet: wait, then ask partx."""
    wanted = [partition(dev, n) for n in range(1, count + 1)]
    for attempt in range(50):
        if all(p.exists() for p in wanted):
            return
        if attempt == 10:
            _run("partx", "-a", dev)
        time.sleep(0.05)
    pytest.skip(f"the partitions of {dev} did not appear")


@contextmanager
def mounted(dev: Path, mount_point: Path) -> Iterator[Path]:
    """``dev`` holding a new ext4 file system, mounted on ``mount_point`` for the body."""
    made = _run("mkfs.ext4", "-q", dev)
    assert made.returncode == 0, made.stderr
    mount_point.mkdir(exist_ok=True)
    if _run("mount", dev, mount_point).returncode != 0:
        pytest.skip(f"cannot mount {dev} here")
    try:
        yield mount_point
    finally:
        _run("umount", mount_point)


@contextmanager
def swap_on(dev: Path) -> Iterator[Path]:
    """``dev`` used as a swap area (lowest priority) for the body."""
    made = _run("mkswap", dev)
    assert made.returncode == 0, made.stderr
    if _run("swapon", "-p", "0", dev).returncode != 0:
        pytest.skip(f"cannot swapon {dev} here")
    try:
        yield dev
    finally:
        _run("swapoff", dev)
