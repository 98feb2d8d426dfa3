"""Rewind points, user marks and overflow windows: which moments a journal can give back.

The index keeps kernel-made points (flush, mark, overflow, resync) by seq
in ``points``, user marks by time in ``umarks``, and one entry per overflow
window in ``windows``. A point is *whole* unless an overflow window that no
resync has closed covers it. Everything here works inside a caller's read
transaction, so one query sees one state of the journal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import lmdb
import msgpack

from journal.errors import CorruptJournal, JournalError, NotWhole
from journal.format import SEQ_VAL, U64, U64X2
from journal.index import REINDEX_HINT, Index, check, damaged, unseal
from journal.records import Point, PointKind
from journal.selection import Selection
from journal.units import format_ts

#: Longest mark name in bytes (the ring ABI's limit).
MAX_MARK_NAME = 255


@dataclass(slots=True)
class OverflowWindow:
    """A span of time in which writes were dropped, until a resync closes it."""

    seq: int
    start_ts: int
    end_ts: int
    offset: int
    length: int
    resynced_to: int
    resync_seq: int | None = None
    resync_ts: int | None = None

    def covers(self, seq: int, ts_ns: int) -> bool:
        """Whether the device is not whole at the point (seq, ts_ns)."""
        if ts_ns < self.start_ts:
            return False
        if self.resync_seq is None or self.resync_ts is None:
            return True
        return not (seq >= self.resync_seq and ts_ns >= self.resync_ts)

    def pack(self) -> bytes:
        return msgpack.packb([self.start_ts, self.end_ts, self.offset, self.length,
                              self.resynced_to, self.resync_seq, self.resync_ts])

    @classmethod
    def unpack(cls, seq: int, raw: bytes) -> OverflowWindow:
        return cls(seq, *msgpack.unpackb(raw))


def check_mark_name(name: str) -> bytes:
    """The name's UTF-8 bytes, or an error saying what a mark name may be."""
    raw = name.encode("utf-8")
    if not name or len(raw) > MAX_MARK_NAME or any(ch in name for ch in "\0\n"):
        raise JournalError(f"a mark name must be 1..{MAX_MARK_NAME} bytes of UTF-8 with no newline")
    return raw


def windows(index: Index, txn: lmdb.Transaction) -> list[OverflowWindow]:
    """Every overflow window, open or closed, oldest first."""
    return [OverflowWindow.unpack(U64.unpack(k)[0], unseal("windows", k, v))
            for k, v in txn.cursor(db=index.db("windows"))]


def not_whole_error(ws: Iterable[OverflowWindow], seq: int, ts_ns: int) -> NotWhole | None:
    """The error for a point inside an overflow window, or None when it is whole."""
    for w in ws:
        if w.covers(seq, ts_ns):
            state = "not resynced yet" if w.resync_seq is None else f"resynced at seq {w.resync_seq}"
            return NotWhole(
                f"the device is not whole at {format_ts(ts_ns)}: writes were dropped from "
                f"{format_ts(w.start_ts)} (overflow at seq {w.seq}, {state}); "
                "pick another point or allow a partial restore")
    return None


def retained(index: Index, txn: lmdb.Transaction) -> Selection | None:
    """The newest compaction's selection (begun or done), or None if none ever ran."""
    value = index.get_meta(txn, "retained")
    return None if value is None else Selection.from_meta(value)


def resolve(index: Index, txn: lmdb.Transaction, ts_ns: int) -> int:
    """Seq of the last record at or before ``ts_ns`` (0: the baseline).

    The answer is checked against the ``seq`` table: record ``seq`` is
    stamped at or before ``ts_ns`` and record ``seq + 1``, if any, after it.
    A lost or damaged ``time`` entry therefore fails here instead of
    resolving a time to the wrong record.
    """
    cur = txn.cursor(db=index.db("time"))
    if cur.set_range(U64X2.pack(ts_ns + 1, 0)):
        found = cur.prev()
    else:
        found = cur.last()
    seq = 0
    if found:
        key = cur.key()
        if not check(key, cur.value()):
            raise damaged("time", key)
        seq = U64X2.unpack(key)[1]
    seq_db = index.db("seq")
    if seq:
        if record_ts(txn, seq_db, seq) > ts_ns:
            raise _time_damage(ts_ns)
    after = U64.pack(seq + 1)
    raw = txn.get(after, db=seq_db)
    if raw is not None and SEQ_VAL.unpack_from(unseal("seq", after, raw))[2] <= ts_ns:
        raise _time_damage(ts_ns)
    return seq


