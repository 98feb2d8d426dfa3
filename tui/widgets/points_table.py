"""The list of rewind points, newest first, filled a page at a time as the cursor nears its end."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from journal import Point
from tui.format import fmt_ts

#: Ask for the next page when the cursor is this close to the last loaded row.
PREFETCH_ROWS = 60
KIND_STYLE = {
    "flush": "",
    "mark": "bold yellow",
    "user-mark": "bold yellow",
    "overflow": "bold red",
    "resync": "bold green",
    "baseline": "bold cyan",
}


class PointsTable(DataTable):
    """A DataTable of :class:`journal.Point` rows; the screen feeds it pages."""

    BINDINGS = [
        # in a list, home/end go to the first/last row (DataTable scrolls sideways)
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]

    class NeedMore(Message):
        """The cursor is near the last loaded row and older points remain."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.points: list[Point] = []
        #: no older point is left to load
        self.done = False
        #: a page is on its way (set by the screen, cleared when it lands)
        self.loading = False

    def on_mount(self) -> None:
        self.add_column("time", width=23, key="time")
        self.add_column("kind", width=9, key="kind")
        self.add_column("seq", width=10, key="seq")
        self.add_column("whole", width=5, key="whole")
        self.add_column("name", key="name")

    def reset(self) -> None:
        """Forget every row (a new filter or a reload from the newest end)."""
        self.clear()
        self.points = []
        self.done = False

    def add_points(self, points: list[Point], done: bool) -> None:
        """Append a page (older than every row already there)."""
        self.add_rows(
            (fmt_ts(p.ts_ns),
             Text(p.kind, style=KIND_STYLE.get(p.kind, "")),
             Text(str(p.seq), justify="right"),
             Text("yes", style="green") if p.whole else Text("NO", style="bold red"),
             p.name)
            for p in points)
        self.points.extend(points)
        self.done = done

    @property
    def selected(self) -> Point | None:
        """The point under the cursor."""
        row = self.cursor_row
        return self.points[row] if 0 <= row < len(self.points) else None

    def index_at_or_before(self, ts_ns: int) -> int | None:
        """Row of the newest loaded point at or before ``ts_ns`` (rows are newest first)."""
        lo, hi = 0, len(self.points)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.points[mid].ts_ns > ts_ns:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(self.points) else None

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.maybe_need_more()

    def maybe_need_more(self) -> None:
        if not self.done and not self.loading and self.cursor_row >= len(self.points) - PREFETCH_ROWS:
            self.loading = True
            self.post_message(self.NeedMore())
