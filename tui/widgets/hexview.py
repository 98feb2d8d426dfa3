"""A hex dump of one block at a point, with the bytes that differ from the previous point lit.

Each 16-byte row of the block as it is at the point; a row that changed is
followed by a dim ``was`` row holding the old bytes where they differ, so the
dump stays 80 columns wide and the eye lands on the change. The dump is a
virtual view (line API): only the rows on screen are drawn.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

ROW = 16
WIDTH = 80
_LIT = Style(bold=True, reverse=True, color="red")
_DIM = Style(dim=True)
_BOLD = Style(bold=True)
_WAS = Style(dim=True, italic=True)


def hex_rows(before: bytes, after: bytes, base: int) -> list[list[Segment]]:
    """The dump's lines as segments (see the module docstring)."""
    lines: list[list[Segment]] = []
    for at in range(0, len(after), ROW):
        new = after[at:at + ROW]
        old = before[at:at + ROW]
        diff = [i < len(old) and old[i] != b for i, b in enumerate(new)]
        changed = any(diff)
        line = [Segment(f"{base + at:010x}  ", _BOLD if changed else _DIM)]
        for i, b in enumerate(new):
            line.append(Segment(f"{b:02x}", _LIT if diff[i] else Style()))
            line.append(Segment("  " if i == 7 else " "))
        line.append(Segment(" │"))
        for i, b in enumerate(new):
            line.append(Segment(chr(b) if 32 <= b < 127 else ".", _LIT if diff[i] else _DIM))
        line.append(Segment("│"))
        lines.append(line)
        if changed:
            was = [Segment("       was  ", _WAS)]
            for i, b in enumerate(old):
                was.append(Segment(f"{b:02x}" if diff[i] else "  ", _DIM))
                was.append(Segment("  " if i == 7 else " "))
            lines.append(was)
    return lines


def first_change_line(before: bytes, after: bytes) -> int:
    """The dump line of the first changed row (0 if none), counting the 'was' rows above it."""
    for line, at in enumerate(range(0, len(after), ROW)):
        if before[at:at + ROW] != after[at:at + ROW]:
            return line
    return 0


class HexView(ScrollView, can_focus=True):
    """Scrollable dump; the detail screen gives it a block pair or a message."""

    DEFAULT_CSS = """
    HexView { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[list[Segment]] = []

    def show_block(self, before: bytes, after: bytes, base: int) -> None:
        self.lines = hex_rows(before, after, base)
        self.virtual_size = Size(WIDTH, len(self.lines))
        self.scroll_to(y=max(0, first_change_line(before, after) - 2), animate=False)
        self.refresh()

    def show_message(self, text: str, style: str = "dim") -> None:
        self.lines = [[Segment(text, Style.parse(style))]]
        self.virtual_size = Size(len(text), 1)
        self.scroll_to(y=0, animate=False)
        self.refresh()

    def text(self) -> str:
        """Everything in the dump as plain text (for tests and copy)."""
        return "\n".join("".join(seg.text for seg in line) for line in self.lines)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if index >= len(self.lines):
            return Strip.blank(width, base)
        strip = Strip(self.lines[index]).apply_style(base)
        return strip.crop(scroll_x, scroll_x + width).adjust_cell_length(width, base)
