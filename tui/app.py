"""`cdp tui`: the Textual app for browsing rewind points and restoring.

The app opens the journal read-only in a worker (opening never blocks the
first frame), then shows :class:`~tui.screens.main.MainScreen`, or
:class:`~tui.screens.error.ErrorScreen` with the one-line reason when the
path holds no readable journal. It owns the journal and closes it on exit;
screens borrow it and read it only from workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from textual import on
from textual.app import App
from textual.message import Message

from journal import Journal
from tui.model.timeline import journal_span
from tui.screens.error import ErrorScreen
from tui.screens.main import MainScreen
from tui.workers import Failed, Leases, journal_worker

#: on exit, how long worker threads get to finish before the journal is closed under them
CLOSE_WAIT_S = 5.0


class CdpApp(App[int]):
    """Browse a journal's rewind points over time; restore one to a path."""

    CSS_PATH = "app.tcss"
    TITLE = "cdp"
    # the command palette has nothing to offer beyond the keys; ? lists those
    ENABLE_COMMAND_PALETTE = False

    @dataclass
    class Opened(Message):
        journal: Journal
        #: (first, last) time in the journal and its newest seq, read in the worker too
        span: tuple[int, int]
        last_seq: int

    def __init__(self, journal_path: str | os.PathLike[str], *, clock: Callable[[], int] = time.time_ns,
                 status_interval: float = 1.0) -> None:
        """``clock`` and ``status_interval`` exist so tests can fix what the status bar shows."""
        super().__init__()
        self.journal_path = os.fspath(journal_path)
        self.clock = clock
        self.status_interval = status_interval
        self.journal: Journal | None = None
        #: worker threads inside the journal; it is closed only once they are out
        self.leases = Leases()

    def on_mount(self) -> None:
        self.sub_title = self.journal_path
        self.open_journal()

    @journal_worker("open", failure="opening the journal")
    def open_journal(self) -> None:
        journal = Journal.open(self.journal_path, readonly=True, marks=True)
        try:
            # the block views read ranges, which have no count to catch an entry lost from
            # a damaged page, and LMDB would abort on a damaged tree: check it in full first
            journal.index.check_tree(full=True)
            span, last_seq = journal_span(journal), journal.last_seq
        except BaseException:
            journal.close()
            raise
        self.post_message(self.Opened(journal, span, last_seq))

    @on(Opened)
    def _opened(self, message: Opened) -> None:
        self.journal = message.journal
        self.push_screen(MainScreen(message.journal, message.span, message.last_seq))

    @on(Failed)
    def _open_failed(self, message: Failed) -> None:
        self.push_screen(ErrorScreen(self.journal_path, message.text))

    async def on_unmount(self) -> None:
        """Let worker threads leave the journal (a restore being quit cancels itself), then close it."""
        self.leases.close()
        deadline = time.monotonic() + CLOSE_WAIT_S
        # bounded: a read stuck on a dead disk must not hang the exit
        while self.leases.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.journal is not None:
            self.journal.close()
            self.journal = None
