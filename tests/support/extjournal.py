"""A journal of a real ext4 filesystem changed between two marks, for `cdp diff --files` and the TUI.

mkfs.ext4 -d makes the filesystem with its files; debugfs -w changes a copy
(a file rewritten, one removed, one created, one chmod'ed); the blocks that
differ are journaled as writes between the marks ``before`` and ``after``,
as the filter would have seen them, plus a rewrite of identical bytes (a
range that changes no file). No mount is needed.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from journal import Journal, Record, RecordType

#: every path the change touches (the directories whose entries changed too)
CHANGED = {"/", "/a", "/b", "/c", "/c/newf", "/c/e"}


def have_e2fsprogs() -> bool:
    return shutil.which("mkfs.ext4") is not None or Path("/sbin/mkfs.ext4").exists()


def _debugfs_w(image: Path, *commands: str) -> None:
    subprocess.run(["debugfs", "-w", "-f", "-", str(image)], input="\n".join(commands) + "\n",
                   capture_output=True, text=True, check=True)


def build_ext_journal(tmp_path: Path, *, extra_files: int = 0) -> Path:
    """The journal (in ``tmp_path/j``); ``extra_files`` more new files under /c (named in CHANGED's stead)."""
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
    more = [f"write {tmp_path / 'newf'} c/more{i}" for i in range(extra_files)]
    _debugfs_w(after, "rm b", "rm a", f"write {tmp_path / 'new-a'} a", f"write {tmp_path / 'newf'} c/newf",
               "set_inode_field c/e mode 0100600", *more)
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
    return journal_dir
