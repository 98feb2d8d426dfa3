"""Point detail: what changed since the previous point, down to the byte; instant access to the point.

From here the point can be served over NBD (``e``, what `cdp export` does),
mounted read-only (``m``, what `cdp mount` does, where the host has the nbd
module and root) and its changed files listed (``f``, what `cdp diff --files`
says since the previous point). An export or a mount lasts until the same key
is pressed again or the screen closes (the app quitting included); the line
under the summary says what runs and how to reach it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from journal import Journal, Point
from journal.format import BLOCK
from journal.units import format_bytes, format_count, format_duration, format_ts, format_ts_ms
from tui.model.access import Export, Mounted, mount_point, mount_problem, unmount_point
from tui.model.detail import Cancelled, PointDetail, block_pair, point_detail
from tui.model.errors import describe_error
from tui.screens.block import BlockScreen
from tui.screens.files import FilesScreen
from tui.screens.help import HelpScreen
from tui.screens.restore import RestoreScreen
from tui.widgets.hexview import HexView
from tui.workers import Failed, journal_worker

POINT_DETAIL = "point detail"


class DetailScreen(Screen):
    """Counts since the previous point, then one block at a time: this point against the previous."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("n", "block(1)", "Next block"),
        Binding("p", "block(-1)", "Prev block"),
        Binding("a", "toggle_all", "Changed/written"),
        Binding("b", "choose_block", "Block…"),
        Binding("r", "restore", "Restore"),
        Binding("e", "export", "Export"),
        Binding("m", "mount", "Mount"),
        Binding("f", "files", "Files changed"),
        Binding("question_mark", "help", "Keys", key_display="?"),
        Binding("q", "app.quit", "Quit"),
    ]

    @dataclass
    class DetailLoaded(Message):
        detail: PointDetail
        #: the first changed block, read in the same worker so the dump appears with the counts
        first: tuple[int, bytes, bytes] | None = None

    @dataclass
    class BlockLoaded(Message):
        block: int
        before: bytes
        after: bytes

    @dataclass
    class AccessChanged(Message):
        """An export or a mount started, stopped or failed (``error``: the one-line reason)."""

        what: str  # "export" or "mount"
        error: str = ""

    def __init__(self, journal: Journal, point: Point) -> None:
        super().__init__()
        self.journal = journal
        self.point = point
        self.detail: PointDetail | None = None
        self.block_index = 0
        #: step through every written block, not only the changed ones
        self.all_blocks = False
        #: the block the hex view shows (None until one is loaded)
        self.shown_block: int | None = None
        #: a block the user asked for by number, shown instead of the changed/written list
        self.chosen_block: int | None = None
        #: the running export (its ``uri`` is set once it serves), and the mount
        self.export: Export | None = None
        self.mounted: Mounted | None = None
        #: "off", "confirm" (a point that is not whole: press again), "starting", "on", "stopping"
        self.export_state = "off"
        #: as export_state, and "unavailable" (then mount_reason says why)
        self.mount_state = "off"
        self.mount_reason = ""
        #: why the last export or mount (or unmount) failed, shown until the next try
        self.export_error = ""
        self.mount_error = ""
        #: set once the screen goes: a mount that finishes after that is undone at once
        self._closing = False

    def compose(self) -> ComposeResult:
        yield Static(self._header(), id="detail-summary")
        yield Static(self._access_text(), id="detail-access")
        yield HexView(id="hex")
        yield Footer()

    def on_mount(self) -> None:
        hexview = self.query_one(HexView)
        hexview.border_title = "block"
        hexview.show_message("reading the records since the previous point…")
        self.load_detail()

    def _header(self) -> Text:
        p = self.point
        text = Text()
        text.append(f"{p.kind}", style="bold")
        if p.name:
            text.append(f" {p.name!r}", style="bold yellow")
        text.append(f"  seq {p.seq}  {format_ts(p.ts_ns)}")
        if not p.whole:
            text.append("  NOT WHOLE (inside an overflow window)", style="bold red")
        return text

    @property
    def blocks(self) -> list[int]:
        d = self.detail
        if d is None:
            return []
        return d.touched if self.all_blocks else d.changed

    # --------------------------------------------------------------- workers

    @journal_worker("detail", failure=POINT_DETAIL, ignore=(Cancelled,))
    def load_detail(self) -> None:
        worker = get_current_worker()
        detail = point_detail(self.journal, self.point, lambda: worker.is_cancelled)
        first = None
        if detail.changed:
            prev_seq = detail.previous.seq if detail.previous else 0
            block = detail.changed[0]
            first = (block, *block_pair(self.journal, block, self.point.seq, prev_seq))
        self.post_message(self.DetailLoaded(detail, first))

    @journal_worker("block", failure=POINT_DETAIL)
    def load_block(self, block: int) -> None:
        worker = get_current_worker()
        prev_seq = self.detail.previous.seq if self.detail and self.detail.previous else 0
        before, after = block_pair(self.journal, block, self.point.seq, prev_seq)
        if not worker.is_cancelled:
            self.post_message(self.BlockLoaded(block, before, after))

    # -------------------------------------------------------------- handlers

    @on(DetailLoaded)
    def _detail_loaded(self, message: DetailLoaded) -> None:
        d = self.detail = message.detail
        text = self._header()
        text.append("\n")
        if d.previous is None:
            text.append("the first point: nothing before it to compare with")
        else:
            prev = d.previous
            text.append(f"since the previous point ({prev.kind}{' ' + repr(prev.name) if prev.name else ''}, "
                        f"seq {prev.seq}, {format_ts_ms(prev.ts_ns)}, "
                        f"{format_duration(max(0, self.point.ts_ns - prev.ts_ns))} earlier):\n")
            text.append(f"  {format_count(d.writes)} writes, {format_bytes(d.write_bytes)} written")
            if d.zeroed_bytes:
                text.append(f", {format_bytes(d.zeroed_bytes)} discarded or zeroed")
            text.append(f"; {format_count(d.records)} records in all\n")
            text.append(f"  {format_count(len(d.touched))} blocks of 4 KiB written, ")
            text.append(f"{format_count(len(d.changed))} changed", style="bold")
            if d.compared < len(d.touched):
                text.append(f" among the first {format_count(d.compared)} compared")
        self.query_one("#detail-summary", Static).update(text)
        self.block_index = 0
        self._show_block(message.first)

    def _show_block(self, preloaded: tuple[int, bytes, bytes] | None = None) -> None:
        """Title the dump for the current block and show it (``preloaded``: already read)."""
        if self.chosen_block is not None:
            block = self.chosen_block
            self.query_one(HexView).border_title = (f"block {block} (bytes {block * BLOCK:#x}..), chosen — "
                                                    "n/p go back to the changed blocks")
            self.load_block(block)
            return
        blocks = self.blocks
        scroll = self.query_one(HexView)
        if not blocks:
            what = "written" if self.all_blocks else "changed"
            scroll.border_title = "block"
            scroll.show_message(f"no block {what} since the previous point")
            return
        self.block_index %= len(blocks)
        block = blocks[self.block_index]
        scroll.border_title = (f"block {block} (bytes {block * BLOCK:#x}..) — "
                               f"{self.block_index + 1} of {len(blocks)} "
                               f"{'written' if self.all_blocks else 'changed'}")
        if preloaded is not None and preloaded[0] == block:
            self._block_loaded(self.BlockLoaded(*preloaded))
        else:
            self.load_block(block)

    @on(BlockLoaded)
    def _block_loaded(self, message: BlockLoaded) -> None:
        blocks = self.blocks
        wanted = self.chosen_block if self.chosen_block is not None else (
            blocks[self.block_index % len(blocks)] if blocks else None)
        if wanted != message.block:
            return
        hexview = self.query_one(HexView)
        hexview.show_block(message.before, message.after, message.block * BLOCK)
        hexview.border_subtitle = "bytes that differ from the previous point are lit; 'was' rows show the old bytes"
        self.shown_block = message.block

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.query_one(HexView).show_message(message.text, "bold red")
        self.app.notify(message.text, title=message.what, severity="error", timeout=8)

    # --------------------------------------------------------------- actions

    def action_block(self, step: int) -> None:
        if self.detail is None:
            return
        if self.chosen_block is not None:
            self.chosen_block = None  # back to the list, where it was
            step = 0
        if self.blocks:
            self.block_index = (self.block_index + step) % len(self.blocks)
        self._show_block()

    def action_choose_block(self) -> None:
        def chosen(block: int | None) -> None:
            if block is not None and self.detail is not None:
                self.chosen_block = block
                self._show_block()

        self.app.push_screen(BlockScreen(self.journal.info.device_bytes), chosen)

    def action_toggle_all(self) -> None:
        self.chosen_block = None
        self.all_blocks = not self.all_blocks
        self.block_index = 0
        if self.detail is not None:
            self._show_block()

    # ------------------------------------------------------- instant access

    def _access_text(self) -> Text:
        """One line each for the export and the mount: what runs, or the key that starts it."""
        text = Text()
        state, export = self.export_state, self.export
        text.append("export ", style="bold")
        if state == "on" and export is not None:
            text.append(export.uri, style="bold green")
            text.append("  read-only; e stops it")
        elif state in ("starting", "stopping"):
            text.append(f"{state}…", style="yellow")
        elif state == "confirm":
            text.append("this point is NOT whole (inside an overflow window): e again to serve it anyway",
                        style="bold yellow")
        else:
            text.append("e: serve this point over NBD", style="dim")
            if self.export_error:
                text.append(f"  (last try: {self.export_error})", style="bold red")
        text.append("\nmount  ", style="bold")
        mounted = self.mounted
        if self.mount_state == "on" and mounted is not None:
            text.append(str(mounted.mountpoint), style="bold green")
            text.append(f"  {mounted.fstype} read-only via {mounted.device}; m unmounts it")
            if self.mount_error:
                text.append(f"  (unmount failed: {self.mount_error})", style="bold red")
        elif self.mount_state in ("starting", "stopping"):
            text.append(f"{'mounting' if self.mount_state == 'starting' else 'unmounting'}…", style="yellow")
        elif self.mount_state == "confirm":
            text.append("this point is NOT whole (inside an overflow window): m again to mount it anyway",
                        style="bold yellow")
        elif self.mount_state == "unavailable":
            text.append(self.mount_reason, style="bold red")
        else:
            text.append("m: mount this point read-only", style="dim")
            if self.mount_error:
                text.append(f"  (last try: {self.mount_error})", style="bold red")
        return text

    def _show_access(self) -> None:
        self.query_one("#detail-access", Static).update(self._access_text())

    def action_export(self) -> None:
        """Start serving this point over NBD, or stop the export that runs."""
        state = self.export_state
        if state in ("starting", "stopping"):
            return
        if state == "on":
            self.export_state = "stopping"
            self._show_access()
            self.stop_export()
            return
        if not self.point.whole and state != "confirm":
            self.export_state = "confirm"
            self._show_access()
            return
        self.export_state = "starting"
        self.export = Export(self.journal, self.point)
        self._show_access()
        self.start_export(self.export)

    @work(thread=True, group="export")
    def start_export(self, export: Export) -> None:
        try:
            export.start()
        except Exception as exc:  # one line in the screen, never a traceback
            self.post_message(self.AccessChanged("export", describe_error(exc)))
            return
        self.post_message(self.AccessChanged("export"))

    @work(thread=True, group="export")
    def stop_export(self) -> None:
        export = self.export
        if export is not None:
            export.stop()
        self.post_message(self.AccessChanged("export"))

    def action_mount(self) -> None:
        """Mount this point read-only on a new directory, or undo the mount."""
        state = self.mount_state
        if state in ("starting", "stopping"):
            return
        if state == "on":
            self.mount_state = "stopping"
            self._show_access()
            self.run_unmount()
            return
        problem = mount_problem()
        if problem is not None:
            self.mount_state = "unavailable"
            self.mount_reason = problem
            self._show_access()
            self.app.notify(problem, title="mount", severity="warning", timeout=8)
            return
        if not self.point.whole and state != "confirm":
            self.mount_state = "confirm"
            self._show_access()
            return
        self.mount_state = "starting"
        self._show_access()
        self.run_mount()

    @work(thread=True, group="mount")
    def run_mount(self) -> None:
        try:
            mounted = mount_point(self.journal, self.point)
        except Exception as exc:
            self.post_message(self.AccessChanged("mount", describe_error(exc)))
            return
        if self._closing:  # the screen went while this mounted: nobody would undo it
            unmount_point(mounted)
            return
        self.mounted = mounted
        self.post_message(self.AccessChanged("mount"))

    @work(thread=True, group="mount")
    def run_unmount(self) -> None:
        mounted = self.mounted
        try:
            if mounted is not None:
                unmount_point(mounted)
        except Exception as exc:
            self.post_message(self.AccessChanged("mount", describe_error(exc)))
            return
        self.mounted = None
        self.post_message(self.AccessChanged("mount"))

    @on(AccessChanged)
    def _access_changed(self, message: AccessChanged) -> None:
        if message.what == "export":
            self.export_error = message.error
            if message.error or self.export_state == "stopping" or self.export is None:
                self.export, self.export_state = None, "off"
            else:
                self.export_state = "on"
        else:
            self.mount_error = message.error
            # a failed unmount keeps what is still mounted, so m tries again
            self.mount_state = "on" if self.mounted is not None else "off"
        self._show_access()
        if message.error:
            self.app.notify(message.error, title=message.what, severity="error", timeout=8)

    def on_unmount(self) -> None:
        """Leaving the screen (or quitting) stops the export and undoes the mount, as a second key press does."""
        self._closing = True
        export, self.export = self.export, None
        if export is not None:
            export.stop()
        mounted, self.mounted = self.mounted, None
        if mounted is not None:
            try:
                unmount_point(mounted)
            except Exception as exc:  # noqa: BLE001 - the app is going; say it where the user looks next
                self.app.notify(f"could not undo the mount of {mounted.mountpoint}: {describe_error(exc)} "
                                f"(cdp umount {mounted.mountpoint})", severity="error")

    def action_files(self) -> None:
        self.app.push_screen(FilesScreen(self.journal, self.point))

    def action_restore(self) -> None:
        self.app.push_screen(RestoreScreen(self.journal, self.point))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.BINDINGS, "Point detail"))
