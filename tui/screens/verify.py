"""The verify dialog: check every record's CRCs and the index, with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, ProgressBar, Static

from journal import Journal, VerifyReport
from journal.units import format_bytes, format_count
from tui.workers import Failed, Progress, journal_worker, progress_poster

#: problems listed in the dialog; the CLI's `cdp verify` lists them all
SHOW_PROBLEMS = 50


class VerifyScreen(ModalScreen[VerifyReport | None]):
    """Runs on open; escape closes (a verify still running finishes unseen in its thread)."""

    BINDINGS = [Binding("escape", "close", "Close")]

    @dataclass
    class Finished(Message):
        report: VerifyReport

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal
        self.report: VerifyReport | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Checking every record's CRC-32C and the index against the segments…",
                        id="verify-title")
            yield ProgressBar(total=None, show_eta=False, id="verify-progress")
            with VerticalScroll(id="verify-result-scroll"):
                yield Static("", id="verify-result")
            with Horizontal(classes="buttons"):
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "verify"
        self.run_verify()

    @journal_worker("verify", failure="verify")
    def run_verify(self) -> None:
        self.post_message(self.Finished(self.journal.verify(progress_poster(self))))

    @on(Progress)
    def _progress(self, message: Progress) -> None:
        self.query_one(ProgressBar).update(total=max(1, message.total), progress=message.done)

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        r = self.report = message.report
        bar = self.query_one(ProgressBar)
        bar.update(total=max(1, bar.total or 1), progress=max(1, bar.total or 1))
        text = Text()
        summary = f"{format_count(r.records)} records, {format_bytes(r.bytes)} checked: "
        if r.ok:
            text.append(summary)
            text.append("the journal is intact", style="bold green")
        else:
            text.append(summary)
            text.append(f"{len(r.problems)} problem{'s' if len(r.problems) != 1 else ''}", style="bold red")
            for problem in r.problems[:SHOW_PROBLEMS]:
                text.append(f"\n  {problem}")
            if len(r.problems) > SHOW_PROBLEMS:
                text.append(f"\n  … and {len(r.problems) - SHOW_PROBLEMS} more (cdp verify lists them all)")
        self.query_one("#verify-title", Label).update("Verify finished.")
        self.query_one("#verify-result", Static).update(text)
        self.query_one("#close", Button).focus()

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.query_one("#verify-title", Label).update("Verify could not finish.")
        self.query_one("#verify-result", Static).update(Text(message.text, style="bold red"))

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.report)