def record_ts(txn: lmdb.Transaction, seq_db: object, seq: int) -> int:
    """The time stamp of record ``seq`` from the ``seq`` table (checked); it must exist."""
    key = U64.pack(seq)
    raw = txn.get(key, db=seq_db)
    if raw is None:
        raise CorruptJournal(f"the index has a time for seq {seq} but no record; {REINDEX_HINT}")
    return SEQ_VAL.unpack_from(unseal("seq", key, raw))[2]


def _time_damage(ts_ns: int) -> CorruptJournal:
    return CorruptJournal(f"the index's time table does not agree with its records at {format_ts(ts_ns)}; "
                          f"{REINDEX_HINT}")


def first_seq_at(index: Index, txn: lmdb.Transaction, ts_ns: int) -> int:
    """Seq of the first record at or after ``ts_ns`` (last_seq + 1 if none)."""
    cur = txn.cursor(db=index.db("time"))
    if cur.set_range(U64X2.pack(ts_ns, 0)):
        key = cur.key()
        if not check(key, cur.value()):
            raise damaged("time", key)
        return U64X2.unpack(key)[1]
    return index.require_meta(txn, "last_seq") + 1


def query(
    index: Index, txn: lmdb.Transaction, created_ns: int, *, kinds: Iterable[str] | None,
    start_ns: int | None, end_ns: int | None, reverse: bool, limit: int | None,
) -> list[Point]:
    """Rewind points in time order (newest first with ``reverse``); see ``Journal.points``."""
    wanted = None if kinds is None else frozenset(kinds)
    ws = windows(index, txn)
    sel = retained(index, txn)
    kept = frozenset(sel.kept) if sel is not None else frozenset()
    marks: list[Point] = []
    if wanted is None or PointKind.USER_MARK in wanted:
        for key, raw in txn.cursor(db=index.db("umarks")):
            if not check(key, raw):
                raise damaged("umarks", key)
            ts = U64.unpack(key[:8])[0]
            if (start_ns is None or ts >= start_ns) and (end_ns is None or ts <= end_ns):
                seq = resolve(index, txn, ts)
                if sel is not None:
                    mapped = sel.maps(seq)
                    if mapped is None:
                        continue  # behind the retention horizon (the compaction is removing it)
                    seq = mapped
                marks.append(Point(seq, ts, PointKind.USER_MARK, key[8:].decode("utf-8", "replace"),
                                   not any(w.covers(seq, ts) for w in ws)))
    found: list[Point] = []
    cur = txn.cursor(db=index.db("points"))
    if reverse:
        ok = end_ns is not None and cur.set_range(U64.pack(resolve(index, txn, end_ns) + 1))
        ok = cur.prev() if ok else cur.last()
        step = cur.prev
    else:
        ok = (start_ns is not None and start_ns > created_ns
              and cur.set_range(U64.pack(first_seq_at(index, txn, start_ns))))
        ok = ok or (start_ns is None or start_ns <= created_ns) and cur.first()
        step = cur.next
    while ok:
        key = cur.key()
        seq = U64.unpack(key)[0]
        kind, ts, name = msgpack.unpackb(unseal("points", key, cur.value()))
        ok = step()
        if sel is not None and seq <= sel.fold_seq and seq not in kept:
            continue  # folded by a compaction still removing it
        if (end_ns is not None and ts > end_ns) or (start_ns is not None and ts < start_ns):
            if reverse == (start_ns is not None and ts < start_ns):
                break
            continue
        if wanted is not None and kind not in wanted:
            continue
        found.append(Point(seq, ts, kind, name, not any(w.covers(seq, ts) for w in ws)))
        if limit is not None and len(found) >= limit and not marks:
            break
    merged = sorted(found + marks, key=lambda p: (p.ts_ns, p.seq), reverse=reverse)
    return merged if limit is None else merged[:limit]
