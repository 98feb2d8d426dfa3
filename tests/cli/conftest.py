"""Fixtures for the CLI tests: a device image, a journal made by `cdp init`, a read-only directory.

The helpers the tests call (running `cdp`, building journals with a known
history) are in :mod:`tests.support`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import cdp
from tests.support.devices import write_device


@pytest.fixture
def device(tmp_path: Path) -> tuple[Path, bytes]:
    """A 1 MiB image file and its content."""
    path = tmp_path / "device.img"
    return path, write_device(path, 1 << 20, seed=7)


@pytest.fixture
def journal_dir(tmp_path: Path, device: tuple[Path, bytes]) -> Path:
    """A journal made by `cdp init` over :func:`device`, no records yet."""
    path = tmp_path / "journal"
    run = cdp("init", "--journal", path, "--device", device[0])
    assert run.code == 0, run.err
    return path


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A directory nobody may write into, root included.

    As root (how CI runs) permission bits do not stop writes, so the
    directory is a read-only tmpfs mount; otherwise mode 0555 does it.
    """
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "cdp-test-ro", str(ro)], check=True)
        try:
            yield ro
        finally:
            subprocess.run(["umount", str(ro)], check=True)
    else:
        ro.chmod(0o555)
        try:
            yield ro
        finally:
            ro.chmod(0o755)
