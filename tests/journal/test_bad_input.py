"""Bad input to the journal: one clear error each, nothing journaled lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from journal.errors import (
    DeviceMismatch,
    JournalBusy,
    JournalError,
    NotAJournal,
    OutOfRange,
    UnsupportedVersion,
)

SIZE = 1 << 16


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text
    return text


def test_not_a_journal(tmp_path: Path) -> None:
    with pytest.raises(NotAJournal) as exc:
        Journal.open(tmp_path)
    assert str(tmp_path) in one_line(exc)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotAJournal):
        Journal.open(tmp_path / "file")
    with pytest.raises(NotAJournal):
        Journal.open(tmp_path / "nothing-here")


def test_unknown_schema(tmp_path: Path) -> None:
    Journal.create(tmp_path / "j", device_bytes=SIZE).close()
    (tmp_path / "j" / "cdp-journal").write_text("cdp-journal 99\n")
    with pytest.raises(UnsupportedVersion) as exc:
        Journal.open(tmp_path / "j")
    assert "99" in one_line(exc)


def test_create_checks_source_and_target(tmp_path: Path) -> None:
    img = tmp_path / "dev.img"
    img.write_bytes(bytes(SIZE))
    with pytest.raises(DeviceMismatch) as exc:
        Journal.create(tmp_path / "j", device_bytes=2 * SIZE, source=img)
    one_line(exc)
    Journal.create(tmp_path / "j2", device_bytes=SIZE, source=img).close()
    with pytest.raises(JournalError, match="already exists"):
        Journal.create(tmp_path / "j2", device_bytes=SIZE)
    with pytest.raises(OutOfRange):
        Journal.create(tmp_path / "j3", device_bytes=1000)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=SIZE):
        with pytest.raises(JournalBusy) as exc:
            Journal.open(tmp_path / "j")
        assert "cdp run" in one_line(exc)
        with Journal.open(tmp_path / "j", readonly=True) as reader:
            assert reader.last_seq == 0


def test_bad_record_rejects_whole_batch(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=SIZE) as journal:
        t = journal.info.created_ns
        journal.append([Record(1, t, RecordType.WRITE, 0, 0, 512, b"a" * 512)])
        before = journal.stats()
        bad_batches = [
            [Record(2, t, RecordType.WRITE, 0, 0, 512, b"b" * 512), Record(3, t, RecordType.WRITE, 0, 100, 512, b"c" * 512)],
            [Record(2, t, RecordType.WRITE, 0, SIZE, 512, b"b" * 512)],
            [Record(2, t, RecordType.WRITE, 0, 0, 1024, b"b" * 512)],
            [Record(2, t, 77)],
            [Record(2, t, RecordType.MARK, data=b"\xff\xfe")],
        ]
        for records in bad_batches:
            with pytest.raises(JournalError) as exc:
                journal.append(records)
            one_line(exc)
        assert journal.last_seq == 1
        assert journal.stats().disk_bytes == before.disk_bytes
        assert journal.read(0, 512) == b"a" * 512
        assert journal.verify().ok


def test_restore_refuses_existing_file_and_bad_places(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=SIZE) as journal:
        target = tmp_path / "out.img"
        target.write_bytes(b"precious")
        with pytest.raises(JournalError, match="exists"):
            journal.restore(target)
        assert target.read_bytes() == b"precious"
        journal.restore(target, overwrite=True)
        assert target.read_bytes() == bytes(SIZE)
        with pytest.raises(JournalError) as exc:
            journal.restore(tmp_path / "no" / "such" / "dir" / "out.img")
        one_line(exc)
        with pytest.raises(OutOfRange):
            journal.read(SIZE - 512, 1024)
        with pytest.raises(OutOfRange):
            journal.resolve(journal.info.created_ns - 1)
        with pytest.raises(OutOfRange):
            journal.read(0, 512, seq=5)


def test_mark_names(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=SIZE) as journal:
        for bad in ("", "x" * 256, "a\nb"):
            with pytest.raises(JournalError):
                journal.add_mark(bad)
        point = journal.add_mark("before upgrade")
        assert point.kind == "user-mark" and point.seq == 0 and point.whole
        assert [p.name for p in journal.points(kinds={"user-mark"})] == ["before upgrade"]
