"""The go-to dialog: type a TIME in the CLI's grammar, land on the point at or before it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from journal import Journal
from journal.timespec import TIME_HELP, mark_lookup, parse_time
from tui.workers import Failed, journal_worker


class GotoScreen(ModalScreen[int | None]):
    """Returns the time (ns) the user asked for; the main screen selects the point."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    @dataclass
    class Parsed(Message):
        ts_ns: int

    def __init__(self, journal: Journal, clock: Callable[[], int]) -> None:
        super().__init__()
        self.journal = journal
        self.clock = clock

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Go to the newest point at or before:")
            yield Input(placeholder="TIME, e.g. -5m or 2026-03-01T14:05:09 or mark:NAME", id="time")
            yield Static("", id="goto-message", classes="error")
            yield Static(TIME_HELP, id="time-help")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "go to time"
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _go(self, event: Input.Submitted) -> None:
        self.parse(event.value, self.clock())

    @journal_worker(failure="go to")
    def parse(self, text: str, now_ns: int) -> None:
        """Parsing may look up a mark in the journal, so it runs off the UI thread."""
        self.post_message(self.Parsed(parse_time(text, now_ns=now_ns, marks=mark_lookup(self.journal))))

    @on(Parsed)
    def _parsed(self, message: Parsed) -> None:
        self.dismiss(message.ts_ns)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.query_one("#goto-message", Static).update(message.text)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
