"""`cdp mark --freeze MOUNTPOINT`: the filesystem is synced and held for the mark, then thawed.

Uses a real ext4 on a loop device. The proof that the freeze happened is its
side effect: FIFREEZE writes every dirty page of the filesystem to the device,
so bytes written (without fsync) just before the mark are on the device when
`cdp mark` returns; the proof of the thaw is that writing works afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import cdp

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("losetup", "mkfs.ext4", "mount", "umount")),
    reason="needs root and losetup/mkfs.ext4/mount")


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(mount point, backing file) of an ext4 on a loop device."""
    backing = tmp_path / "fs.img"
    with open(backing, "wb") as fh:
        fh.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", str(backing)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "loop", str(backing), str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a loop device here")
    try:
        yield mnt, backing
    finally:
        subprocess.run(["fsfreeze", "-u", str(mnt)], capture_output=True)  # never leave it frozen
        subprocess.run(["umount", str(mnt)], check=True)


def test_freeze_syncs_marks_and_thaws(mounted: tuple[Path, Path], journal_dir: Path) -> None:
    mnt, backing = mounted
    pattern = os.urandom(64) * (1 << 14)  # 1 MiB no filesystem holds by chance
    (mnt / "app.dat").write_bytes(pattern)  # buffered: dirty in the page cache, not yet on the device
    run = cdp("mark", "--journal", journal_dir, "--freeze", mnt, "--json", "app-consistent")
    assert run.code == 0, run.err
    assert json.loads(run.out)["name"] == "app-consistent"
    with open(backing, "rb") as fh:
        assert pattern[:4096] in fh.read(), "the freeze did not write the dirty data to the device"
    # thawed: a write and its fsync complete
    done = subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'after'}", "bs=4k", "count=1", "conv=fsync"],
                          capture_output=True, timeout=20)
    assert done.returncode == 0


def test_freeze_bad_input(tmp_path: Path, journal_dir: Path) -> None:
    cdp("mark", "--journal", journal_dir, "--freeze", tmp_path, "x").one_line_error(1, "not a mount point")
    cdp("mark", "--journal", journal_dir, "--freeze", tmp_path, "--at", "now", "x").one_line_error(2, "--at")
    points = json.loads(cdp("points", "--journal", journal_dir, "--json", "--marks").out)
    assert all(p["name"] != "x" for p in points)
