"""Shown instead of the main screen when the journal cannot be opened."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static


class ErrorScreen(Screen):
    """One line saying what is wrong and what to do; q quits with a non-zero status."""

    BINDINGS = [Binding("q,escape", "quit", "Quit")]

    def __init__(self, path: str, text: str) -> None:
        super().__init__()
        self.path = path
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text("cannot open the journal", style="bold red"))
            yield Static(Text(self.text), id="error-text")
            yield Static(Text("\nGive another with: cdp tui --journal DIR (or set CDP_JOURNAL).\n"
                              "A damaged journal: run 'cdp verify --journal DIR' to see what is wrong.",
                              style="dim"))
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = self.path

    def action_quit(self) -> None:
        self.app.exit(return_code=1, message=f"cdp: tui: {self.text}")
