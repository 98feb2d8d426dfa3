"""`cdp restore` onto real block devices (loop devices): refused while in use or without --force.

Needs root, losetup, mkfs.ext4 and mount; skipped where any is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import cdp

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("losetup", "mkfs.ext4", "e2fsck", "mount", "umount")),
    reason="needs root and losetup/mkfs.ext4/mount")


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Path]:
    """A loop device over an 8 MiB file, detached afterwards."""
    backing = tmp_path / "loop.img"
    with open(backing, "wb") as fh:
        fh.truncate(8 << 20)
    proc = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"losetup failed: {proc.stderr.strip()}")
    dev = Path(proc.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["umount", str(dev)], capture_output=True)
        subprocess.run(["losetup", "-d", str(dev)], capture_output=True)


def test_mounted_device_is_refused(tmp_path: Path, journal_dir: Path, loop: Path,
                                  device: tuple[Path, bytes]) -> None:
    subprocess.run(["mkfs.ext4", "-q", str(loop)], check=True, capture_output=True)
    mnt = tmp_path / "mnt point"
    mnt.mkdir()
    if subprocess.run(["mount", str(loop), str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount here")
    cdp("restore", "--journal", journal_dir, "--at", "now", "--to", loop).one_line_error(
        1, f"{loop} is mounted on {mnt}", "--force")
    subprocess.run(["umount", str(mnt)], check=True)
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
