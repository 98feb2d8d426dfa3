"""The activity timeline's data: bytes written per column of a window of time, and the points under it."""

from __future__ import annotations

from dataclasses import dataclass, field

from journal import Journal, RecordType
from journal.records import ZERO_TYPES, PointKind
from journal.units import NS

#: Point kinds in the order the timeline prefers to draw them when several
#: fall in one column: the rarer and more telling kind wins.
KIND_RANK = {PointKind.OVERFLOW: 5, PointKind.RESYNC: 4, PointKind.USER_MARK: 3, PointKind.MARK: 3,
             PointKind.BASELINE: 2, PointKind.FLUSH: 1}
#: Zoomed in below this many records the timeline counts records itself,
#: finer than the journal's per-second activity table.
FINE_RECORDS = 5_000
#: what the timeline counts: what the device did, as the journal's per-second activity table
#: does (a resync is the service's own copy, not a write)
_ACTIVITY_TYPES = ZERO_TYPES | {RecordType.WRITE}


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
