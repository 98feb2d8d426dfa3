"""The restore dialog: where to, are you sure, progress with cancel, what was restored.

States: ``edit`` (typing the target) → ``confirm`` (the target exists, or
the point is not whole) → ``running`` (progress bar; escape or Cancel sets
the journal's cancel event) → ``done``. Any error puts the dialog back in
``edit`` with the message shown, so a bad path costs one more Enter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static

from journal import Cancelled, Journal, Point, RestoreResult
from journal.units import format_bytes, format_ts, format_ts_ms
from tui.model.target import check_target
from tui.workers import Failed, Progress, journal_worker, progress_poster


class RestoreScreen(ModalScreen[RestoreResult | None]):
    """Restore the device as of one point to a file or block device."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel / close"),
    ]

    @dataclass
    class Finished(Message):
        result: RestoreResult

    @dataclass
    class Stopped(Message):
        """Cancelled or failed: ``text`` says which and why."""

        text: str
        cancelled: bool

    def __init__(self, journal: Journal, point: Point, default_target: str = "") -> None:
        super().__init__()
        self.journal = journal
        self.point = point
        self.state = "edit"
        self.cancel_event = threading.Event()
        self.default_target = default_target
        self.result: RestoreResult | None = None
        #: the path the user was asked to confirm (a changed path is asked about again)
        self._confirm_target: str | None = None

    def compose(self) -> ComposeResult:
        p = self.point
        with Vertical(id="dialog"):
            yield Label(f"Restore the device as of {format_ts_ms(p.ts_ns)} (seq {p.seq}, {p.kind}"
                        f"{' ' + repr(p.name) if p.name else ''})", id="restore-title")
            if not p.whole:
                yield Label("This point is inside an overflow window: the device is NOT whole there.",
                            classes="warning")
            yield Input(self.default_target, placeholder="target: a new image file or a block device",
                        id="target")
            yield Static("", id="restore-message")
            yield ProgressBar(total=None, show_eta=False, id="restore-progress")
            with Horizontal(classes="buttons"):
                yield Button("Restore", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "restore"
        self.query_one(ProgressBar).display = False
        self.query_one(Input).focus()

    def _say(self, text: str | Text, style: str = "") -> None:
        msg = self.query_one("#restore-message", Static)
        msg.update(Text(text, style=style) if isinstance(text, str) else text)

    # ----------------------------------------------------------------- input

    @on(Input.Submitted)
    @on(Button.Pressed, "#go")
    def _go(self) -> None:
        if self.state == "running":
            return
        if self.state == "done":
            self.dismiss(self.result)
            return
        target = self.query_one(Input).value.strip()
        exists, problem = check_target(target, self.journal.path)
        if problem:
            self.state = "edit"
            self._say(problem, "bold red")
            return
        if self.state == "edit" and (exists or not self.point.whole):
            self.state = "confirm"
            self._confirm_target = target
            why = []
            if exists:
                why.append(f"{target} exists and will be overwritten")
            if not self.point.whole:
                why.append("the device is not whole at this point (a partial restore)")
            self._say(f"{'; '.join(why)}. Press Enter or Restore again to go on, escape to stop.", "bold yellow")
            self.query_one("#go", Button).label = "Overwrite" if exists else "Restore anyway"
            return
        if self.state == "confirm" and target != self._confirm_target:
            # the path changed after the question: ask again about the new one
            self.state = "edit"
            self._go()
            return
        self._start(target, overwrite=exists)

    @on(Input.Changed)
    def _edited(self) -> None:
        if self.state == "confirm":
            self.state = "edit"
            self.query_one("#go", Button).label = "Restore"
            self._say("")

    def _start(self, target: str, overwrite: bool) -> None:
        self.state = "running"
        self.cancel_event.clear()
        self.query_one(Input).disabled = True
        self.query_one("#go", Button).disabled = True
        bar = self.query_one(ProgressBar)
        bar.display = True
        bar.update(total=self.journal.info.device_bytes, progress=0)
        self._say(f"restoring to {target}…")
        self.run_restore(target, overwrite)

    # ---------------------------------------------------------------- worker

    @journal_worker("restore", failure="restore")
    def run_restore(self, target: str, overwrite: bool) -> None:
        try:
            result = self.journal.restore(
                target, seq=self.point.seq, progress=progress_poster(self), allow_partial=not self.point.whole,
                overwrite=overwrite, cancel=self.cancel_event)
        except Cancelled:
            self.post_message(self.Stopped("restore cancelled; nothing was kept at the target"
                                           if not overwrite else "restore cancelled; the target is incomplete",
                                           True))
            return
        self.post_message(self.Finished(result))

    @on(Progress)
    def _progress(self, message: Progress) -> None:
        self.query_one(ProgressBar).update(total=message.total, progress=message.done)

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        r = self.result = message.result
        self.state = "done"
        self.query_one(ProgressBar).update(progress=self.journal.info.device_bytes)
        text = Text()
        text.append("restored ", style="bold green")
        text.append(f"seq {r.seq} at {format_ts(r.ts_ns)}\n")
        text.append(f"to {r.target}: {format_bytes(r.bytes_written)}")
        if not r.whole:
            text.append("\nthe device was not whole at that point: some ranges are stale", style="bold red")
        self._say(text)
        go = self.query_one("#go", Button)
        go.label = "Close"
        go.disabled = False
        go.focus()
        self.query_one("#cancel", Button).display = False

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self._stopped(self.Stopped(message.text, False))

    @on(Stopped)
    def _stopped(self, message: Stopped) -> None:
        self.state = "edit"
        self.query_one(ProgressBar).display = False
        self.query_one(Input).disabled = False
        go = self.query_one("#go", Button)
        go.disabled = False
        go.label = "Restore"
        self._say(message.text, "bold yellow" if message.cancelled else "bold red")
        self.query_one(Input).focus()

    def on_unmount(self) -> None:
        """Quitting the app mid-restore cancels it, so no half-written target is left behind."""
        self.cancel_event.set()

    # --------------------------------------------------------------- actions

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """While running: stop the restore. Otherwise: close the dialog."""
        if self.state == "running":
            self.cancel_event.set()
            self._say("cancelling…", "bold yellow")
            return
        self.dismiss(self.result)
