"""How the TUI looks: the main screen, the restore dialog and the detail view, compared to SVGs.

Deterministic by construction: the journal's times are fixed (creation
included), the zone is UTC, the status bar's clock is pinned, the terminal
size is fixed and the input cursor does not blink. Update after a deliberate
change with ``pytest tests/tui --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.support.tui import make_app, settle
from tui.widgets.points_list import PointsList

TERMINAL = (100, 34)


def test_main_screen(snap_compare, journal_dir: Path) -> None:
    async def ready(pilot: Pilot) -> None:
        await settle(pilot)

    assert snap_compare(make_app(journal_dir), terminal_size=TERMINAL, run_before=ready)


def test_restore_dialog_asks_before_overwriting(snap_compare, journal_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sdb-before.img").write_bytes(b"old")

    async def confirm(pilot: Pilot) -> None:
        await settle(pilot)
        pilot.app.screen.query_one(PointsList).move_cursor(6)
        await pilot.press("r")
        field = pilot.app.screen.query_one(Input)
        field.cursor_blink = False
        field.value = "sdb-before.img"
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(make_app(journal_dir), terminal_size=TERMINAL, run_before=confirm)


def test_detail_view(snap_compare, journal_dir: Path) -> None:
    async def detail(pilot: Pilot) -> None:
        await settle(pilot)
        pilot.app.screen.query_one(PointsList).move_cursor(1)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(make_app(journal_dir), terminal_size=TERMINAL, run_before=detail)
