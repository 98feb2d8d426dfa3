"""The journal queries behind the screens, checked against the journal's own answers."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

import pytest

from journal import Journal, RecordType
from journal.records import MARK_KINDS
from journal.target import inspect_target
from journal.units import format_bytes, format_duration, format_ts
from tests.support.journals import BASE_NS, MS
from tui.model import detail, points, status, target, timeline
from tui.screens.block import parse_block
from tui.widgets.hexview import first_change_line, hex_rows


@pytest.fixture
def j(journal_dir: Path):
    with Journal.open(journal_dir, readonly=True) as journal:
        yield journal


def newest_first(j: Journal) -> list:
    return sorted(j.points(), key=points.point_key, reverse=True)


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7, 500])
def test_pages_add_up_to_every_point_once(j: Journal, limit: int) -> None:
    # the fixture has a user mark and a flush at the same time and seq: a tie for the pager
    expected = newest_first(j)
    assert any(a.ts_ns == b.ts_ns and a.seq == b.seq for a, b in pairwise(expected))
    got, before = [], None
    while True:
        page = points.points_page(j, None, before, limit)
        assert len(page.points) <= limit
        got += page.points
        if page.done:
            break
        assert page.points, "a page that is not the last must not be empty"
        before = page.points[-1]
    assert got == expected


def test_marks_only_pages(j: Journal) -> None:
    page = points.points_page(j, MARK_KINDS, None, 10)
    assert [p.name for p in page.points] == ["after-upgrade", "before-upgrade", "checkpoint"] and page.done


def test_points_until_reaches_the_target_and_no_further(j: Journal) -> None:
    every = newest_first(j)
    first = points.points_page(j, None, None, 3)
    target = every[10]
    rest = points.points_until(j, None, first.points[-1], target.ts_ns)
    assert first.points + rest.points == every[:len(first.points) + len(rest.points)]
    assert rest.points[-1].ts_ns <= target.ts_ns < rest.points[-2].ts_ns


def test_points_newer(j: Journal, journal_dir: Path) -> None:
    every = newest_first(j)
    page = points.points_newer(j, None, every[3], 10)
    assert page.points == every[:3]
    assert points.points_newer(j, None, every[-1], 2) is None  # too many: start again


def test_timeline_counts_every_byte_once(j: Journal) -> None:
    start, end = timeline.journal_span(j)
    written = sum(r.length for r in j.records()
                      if r.type in (RecordType.WRITE, RecordType.DISCARD, RecordType.WRITE_ZEROES))
    for columns in (1, 7, 100, 1000):
        data = timeline.timeline(j, start, end + 1, columns)
        assert len(data.buckets) == columns
        assert sum(data.buckets) == written
    # a coarse view (the per-second table) spreads each second over its columns: the total holds
    data = timeline.timeline(j, start - 100 * 10**9, end + 100 * 10**9, 20)
    assert sum(data.buckets) == written


def test_detail_matches_the_records(j: Journal) -> None:
    every = newest_first(j)
    point = next(p for p in every if p.kind == "mark")
    prev = every[every.index(point) + 1]
    d = detail.point_detail(j, point)
    assert d.previous == prev
    records = list(j.records(prev.seq + 1, point.seq))
    assert d.records == len(records)
    assert d.writes == sum(r.type == RecordType.WRITE for r in records)
    for block in d.changed:
        before, after = detail.block_pair(j, block, point.seq, prev.seq)
        assert before != after
    for block in set(d.touched) - set(d.changed):
        before, after = detail.block_pair(j, block, point.seq, prev.seq)
        assert before == after


def test_status_without_a_service(j: Journal) -> None:
    snap = status.read_status(j, BASE_NS + 20_000 * MS)
    assert not snap.running and "has not run" in snap.stopped_why
    assert snap.records == j.stats().records and not snap.overflow


def test_check_target(tmp_path: Path) -> None:
    assert target.check_target("") == (False, "type a path to restore to")
    assert target.check_target(str(tmp_path / "new.img")) == (False, "")
    (tmp_path / "old.img").write_bytes(b"x")
    assert target.check_target(str(tmp_path / "old.img")) == (True, "")
    assert "is a directory" in target.check_target(str(tmp_path))[1]
    assert "is not a directory" in target.check_target(str(tmp_path / "a" / "b.img"))[1]
    os.mkfifo(tmp_path / "fifo")
    assert "neither a regular file nor a block device" in target.check_target(str(tmp_path / "fifo"))[1]


def test_the_restore_target_check_finds_the_root_device_mounted() -> None:
    with open("/proc/self/mounts") as f:
        devices = [line.split()[0] for line in f if line.split()[1] == "/" and line.startswith("/dev/")]
    if not devices or not os.path.exists(devices[0]):
        pytest.skip("the root file system is not on a block device here")
    assert inspect_target(devices[0]).users[0] == "mounted on /"


def test_hex_rows_light_the_changes() -> None:
    before = bytes(64)
    after = bytearray(64)
    after[17] = 0xAB
    rows = hex_rows(before, bytes(after), 0x1000)
    text = ["".join(s.text for s in row) for row in rows]
    assert len(text) == 5  # four rows and one 'was' row under the changed one
    assert text[1].startswith("0000001010") and "ab" in text[1]
    assert text[2].strip().startswith("was") and "00" in text[2]
    lit = [s for s in rows[1] if s.style is not None and s.style.reverse]
    assert [s.text for s in lit] == ["ab", "."]
    assert first_change_line(before, bytes(after)) == 1
    assert first_change_line(before, before) == 0


def test_parse_block() -> None:
    assert parse_block("300", 4 << 20) == 300
    assert parse_block("0x1000", 4 << 20) == 1
    assert parse_block("@8191", 4 << 20) == 1
    for bad, why in (("x", "neither"), ("1024", "outside"), ("-1", "outside")):
        with pytest.raises(ValueError, match=why):
            parse_block(bad, 4 << 20)


def test_formats() -> None:
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB" and format_bytes(3 << 30) == "3.0 GiB"
    assert format_duration(350 * MS) == "350 ms" and format_duration(200 * 10**9) == "3 m 20 s"
    assert format_ts(BASE_NS + 5) == "2026-03-01T12:00:00.000000005+00:00"
