"""Readers never write: a journal on a read-only mount (a backup, a snapshot) is read in full.

The journal is made on a tmpfs, which is then remounted read-only: points,
status, verify and restore (to elsewhere) work and change nothing; a mark
is refused with one line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import cdp


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def ro_copy(tmp_path: Path, journal_dir: Path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mnt)], check=True)
    try:
        shutil.copytree(journal_dir, mnt / "j")
        (mnt / "j" / "index" / "lock.mdb").unlink(missing_ok=True)  # as a backup copy would lack it
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt / "j"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_every_reader_works_on_a_read_only_mount(ro_copy: Path, journal_dir: Path, tmp_path: Path) -> None:
    before = _tree_hash(ro_copy)
    for verb in (["points"], ["status"], ["verify"], ["points", "--json"]):
        run = cdp(*verb, "--journal", ro_copy)
        assert run.code == 0, (verb, run.err)
    out_ro, out_rw = tmp_path / "from-ro.img", tmp_path / "from-rw.img"
    assert cdp("restore", "--journal", ro_copy, "--seq", "0", "--to", out_ro).code == 0
    assert cdp("restore", "--journal", journal_dir, "--seq", "0", "--to", out_rw).code == 0
    assert out_ro.read_bytes() == out_rw.read_bytes()
    cdp("mark", "--journal", ro_copy, "nope").one_line_error(1, "read-only")
    assert _tree_hash(ro_copy) == before
