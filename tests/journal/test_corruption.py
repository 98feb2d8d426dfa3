"""Damaged journals: reported precisely by verify, never applied by restore.

These journals store payloads raw (compression off) so that the tests can
place damage by the framing's arithmetic; damage to compressed payloads is
tests/journal/test_compression.py's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from journal.codec import OFF
from journal.errors import CorruptJournal

SIZE = 1 << 18


def make(path: Path) -> Journal:
    journal = Journal.create(path, device_bytes=SIZE, compression=OFF)
    t = journal.info.created_ns
    journal.append([Record(s, t + s, RecordType.WRITE, 0, (s - 1) * 8192, 8192, bytes([s]) * 8192)
                    for s in range(1, 11)])
    return journal


def flip(path: Path, pos: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0x40]))


def test_flipped_payload_byte(tmp_path: Path) -> None:
    journal = make(tmp_path / "j")
    seg = tmp_path / "j" / "segments" / "00000001.seg"
    # record 3: segment header 64 + 2 records of (64 + 8192), then its own header
    rec3 = 64 + 2 * (64 + 8192)
    flip(seg, rec3 + 64 + 5000)
    report = journal.verify()
    assert not report.ok
    assert [(p.segment, p.offset) for p in report.problems][0] == ("00000001.seg", rec3)
    assert any("seq 3" in str(p) for p in report.problems)
    with pytest.raises(CorruptJournal, match="seq 3"):
        journal.read(2 * 8192, 8192)
    with pytest.raises(CorruptJournal):
        journal.restore(tmp_path / "out.img")
    assert not (tmp_path / "out.img").exists()
    # blocks of other records are still readable
    assert journal.read(0, 8192) == bytes([1]) * 8192
    journal.close()


def test_flipped_header_byte_reports_and_scans_on(tmp_path: Path) -> None:
    journal = make(tmp_path / "j")
    seg = tmp_path / "j" / "segments" / "00000001.seg"
    rec5 = 64 + 4 * (64 + 8192)
    flip(seg, rec5 + 20)
    report = journal.verify()
    messages = [str(p) for p in report.problems]
    assert any(f"offset {rec5}" in m and "CRC" in m for m in messages), messages
    assert any("seq 5" in m and "missing or damaged" in m for m in messages), messages
    assert report.records == 9  # every other record was still found
    journal.close()


def test_truncated_segment(tmp_path: Path) -> None:
    make(tmp_path / "j").close()
    seg = tmp_path / "j" / "segments" / "00000001.seg"
    os.truncate(seg, seg.stat().st_size - 3000)
    with Journal.open(tmp_path / "j", readonly=True) as journal:
        report = journal.verify()
        assert any("seq 10" in str(p) for p in report.problems)
        with pytest.raises(CorruptJournal):
            journal.read(9 * 8192, 8192)
        assert journal.read(0, 8192) == bytes([1]) * 8192
    with pytest.raises(CorruptJournal, match="verify"):
        Journal.open(tmp_path / "j")


def test_missing_segment(tmp_path: Path) -> None:
    make(tmp_path / "j").close()
    (tmp_path / "j" / "segments" / "00000001.seg").unlink()
    with Journal.open(tmp_path / "j", readonly=True) as journal:
        report = journal.verify()
        assert any("missing" in p.message for p in report.problems)
        with pytest.raises(CorruptJournal, match="missing"):
            journal.read(0, 4096)
