"""Helpers for driving the app in tests: a pinned clock, waiting for workers, reading the screen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from textual.app import App
from textual.pilot import Pilot

from tests.support.journals import BASE_NS
from tui.app import CdpApp
from tui.screens.main import MainScreen

#: what the status bar's clock reads in every test: 20 s after the journal began
NOW_NS = BASE_NS + 20_000_000_000


def make_app(path: Path | str, **kwargs) -> CdpApp:
    """The app with its clock pinned and the periodic status refresh out of the way."""
    kwargs.setdefault("clock", lambda: NOW_NS)
    kwargs.setdefault("status_interval", 3600.0)
    return CdpApp(path, **kwargs)


async def settle(pilot: Pilot, rounds: int = 3) -> None:
    """Wait until no worker runs and the messages they posted are handled."""
    app = pilot.app
    for _ in range(500):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in app.workers):
            rounds -= 1
            if rounds <= 0:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("workers never settled")


async def until(pilot: Pilot, condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Pause until ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s:\n{screen_text(pilot.app)}")
        await pilot.pause(0.02)


def screen_text(app: App) -> str:
    """Every cell of the current screen, one line per row, styles dropped."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip).rstrip() for strip in strips)


def widget_text(app, selector: str) -> str:
    """One widget's whole text (the screen may wrap a long path across lines)."""
    return str(app.screen.query_one(selector).render())


def error_text(app) -> str:
    return widget_text(app, "#error-text")


async def submit(pilot, selector: str, value: str) -> None:
    """Fill an Input and press enter in it (typing a long path key by key is slow)."""
    field = pilot.app.screen.query_one(selector)
    field.value = value
    field.focus()
    await pilot.press("enter")
    await settle(pilot)


async def start(pilot) -> MainScreen:
    await settle(pilot)
    assert isinstance(pilot.app.screen, MainScreen), screen_text(pilot.app)
    return pilot.app.screen
