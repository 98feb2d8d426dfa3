"""Files changed since the previous point: what `cdp diff --files` says, for the point in the detail view.

Opening the screen starts the work in a worker: the changed ranges come
from the index at once, then both points are restored into sparse
temporary images (a progress bar) and debugfs names the files (the bar
pulses). The list is capped at :attr:`FilesScreen.SHOWN` lines with a count
of the rest. Escape closes the screen and cancels a restore still running.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, Static

from journal import Cancelled, Journal, Point
from journal.changes import Changes
from journal.units import format_bytes, format_count, format_ts_ms
from tui.model.access import FilesSince, files_since_previous
from tui.workers import Failed, Progress, journal_worker, progress_poster

#: what a change looks like in the list, as in `cdp diff --files`
MARKS = {"modified": "M", "added": "+", "deleted": "-"}


class FilesScreen(Screen):
    """The files and directories whose blocks or inodes changed since the previous point."""

    #: lines listed; the rest is counted (`cdp diff --files` lists them all)
    SHOWN = 500

    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("q", "app.quit", "Quit"),
    ]

    @dataclass
    class Ranges(Message):
        previous: Point
        changes: Changes

    @dataclass
    class Finished(Message):
        result: FilesSince

    def __init__(self, journal: Journal, point: Point) -> None:
        super().__init__()
        self.journal = journal
        self.point = point
        self.cancel_event = threading.Event()
        self.result: FilesSince | None = None
        #: "running", "done" or "failed"
        self.state = "running"
        #: what the index said about the ranges, the first half of the status line while working
        self._since = ""

    def compose(self) -> ComposeResult:
        p = self.point
        yield Static(Text.assemble(("files changed", "bold"), f" up to seq {p.seq} ({p.kind}"
                                   f"{' ' + repr(p.name) if p.name else ''}, {format_ts_ms(p.ts_ns)})"),
                     id="files-title")
        yield Static("reading the ranges written since the previous point…", id="files-status")
        yield ProgressBar(total=None, show_eta=False, id="files-progress")
        with VerticalScroll(id="files-scroll"):
            yield Static("", id="files-list")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#files-scroll").border_title = "files"
        self.find_files()

    def _status(self, text: str | Text) -> None:
        self.query_one("#files-status", Static).update(text)

    # ---------------------------------------------------------------- worker

    @journal_worker("files", failure="files changed", ignore=(Cancelled,))
    def find_files(self) -> None:
        result = files_since_previous(
            self.journal, self.point, ranges=lambda prev, changes: self.post_message(self.Ranges(prev, changes)),
            progress=progress_poster(self), cancel=self.cancel_event)
        self.post_message(self.Finished(result))

    @on(Ranges)
    def _ranges(self, message: Ranges) -> None:
        c, prev = message.changes, message.previous
        what = f"{prev.kind}{' ' + repr(prev.name) if prev.name else ''}, seq {prev.seq}"
        if not c.ranges:
            self._status(f"since the previous point ({what}): nothing written")
            return
        self._since = (f"since the previous point ({what}): {format_count(len(c.ranges))} ranges, "
                       f"{format_bytes(c.bytes)} written")
        self._status(f"{self._since}; restoring both points to read their files…")

    @on(Progress)
    def _progress(self, message: Progress) -> None:
        bar = self.query_one(ProgressBar)
        if message.done >= message.total:
            bar.update(total=None)  # debugfs now: no measure of how far it got, the bar pulses
            self._status(f"{self._since}; naming the files with debugfs…")
        else:
            bar.update(total=max(1, message.total), progress=message.done)

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        r = self.result = message.result
        self.state = "done"
        self.query_one(ProgressBar).display = False
        if r.previous is None:
            self._status("the first point: nothing before it to compare with")
            return
        prev = r.previous
        what = f"{prev.kind}{' ' + repr(prev.name) if prev.name else ''}, seq {prev.seq}"
        changed = r.changes.bytes if r.changes is not None else 0
        self._status(f"since the previous point ({what}): {format_count(len(r.files))} files or directories "
                     f"changed, {format_bytes(changed)} written")
        text = Text()
        for f in r.files[:self.SHOWN]:
            text.append(f"{MARKS[f.change]} ", style={"modified": "yellow", "added": "green",
                                                       "deleted": "red"}[f.change])
            text.append(f"{f.path}\n")
        if len(r.files) > self.SHOWN:
            text.append(f"… and {format_count(len(r.files) - self.SHOWN)} more (cdp diff --files lists them all)",
                        style="bold")
        if not r.files:
            text.append("no file changed (filesystem metadata only, or bytes rewritten unchanged)")
        self.query_one("#files-list", Static).update(text)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.state = "failed"
        self.query_one(ProgressBar).display = False
        self._status(Text(message.text, style="bold red"))

    # --------------------------------------------------------------- actions

    def on_unmount(self) -> None:
        """Leaving (or quitting) stops a restore still running; its temporary images go with it."""
        self.cancel_event.set()

    def action_close(self) -> None:
        self.cancel_event.set()
        self.app.pop_screen()
