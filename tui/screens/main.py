"""The main screen: status bar, activity timeline, points list; every action starts here."""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import get_current_worker

from journal import Journal, Point
from journal.records import MARK_KINDS
from journal.units import format_ts_ms
from tui.model.points import PointsPage, points_newer, points_page, points_until
from tui.model.status import StatusSnapshot, read_status
from tui.model.timeline import TimelineData, journal_span, timeline
from tui.screens.detail import DetailScreen
from tui.screens.goto import GotoScreen
from tui.screens.help import HelpScreen
from tui.screens.mark import MarkScreen
from tui.screens.restore import RestoreScreen
from tui.screens.verify import VerifyScreen
from tui.widgets.points_list import PointsList
from tui.widgets.status_bar import StatusBar
from tui.widgets.timeline import Timeline
from tui.workers import Failed, journal_worker

PAGE = 500
READING_POINTS = "reading points"
SUBTITLE = "f: marks/all   g: go to time   enter: detail"
#: the narrowest window the timeline zooms to
MIN_SPAN_NS = 10_000_000


class MainScreen(Screen):
    """Browse points over time and act on the selected one."""

    BINDINGS = [
        # shown in the footer by the list, which has the focus and handles enter itself
        Binding("enter", "detail", "Detail", show=False),
        Binding("r", "restore", "Restore"),
        Binding("m", "mark", "Mark"),
        Binding("g", "goto", "Go to time"),
        Binding("f", "filter", "Marks/all"),
        Binding("v", "verify", "Verify"),
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom in", key_display="+"),
        Binding("minus", "zoom(2)", "Zoom out", key_display="-"),
        Binding("left_square_bracket", "pan(-1)", "Earlier", key_display="["),
        Binding("right_square_bracket", "pan(1)", "Later", key_display="]"),
        Binding("question_mark", "help", "Keys", key_display="?"),
        Binding("q", "app.quit", "Quit"),
    ]

    # -------------------------------------------------------------- messages

    @dataclass
    class PointsLoaded(Message):
        generation: int
        #: the page continues after this point (None: from the newest)
        before: Point | None
        page: PointsPage
        #: select the newest row at or before this time once the page is in
        select_ns: int | None = None

    @dataclass
    class NewerLoaded(Message):
        generation: int
        after: Point
        #: None: too many to insert, start the list again
        page: PointsPage | None

    @dataclass
    class TimelineLoaded(Message):
        data: TimelineData

    @dataclass
    class StatusLoaded(Message):
        snap: StatusSnapshot
        now_ns: int
        span: tuple[int, int]

    # ----------------------------------------------------------------- setup

    def __init__(self, journal: Journal, span: tuple[int, int], last_seq: int) -> None:
        """``span`` and ``last_seq`` come from the worker that opened the journal (no read here)."""
        super().__init__()
        self.journal = journal
        self.marks_only = False
        self.generation = 0
        self.full_span = span
        self.view_start, self.view_end = self._padded(span)
        self.columns = 0
        self.last_seq = last_seq
        self._last_failure: tuple[tuple[str, str], float] | None = None

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Timeline(id="timeline")
        yield PointsList(id="points")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PointsList).focus()
        self._set_titles()
        self.reload_points()
        self.refresh_status()
        self.set_interval(self.app.status_interval, self.refresh_status)

    @property
    def table(self) -> PointsList:
        return self.query_one(PointsList)

    @property
    def kinds(self) -> frozenset[str] | None:
        return MARK_KINDS if self.marks_only else None

    def _set_titles(self) -> None:
        self.table.border_title = "rewind points: " + ("marks only" if self.marks_only else "all")
        self.table.border_subtitle = SUBTITLE
        self.query_one(Timeline).border_title = "write activity"

    @staticmethod
    def _padded(span: tuple[int, int]) -> tuple[int, int]:
        """The whole journal with a little room at both ends, so edge points are visible."""
        first, last = span
        pad = max((last - first) // 40, 1)
        return first - pad, last + pad

    # ---------------------------------------------------------------- points

    def reload_points(self, select_ns: int | None = None) -> None:
        """Start the list again from the newest point (after a filter change or a new mark)."""
        self.generation += 1
        self.table.reset()
        self.table.loading = True
        self.load_points(self.generation, self.kinds, None, select_ns)

    @journal_worker("points", failure=READING_POINTS)
    def load_points(self, generation: int, kinds: frozenset[str] | None, before: Point | None,
                    select_ns: int | None) -> None:
        """Read one page (or, to reach ``select_ns``, every page down to it)."""
        worker = get_current_worker()
        if select_ns is None:
            page = points_page(self.journal, kinds, before, PAGE)
        else:
            page = points_until(self.journal, kinds, before, select_ns)
            if not page.done and len(page.points) < PAGE:
                # fill up the page so the list does not end right at the target
                last = page.points[-1] if page.points else before
                more = points_page(self.journal, kinds, last, PAGE)
                page = PointsPage(page.points + more.points, more.done)
        if not worker.is_cancelled:
            self.post_message(self.PointsLoaded(generation, before, page, select_ns))

    @on(PointsLoaded)
    def _points_loaded(self, message: PointsLoaded) -> None:
        table = self.table
        if message.generation != self.generation or message.before != (table.points[-1] if table.points else None):
            return  # a stale page: the list was reset or already grew past it
        first = not table.points
        table.add_points(message.page.points, message.page.done)
        table.loading = False
        if message.select_ns is not None:
            row = table.index_at_or_before(message.select_ns)
            if row is not None:
                table.move_cursor(row)
                self._follow_selection()
        elif first:
            self._follow_selection()
        if not table.points:
            table.border_subtitle = "no marks yet: m adds one" if self.marks_only else "no points"
        else:
            table.border_subtitle = SUBTITLE
        table.maybe_need_more()

    @on(PointsList.NeedMore)
    def _need_more(self) -> None:
        table = self.table
        self.load_points(self.generation, self.kinds, table.points[-1] if table.points else None, None)

    @on(PointsList.Highlighted)
    def _highlighted(self) -> None:
        self._follow_selection()

    @on(PointsList.Selected)
    def _selected(self) -> None:
        self.action_detail()

    def _follow_selection(self) -> None:
        """Light the selected point on the timeline, moving the window to it if needed."""
        point = self.table.selected
        timeline = self.query_one(Timeline)
        timeline.selected_ns = None if point is None else point.ts_ns
        if point is not None and not self.view_start <= point.ts_ns <= self.view_end:
            span = self.view_end - self.view_start
            self.view_start = point.ts_ns - span // 2
            self.view_end = self.view_start + span
            self.reload_timeline()

    # -------------------------------------------------------------- timeline

    @on(Timeline.Resized)
    def _timeline_resized(self, message: Timeline.Resized) -> None:
        self.columns = message.columns
        self.reload_timeline()

    def reload_timeline(self) -> None:
        if self.columns:
            self.load_timeline(self.view_start, self.view_end, self.columns)

    @journal_worker("timeline", failure="reading activity")
    def load_timeline(self, start_ns: int, end_ns: int, columns: int) -> None:
        worker = get_current_worker()
        data = timeline(self.journal, start_ns, end_ns, columns)
        if not worker.is_cancelled:
            self.post_message(self.TimelineLoaded(data))

    @on(TimelineLoaded)
    def _timeline_loaded(self, message: TimelineLoaded) -> None:
        if (message.data.start_ns, message.data.end_ns) == (self.view_start, self.view_end):
            self.query_one(Timeline).data = message.data

    def action_zoom(self, factor: float) -> None:
        """Narrow or widen the window around the selected point (or its middle)."""
        point = self.table.selected
        span = self.view_end - self.view_start
        center = point.ts_ns if point is not None else self.view_start + span // 2
        widest = self._padded(self.full_span)
        new_span = int(min(max(span * factor, MIN_SPAN_NS), widest[1] - widest[0]))
        # keep the center at the same place on screen
        frac = (center - self.view_start) / span if span else 0.5
        self.view_start = center - int(new_span * frac)
        self.view_end = self.view_start + new_span
        self.reload_timeline()

    def action_pan(self, direction: int) -> None:
        """Move the window a quarter of its width earlier or later."""
        step = (self.view_end - self.view_start) // 4 * direction
        self.view_start += step
        self.view_end += step
        self.reload_timeline()

    # ---------------------------------------------------------------- status

    def refresh_status(self) -> None:
        self.load_status(self.app.clock())

    @journal_worker("status", failure="reading status")
    def load_status(self, now_ns: int) -> None:
        snap = read_status(self.journal, now_ns)
        span = journal_span(self.journal)
        self.post_message(self.StatusLoaded(snap, now_ns, span))

    @on(StatusLoaded)
    def _status_loaded(self, message: StatusLoaded) -> None:
        self.query_one(StatusBar).show(message.snap, message.now_ns)
        if message.snap.last_seq != self.last_seq:
            self._journal_grew(message.snap.last_seq, message.span)

    def _journal_grew(self, last_seq: int, span: tuple[int, int]) -> None:
        """New records: keep following the newest end if that is where the user is."""
        self.last_seq = last_seq
        old_last = self.full_span[1]
        self.full_span = span
        if self.view_end >= old_last:
            self.view_end = max(self.view_end, self._padded(span)[1])
            self.reload_timeline()
        table = self.table
        if not table.points:
            self.reload_points()
        elif not table.loading:
            self.load_newer(self.generation, self.kinds, table.points[0])

    @journal_worker("newer", failure=READING_POINTS)
    def load_newer(self, generation: int, kinds: frozenset[str] | None, after: Point) -> None:
        page = points_newer(self.journal, kinds, after, PAGE)
        self.post_message(self.NewerLoaded(generation, after, page))

    @on(NewerLoaded)
    def _newer_loaded(self, message: NewerLoaded) -> None:
        table = self.table
        if message.generation != self.generation or not table.points or table.points[0] != message.after:
            return
        if message.page is None:
            self.reload_points()
            return
        # at the top, the user is watching the newest end: follow it; elsewhere, stay on the point
        table.prepend_points(message.page.points, follow=table.cursor_row == 0)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        # the status refresh fails every second while a journal is unreadable: say it once a while
        now = time.monotonic()
        key = (message.what, message.text)
        if self._last_failure is not None and self._last_failure[0] == key and now - self._last_failure[1] < 30:
            return
        self._last_failure = (key, now)
        if message.what == READING_POINTS:
            self.table.loading = False  # let a later scroll ask again
        self.app.notify(message.text, title=message.what, severity="error", timeout=8)

    # --------------------------------------------------------------- actions

    def _require_point(self) -> Point | None:
        point = self.table.selected
        if point is None:
            self.app.notify("no point selected", severity="warning")
        return point

    def action_detail(self) -> None:
        if (point := self._require_point()) is not None:
            self.app.push_screen(DetailScreen(self.journal, point))

    def action_restore(self) -> None:
        if (point := self._require_point()) is not None:
            self.app.push_screen(RestoreScreen(self.journal, point))

    def action_mark(self) -> None:
        def added(point: Point | None) -> None:
            if point is not None:
                self.app.notify(f"mark {point.name!r} at {format_ts_ms(point.ts_ns)} (seq {point.seq})", title="marked")
                self.reload_points(select_ns=point.ts_ns)
                self.reload_timeline()

        self.app.push_screen(MarkScreen(self.journal, self.app.clock), added)

    def action_goto(self) -> None:
        def chosen(ts_ns: int | None) -> None:
            if ts_ns is not None:
                self.select_time(ts_ns)

        self.app.push_screen(GotoScreen(self.journal, self.app.clock), chosen)

    def select_time(self, ts_ns: int) -> None:
        """Put the cursor on the newest point at or before ``ts_ns``, loading older pages if needed."""
        table = self.table
        # rows are newest first and unloaded rows are all older, so a loaded hit is the answer
        row = table.index_at_or_before(ts_ns)
        if row is not None:
            table.move_cursor(row)
        elif table.done or not table.points:
            self.app.notify(f"no point at or before {format_ts_ms(ts_ns)}", severity="warning")
        else:
            table.loading = True
            self.load_points(self.generation, self.kinds, table.points[-1], ts_ns)

    @on(Timeline.Picked)
    def _picked(self, message: Timeline.Picked) -> None:
        self.select_time(message.ts_ns)

    def action_filter(self) -> None:
        """Toggle between every point and marks only, keeping the selected time."""
        point = self.table.selected
        self.marks_only = not self.marks_only
        self._set_titles()
        self.reload_points(select_ns=point.ts_ns if point is not None else None)

    def action_verify(self) -> None:
        self.app.push_screen(VerifyScreen(self.journal))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.BINDINGS, "Main screen"))

