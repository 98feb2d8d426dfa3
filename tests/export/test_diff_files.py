"""`cdp diff --files` on a real ext4 filesystem, changed with e2fsprogs (no mount needed).

The journal (tests/support/extjournal.py): the blocks a debugfs change
rewrote, journaled between two marks. The files named must be exactly the
ones changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from tests.support.cli import cdp
from tests.support.extjournal import CHANGED, build_ext_journal, have_e2fsprogs

pytestmark = pytest.mark.skipif(not have_e2fsprogs(), reason="e2fsprogs missing (scripts/setup installs it)")


def test_files_changed_between_two_marks(tmp_path: Path) -> None:
    journal_dir = build_ext_journal(tmp_path)
    run = cdp("diff", "--journal", journal_dir, "--from", "mark:before", "--to", "mark:after", "--files", "--json")
    assert run.code == 0, run.err
    files = {(f["path"], f["change"]) for f in json.loads(run.out)["files"]}
    assert ("/b", "deleted") in files
    assert ("/c/newf", "added") in files
    assert ("/c/e", "modified") in files  # its inode only
    assert ("/a", "modified") in files or {("/a", "added"), ("/a", "deleted")} <= files
    assert {p for p, _ in files} == CHANGED, files
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
