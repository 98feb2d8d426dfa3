"""The list of rewind points, newest first: a virtual list that draws only the rows on screen.

A journal can hold hundreds of thousands of points, so the list uses
Textual's line API (a :class:`ScrollView` with ``render_line``): the cost of
a frame is the rows visible, whatever the number loaded, and rows are
loaded a page at a time as the cursor nears the end of what is there.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from journal import Point
from journal.records import PointKind
from journal.units import format_ts_ms

#: Ask for the next page when the cursor is this close to the last loaded row.
PREFETCH_ROWS = 60
KIND_STYLE = {
    PointKind.FLUSH: Style(),
    PointKind.MARK: Style(bold=True, color="yellow"),
    PointKind.USER_MARK: Style(bold=True, color="yellow"),
    PointKind.OVERFLOW: Style(bold=True, color="red"),
    PointKind.RESYNC: Style(bold=True, color="green"),
    PointKind.BASELINE: Style(bold=True, color="cyan"),
}
_WHOLE = (Segment("yes  ", Style(color="green")), Segment("NO   ", Style(bold=True, color="red")))
HEADER = f" {'time':<23}  {'kind':<9}  {'seq':>10}  whole  name"


class PointsList(ScrollView, can_focus=True):
    """Rows of :class:`journal.Point`; the screen feeds it pages and listens for the cursor."""

    BINDINGS = [
        Binding("enter", "select", "Detail"),
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    COMPONENT_CLASSES = {"points-list--cursor", "points-list--header"}

    DEFAULT_CSS = """
    PointsList > .points-list--cursor { background: $accent 40%; text-style: bold; }
    PointsList:focus > .points-list--cursor { background: $accent; }
    PointsList > .points-list--header { text-style: bold; color: $text-muted; }
    """

    cursor_row: reactive[int] = reactive(0, init=False)

    class Highlighted(Message):
        """The cursor moved to another point."""

        def __init__(self, point: Point | None) -> None:
            super().__init__()
            self.point = point

    class Selected(Message):
        """Enter (or a click on the cursor row) on a point."""

        def __init__(self, point: Point) -> None:
            super().__init__()
            self.point = point

    class NeedMore(Message):
        """The cursor is near the last loaded row and older points remain."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.points: list[Point] = []
        #: no older point is left to load
        self.done = False
        #: a page is on its way (set by the screen, cleared when it lands)
        self.loading = False
        self._rows: dict[int, list[Segment]] = {}

    # ------------------------------------------------------------------ data

    @property
    def row_count(self) -> int:
        return len(self.points)

    def reset(self) -> None:
        """Forget every row (a new filter or a reload from the newest end)."""
        self.points = []
        self._rows.clear()
        self.done = False
        self.set_reactive(PointsList.cursor_row, 0)
        self._resize_virtual()
        self.scroll_to(y=0, animate=False)
        self.refresh()

    def add_points(self, points: list[Point], done: bool) -> None:
        """Append a page (older than every row already there)."""
        was_empty = not self.points
        self.points.extend(points)
        self.done = done
        self._resize_virtual()
        self.refresh()
        if was_empty and self.points:
            self.post_message(self.Highlighted(self.selected))

    def prepend_points(self, points: list[Point], follow: bool) -> None:
        """Insert newer points on top; ``follow`` moves the cursor to the newest, else it stays put."""
        if not points:
            return
        self.points[:0] = points
        self._rows.clear()
        self._resize_virtual()
        if follow:
            self.post_message(self.Highlighted(self.selected))
        else:
            self.set_reactive(PointsList.cursor_row, self.cursor_row + len(points))
            self.scroll_to(y=self.scroll_offset.y + len(points), animate=False)
        self.refresh()

    def _resize_virtual(self) -> None:
        self.virtual_size = Size(len(HEADER) + 40, len(self.points) + 1)

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

    # ---------------------------------------------------------------- cursor

    def move_cursor(self, row: int) -> None:
        """Put the cursor on ``row`` (clamped) and scroll it into view."""
        self.cursor_row = max(0, min(row, len(self.points) - 1))

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, max(0, len(self.points) - 1)))

    def watch_cursor_row(self, old: int, new: int) -> None:
        self._refresh_row(old)
        self._refresh_row(new)
        self._scroll_to_cursor()
        self.post_message(self.Highlighted(self.selected))
        self.maybe_need_more()

    def _scroll_to_cursor(self) -> None:
        # line 0 of the view is the header; row r is drawn at virtual line r + 1
        view = self.scrollable_content_region.height - 1
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif view > 0 and self.cursor_row >= top + view:
            self.scroll_to(y=self.cursor_row - view + 1, animate=False)

    def _refresh_row(self, row: int) -> None:
        y = row - int(self.scroll_y) + 1
        self.refresh(Region(0, y, self.size.width, 1))

    def maybe_need_more(self) -> None:
        if not self.done and not self.loading and self.cursor_row >= len(self.points) - PREFETCH_ROWS:
            self.loading = True
            self.post_message(self.NeedMore())

    def action_move(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(1, self.scrollable_content_region.height - 2))

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self.points) - 1)

    def action_select(self) -> None:
        if (point := self.selected) is not None:
            self.post_message(self.Selected(point))

    def on_click(self, event: events.Click) -> None:
        row = int(self.scroll_y) + event.y - 1
        if 0 <= row < len(self.points):
            if row == self.cursor_row:
                self.action_select()
            self.move_cursor(row)

    # ------------------------------------------------------------- rendering

    def _row_segments(self, row: int) -> list[Segment]:
        segments = self._rows.get(row)
        if segments is None:
            p = self.points[row]
            segments = [
                Segment(f" {format_ts_ms(p.ts_ns)}  "),
                Segment(f"{p.kind:<9}", KIND_STYLE.get(p.kind, Style())),
                Segment(f"  {p.seq:>10}  "),
                _WHOLE[0] if p.whole else _WHOLE[1],
                Segment(f"  {p.name}"),
            ]
            self._rows[row] = segments
        return segments

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            header = self.get_component_rich_style("points-list--header")
            return Strip([Segment(HEADER, base + header)]).adjust_cell_length(width, base + header)
        row = int(self.scroll_y) + y - 1
        if row >= len(self.points):
            return Strip.blank(width, base)
        style = base
        if row == self.cursor_row:
            style = base + self.get_component_rich_style("points-list--cursor")
        strip = Strip(self._row_segments(row)).apply_style(style)
        return strip.adjust_cell_length(width, style)

    def on_resize(self) -> None:
        self._scroll_to_cursor()
