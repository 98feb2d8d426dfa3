"""The restore dialog refuses a block device in use, from the same check as `cdp restore`.

A loop device with two partitions, one mounted and one used as swap: the
dialog names the use and stays in the edit state, and nothing is written.
Needs root and util-linux (skipped otherwise), like tests/cli/test_restore_device.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.blockdev import loop_device, mounted, needs, partition, swap_on
from tests.support.tui import make_app, start, submit, widget_text
from tui.screens.restore import RestoreScreen

pytestmark = needs("sfdisk", "partx", "mkfs.ext4", "mount", "umount", "mkswap", "swapon", "swapoff")
SIZE = (110, 40)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A loop device over an 8 MiB file: partition 1 for ext4, partition 2 for swap."""
    with loop_device(tmp_path / "disk.img", 8 << 20, partitions=(",4MiB,L", ",,S")) as dev:
        yield dev


async def refused(journal_dir: Path, target: Path) -> str:
    """What the dialog says when asked to restore to ``target``; it must stay in the edit state."""
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("r")
        assert isinstance(app.screen, RestoreScreen)
        await submit(pilot, "#target", str(target))
        assert app.screen.state == "edit"
        return widget_text(app, "#restore-message")


async def test_a_disk_with_a_mounted_partition_is_refused(journal_dir: Path, disk: Path, tmp_path: Path) -> None:
    with mounted(partition(disk, 1), tmp_path / "mnt") as mnt:
        before = disk.read_bytes()
        text = await refused(journal_dir, disk)
        assert f"{disk} is mounted on {mnt} (partition {partition(disk, 1).name})" in text
        assert disk.read_bytes() == before


async def test_a_disk_with_a_swap_partition_is_refused(journal_dir: Path, disk: Path) -> None:
    with swap_on(partition(disk, 2)) as swap:
        before = disk.read_bytes()
        assert f"{disk} is used as swap ({swap})" in await refused(journal_dir, disk)
        assert f"{swap} is used as swap ({swap})" in await refused(journal_dir, swap)
        assert disk.read_bytes() == before


async def test_a_target_inside_the_journal_is_refused(journal_dir: Path) -> None:
    assert "inside the journal" in await refused(journal_dir, journal_dir / "restored.img")
