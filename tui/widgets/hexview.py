"""A hex dump of one block at a point, with the bytes that differ from the previous point lit."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

ROW = 16


def hex_lines(before: bytes, after: bytes, base: int) -> Text:
    """Rows of ``after``; a changed row is followed by a dim 'was' row with the old bytes.

    Showing the old bytes only where they differ keeps the dump 80 columns
    wide and makes the change itself the thing the eye lands on.
    """
    out = Text(no_wrap=True)
    for at in range(0, len(after), ROW):
        new = after[at:at + ROW]
        old = before[at:at + ROW]
        diff = [i < len(old) and old[i] != b for i, b in enumerate(new)]
        out.append(f"{base + at:010x}  ", style="dim" if not any(diff) else "bold")
        for i, b in enumerate(new):
            out.append(f"{b:02x}", style="bold reverse red" if diff[i] else "")
            out.append(" " if i != 7 else "  ")
        out.append(" │")
        for i, b in enumerate(new):
            ch = chr(b) if 32 <= b < 127 else "."
            out.append(ch, style="bold reverse red" if diff[i] else "dim")
        out.append("│\n")
        if any(diff):
            out.append("       was  ", style="dim italic")
            for i, b in enumerate(old):
                out.append(f"{b:02x}" if diff[i] else "  ", style="dim")
                out.append(" " if i != 7 else "  ")
            out.append("\n")
    out.rstrip()
    return out


class HexView(Static):
    """Static text; the detail screen scrolls it in a container."""

    def show_block(self, before: bytes, after: bytes, base: int) -> None:
        self.update(hex_lines(before, after, base))
