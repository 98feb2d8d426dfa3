"""Pilot tests: every action of the TUI on real journals, checked against the journal itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from journal.units import format_ts_ms
from tests.support.journals import BASE_NS, MS, build, build_many_entries
from tests.support.tui import NOW_NS, error_text, make_app, screen_text, settle, start, submit, until, widget_text
from tests.support.writer import holding_writer
from tui.model.points import point_key
from tui.screens.detail import DetailScreen
from tui.screens.error import ErrorScreen
from tui.screens.goto import GotoScreen
from tui.screens.help import HelpScreen
from tui.screens.main import MainScreen
from tui.screens.mark import MarkScreen
from tui.screens.restore import RestoreScreen
from tui.screens.verify import VerifyScreen
from tui.widgets.hexview import HexView
from tui.widgets.points_list import PointsList
from tui.widgets.timeline import Timeline

SIZE = (110, 40)


def all_points(path: Path) -> list:
    with Journal.open(path, readonly=True) as j:
        return sorted(j.points(), key=point_key, reverse=True)


# ------------------------------------------------------------------ opening


async def test_lists_every_point_newest_first(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        table = screen.query_one(PointsList)
        expected = all_points(journal_dir)
        assert table.points == expected
        assert table.row_count == len(expected)
        assert table.done
        kinds = {p.kind for p in table.points}
        assert kinds == {"baseline", "flush", "mark", "user-mark", "overflow", "resync"}
        text = screen_text(app)
        assert "before-upgrade" in text and "checkpoint" in text
        # the newest point is selected and lit on the timeline
        assert table.selected == expected[0]
        assert screen.query_one(Timeline).selected_ns == expected[0].ts_ns


async def test_status_bar_counts_and_service_state(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        with Journal.open(journal_dir, readonly=True) as j:
            records = j.stats().records
        text = screen_text(app)
        assert f"{records} records" in text
        assert "service not running" in text
        assert "12:00:20" in text  # the pinned clock


async def test_status_bar_shows_live_service_and_overflow(tmp_path: Path) -> None:
    path = build(tmp_path / "j", overflow=True, open_overflow=True)
    with Journal.open(path) as j:
        j.set_status({"pid": os.getpid(), "state": "running", "updated_ns": NOW_NS - 500 * MS,
                      "device": "/dev/vdb", "lag_seconds": 0.12, "lag_bytes": 8192,
                      "rate_bytes": 3 * 1024 * 1024, "ring_fill": 0.25, "overflow": False})
    app = make_app(path)
    # a running service holds the journal's writer lock: that, not the record, says it runs
    with holding_writer(path):
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            text = screen_text(app)
    assert "/dev/vdb" in text
    assert "lag 120 ms / 8.0 KiB" in text
    assert "3.0 MiB/s" in text and "ring 25%" in text
    assert "OVERFLOW" in text
    assert "service not running" not in text


async def test_stale_status_means_not_running(journal_dir: Path) -> None:
    with Journal.open(journal_dir) as j:
        j.set_status({"pid": os.getpid(), "state": "running", "updated_ns": NOW_NS - 60_000 * MS})
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        assert "service not running (no report for 60 s)" in screen_text(app)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(gone.stdout)


async def test_service_that_said_it_stopped_or_was_killed(journal_dir: Path, dead_pid: int) -> None:
    with Journal.open(journal_dir) as j:
        j.set_status({"pid": dead_pid, "state": "running", "updated_ns": NOW_NS - 100 * MS})
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        assert f"service not running (pid {dead_pid} is gone)" in screen_text(app)
    with Journal.open(journal_dir) as j:
        j.set_status({"pid": os.getpid(), "state": "stopped", "updated_ns": NOW_NS - 100 * MS})
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        assert "service not running (it is stopped)" in screen_text(app)


async def test_no_journal_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    app = make_app(tmp_path / "nothing-here")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ErrorScreen)
        assert "cannot open the journal" in screen_text(app)
        assert "is not a cdp journal" in error_text(app)
        await pilot.press("q")
    assert app.return_code == 1


async def test_damaged_journal_is_a_message(journal_dir: Path) -> None:
    (journal_dir / "index" / "data.mdb").write_bytes(b"garbage" * 100)
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ErrorScreen)
        assert "cannot open the index" in error_text(app)


async def test_an_entry_lost_from_an_index_page_is_a_message(journal_dir: Path) -> None:
    """A leaf's last node dropped (its ``lower`` less 2): no seal fails, the tree check says so."""
    import struct

    data = bytearray((journal_dir / "index" / "data.mdb").read_bytes())
    with Journal.open(journal_dir, readonly=True) as j:
        j.index.check_tree(full=True)  # healthy
    leaves = [p for p in range(2, len(data) // 4096)
              if struct.unpack_from("<Q", data, p * 4096)[0] == p and data[p * 4096 + 10] & 0x02]
    caught = False
    for pgno in leaves:
        damaged = bytearray(data)
        lower = struct.unpack_from("<H", damaged, pgno * 4096 + 12)[0]
        struct.pack_into("<H", damaged, pgno * 4096 + 12, lower - 2)
        (journal_dir / "index" / "data.mdb").write_bytes(bytes(damaged))
        with Journal.open(journal_dir, readonly=True) as j:
            try:
                j.index.check_tree(full=True)
                continue  # a free page: nothing reads it
            except Exception:  # noqa: BLE001 - the page is in the tree: the TUI must say so
                pass
        app = make_app(journal_dir)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert isinstance(app.screen, ErrorScreen)
            assert "the index is damaged" in error_text(app)
        caught = True
        break
    assert caught, "no leaf page of the tree was found to damage"


async def test_journal_of_another_schema_is_a_message(journal_dir: Path) -> None:
    (journal_dir / "cdp-journal").write_text("cdp-journal 99\n")
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "schema 99" in error_text(app)


# ------------------------------------------------------------------- points


async def test_filter_marks_only_and_back(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        table = screen.query_one(PointsList)
        await pilot.press("f")
        await settle(pilot)
        assert [p.name for p in table.points] == ["after-upgrade", "before-upgrade", "checkpoint"]
        assert "marks only" in screen_text(app)
        await pilot.press("f")
        await settle(pilot)
        assert table.points == all_points(journal_dir)


async def test_points_load_lazily_as_the_cursor_nears_the_end(tmp_path: Path) -> None:
    path = build(tmp_path / "j", writes=1300, flush_every=1)  # 1300 flushes: more than two pages
    expected = all_points(path)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        table = screen.query_one(PointsList)
        assert len(table.points) == 500 and not table.done
        while not table.done:
            await pilot.press("end")
            await settle(pilot)
        assert table.points == expected
        assert len({point_key(p) for p in table.points}) == len(expected)


async def test_goto_iso_time_selects_the_point_at_or_before(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        await pilot.press("g")
        assert isinstance(app.screen, GotoScreen)
        await pilot.press(*"2026-03-01T12:00:03.400Z", "enter")
        await settle(pilot)
        selected = screen.query_one(PointsList).selected
        assert selected is not None
        assert selected.kind == "mark" and selected.name == "before-upgrade"


async def test_goto_mark_name_and_bad_time(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        await pilot.press("g", *"yesterday-ish", "enter")
        await settle(pilot)
        assert isinstance(app.screen, GotoScreen)
        assert "cannot read TIME" in widget_text(app, "#goto-message")
        await pilot.press("escape")
        await pilot.press("g", *"mark:checkpoint", "enter")
        await settle(pilot)
        assert screen.query_one(PointsList).selected.name == "checkpoint"


async def test_goto_reaches_a_point_not_loaded_yet(tmp_path: Path) -> None:
    path = build(tmp_path / "j", writes=1300, flush_every=1)
    target = [p for p in all_points(path) if p.kind == "flush"][-3]
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        table = screen.query_one(PointsList)
        assert target not in table.points
        await pilot.press("g", *f"@{target.ts_ns // 10**9}.{target.ts_ns % 10**9:09d}", "enter")
        await settle(pilot)
        assert table.selected == target


# ------------------------------------------------------------------- detail


async def test_detail_counts_changes_and_shows_a_changed_block(journal_dir: Path) -> None:
    points = all_points(journal_dir)
    row = next(i for i, p in enumerate(points) if p.kind == "flush")
    point, prev = points[row], points[row + 1]
    with Journal.open(journal_dir, readonly=True) as j:
        writes = [r for r in j.records(prev.seq + 1, point.seq) if r.type == RecordType.WRITE]
        touched = sorted({b for r in writes for b in range(r.offset // 4096, (r.offset + r.length) // 4096)})
        first = touched[0]
        before = j.read(first * 4096, 4096, seq=prev.seq)
        after = j.read(first * 4096, 4096, seq=point.seq)
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        screen.query_one(PointsList).move_cursor(row)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen)
        detail = app.screen.detail
        assert detail.previous == prev
        assert detail.writes == len(writes)
        assert detail.write_bytes == sum(r.length for r in writes)
        assert detail.touched == touched
        text = screen_text(app)
        assert f"{len(writes)} writes" in text
        assert f"{len(touched)} blocks of 4 KiB written" in text
        # the hex view shows the first changed block: its bytes at this point, the old ones as 'was'
        assert before != after
        assert f"block {first} " in text
        hexed = app.screen.query_one(HexView).text()
        assert " ".join(f"{b:02x}" for b in after[:8]) in hexed
        await pilot.press("n")
        await settle(pilot)
        assert f"block {detail.changed[1]} " in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_detail_shows_a_block_chosen_by_offset(journal_dir: Path) -> None:
    points = all_points(journal_dir)
    with Journal.open(journal_dir, readonly=True) as j:
        after = j.read(0x12000, 4096, seq=points[1].seq)
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        screen.query_one(PointsList).move_cursor(1)
        await pilot.press("enter")
        await settle(pilot)
        detail = app.screen
        await pilot.press("b", *"nonsense", "enter")
        assert "neither a block number nor a byte offset" in widget_text(app, "#block-message")
        await submit(pilot, "#block", "99999999")
        assert "outside the device" in widget_text(app, "#block-message")
        await submit(pilot, "#block", "0x12345")
        assert app.screen is detail
        assert detail.shown_block == 0x12
        assert " ".join(f"{b:02x}" for b in after[:8]) in detail.query_one(HexView).text()
        assert "chosen" in str(detail.query_one(HexView).border_title)
        await pilot.press("n")
        await settle(pilot)
        assert detail.shown_block == detail.detail.changed[0]


async def test_detail_of_the_baseline(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("end", "enter")
        await settle(pilot)
        assert "the first point: nothing before it" in screen_text(app)


# ------------------------------------------------------------------ actions


async def test_mark_adds_a_user_mark_at_now(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        await pilot.press("m")
        assert isinstance(app.screen, MarkScreen)
        await pilot.press(*"before-rm", "enter", "enter")
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)
        top = screen.query_one(PointsList).points[0]
        assert (top.kind, top.name, top.ts_ns) == ("user-mark", "before-rm", NOW_NS)
    with Journal.open(journal_dir, readonly=True) as j:
        assert any(p.name == "before-rm" and p.ts_ns == NOW_NS for p in j.points(kinds={"user-mark"}))


async def test_mark_at_a_typed_time_and_errors(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("m", "enter", "enter")
        assert "a mark needs a name" in widget_text(app, "#mark-message")
        await pilot.press(*"x", "tab")
        time_input = app.screen.query_one("#mark-time")
        time_input.value = "2020-01-01T00:00:00Z"
        await pilot.press("enter")
        await settle(pilot)
        assert "before the journal began" in widget_text(app, "#mark-message")
        time_input.value = "2026-03-01T12:00:03.100Z"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)
        assert app.screen.query_one(PointsList).selected.name == "x"


async def test_restore_writes_the_device_as_of_the_point(journal_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "restored.img"
    points = all_points(journal_dir)
    row = next(i for i, p in enumerate(points) if p.name == "before-upgrade")
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        screen.query_one(PointsList).move_cursor(row)
        await pilot.press("r")
        assert isinstance(app.screen, RestoreScreen)
        await pilot.press(*str(target), "enter")
        await until(pilot, lambda: app.screen.state == "done")
        text = widget_text(app, "#restore-message")
        assert f"restored seq {points[row].seq}" in text
        assert "2026-03-01T12:00:03.020000000+00:00" in text
        await pilot.press("enter")
        assert isinstance(app.screen, MainScreen)
    with Journal.open(journal_dir, readonly=True) as j:
        assert target.read_bytes() == j.read(0, j.info.device_bytes, seq=points[row].seq)


async def test_restore_asks_before_overwriting(journal_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "old.img"
    target.write_bytes(b"keep me")
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("r")
        await submit(pilot, "#target", str(target))
        assert app.screen.state == "confirm"
        assert "exists and will be overwritten" in widget_text(app, "#restore-message")
        assert target.read_bytes() == b"keep me"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        assert target.read_bytes() == b"keep me"
        await pilot.press("r")
        await submit(pilot, "#target", str(target))
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.state == "done")
    with Journal.open(journal_dir, readonly=True) as j:
        assert target.read_bytes() == j.read(0, j.info.device_bytes)


async def test_restore_to_an_unwritable_target_says_why(journal_dir: Path, tmp_path: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("r")
        await submit(pilot, "#target", str(tmp_path / "no" / "such" / "dir.img"))
        assert "is not a directory" in widget_text(app, "#restore-message")
        await submit(pilot, "#target", str(tmp_path))
        assert "is a directory" in widget_text(app, "#restore-message")
        assert app.screen.state == "edit"


async def test_restore_through_a_symbolic_link_to_a_file_is_refused_as_in_the_cli(journal_dir: Path,
                                                                                   tmp_path: Path) -> None:
    real = tmp_path / "real.img"
    real.write_bytes(b"keep me")
    (tmp_path / "link.img").symlink_to(real)
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("r")
        await submit(pilot, "#target", str(tmp_path / "link.img"))
        assert "is a symbolic link" in widget_text(app, "#restore-message")
        assert app.screen.state == "edit"
    assert real.read_bytes() == b"keep me"


async def test_restore_of_a_point_that_is_not_whole_asks_first(tmp_path: Path) -> None:
    path = build(tmp_path / "j", overflow=True, open_overflow=True)
    points = all_points(path)
    assert not points[0].whole
    target = tmp_path / "partial.img"
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("r")
        await submit(pilot, "#target", str(target))
        assert "not whole at this point" in widget_text(app, "#restore-message")
        assert not target.exists()
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.state == "done")
        assert "some ranges are stale" in widget_text(app, "#restore-message")


async def test_restore_can_be_cancelled(tmp_path: Path) -> None:
    path = build_many_entries(tmp_path / "j", entries=1 << 20)
    target = tmp_path / "cancelled.img"
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("r")
        dialog = app.screen
        assert isinstance(dialog, RestoreScreen)
        dialog.query_one("#target").value = str(target)
        # Button.press posts and returns at once; pilot.press would wait for the app to go
        # idle, which it does not while the restore reports progress
        dialog.query_one("#go").press()
        bar = dialog.query_one("#restore-progress")
        await until(pilot, lambda: bar.progress > 0 or dialog.state == "done")
        assert dialog.state == "running", "the restore finished before it could be cancelled"
        await pilot.press("escape")
        await until(pilot, lambda: dialog.state != "running")
        assert dialog.state == "edit"
        assert "restore cancelled" in widget_text(app, "#restore-message")
        assert not target.exists()  # the journal removes a target it created


async def test_quitting_during_a_restore_cancels_it(tmp_path: Path) -> None:
    path = build_many_entries(tmp_path / "j", entries=1 << 20)
    target = tmp_path / "quit.img"
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("r")
        dialog = app.screen
        dialog.query_one("#target").value = str(target)
        dialog.query_one("#go").press()
        bar = dialog.query_one("#restore-progress")
        await until(pilot, lambda: bar.progress > 0 or dialog.state == "done")
        assert dialog.state == "running", "the restore finished before the app could quit"
        app.exit()
    assert app.journal is None
    assert not target.exists()


async def test_restore_from_a_damaged_segment_is_a_message(journal_dir: Path, tmp_path: Path) -> None:
    for seg in (journal_dir / "segments").glob("*.seg"):
        seg.unlink()
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("r")
        await submit(pilot, "#target", str(tmp_path / "x.img"))
        await until(pilot, lambda: app.screen.state == "edit" and "missing" in widget_text(app, "#restore-message"))


async def test_verify_reports_an_intact_journal(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("v")
        assert isinstance(app.screen, VerifyScreen)
        await until(pilot, lambda: app.screen.report is not None)
        assert app.screen.report.ok
        assert "the journal is intact" in widget_text(app, "#verify-result")
        assert app.screen.query_one("#verify-progress").percentage == 1.0
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_verify_lists_the_damage(journal_dir: Path) -> None:
    seg = min((journal_dir / "segments").glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("v")
        await until(pilot, lambda: app.screen.report is not None)
        assert not app.screen.report.ok
        text = widget_text(app, "#verify-result")
        assert "problem" in text and seg.name in text


# ------------------------------------------------------------------ timeline


async def test_zoom_and_pan_move_the_window(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        timeline = screen.query_one(Timeline)
        full = timeline.data.span_ns
        await pilot.press("plus")
        await settle(pilot)
        assert timeline.data.span_ns == full // 2
        selected = screen.query_one(PointsList).selected.ts_ns
        assert timeline.data.start_ns <= selected <= timeline.data.end_ns
        start_before = timeline.data.start_ns
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert timeline.data.start_ns == start_before - (full // 2) // 4
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert timeline.data.start_ns == start_before + (full // 2) // 4
        await pilot.press("minus", "minus")
        await settle(pilot)
        assert timeline.data.span_ns == full  # never wider than the whole journal
        assert sum(timeline.data.buckets) > 0


async def test_timeline_finer_than_a_second_counts_records(journal_dir: Path) -> None:
    with Journal.open(journal_dir, readonly=True) as j:
        written = sum(r.length for r in j.records()
                      if r.type in (RecordType.WRITE, RecordType.DISCARD, RecordType.WRITE_ZEROES))
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        data = screen.query_one(Timeline).data
        # 6 s over ~108 columns: per-record buckets, every byte counted once
        assert data.span_ns // len(data.buckets) < 10**9
        assert sum(data.buckets) == written
        assert "mark" in data.marks.values() and "overflow" in data.marks.values()


async def test_selecting_a_point_outside_the_window_moves_it(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        for _ in range(5):
            await pilot.press("plus")
        await settle(pilot)
        await pilot.press("end")  # the baseline, far to the left
        await settle(pilot)
        data = screen.query_one(Timeline).data
        assert data.start_ns <= BASE_NS <= data.end_ns
        assert screen.query_one(Timeline).selected_column() is not None


async def test_clicking_the_timeline_selects_the_point_there(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        timeline = screen.query_one(Timeline)
        data = timeline.data
        for kind in ("mark", "baseline"):
            col = next(c for c, k in sorted(data.marks.items()) if k == kind)
            await pilot.click(Timeline, offset=(col + 1, 1))  # +1: the border
            await settle(pilot)
            assert screen.query_one(PointsList).selected.kind == kind
            assert timeline.selected_column() == col


# ------------------------------------------------------------- live, help, quit


async def test_new_records_appear_while_open(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await start(pilot)
        with Journal.open(journal_dir) as j:
            seq, ts = j.last_seq, j.last_ts_ns
            j.append([Record(seq + 1, ts + MS, RecordType.WRITE, 0, 0, 4096, b"\1" * 4096),
                      Record(seq + 2, ts + 2 * MS, RecordType.MARK, 0, 0, 0, b"live")])
        table = screen.query_one(PointsList)
        table.move_cursor(2)
        kept = table.selected
        screen.refresh_status()
        await settle(pilot)
        assert table.points[0].name == "live"
        assert table.points[1:] == all_points(journal_dir)[1:]
        assert table.selected == kept  # away from the top, the selection stays put
        table.move_cursor(0)
        with Journal.open(journal_dir) as j:
            seq, ts = j.last_seq, j.last_ts_ns
            j.append([Record(seq + 1, ts + MS, RecordType.FLUSH)])
        screen.refresh_status()
        await settle(pilot)
        assert table.selected == table.points[0] and table.selected.seq == seq + 1  # at the top, it follows


async def test_help_lists_the_keys(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for words in ("Restore", "Mark", "Go to time", "Verify", "Zoom in", "Quit", "mark:NAME"):
            assert words in text
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_q_quits(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert app.journal is None  # closed on the way out


def test_fmt_ts_is_what_the_list_shows() -> None:
    assert format_ts_ms(BASE_NS + 1_234_567_890) == "2026-03-01 12:00:01.234"
