"""Which byte ranges of the device changed between two points, from the index alone.

`cdp diff` answers without reading a byte of device data: every record
between the two points names its range in the ``seq`` index (writes,
discards and write-zeroes, resync copies), and an overflow window names the
range whose writes were dropped. The answer is the union of those ranges,
merged and sorted. It can only over-report (a write of the bytes already
there counts as a change); it never misses a change the journal recorded,
and where writes were dropped it reports the window's whole range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from journal.reader import JournalReader
from journal.records import RecordFlag, RecordType

#: Record types whose range is a change of the device's content.
_CHANGING = frozenset({RecordType.WRITE, RecordType.DISCARD, RecordType.WRITE_ZEROES,
                       RecordType.RESYNC, RecordType.OVERFLOW})


def _unchanged(rtype: int, flags: int) -> bool:
    """A reattach's RESYNC that found its range equal to the journal: no change."""
    return rtype == RecordType.RESYNC and bool(flags & RecordFlag.UNCHANGED)


@dataclass(frozen=True, slots=True)
class Changes:
    """The ranges that changed between two points (seq ``lo`` < ... <= ``hi``)."""

    lo_seq: int
    hi_seq: int
    ranges: list[tuple[int, int]]  # (offset, length), sorted, disjoint, not touching
    records: int                    # records in between that changed something
    windows: int                    # overflow windows whose range was added

    @property
    def bytes(self) -> int:
        return sum(length for _offset, length in self.ranges)


def merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint (offset, length) ranges covering exactly the union of ``ranges``."""
    out: list[list[int]] = []
    for offset, length in sorted(r for r in ranges if r[1] > 0):
        end = offset + length
        if out and offset <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([offset, end])
    return [(start, end - start) for start, end in out]


def changed_between(journal: JournalReader, seq_a: int, ts_a: int, seq_b: int, ts_b: int) -> Changes:
    """The ranges that differ (or may differ) between the points (seq_a, ts_a) and (seq_b, ts_b).

    The order of the two points does not matter. An overflow window whose
    dropped writes fall between the points (from its first dropped write to
    its OVERFLOW record) adds its whole range: the records alone cannot tell
    what those writes changed.
    """
    (lo, lo_ts), (hi, hi_ts) = sorted([(seq_a, ts_a), (seq_b, ts_b)])
    found: list[tuple[int, int]] = []
    records = 0
    if hi > lo:
        for info in journal.records(lo + 1, hi):
            if info.type in _CHANGING and info.length and not _unchanged(info.type, info.flags):
                found.append((info.offset, info.length))
                records += 1
    windows = 0
    for w in journal.overflow_windows():
        # writes were dropped from start_ts until the OVERFLOW record (end_ts)
        if w.length and w.start_ts <= hi_ts and w.end_ts >= lo_ts:
            found.append((w.offset, w.length))
            windows += 1
    return Changes(lo, hi, merge(found), records, windows)


__all__ = ["Changes", "changed_between", "merge"]
