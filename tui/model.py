"""What the TUI asks the journal, as plain functions that run in worker threads.

Nothing here touches a widget: every function takes an open
:class:`journal.Journal`, does bounded work (one page of points, one window
of activity, one block) and returns a frozen dataclass the UI thread renders.
Keeping the queries here lets them be tested and benchmarked without a
screen, and keeps the screens thin.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from journal import Journal, Point, RecordType
from journal.errors import JournalError
from journal.format import BLOCK
from journal.records import MARK_KINDS, PointKind
from journal.status import RUNNING, ServiceStatus, read_service
from journal.target import inspect_target
from journal.timespec import parse_time
from journal.units import NS

#: Point kinds in the order the timeline prefers to draw them when several
#: fall in one column: the rarer and more telling kind wins.
KIND_RANK = {PointKind.OVERFLOW: 5, PointKind.RESYNC: 4, PointKind.USER_MARK: 3, PointKind.MARK: 3,
             PointKind.BASELINE: 2, PointKind.FLUSH: 1}
#: Zoomed in below this many records the timeline counts records itself,
#: finer than the journal's per-second activity table.
FINE_RECORDS = 5_000
#: A point detail compares at most this many written blocks byte for byte.
COMPARE_BLOCKS = 4096
#: A stopped service whose last report is older than this is said to have gone quiet.
STALE_NS = 5 * NS

_CHANGE_TYPES = frozenset({RecordType.WRITE, RecordType.DISCARD, RecordType.WRITE_ZEROES, RecordType.RESYNC})
#: what the timeline counts: what the device did, as the journal's per-second activity table
#: does (a resync is the service's own copy, not a write)
_ACTIVITY_TYPES = frozenset({RecordType.WRITE, RecordType.DISCARD, RecordType.WRITE_ZEROES})


def point_key(p: Point) -> tuple[int, int, str, str]:
    """Total order of points, newest last; ties on (ts, seq) broken by kind and name."""
    return (p.ts_ns, p.seq, p.kind, p.name)


# --------------------------------------------------------------------- points


@dataclass(frozen=True, slots=True)
class PointsPage:
    """A run of points, newest first, older than the page before it."""

    points: list[Point]
    #: True when no older point is left.
    done: bool


def points_page(j: Journal, kinds: Iterable[str] | None, before: Point | None, limit: int) -> PointsPage:
    """Up to ``limit`` points older than ``before`` (newest first); ``before=None`` starts at the newest.

    Paging by time alone could repeat or skip points that share a
    timestamp, so the query reaches back to ``before``'s own time and drops
    what is not strictly older; if more points than asked share that time,
    the query grows until it sees past them.
    """
    kinds = None if kinds is None else frozenset(kinds)
    want = limit + 8  # room for `before` itself and a cut group, so one query usually does
    while True:
        end = None if before is None else before.ts_ns
        got = j.points(kinds=kinds, end_ns=end, reverse=True, limit=want + 1)
        exhausted = len(got) <= want
        if not exhausted:
            # the limit may have cut a group sharing (ts, seq): leave the whole group to the next page
            cut = (got[-1].ts_ns, got[-1].seq)
            got = [p for p in got if (p.ts_ns, p.seq) != cut]
        got.sort(key=point_key, reverse=True)
        if before is not None:
            edge = point_key(before)
            older = [p for p in got if point_key(p) < edge]
        else:
            older = got
        if len(older) >= limit or exhausted:
            return PointsPage(older[:limit], exhausted and len(older) <= limit)
        want *= 2


def points_newer(j: Journal, kinds: Iterable[str] | None, after: Point, limit: int) -> PointsPage | None:
    """Points newer than ``after`` (newest first), for a list that follows a running service.

    None when there are more than ``limit``: the caller starts the list
    again rather than insert a flood of rows.
    """
    got = j.points(kinds=None if kinds is None else frozenset(kinds), start_ns=after.ts_ns)
    edge = point_key(after)
    newer = sorted((p for p in got if point_key(p) > edge), key=point_key, reverse=True)
    return None if len(newer) > limit else PointsPage(newer, False)


def points_until(j: Journal, kinds: Iterable[str] | None, before: Point | None, ts_ns: int) -> PointsPage:
    """Every point older than ``before`` down to the newest one at or before ``ts_ns``.

    This is what `g` loads to reach an old time in a list that pages in
    from the newest end: one query, however far back the time is.
    """
    kinds = None if kinds is None else frozenset(kinds)
    anchor = j.points(kinds=kinds, end_ns=ts_ns, reverse=True, limit=1)
    end = None if before is None else before.ts_ns
    if not anchor:
        got = j.points(kinds=kinds, end_ns=end, reverse=True)
        done = True
    else:
        got = j.points(kinds=kinds, start_ns=anchor[0].ts_ns, end_ns=end, reverse=True)
        done = False
    if before is not None:
        edge = point_key(before)
        got = [p for p in got if point_key(p) < edge]
    if anchor:
        got = [p for p in got if point_key(p) >= point_key(anchor[0])]
    return PointsPage(sorted(got, key=point_key, reverse=True), done)


def point_at(j: Journal, kinds: Iterable[str] | None, ts_ns: int) -> Point | None:
    """The newest point at or before ``ts_ns`` (of the given kinds)."""
    got = j.points(kinds=None if kinds is None else frozenset(kinds), end_ns=ts_ns, reverse=True, limit=1)
    return got[0] if got else None


def mark_time(j: Journal, name: str) -> int | None:
    """The time of the newest mark called ``name``: the ``mark:NAME`` lookup for TIME."""
    found = [p for p in j.points(kinds=MARK_KINDS) if p.name == name]
    return found[-1].ts_ns if found else None


# ------------------------------------------------------------------- timeline


@dataclass(frozen=True, slots=True)
class TimelineData:
    """Bytes written per column and the points drawn under them, for one view."""

    start_ns: int
    end_ns: int
    buckets: list[int]
    #: column -> kind of the most telling point in that column
    marks: dict[int, str] = field(default_factory=dict)

    @property
    def span_ns(self) -> int:
        return self.end_ns - self.start_ns


def journal_span(j: Journal) -> tuple[int, int]:
    """(first, last) time with anything in the journal, at least one second apart."""
    first = j.info.created_ns
    last = max(j.last_ts_ns, first)
    return first, max(last, first + NS)


def timeline(j: Journal, start_ns: int, end_ns: int, columns: int, point_limit: int = 20_000) -> TimelineData:
    """Write activity from ``start_ns`` to ``end_ns`` in ``columns`` buckets.

    Coarse views read the journal's per-second activity table (a few
    thousand rows at most for any view a screen can show); a view finer than
    a second per column counts the records themselves when there are few
    enough, so a burst inside one second still shows its shape.
    """
    columns = max(1, columns)
    span = max(1, end_ns - start_ns)
    buckets = [0] * columns

    def put(ts: int, nbytes: int) -> None:
        col = (ts - start_ns) * columns // span
        if 0 <= col < columns:
            buckets[col] += nbytes

    fine = span // columns < NS and _fine_ok(j, start_ns, end_ns)
    if fine:
        first = j.resolve(max(start_ns, j.info.created_ns)) + 1
        last = j.resolve(end_ns)
        for r in j.records(first, last):
            if r.type in _ACTIVITY_TYPES:
                put(r.ts_ns, r.length)
    else:
        last_ts = j.last_ts_ns
        for second, _count, nbytes in j.activity(start_ns, end_ns):
            # a second's writes lie in [second, second + 1 s), and before the newest record;
            # spread them evenly over that stretch, then keep the part inside the window
            stretch_end = min(second + NS, last_ts + 1)
            lo, hi = max(second, start_ns), min(stretch_end, end_ns)
            if hi <= lo:
                continue
            share = nbytes * (hi - lo) // max(1, stretch_end - second)
            c0 = (lo - start_ns) * columns // span
            c1 = min(columns, max(c0 + 1, -(-(hi - start_ns) * columns // span)))
            n = c1 - c0
            for k in range(n):  # integer shares that add up to exactly `share`
                buckets[c0 + k] += share * (k + 1) // n - share * k // n
    marks: dict[int, str] = {}
    for p in j.points(start_ns=start_ns, end_ns=end_ns, limit=point_limit):
        col = (p.ts_ns - start_ns) * columns // span
        if 0 <= col < columns and KIND_RANK.get(p.kind, 0) >= KIND_RANK.get(marks.get(col, ""), 0):
            marks[col] = p.kind
    return TimelineData(start_ns, end_ns, buckets, marks)


def _fine_ok(j: Journal, start_ns: int, end_ns: int) -> bool:
    if end_ns < j.info.created_ns:
        return False
    lo = j.resolve(max(start_ns, j.info.created_ns))
    hi = j.resolve(end_ns)
    return hi - lo <= FINE_RECORDS


# --------------------------------------------------------------------- detail


@dataclass(frozen=True, slots=True)
class PointDetail:
    """What happened between the previous point and this one."""

    point: Point
    previous: Point | None
    records: int
    writes: int
    write_bytes: int
    zeroed_bytes: int
    #: every 4 KiB block a record touched, in block order
    touched: list[int]
    #: touched blocks whose content differs (compared up to COMPARE_BLOCKS)
    changed: list[int]
    compared: int


class Cancelled(Exception):
    """The worker computing a detail was superseded."""


def previous_point(j: Journal, point: Point) -> Point | None:
    """The point just before ``point`` among all kinds (what it is compared to)."""
    page = points_page(j, None, point, 1)
    return page.points[0] if page.points else None


def point_detail(j: Journal, point: Point, cancelled: Callable[[], bool] = lambda: False) -> PointDetail:
    """Count the records since the previous point and find the blocks they changed."""
    prev = previous_point(j, point)
    prev_seq = prev.seq if prev is not None else 0
    touched: set[int] = set()
    records = writes = write_bytes = zeroed = 0
    device = j.info.device_bytes
    if point.seq > prev_seq:
        for n, r in enumerate(j.records(prev_seq + 1, point.seq)):
            if n % 4096 == 0 and cancelled():
                raise Cancelled
            records += 1
            if r.type not in _CHANGE_TYPES:
                continue
            if r.type == RecordType.WRITE:
                writes += 1
                write_bytes += r.length
            elif r.type != RecordType.RESYNC:
                zeroed += r.length
            end = min(r.offset + r.length, device)
            touched.update(range(r.offset // BLOCK, (end - 1) // BLOCK + 1))
    blocks = sorted(touched)
    changed = []
    for n, block in enumerate(blocks[:COMPARE_BLOCKS]):
        if n % 256 == 0 and cancelled():
            raise Cancelled
        before, after = block_pair(j, block, point.seq, prev_seq)
        if before != after:
            changed.append(block)
    return PointDetail(point, prev, records, writes, write_bytes, zeroed, blocks, changed,
                       min(len(blocks), COMPARE_BLOCKS))


def block_pair(j: Journal, block: int, seq: int, prev_seq: int) -> tuple[bytes, bytes]:
    """(before, after): one 4 KiB block at the previous point and at this one."""
    offset = block * BLOCK
    length = min(BLOCK, j.info.device_bytes - offset)
    return j.read(offset, length, seq=prev_seq), j.read(offset, length, seq=seq)


# --------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """One refresh of the status bar."""

    device: str
    disk_bytes: int
    records: int
    data_bytes: int
    last_seq: int
    lag_bytes: int | None
    lag_ns: int | None
    rate_bps: float | None
    ring_fill: float | None
    #: open overflow windows: points after their start are not whole
    overflow: bool
    running: bool
    #: why the service counts as stopped ('' when running)
    stopped_why: str


def read_status(j: Journal, now_ns: int) -> StatusSnapshot:
    """Journal counters plus the service's last published status.

    Whether the service runs is :meth:`journal.status.Service.is_running`
    (a process holds the journal's writer lock), as in `cdp status`; the
    status record only explains why not: it never ran, it said it stopped,
    it went quiet :data:`STALE_NS` before the end, or its pid is gone.
    """
    stats = j.stats()
    service = read_service(j)
    status = service.status or ServiceStatus()
    windows = [w for w in j.overflow_windows() if w.resync_seq is None]
    running = service.is_running()
    if running:
        why = ""
    elif service.status is None:
        why = "it has not run on this journal"
    elif status.state not in (None, RUNNING):
        why = f"it is {status.state}"
    elif status.updated_ns is not None and now_ns - status.updated_ns > STALE_NS:
        why = f"no report for {(now_ns - status.updated_ns) // NS} s"
    elif status.pid is not None:
        why = f"pid {status.pid} is gone"
    else:
        why = "it stopped without saying so"
    # the journal's own open windows always count; the ring's flag only while the service is alive
    overflow = bool(windows) or (running and bool(status.overflow))
    device = str(status.device or j.info.source or "(no device recorded)")
    return StatusSnapshot(
        device, stats.disk_bytes, stats.records, stats.data_bytes, stats.last_seq,
        status.lag_bytes, None if status.lag_seconds is None else int(status.lag_seconds * NS),
        None if status.rate_bytes is None else float(status.rate_bytes),
        None if status.ring_fill is None else float(status.ring_fill), overflow, running, why)


# -------------------------------------------------------------------- restore


def check_target(path: str, journal_dir: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """(exists, problem) for a restore target, before anything is written.

    ``problem`` is a one-line reason the restore cannot go there ('' if it
    can): what :func:`journal.target.inspect_target` finds wrong (inside the
    journal, a directory, a missing parent directory, ...), a block device
    in use (mounted, itself or a partition; swap; held by another device),
    which the TUI never overwrites, or a target it may not write. The
    journal itself refuses to overwrite unless told, so the modal asks the
    user first when ``exists`` is True.
    """
    if not path:
        return False, "type a path to restore to"
    found = inspect_target(path, journal_dir)
    if found.problem:
        return found.exists, found.problem
    if found.users:
        return True, f"{found.in_use}; stop using it first"
    if found.exists and not found.writable:
        return True, f"cannot write {path}: permission denied"
    return found.exists, ""


def describe_error(exc: BaseException) -> str:
    """One printable line for any error a worker meets."""
    if isinstance(exc, JournalError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------- time


def parse_user_time(j: Journal, text: str, now_ns: int) -> int:
    """A TIME typed by the user, in the CLI's grammar; ``mark:NAME`` is looked up here.

    Raises ValueError with a one-line message for anything unreadable.
    """
    return parse_time(text, now_ns=now_ns, marks=lambda name: mark_time(j, name))
