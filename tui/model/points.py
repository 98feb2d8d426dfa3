"""Rewind points a page at a time, newest first, for a list that pages in as it scrolls.

A journal can hold hundreds of thousands of points; the list asks for one
page (:func:`points_page`), the points newer than its top while a service
runs (:func:`points_newer`), or everything down to a time the user asked
for (:func:`points_until`). Points are ordered by :func:`point_key`, so
points sharing a time are neither repeated nor skipped across pages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from journal import Journal, Point


def point_key(p: Point) -> tuple[int, int, str, str]:
    """Total order of points, newest last; ties on (ts, seq) broken by kind and name."""
    return (p.ts_ns, p.seq, p.kind, p.name)


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
