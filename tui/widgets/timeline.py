"""The activity timeline: bytes written per column, rewind points beneath, the selection lit.

The widget draws what it is given (:class:`tui.model.timeline.TimelineData`) and
tells its screen how wide it is; the screen decides the window of time and
reads the journal in a worker.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from journal.records import MARK_KINDS, PointKind
from journal.units import format_bytes, format_clock, format_duration
from tui.model.timeline import TimelineData

BARS = " ▁▂▃▄▅▆▇█"
CHART_ROWS = 4
SYMBOL = {
    PointKind.FLUSH: ("╵", "dim"),
    PointKind.MARK: ("▲", "bold yellow"),
    PointKind.USER_MARK: ("▲", "bold yellow"),
    PointKind.OVERFLOW: ("!", "bold red"),
    PointKind.RESYNC: ("R", "bold green"),
    PointKind.BASELINE: ("B", "bold cyan"),
}


class Timeline(Widget):
    """Bars (four rows, eight levels each), a row of point symbols, a time axis."""

    DEFAULT_CSS = """
    Timeline { height: 8; }
    """

    data: reactive[TimelineData | None] = reactive(None)
    selected_ns: reactive[int | None] = reactive(None)

    class Resized(Message):
        """The number of columns changed: the screen reloads the data at the new width."""

        def __init__(self, columns: int) -> None:
            super().__init__()
            self.columns = columns

    class Picked(Message):
        """A click on the chart: the screen selects the point at or before that time."""

        def __init__(self, ts_ns: int) -> None:
            super().__init__()
            self.ts_ns = ts_ns

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._columns = 0

    @property
    def columns(self) -> int:
        return max(1, self.content_size.width)

    def on_resize(self) -> None:
        if self.columns != self._columns:
            self._columns = self.columns
            self.post_message(self.Resized(self.columns))

    def on_click(self, event: events.Click) -> None:
        data = self.data
        where = event.get_content_offset(self)
        if data is None or not data.buckets or where is None:
            return  # nothing drawn yet, or a click on the border
        col = min(where.x, len(data.buckets) - 1)
        # the end of the column, so a point drawn in it counts as "at or before"
        self.post_message(self.Picked(data.start_ns + (col + 1) * data.span_ns // len(data.buckets) - 1))

    def selected_column(self) -> int | None:
        data = self.data
        if data is None or self.selected_ns is None:
            return None
        col = (self.selected_ns - data.start_ns) * len(data.buckets) // max(1, data.span_ns)
        return col if 0 <= col < len(data.buckets) else None

    def render(self) -> Text:
        data = self.data
        width = self.columns
        if data is None:
            return Text("reading activity…", style="dim")
        buckets = data.buckets
        top = max(buckets) if buckets else 0
        sel = self.selected_column()
        lines: list[Text] = []
        for row in range(CHART_ROWS - 1, -1, -1):
            line = Text(no_wrap=True)
            for col, nbytes in enumerate(buckets[:width]):
                eighths = 0
                if nbytes and top:
                    # at least the lowest bar for any write: a small burst must not vanish
                    eighths = max(1, round(nbytes * CHART_ROWS * 8 / top))
                level = min(8, max(0, eighths - row * 8))
                line.append(BARS[level], style="reverse" if col == sel else "")
            lines.append(line)
        marks = Text(no_wrap=True)
        for col in range(min(width, len(buckets))):
            kind = data.marks.get(col)
            char, style = SYMBOL.get(kind, (" ", "")) if kind else (" ", "")
            if col == sel:
                char, style = ("▲" if kind in MARK_KINDS else "█"), "bold reverse"
            marks.append(char, style=style)
        lines.append(marks)
        lines.append(self._axis(data, width))
        per = data.span_ns // max(1, len(buckets))
        legend = Text(no_wrap=True, overflow="ellipsis", style="dim")
        legend.append(f"{format_duration(per)} per column, peak {format_bytes(top)}   ")
        legend.append("▲", style="yellow")
        legend.append(" mark  ")
        legend.append("╵")
        legend.append(" flush  ")
        legend.append("!", style="red")
        legend.append(" overflow  ")
        legend.append("R", style="green")
        legend.append(" resync")
        lines.append(legend)
        return Text("\n").join(lines)

    def _axis(self, data: TimelineData, width: int) -> Text:
        """Labels at the left, middle and right edges of the window."""
        left = format_clock(data.start_ns, data.span_ns)
        right = format_clock(data.end_ns, data.span_ns)
        mid = format_clock(data.start_ns + data.span_ns // 2, data.span_ns)
        axis = [" "] * width
        for pos, label in ((0, left), (width // 2 - len(mid) // 2, mid), (width - len(right), right)):
            for i, ch in enumerate(label):
                if 0 <= pos + i < width:
                    axis[pos + i] = ch
        return Text("".join(axis), style="dim", no_wrap=True)
