"""The keys screen (`?`): the bindings of the screen it was opened from, and the TIME grammar."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from journal.timespec import TIME_HELP


def _keys_table(bindings: list[BindingType]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for b in bindings:
        if not isinstance(b, Binding):
            continue
        keys = b.key_display or " / ".join(k.strip() for k in b.key.split(","))
        table.add_row(keys, b.description)
    return table


class HelpScreen(ModalScreen[None]):
    """Any key that is not a scroll key closes it."""

    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close"),
    ]

    def __init__(self, bindings: list[BindingType], title: str) -> None:
        super().__init__()
        self.bindings_shown = list(bindings)
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(_keys_table(self.bindings_shown), id="help-keys")
            yield Static(Text("\nIn the points list: ↑/↓, PgUp/PgDn, Home/End move; older points load "
                              "as you scroll. A click on the timeline selects the point at that time.\n",
                              style="dim"))
            yield Static(TIME_HELP, id="time-help")
            yield Static(Text("\nescape or ? closes this", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = f"keys: {self.title_text}"

    def action_close(self) -> None:
        self.dismiss(None)
