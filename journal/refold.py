"""Bring a rebuilt index to the state the newest compaction left (used by ``cdp reindex``).

Reindexing feeds every surviving segment record through the batch, so
after a compaction it sees more than the compacted index held: records the
compaction folded away (their segments may survive, held by a version a
kept point still reads) and block versions no kept point sees. The newest
COMPACTION record says what was kept; this module removes the folded
records' seq, time and point entries, puts back the kept records whose
segments are gone and the kept points the segments no longer make (the
record carries what their entries said), and then recounts every running
total from the tables themselves.

The extra block versions stay: a version no kept point sees cannot change
the answer at any kept point (every sector it holds is covered, at each
kept point, by a newer version that point does see, and those are never
deleted), so keeping them is only a little space until the next
compaction drops them again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from journal.compact import drop_old_user_marks, pinned_marks
from journal.format import SEQ_VAL, U64, U64X2
from journal.index import Index, seal, unseal
from journal.points import OverflowWindow
from journal.selection import Selection

#: Entries rewritten per transaction while recounting.
_CHUNK = 65536


def refold(index: Index, path: Path, plan: dict[str, Any], dropped: list[list[int]]) -> None:
    """Apply the newest compaction ``plan`` (a COMPACTION record's payload) to ``index``."""
    sel = Selection.from_meta(plan["sel"])
    kept = set(sel.kept)
    pins = pinned_marks(path)

    def restore_kept(txn: lmdb.Transaction) -> None:
        seq_db, time_db, points_db = index.db("seq"), index.db("time"), index.db("points")
        for k, ts, rtype, flags, off, length, dlen, point, window in plan["kept_info"]:
            key = U64.pack(k)
            # a kept point whose record survived can still be unlisted: a RESYNC is a point because
            # it closed a window, which the reindex no longer sees once the OVERFLOW's segment is gone
            if point is not None and txn.get(key, db=points_db) is None:
                txn.put(key, seal(key, msgpack.packb(point)), db=points_db)
            if txn.get(key, db=seq_db) is not None:
                continue  # its record survived: indexed from the segment itself
            txn.put(key, seal(key, SEQ_VAL.pack(0, 0, ts, off, length, dlen, rtype, flags, 0, 0)), db=seq_db)
            tkey = U64X2.pack(ts, k)
            txn.put(tkey, seal(tkey, b""), db=time_db)
            if window is not None and txn.get(key, db=index.db("windows")) is None:
                txn.put(key, seal(key, bytes(window)), db=index.db("windows"))
        # windows whose OVERFLOW record folded away (plans written before they were carried have
        # none), and every window the plan saw closed: a closed window never changes again, while
        # the rebuilt one can have stopped short (a partial RESYNC that advanced it folded away
        # with its segment, and the next one then no longer continues it)
        for wseq, window in plan.get("windows", ()):
            key = U64.pack(wseq)
            closed = OverflowWindow.unpack(wseq, bytes(window)).resync_seq is not None
            if closed or txn.get(key, db=index.db("windows")) is None:
                txn.put(key, seal(key, bytes(window)), db=index.db("windows"))

    index.write(restore_kept)

    def drop_folded(txn: lmdb.Transaction) -> None:
        seq_db = index.db("seq")
        gone = []
        for key, raw in txn.cursor(db=seq_db):
            seq = U64.unpack(key)[0]
            if seq > sel.fold_seq:
                break
            if seq not in kept:
                gone.append((key, SEQ_VAL.unpack_from(unseal("seq", key, raw))[2], seq))
        for key, ts, seq in gone:
            txn.delete(key, db=seq_db)
            txn.delete(U64X2.pack(ts, seq), db=index.db("time"))
            txn.delete(key, db=index.db("points"))
        drop_old_user_marks(index, txn, sel.horizon_ts, pins)
        index.put_meta(txn, "retained", sel.to_meta())
        index.put_meta(txn, "dropped_segments", dropped)

    index.write(drop_folded)
    recount(index)


def recount(index: Index) -> None:
    """Rewrite every seq entry's running totals (block + zero-extent entries, OVERFLOWs) from the tables."""
    per_seq: Counter[int] = Counter()
    overflow_at: Counter[int] = Counter()
    with index.read() as txn:
        for key in txn.cursor(db=index.db("blocks")).iternext(values=False):
            per_seq[U64X2.unpack(key)[1]] += 1
        for key in txn.cursor(db=index.db("zext")).iternext(values=False):
            per_seq[U64.unpack(key)[0]] += 1
        for key in txn.cursor(db=index.db("windows")).iternext(values=False):
            overflow_at[U64.unpack(key)[0]] += 1
    marks = sorted(set(per_seq) | set(overflow_at))
    # (next seq to rewrite, index into marks, running entries, running overflows)
    state = (1, 0, 0, 0)
    base = per_seq.get(0, 0)

    def chunk(txn: lmdb.Transaction) -> tuple[bool, tuple[int, int, int, int]]:
        resume, pos, entries, overflows = state  # from the last commit: a retried attempt starts over
        seq_db = index.db("seq")
        cur = txn.cursor(db=seq_db)
        ok = cur.set_range(U64.pack(resume))
        rows = []
        while ok and len(rows) < _CHUNK:
            key = cur.key()
            seq = U64.unpack(key)[0]
            while pos < len(marks) and marks[pos] <= seq:
                entries += per_seq.get(marks[pos], 0)
                overflows += overflow_at.get(marks[pos], 0)
                pos += 1
            v = SEQ_VAL.unpack(unseal("seq", key, cur.value()))
            rows.append((key, SEQ_VAL.pack(*v[:8], entries, overflows)))
            resume = seq + 1
            ok = cur.next()
        for key, value in rows:
            txn.put(key, seal(key, value), db=seq_db)
        if not ok:
            # entries of seqs with no record left (a folded version) count for everything after
            entries += sum(per_seq.get(m, 0) for m in marks[pos:])
            overflows += sum(overflow_at.get(m, 0) for m in marks[pos:])
            for name, value in (("entries", entries), ("overflows", overflows), ("base_entries", base),
                                ("entries_dropped", 0), ("dropped_above", 0)):
                index.put_meta(txn, name, value)
        return ok, (resume, pos, entries, overflows)

    more = True
    while more:
        more, state = index.write(chunk)
