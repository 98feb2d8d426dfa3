"""Point detail: what changed since the previous point, down to the byte."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from journal import Journal, Point
from journal.format import BLOCK
from journal.units import format_bytes, format_count, format_duration, format_ts, format_ts_ms
from tui.model.detail import Cancelled, PointDetail, block_pair, point_detail
from tui.screens.block import BlockScreen
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

    def compose(self) -> ComposeResult:
        yield Static(self._header(), id="detail-summary")
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

    def action_restore(self) -> None:
        self.app.push_screen(RestoreScreen(self.journal, self.point))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.BINDINGS, "Point detail"))
