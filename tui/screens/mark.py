"""The mark dialog: name a moment (now, or any TIME) so it can be found and restored later."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from journal import Journal, Point
from journal.timespec import mark_lookup, parse_time
from tui.workers import Failed, journal_worker


class MarkScreen(ModalScreen[Point | None]):
    """Two fields, name and TIME ('now' by default); the journal stores a user mark."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    @dataclass
    class Added(Message):
        point: Point

    def __init__(self, journal: Journal, clock: Callable[[], int]) -> None:
        super().__init__()
        self.journal = journal
        self.clock = clock

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Name this moment so you can come back to it.")
            yield Input(placeholder="name, e.g. before-upgrade", id="mark-name")
            yield Input("now", placeholder="TIME: now, -5m, 2026-03-01T14:05, @EPOCH", id="mark-time")
            yield Static("", id="mark-message")
            with Horizontal(classes="buttons"):
                yield Button("Mark", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "add a mark"
        self.query_one("#mark-name", Input).focus()

    @on(Input.Submitted, "#mark-name")
    def _next_field(self) -> None:
        self.query_one("#mark-time", Input).focus()

    @on(Input.Submitted, "#mark-time")
    @on(Button.Pressed, "#go")
    def _go(self) -> None:
        name = self.query_one("#mark-name", Input).value.strip()
        when = self.query_one("#mark-time", Input).value
        if not name:
            self.query_one("#mark-message", Static).update("a mark needs a name")
            self.query_one("#mark-name", Input).focus()
            return
        self.add_mark(name, when, self.clock())

    @journal_worker(failure="mark")
    def add_mark(self, name: str, when: str, now_ns: int) -> None:
        ts = parse_time(when, now_ns=now_ns, marks=mark_lookup(self.journal))
        self.post_message(self.Added(self.journal.add_mark(name, ts)))

    @on(Added)
    def _added(self, message: Added) -> None:
        self.dismiss(message.point)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.query_one("#mark-message", Static).update(message.text)

    @on(Button.Pressed, "#cancel")
    def action_dismiss_none(self) -> None:
        self.dismiss(None)
