"""`cdp restore` onto real block devices (loop devices): refused while in use or without --force.

Needs root, losetup, mkfs.ext4 and mount (sfdisk, mkswap and swapon for
the partitioned devices); skipped where any is missing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.blockdev import loop_device, mounted, needs, partition, swap_on
from tests.support.cli import cdp

pytestmark = needs("mkfs.ext4", "e2fsck", "mount", "umount")
#: a disk of two partitions: an ext4 one and a swap area
TWO_PARTITIONS = (",4MiB,L", ",,S")


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Path]:
    """A loop device over an 8 MiB file, detached afterwards."""
    with loop_device(tmp_path / "loop.img", 8 << 20) as dev:
        yield dev


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A loop device over an 8 MiB file with :data:`TWO_PARTITIONS`."""
    with loop_device(tmp_path / "disk.img", 8 << 20, partitions=TWO_PARTITIONS) as dev:
        yield dev


def test_mounted_device_is_refused(tmp_path: Path, journal_dir: Path, loop: Path,
                                  device: tuple[Path, bytes]) -> None:
    with mounted(loop, tmp_path / "mnt point") as mnt:
        cdp("restore", "--journal", journal_dir, "--at", "now", "--to", loop).one_line_error(
            1, f"{loop} is mounted on {mnt}", "--force")
    # Mounting itself touches the superblock, so check that the restore wrote nothing.
    assert loop.read_bytes()[:len(device[1])] != device[1]
    assert subprocess.run(["e2fsck", "-n", str(loop)], capture_output=True).returncode == 0


def test_idle_device_needs_force(journal_dir: Path, loop: Path, device: tuple[Path, bytes]) -> None:
    cdp("restore", "--journal", journal_dir, "--at", "now", "--to", loop).one_line_error(
        1, "block device", "--force")
    run = cdp("restore", "--journal", journal_dir, "--at", "now", "--to", loop, "--force")
    assert run.code == 0, run.err
    assert loop.read_bytes()[:len(device[1])] == device[1]


def test_init_from_a_block_device(tmp_path: Path, loop: Path) -> None:
    with open(loop, "r+b") as fh:
        fh.write(os.urandom(1 << 20))
    run = cdp("init", "--journal", tmp_path / "j", "--device", loop)
    assert run.code == 0, run.err
    out = tmp_path / "back.img"
    assert cdp("restore", "--journal", tmp_path / "j", "--at", "now", "--to", out).code == 0
    assert out.read_bytes() == loop.read_bytes()


@needs("sfdisk", "partx", "mkfs.ext4", "mount", "umount")
def test_disk_with_a_mounted_partition_is_refused(tmp_path: Path, journal_dir: Path, disk: Path) -> None:
    with mounted(partition(disk, 1), tmp_path / "mnt") as mnt:
        before = disk.read_bytes()
        cdp("restore", "--journal", journal_dir, "--at", "now", "--to", disk).one_line_error(
            1, f"{disk} is mounted on {mnt} (partition {partition(disk, 1).name})", "--force")
        assert disk.read_bytes() == before


@needs("sfdisk", "partx", "mkswap", "swapon", "swapoff")
def test_disk_with_a_swap_partition_is_refused(journal_dir: Path, disk: Path) -> None:
    with swap_on(partition(disk, 2)) as swap:
        before = disk.read_bytes()
        cdp("restore", "--journal", journal_dir, "--at", "now", "--to", disk).one_line_error(
            1, f"{disk} is used as swap ({swap})", "--force")
        # the swap partition itself is refused the same way
        cdp("restore", "--journal", journal_dir, "--at", "now", "--to", swap).one_line_error(
            1, f"{swap} is used as swap ({swap})", "--force")
        assert disk.read_bytes() == before
