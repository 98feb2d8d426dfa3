"""A mark is a position: `--at mark:NAME` restores the state right after the MARK record in seq order.

The producer clamps a clock that steps back, so a write journaled after a
mark can carry the mark's very nanosecond; restoring "at the mark's time"
would take that write in.
"""

from __future__ import annotations

import json
from pathlib import Path

from journal import Journal, Record, RecordType
from tests.support.cli import cdp


def test_a_write_with_the_marks_stamp_is_not_in_the_restore(journal_dir: Path, tmp_path: Path) -> None:
    with Journal.open(journal_dir) as j:
        t = j.last_ts_ns + 1000
        first = j.last_seq + 1
        j.append([Record(first, t, RecordType.WRITE, 0, 0, 4096, b"a" * 4096),
                  Record(first + 1, t + 1, RecordType.MARK, 0, 0, 0, b"before"),
                  Record(first + 2, t + 1, RecordType.WRITE, 0, 0, 4096, b"b" * 4096)])
    out = tmp_path / "at-mark.img"
    run = cdp("restore", "--journal", journal_dir, "--at", "mark:before", "--to", out, "--json")
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    assert doc["seq"] == first + 1 and doc["kind"] == "mark" and doc["mark"] == "before"
    assert out.read_bytes()[:4096] == b"a" * 4096
    # a time still means every record stamped at or before it: the write is in
    out2 = tmp_path / "at-time.img"
    run = cdp("restore", "--journal", journal_dir, "--at", f"@{(t + 1) // 10**9}.{(t + 1) % 10**9:09d}",
              "--to", out2, "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["seq"] == first + 2
    assert out2.read_bytes()[:4096] == b"b" * 4096


def test_points_never_prints_control_characters(journal_dir: Path) -> None:
    with Journal.open(journal_dir) as j:
        seq = j.last_seq + 1
        j.append([Record(seq, j.last_ts_ns + 1, RecordType.MARK, 0, 0, 0, "evil\x1b]0;pwned\x07\x9b".encode())])
    run = cdp("points", "--journal", journal_dir, "--marks")
    assert run.code == 0, run.err
    assert "\x1b" not in run.out and "\x07" not in run.out and "\x9b" not in run.out
    assert "evil\\x1b]0;pwned\\x07\\x9b" in run.out
