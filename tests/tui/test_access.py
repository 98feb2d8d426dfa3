"""Pilot tests of instant access from the detail view: export (read with libnbd), mount, files changed.

Everything is real: the journal, nbdkit serving it (the export is read back
with libnbd and compared with the journal's own read of the point), this
host's nbd support (whatever it is, the TUI must say what `cdp mount` says),
debugfs naming the files of a real ext4 filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdp.errors import CdpError
from journal import Journal
from tests.export.conftest import connect, libnbd
from tests.support.cli import cdp
from tests.support.extjournal import CHANGED, build_ext_journal, have_e2fsprogs
from tests.support.journals import build
from tests.support.tui import make_app, screen_text, settle, start, until, widget_text
from tui.model.access import mount_problem
from tui.screens.detail import DetailScreen
from tui.screens.files import FilesScreen
from tui.screens.main import MainScreen
from tui.widgets.points_list import PointsList

SIZE = (110, 40)
#: nbdkit imports the plugin and opens the journal before it serves: seconds on a loaded machine
START_S = 60.0


async def open_detail(pilot, row: int = 0) -> DetailScreen:
    screen = await start(pilot)
    screen.query_one(PointsList).move_cursor(row)
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(pilot.app.screen, DetailScreen), screen_text(pilot.app)
    return pilot.app.screen


def gone(pid: int) -> bool:
    """The process exited (a zombie not reaped yet counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -------------------------------------------------------------------- export


async def test_export_serves_the_point_and_a_second_press_stops_it(journal_dir: Path) -> None:
    nbd = libnbd()
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        detail = await open_detail(pilot, row=1)
        point = detail.point
        assert point.whole
        assert "e: serve this point over NBD" in widget_text(app, "#detail-access")
        await pilot.press("e")
        await until(pilot, lambda: detail.export_state != "starting", timeout=START_S)
        assert detail.export_state == "on", widget_text(app, "#detail-access")
        uri = detail.export.uri
        pid = detail.export.pid
        assert uri.startswith("nbd+unix:///?socket=") and uri in widget_text(app, "#detail-access")
        with Journal.open(journal_dir, readonly=True) as j:
            size = j.info.device_bytes
            want = j.read(0, size, seq=point.seq)
            newest = j.read(0, size, seq=j.last_seq)
        assert want != newest  # the export serves the point, not the device now
        h = connect(nbd, uri)
        assert h.get_size() == size
        assert h.pread(size, 0) == want
        assert h.is_read_only()
        h.shutdown()
        await pilot.press("e")
        await until(pilot, lambda: detail.export_state == "off")
        assert detail.export is None and gone(pid)
        socket_path = uri.split("socket=", 1)[1]
        assert not os.path.exists(socket_path)
        assert "e: serve this point over NBD" in widget_text(app, "#detail-access")


async def test_export_stops_when_the_screen_closes_and_when_the_app_quits(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    pids = []
    async with app.run_test(size=SIZE) as pilot:
        detail = await open_detail(pilot)
        await pilot.press("e")
        await until(pilot, lambda: detail.export_state != "starting", timeout=START_S)
        assert detail.export_state == "on", widget_text(app, "#detail-access")
        pids.append(detail.export.pid)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await until(pilot, lambda: gone(pids[0]))
        detail = await open_detail(pilot)
        await pilot.press("e")
        await until(pilot, lambda: detail.export_state != "starting", timeout=START_S)
        assert detail.export_state == "on", widget_text(app, "#detail-access")
        pids.append(detail.export.pid)
        app.exit()
    assert gone(pids[1])


async def test_export_of_a_point_that_is_not_whole_asks_first(tmp_path: Path) -> None:
    path = build(tmp_path / "j", overflow=True, open_overflow=True)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        detail = await open_detail(pilot)
        assert not detail.point.whole
        await pilot.press("e")
        assert detail.export_state == "confirm"
        assert "NOT whole" in widget_text(app, "#detail-access")
        await pilot.press("e")
        await until(pilot, lambda: detail.export_state != "starting", timeout=START_S)
        assert detail.export_state == "on", widget_text(app, "#detail-access")
        await pilot.press("e")
        await until(pilot, lambda: detail.export_state == "off")


async def test_export_that_cannot_start_is_one_line(journal_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no nbdkit to be found: what a host without it sees
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        detail = await open_detail(pilot)
        await pilot.press("e")
        await until(pilot, lambda: detail.export_state == "off")
        await settle(pilot)
        line = widget_text(app, "#detail-access").splitlines()[0]
        assert "last try: nbdkit is not installed (apt-get install nbdkit nbdkit-plugin-python)" in line
        assert "Traceback" not in screen_text(app)


# --------------------------------------------------------------------- mount


async def test_mount_where_the_host_cannot_says_what_cdp_mount_says(journal_dir: Path, tmp_path: Path) -> None:
    problem = mount_problem()
    if problem is None:
        pytest.skip("this host can mount (nbd module and root): the VM test access-mount covers it")
    target = tmp_path / "mnt"
    target.mkdir()
    cli = cdp("mount", "--journal", journal_dir, "--at", "mark:before-upgrade", target)
    cli.one_line_error(1, problem)
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        detail = await open_detail(pilot)
        await pilot.press("m")
        assert detail.mount_state == "unavailable" and detail.mounted is None
        assert problem in widget_text(app, "#detail-access")
        # the reason stays on the screen and a second press says it again, nothing else
        await pilot.press("m")
        assert detail.mount_state == "unavailable"
        assert "Traceback" not in screen_text(app)
    assert list(target.iterdir()) == []


def test_mount_problem_is_the_cli_check() -> None:
    from cdp import mount

    try:
        mount.check_nbd_support()
    except CdpError as exc:
        assert mount_problem() == str(exc)
    else:
        assert mount_problem() is None


# --------------------------------------------------------------------- files


needs_e2fsprogs = pytest.mark.skipif(not have_e2fsprogs(), reason="e2fsprogs missing (scripts/setup installs it)")


@needs_e2fsprogs
async def test_files_changed_since_the_previous_point(tmp_path: Path) -> None:
    path = build_ext_journal(tmp_path)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        detail = await open_detail(pilot)
        assert detail.point.name == "after"
        await pilot.press("f")
        files = app.screen
        assert isinstance(files, FilesScreen)
        await until(pilot, lambda: files.state != "running", timeout=60)
        assert files.state == "done", widget_text(app, "#files-status")
        assert files.result.previous.name == "before"
        listed = [line.split(" ", 1) for line in widget_text(app, "#files-list").splitlines()]
        assert {p for _, p in listed} == CHANGED
        assert ["-", "/b"] in listed and ["+", "/c/newf"] in listed and ["M", "/c/e"] in listed
        assert "6 files or directories changed" in widget_text(app, "#files-status")
        await pilot.press("escape")
        assert app.screen is detail


@needs_e2fsprogs
async def test_files_list_is_capped_with_a_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_ext_journal(tmp_path, extra_files=30)
    monkeypatch.setattr(FilesScreen, "SHOWN", 10)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot)
        await pilot.press("f")
        files = app.screen
        await until(pilot, lambda: files.state != "running", timeout=60)
        assert files.state == "done", widget_text(app, "#files-status")
        total = len(files.result.files)
        assert total == len(CHANGED) + 30
        lines = widget_text(app, "#files-list").splitlines()
        assert len(lines) == 11
        assert lines[-1] == f"… and {total - 10} more (cdp diff --files lists them all)"


async def test_files_of_something_that_is_not_ext4_is_one_line(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, row=1)
        await pilot.press("f")
        files = app.screen
        await until(pilot, lambda: files.state != "running", timeout=60)
        assert files.state == "failed"
        status = widget_text(app, "#files-status")
        assert "ext2/3/4" in status and len(status.splitlines()) == 1 and "Traceback" not in status


async def test_files_of_the_first_point(journal_dir: Path) -> None:
    app = make_app(journal_dir)
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot)
        await pilot.press("end", "enter")
        await settle(pilot)
        await pilot.press("f")
        files = app.screen
        await until(pilot, lambda: files.state != "running")
        assert "the first point: nothing before it" in widget_text(app, "#files-status")
