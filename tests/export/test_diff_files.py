"""`cdp diff --files` on a real ext4 filesystem, changed with e2fsprogs (no mount needed).

mkfs.ext4 -d makes the filesystem with its files; debugfs -w changes a copy
(a file rewritten, one removed, one created, one chmod'ed); the blocks that
differ are journaled as writes between two marks, as the filter would have
seen them. The files named must be exactly the ones changed.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from tests.support.cli import cdp

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext4") is None and not Path("/sbin/mkfs.ext4").exists(),
                                reason="e2fsprogs missing (scripts/setup installs it)")


def _debugfs_w(image: Path, *commands: str) -> None:
    subprocess.run(["debugfs", "-w", "-f", "-", str(image)], input="\n".join(commands) + "\n",
                   capture_output=True, text=True, check=True)


def test_files_changed_between_two_marks(tmp_path: Path) -> None:
    rng = random.Random(3)
    tree = tmp_path / "tree"
    (tree / "c").mkdir(parents=True)
    (tree / "a").write_bytes(rng.randbytes(20_000))
    (tree / "b").write_bytes(rng.randbytes(9_000))
    (tree / "c" / "d").write_bytes(rng.randbytes(3_000))
    (tree / "c" / "e").write_bytes(rng.randbytes(3_000))
    (tree / "keep").write_bytes(rng.randbytes(50_000))
    before = tmp_path / "before.img"
    with open(before, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(tree), str(before)], check=True)
    after = tmp_path / "after.img"
    shutil.copy(before, after)
    (tmp_path / "new-a").write_bytes(rng.randbytes(12_000))
    (tmp_path / "newf").write_bytes(rng.randbytes(5_000))
    _debugfs_w(after, "rm b", "rm a", f"write {tmp_path / 'new-a'} a", f"write {tmp_path / 'newf'} c/newf",
               "set_inode_field c/e mode 0100600")
    old, new = before.read_bytes(), after.read_bytes()
    journal_dir = tmp_path / "j"
    with Journal.create(journal_dir, device_bytes=len(old), source=before) as journal:
        t = journal.info.created_ns
        records = [Record(1, t + 1, RecordType.MARK, data=b"before")]
        for offset in range(0, len(new), 4096):
            if old[offset:offset + 4096] != new[offset:offset + 4096]:
                records.append(Record(len(records) + 1, t + 2, RecordType.WRITE, 0, offset, 4096,
                                      new[offset:offset + 4096]))
        # a rewrite of identical bytes is a range but not a change of any file
        records.append(Record(len(records) + 1, t + 3, RecordType.WRITE, 0, 0, 4096, new[:4096]))
        records.append(Record(len(records) + 1, t + 4, RecordType.MARK, data=b"after"))
        journal.append(records)
    run = cdp("diff", "--journal", journal_dir, "--from", "mark:before", "--to", "mark:after", "--files", "--json")
    assert run.code == 0, run.err
    files = {(f["path"], f["change"]) for f in json.loads(run.out)["files"]}
    assert ("/b", "deleted") in files
    assert ("/c/newf", "added") in files
    assert ("/c/e", "modified") in files  # its inode only
    assert ("/a", "modified") in files or {("/a", "added"), ("/a", "deleted")} <= files
    assert {p for p, _ in files} == {"/", "/a", "/b", "/c", "/c/newf", "/c/e"}, files
    text = cdp("diff", "--journal", journal_dir, "--from", "mark:before", "--to", "mark:after", "--files")
    assert text.code == 0 and "- /b" in text.out.splitlines() and "+ /c/newf" in text.out.splitlines()


def test_files_on_something_else_is_one_line(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=1 << 20) as journal:
        t = journal.info.created_ns
        journal.append([Record(1, t + 1, RecordType.MARK, data=b"a"),
                        Record(2, t + 2, RecordType.WRITE, 0, 0, 4096, b"x" * 4096),
                        Record(3, t + 3, RecordType.MARK, data=b"b")])
    run = cdp("diff", "--journal", tmp_path / "j", "--from", "mark:a", "--to", "mark:b", "--files")
    run.one_line_error(1, "ext2/3/4")
