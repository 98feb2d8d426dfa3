"""Fixtures for the TUI tests: real journals in temporary directories, times shown in UTC."""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path

import pytest

from tests.support.journals import build


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    """Times render in the local zone: make it UTC so screens read the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    """300 writes with flushes, two ring marks, a user mark and a closed overflow window."""
    return build(tmp_path / "journal", overflow=True)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests (Pilot needs a loop) without an asyncio plugin."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**args))
    return True
