"""`cdp mount` / `cdp umount` on a host without the nbd module: one clear line, nothing touched.

The mount itself needs the kernel's nbd driver, which this host's kernel
does not have; it is for the VM tests (see the report of the export work).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import cdp


@pytest.mark.skipif(Path("/dev/nbd0").exists(), reason="this host has the nbd module")
def test_mount_without_nbd_module_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    run = cdp("mount", "--journal", tmp_path / "j", "--at", "-1m", target)
    run.one_line_error(1, "nbd", "cdp export")
    assert list(target.iterdir()) == []


def test_umount_of_something_else_is_one_line(tmp_path: Path) -> None:
    run = cdp("umount", tmp_path, env={"CDP_MOUNT_STATE": str(tmp_path / "state")})
    run.one_line_error(1, "was not mounted by 'cdp mount'")
