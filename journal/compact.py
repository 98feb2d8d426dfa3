"""Compaction: fold history the retention policy no longer keeps, crash-safe at every step.

A compaction applies one :class:`journal.retention.Selection`: the horizon
H (the oldest point kept), the fold seq C and the kept seqs K (H, every
point the policy keeps up to C, pinned marks). After it, a restore at any
kept point gives the same bytes as before; a seq or time at or below C
that was not kept answers as the newest kept point before it (and says
so); nothing after C changes. It runs in steps, each one LMDB transaction
of bounded size, so the drain service can run it between its batches:

1. **plan** - a COMPACTION record holding the selection (and, for every
   kept record, what its index entries say) is appended to the newest
   segment, durably, and in the same transaction the selection becomes
   meta ``retained``. From this commit on every reader answers as the new
   state: :meth:`Selection.maps` sends a folded seq to its kept point.
   Each later step only removes what no kept point can reach, so a crash
   between steps leaves a journal that answers exactly; the next writer
   to open it finishes the compaction (meta ``compaction`` says where).
2. **blocks** - block versions at or below C that no kept point and no
   seq after C can see are deleted, a run of blocks per transaction. A
   version at seq s is visible from s until newer versions at or below C
   have covered all its sectors (at seq e); it is dead when no kept seq
   lies in [s, e) and e exists. The running entry totals stay exact: the
   kept seq entries are rewritten and seqs after C carry an offset (meta
   ``entries_dropped``, for seqs above ``dropped_above``).
3. **records** - the seq, time and point entries of folded records go,
   user marks behind the horizon and activity older than it too; kept
   records' seq entries stop pointing into their segments (position 0),
   so a segment is held only by block versions.
4. **extents** - every big zeroing extent at or below C is copied into a
   FOLD record, so none needs the record that made it.
5. **segments** - segments no live version and no record after C uses are
   listed in a second COMPACTION record (durable first, so a reindex knows
   the gap is deliberate) and then deleted: the space goes back to the
   filesystem (a reader that has one open keeps reading it until it closes).
6. **move** - segments that are mostly dead (less than :data:`MOVE_BELOW`
   of their bytes live) are emptied one at a time, cheapest first: their
   live versions copied, checked, into FOLD records at the end of the
   journal and their entries pointed at the copies, then the segment
   dropped as in step 5.

Zero extents (big discards) and overflow windows are kept as they are:
they are few, and the windows decide which points are whole. The plan's
COMPACTION record carries every window the index holds, so a kept point
inside one stays not whole after the OVERFLOW record's segment is deleted.
A reindex reads the newest COMPACTION records and rebuilds the same state
(see :mod:`journal.reindex`).
"""

from __future__ import annotations

import os
import signal
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import crc32c
import lmdb
import msgpack

from journal import heads, retention
from journal.batch import Batch
from journal.blockmap import bad_crc, covered_span, decode_checked
from journal.codec import one_frame
from journal.errors import REINDEX_HINT, CorruptJournal
from journal.facts import PINS_LOG, fsync_dir, read_marks
from journal.format import BLOCK, BLOCK_VAL, KIND_DATA, KIND_ZERO, SECTOR, SEQ_VAL, U64, U64X2, segment_name
from journal.index import Index, check, damaged, seal, unseal
from journal.points import retained
from journal.records import Point, PointKind
from journal.retention import Policy, PointRef
from journal.selection import Selection
from journal.segments import SegmentViews



class CompactionWriter(Protocol):
    """What a compaction needs of the journal it runs on (``journal.journal.Journal``)."""

    path: Path
    index: Index

    @property
    def writer_seg(self) -> int: ...

    @property
    def last_seq(self) -> int: ...

    def points(self) -> list[Point]: ...

    def write_note(self, payload: bytes | Callable[[], bytes], extra: Callable[[lmdb.Transaction], None]) -> None: ...

    def write_compaction(self, frame: Callable[[Batch], None],
                         extra: Callable[[lmdb.Transaction], None]) -> None: ...

#: Block entries examined per transaction (bounded so the drain never waits long).
CHUNK_ENTRIES = 5000
#: Seq entries examined per transaction.
CHUNK_RECORDS = 2000
#: A segment whose live versions fill less than this share of it is rewritten (its versions moved).
MOVE_BELOW = 0.5
#: Versions moved per hand-over (one durable append and one transaction each).
MOVE_BATCH = 256

#: Fault injection for the crash tests: SIGKILL this process at the N-th step boundary.
CRASH_ENV = "CDP_CRASH_COMPACT"

COMPACTION_META = "compaction"
RETAINED_META = "retained"
LAST_META = "last_compaction"


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one compaction did."""

    horizon_seq: int
    horizon_ts: int
    fold_seq: int
    kept: int
    entries_dropped: int
    records_dropped: int
    segments_deleted: int
    bytes_freed: int
    bytes_moved: int
    seconds: float

    def describe(self) -> dict[str, Any]:
        return {"horizon_seq": self.horizon_seq, "horizon_ts_ns": self.horizon_ts, "fold_seq": self.fold_seq,
                "kept_points": self.kept, "entries_dropped": self.entries_dropped,
                "records_dropped": self.records_dropped, "segments_deleted": self.segments_deleted,
                "bytes_freed": self.bytes_freed, "bytes_moved": self.bytes_moved, "seconds": round(self.seconds, 3)}


def policy_of(index: Index) -> Policy:
    with index.read() as txn:
        return Policy.from_meta(index.get_meta(txn, "retention"))


def pinned_marks(path: Path) -> set[tuple[int, bytes]]:
    """(ts, name) of every mark pinned with ``cdp mark --keep-forever``."""
    return set(read_marks(path, PINS_LOG))


def drop_old_user_marks(index: Index, txn: lmdb.Transaction, horizon_ts: int, pins: set[tuple[int, bytes]]) -> None:
    """Delete the user marks behind the horizon, except pinned ones (a compaction's and a reindex's rule)."""
    umarks = index.db("umarks")
    gone = [k for k, _v in txn.cursor(db=umarks)
            if U64.unpack(k[:8])[0] < horizon_ts and (U64.unpack(k[:8])[0], bytes(k[8:])) not in pins]
    for k in gone:
        txn.delete(k, db=umarks)


class Compactor:
    """Runs compactions on a journal opened for writing (the drain's or ``cdp compact``'s)."""

    def __init__(self, journal: CompactionWriter, *, move_budget: int | None = None) -> None:
        self.j = journal
        #: most live bytes to move (None: no limit): on a full filesystem only what the reserve
        #: holds, the segments cheapest to empty first
        self.move_budget = move_budget
        self.index = journal.index
        self._counts = {"entries": 0, "records": 0, "segments": 0, "bytes": 0, "moved": 0}
        self._started = 0.0
        crash = os.environ.get(CRASH_ENV, "")
        self._crash_countdown = int(crash) if crash.isdigit() else None

    def _fault(self) -> None:
        """Die here if the crash tests asked for it (see :data:`CRASH_ENV`)."""
        if self._crash_countdown is not None:
            self._crash_countdown -= 1
            if self._crash_countdown <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    # ----------------------------------------------------------------- state

    def pending(self) -> dict[str, Any] | None:
        """The compaction in progress, if one was begun and not finished."""
        with self.index.read() as txn:
            return self.index.get_meta(txn, COMPACTION_META)

    def choose(self, now_ns: int, horizon_ts: int | None = None, min_share: float = 0.0) -> Selection | None:
        """What the policy would keep now (None: nothing to fold).

        ``min_share``: None too when the fold would cover less than this share
        of the records since the last fold (the first fold always counts).
        """
        policy = policy_of(self.index)
        if not policy.active and horizon_ts is None:
            return None
        pins = pinned_marks(self.j.path)
        refs = [PointRef(p.seq, p.ts_ns, p.kind, p.whole,
                         p.kind == PointKind.USER_MARK and (p.ts_ns, p.name.encode()) in pins)
                for p in self.j.points()]
        sel = retention.select(refs, policy, now_ns, horizon_ts=horizon_ts)
        with self.index.read() as txn:
            previous = retained(self.index, txn)
        if sel is None or not retention.folds_more(sel, previous):
            return None
        if previous is not None and sel.fold_seq < previous.fold_seq:
            return None  # never unfold: the history behind the last fold is gone
        if previous is not None and min_share:
            since = self.j.last_seq - previous.fold_seq
            if sel.fold_seq - previous.fold_seq < max(1, int(since * min_share)):
                return None
        return sel

    # ------------------------------------------------------------------ plan

    def begin(self, sel: Selection, reason: str) -> None:
        """Step 1: make the selection durable (a COMPACTION record) and the readers' answer.

        The plan's snapshot of the kept records and of the overflow windows
        is read under the writer's lock, with the record written and
        committed: a RESYNC the drain appends cannot fall between the
        snapshot and the plan (a reindex takes the plan's windows as of its
        record).
        """
        index = self.index
        sel = self._with_gaps(sel)

        def payload() -> bytes:
            kept_info, windows = self._snapshot(sel)
            return msgpack.packb({"sel": sel.to_meta(), "kept_info": kept_info, "windows": windows,
                                  "reason": reason, "at_ns": time.time_ns()})

        def extra(txn: lmdb.Transaction) -> None:
            d = index.get_meta(txn, "entries_dropped", 0)
            above = index.get_meta(txn, "dropped_above", 0)
            # kept seqs the last offset applied to get their exact counts now
            for k in sel.kept:
                if above < k <= sel.fold_seq:
                    _rewrite_seq(index, txn, k, lambda v: v[:8] + (v[8] - d, v[9]))
            index.put_meta(txn, "dropped_above", sel.fold_seq)
            index.put_meta(txn, RETAINED_META, sel.to_meta())
            heads.drop(index, txn)  # its versions are about to be folded and moved
            index.put_meta(txn, COMPACTION_META, {"stage": "blocks", "resume": 0, "reason": reason,
                                                  "started_ns": time.time_ns(), "note_seg": self.j.writer_seg})

        self.j.write_note(payload, extra)

    def _snapshot(self, sel: Selection) -> tuple[list[list[Any]], list[list[Any]]]:
        """What the plan records: each kept record's entries as the index holds them, every window."""
        index = self.index
        kept_info: list[list[Any]] = []
        with index.read() as txn:
            seq_db, points_db = index.db("seq"), index.db("points")
            for k in sel.kept:
                if k == 0:
                    continue
                key = U64.pack(k)
                raw = txn.get(key, db=seq_db)
                if raw is None:
                    raise CorruptJournal(f"kept point seq {k} has no record in the index; {REINDEX_HINT}")
                _s, _p, ts, off, length, dlen, rtype, flags, _e, _o = SEQ_VAL.unpack(unseal("seq", key, raw))
                praw = txn.get(key, db=points_db)
                point = msgpack.unpackb(unseal("points", key, praw)) if praw is not None else None
                wraw = txn.get(key, db=index.db("windows"))
                window = bytes(unseal("windows", key, wraw)) if wraw is not None else None
                kept_info.append([k, ts, rtype, flags, off, length, dlen, point, window])
            # every overflow window, as the index holds it: a kept point inside one is not whole
            # even once the OVERFLOW record's segment is deleted (a reindex reads them back here)
            windows = [[U64.unpack(k)[0], bytes(unseal("windows", k, v))]
                       for k, v in txn.cursor(db=index.db("windows"))]
        return kept_info, windows

    def _with_gaps(self, sel: Selection) -> Selection:
        """``sel`` with the time of the first folded record after each kept seq."""
        gaps = []
        kept = set(sel.kept)
        with self.index.read() as txn:
            previous = retained(self.index, txn)
            before = dict(zip(previous.kept, previous.folded_after)) if previous is not None else {}
            for k in sel.kept:
                nxt = k + 1
                ts = 0
                if nxt <= sel.fold_seq and nxt not in kept:
                    raw = txn.get(U64.pack(nxt), db=self.index.db("seq"))
                    if raw is not None:
                        ts = SEQ_VAL.unpack_from(unseal("seq", U64.pack(nxt), raw))[2]
                    else:  # an earlier compaction folded it: it knew when
                        ts = before.get(k, 0)
                gaps.append(ts)
        return Selection(sel.horizon_seq, sel.horizon_ts, sel.fold_seq, sel.kept, tuple(gaps))

    # ----------------------------------------------------------------- steps

    def step(self) -> bool:
        """Run one bounded step of the compaction in progress; False once none is left."""
        state = self.pending()
        if state is None:
            return False
        with self.index.read() as txn:
            sel = retained(self.index, txn)
        if sel is None:
            raise CorruptJournal(f"a compaction is in progress but its selection is missing; {REINDEX_HINT}")
        stage = state["stage"]
        if stage == "blocks":
            self._prune_blocks(sel, state)
        elif stage == "records":
            self._prune_records(sel, state)
        elif stage == "extents":
            self._copy_extents(sel, state)
        elif stage == "segments":
            self._drop_segments(sel, state)
        elif stage == "move":
            self._move(sel, state)
        else:
            raise CorruptJournal(f"unknown compaction stage {stage!r}; {REINDEX_HINT}")
        return True

    def run(self, now_ns: int | None = None, *, reason: str = "policy", horizon_ts: int | None = None,
            on_step: Callable[[str], None] | None = None, min_share: float = 0.0) -> CompactionResult | None:
        """Finish a compaction in progress, else plan one (see :meth:`choose`) and run it to the end."""
        self._started = time.monotonic()
        sel = None
        if self.pending() is None:
            sel = self.choose(time.time_ns() if now_ns is None else now_ns, horizon_ts, min_share)
            if sel is None:
                return None
            self.begin(sel, reason)
            self._fault()
        while True:
            state = self.pending()
            if state is None:
                break
            if on_step is not None:
                on_step(state["stage"])
            self.step()
            self._fault()
        with self.index.read() as txn:
            sel = retained(self.index, txn)
        assert sel is not None
        c = self._counts
        return CompactionResult(sel.horizon_seq, sel.horizon_ts, sel.fold_seq, len(sel.kept), c["entries"],
                                c["records"], c["segments"], c["bytes"], c["moved"], time.monotonic() - self._started)

    def _set_state(self, txn: lmdb.Transaction, state: dict[str, Any] | None) -> None:
        self.index.put_meta(txn, COMPACTION_META, state)

    def _prune_blocks(self, sel: Selection, state: dict[str, Any]) -> None:
        """Step 2, one run of blocks: delete the versions no kept point can see."""
        index = self.index
        kept = sel.kept
        fold = sel.fold_seq

        def work(txn: lmdb.Transaction) -> int:
            db = index.db("blocks")
            cur = txn.cursor(db=db)
            dead: list[bytes] = []
            dead_seqs: list[int] = []
            n = 0
            group: list[tuple[int, int, bytes]] = []
            group_block = -1
            next_block: int | None = None
            ok = cur.set_range(U64X2.pack(state["resume"], 0))
            while ok:
                key = cur.key()
                raw = cur.value()
                if not check(key, raw):
                    raise damaged("blocks", key)
                block, vseq = U64X2.unpack(key)
                if block != group_block:
                    if group:
                        _dead_versions(group, kept, fold, dead, dead_seqs)
                        group = []
                    if n >= CHUNK_ENTRIES:
                        next_block = block
                        break
                    group_block = block
                n += 1
                if vseq <= fold:
                    group.append((vseq, BLOCK_VAL.unpack_from(raw)[2], key))
                ok = cur.next()
            if group:
                _dead_versions(group, kept, fold, dead, dead_seqs)
            for key in dead:
                txn.delete(key, db=db)
            if dead:
                _adjust_counts(index, txn, kept, sorted(dead_seqs))
            self._set_state(txn, {**state, "resume": next_block} if next_block is not None
                            else {**state, "stage": "records", "resume": 0})
            return len(dead)

        self._counts["entries"] += index.write(work)

    def _prune_records(self, sel: Selection, state: dict[str, Any]) -> None:
        """Step 3, one run of seqs: drop folded records' entries; kept ones let go of their segment."""
        index = self.index
        kept = set(sel.kept)
        pins = pinned_marks(self.j.path)

        def work(txn: lmdb.Transaction) -> int:
            seq_db, time_db, points_db = index.db("seq"), index.db("time"), index.db("points")
            cur = txn.cursor(db=seq_db)
            drop: list[tuple[int, int]] = []
            repoint: list[int] = []
            n = 0
            next_seq: int | None = None
            ok = cur.set_range(U64.pack(max(state["resume"], 1)))
            while ok:
                key = cur.key()
                seq = U64.unpack(key)[0]
                if seq > sel.fold_seq:
                    break
                if n >= CHUNK_RECORDS:
                    next_seq = seq
                    break
                n += 1
                v = SEQ_VAL.unpack(unseal("seq", key, cur.value()))
                if seq in kept:
                    if v[0] != 0:
                        repoint.append(seq)
                else:
                    drop.append((seq, v[2]))
                ok = cur.next()
            for seq, ts in drop:
                key = U64.pack(seq)
                txn.delete(key, db=seq_db)
                txn.delete(U64X2.pack(ts, seq), db=time_db)
                txn.delete(key, db=points_db)
            for seq in repoint:
                _rewrite_seq(index, txn, seq, lambda v: (0, 0) + v[2:])
            if next_seq is not None:
                self._set_state(txn, {**state, "resume": next_seq})
                return len(drop)
            # the last run: user marks and activity behind the horizon go too
            drop_old_user_marks(index, txn, sel.horizon_ts, pins)
            activity = index.db("activity")
            old = []
            for k, _v in txn.cursor(db=activity):
                if U64.unpack(k)[0] + 10**9 > sel.horizon_ts:
                    break
                old.append(k)
            for k in old:
                txn.delete(k, db=activity)
            self._set_state(txn, {**state, "stage": "extents", "resume": 0})
            return len(drop)

        self._counts["records"] += index.write(work)

    def _live_bytes(self) -> dict[int, int]:
        """Bytes of live block versions in each segment (every data entry, short read transactions)."""
        live: dict[int, int] = {}
        for _key, raw in self._block_entries():
            seg, _pos0, mask, kind, _crc, stored = BLOCK_VAL.unpack_from(raw)
            # a zeroing version holds no bytes, but its record is what a reindex rebuilds it
            # from: it keeps its segment until it is moved (a header's worth); a compressed
            # one holds its frame
            live[seg] = live.get(seg, 0) + (mask.bit_count() * SECTOR if kind == KIND_DATA else
                                            64 if kind == KIND_ZERO else stored)
        return live

    def _block_entries(self) -> Iterator[tuple[bytes, bytes]]:
        """Every block entry, through short read transactions (the writer's pages are not pinned long).

        Entries at or below the fold change only by this compaction's own
        steps, and the drain's new ones come after: chunks see one state of
        what a compaction reads.
        """
        resume = b""
        while True:
            with self.index.read() as txn:
                cur = txn.cursor(db=self.index.db("blocks"))
                ok = cur.set_range(resume) if resume else cur.first()
                n = 0
                while ok and n < 65536:
                    yield cur.key(), cur.value()
                    n += 1
                    ok = cur.next()
                if not ok:
                    return
                resume = cur.key()

    def _old_segments(self, sel: Selection, state: dict[str, Any]) -> list[int]:
        """Segments on disk that hold no record after the fold and none of this compaction's own."""
        with self.index.read() as txn:
            cur = txn.cursor(db=self.index.db("seq"))
            first_after = None
            if cur.set_range(U64.pack(sel.fold_seq + 1)):
                first_after = SEQ_VAL.unpack_from(unseal("seq", cur.key(), cur.value()))[0]
        limit = min(s for s in (first_after, state.get("note_seg"), self.j.writer_seg) if s)
        seg_dir = self.j.path / "segments"
        return sorted(s for s in (int(p.stem) for p in seg_dir.glob("*.seg") if p.stem.isdigit()) if 0 < s < limit)

    def _copy_extents(self, sel: Selection, state: dict[str, Any]) -> None:
        """Step 4: copy every big zeroing extent at or below the fold into a FOLD record.

        They are few; a reindex then finds each without the record that made
        it, whose segment the next steps may delete.
        """
        with self.index.read() as txn:
            extents = [(U64.unpack(k)[0], *U64X2.unpack(unseal("zext", k, v)))
                       for k, v in txn.cursor(db=self.index.db("zext")) if U64.unpack(k)[0] <= sel.fold_seq]

        def frame(batch: Batch) -> None:
            for zseq, offset, length in extents:
                batch.add_fold(zseq, offset, length, None, 0, extent=True)

        self.j.write_compaction(frame, lambda txn: self._set_state(txn, {**state, "stage": "segments"}))

    def _drop_segments(self, sel: Selection, state: dict[str, Any]) -> None:
        """Step 5: delete the segments nothing uses any more."""
        used = self._live_bytes()
        doomed = [s for s in self._old_segments(sel, state) if s not in used]
        self._drop(doomed, lambda txn: self._set_state(txn, {**state, "stage": "move"}))

    def _move(self, sel: Selection, state: dict[str, Any]) -> None:
        """Step 6: empty mostly-dead segments, cheapest first, and delete each once empty.

        A segment's live versions are copied into FOLD records (each
        hand-over one durable append and one transaction pointing the
        versions' entries at the copies: a crash leaves each version where it
        was or moved, both exact), checked against their CRCs on the way
        (damage is reported, never copied); then the segment goes. One at a
        time, so the space each gives back is there for the next: on a full
        filesystem (``move_budget``) a segment is emptied only while what it
        holds fits in the room there is.
        """
        live = self._live_bytes()
        seg_dir = self.j.path / "segments"
        candidates = sorted((live.get(s, 0), s) for s in self._old_segments(sel, state)
                            if 0 < live.get(s, 0) < (seg_dir / segment_name(s)).stat().st_size * MOVE_BELOW)
        entries = self._entries_in({s for _n, s in candidates})
        for nbytes, victim in candidates:
            if self.move_budget is not None:
                vfs = os.statvfs(seg_dir)
                if nbytes + (256 << 10) > max(self.move_budget, vfs.f_bavail * vfs.f_frsize):
                    break
            self._empty(entries.get(victim, []))
            self._drop([victim], lambda txn: None)
        self._finish(sel, state)

    def _entries_in(self, segs: set[int]) -> dict[int, list[tuple[bytes, int, int, int, int | None, int, int]]]:
        """The block entries that point into ``segs``, by segment, in one pass over the table."""
        out: dict[int, list[tuple[bytes, int, int, int, int | None, int, int]]] = {}
        if not segs:
            return out
        for key, raw in self._block_entries():
            seg = int.from_bytes(raw[:4], "little")
            if seg in segs:
                if not check(key, raw):
                    raise damaged("blocks", key)
                _s, pos0, mask, kind, crc, stored = BLOCK_VAL.unpack_from(raw)
                out.setdefault(seg, []).append((key, seg, pos0, mask, crc if kind != KIND_ZERO else None,
                                                kind, stored))
        return out

    def _empty(self, moving: list[tuple[bytes, int, int, int, int | None, int, int]]) -> None:
        """Move the live versions ``moving`` (all of one segment) to FOLD records."""
        seg_dir = self.j.path / "segments"
        views = SegmentViews(seg_dir)
        try:
            for start in range(0, len(moving), MOVE_BATCH):
                chunk = moving[start:start + MOVE_BATCH]

                def frame(batch: Batch, chunk: list = chunk) -> None:
                    for key, seg, pos0, mask, crc, kind, stored in chunk:
                        block, vseq = U64X2.unpack(key)
                        first, count = covered_span(mask)
                        offset = block * BLOCK + first * SECTOR
                        if crc is None:  # a zeroing version: only its range
                            batch.add_fold(vseq, offset, count * SECTOR, None, 0)
                            continue
                        if kind != KIND_DATA:  # a compressed version: its frame, checked by decoding
                            frame = views.view(seg, pos0, stored)
                            decode_checked(frame, count * SECTOR, crc, block, vseq, seg, pos0)
                            batch.add_fold(vseq, offset, count * SECTOR, None, crc, stored=one_frame(frame, crc))
                            continue
                        data = views.view(seg, pos0 + first * SECTOR, count * SECTOR)
                        if crc32c.crc32c(data) != crc:
                            raise bad_crc(block, vseq, seg, pos0 + first * SECTOR)
                        batch.add_fold(vseq, offset, count * SECTOR, data, crc)

                self.j.write_compaction(frame, lambda txn: None)
                self._counts["moved"] += sum(
                    covered_span(m)[1] * SECTOR for _k, _s, _p, m, c, _kind, _n in chunk if c is not None)
                self._fault()
        finally:
            views.close()

    def _drop(self, doomed: list[int], extra: Callable[[lmdb.Transaction], None]) -> None:
        """Delete segments ``doomed``, after a COMPACTION record says durably that they go on purpose."""
        index = self.index
        seg_dir = self.j.path / "segments"
        with index.read() as txn:
            dropped = [tuple(r) for r in index.get_meta(txn, "dropped_segments", [])]
        ranges = _merge_ranges(dropped, doomed)
        freed = sum((seg_dir / segment_name(s)).stat().st_size for s in doomed)

        def commit(txn: lmdb.Transaction) -> None:
            index.put_meta(txn, "dropped_segments", [list(r) for r in ranges])
            extra(txn)

        self.j.write_note(msgpack.packb({"dropped": [list(r) for r in ranges], "at_ns": time.time_ns()}), commit)
        for s in doomed:
            self._fault()
            # unlinked whole, never cut down first: a reader may have it mapped (a restore that
            # began before this compaction), and a mapped page past a file's end is SIGBUS
            (seg_dir / segment_name(s)).unlink(missing_ok=True)
        if doomed:
            fsync_dir(seg_dir)
        self._counts["segments"] += len(doomed)
        self._counts["bytes"] += freed

    def _finish(self, sel: Selection, state: dict[str, Any]) -> None:
        """The compaction is done: say what it did (meta ``last_compaction``)."""
        c = self._counts

        def done(txn: lmdb.Transaction) -> None:
            self._set_state(txn, None)
            self.index.put_meta(txn, LAST_META, {
                "finished_ns": time.time_ns(), "started_ns": state.get("started_ns"),
                "reason": state.get("reason"), "horizon_seq": sel.horizon_seq, "horizon_ts": sel.horizon_ts,
                "fold_seq": sel.fold_seq, "kept": len(sel.kept), "segments_deleted": c["segments"],
                "bytes_freed": c["bytes"], "bytes_moved": c["moved"]})

        self.index.write(done)


def remove_dropped(index: Index, seg_dir: os.PathLike[str]) -> int:
    """Delete segment files a compaction listed as dropped but was killed before deleting."""
    with index.read() as txn:
        dropped = dropped_ids(index.get_meta(txn, "dropped_segments", []))
    gone = 0
    for p in Path(seg_dir).glob("*.seg"):
        if p.stem.isdigit() and dropped(int(p.stem)):
            p.unlink(missing_ok=True)
            gone += 1
    if gone:
        fsync_dir(Path(seg_dir))
    return gone


def _dead_versions(group: list[tuple[int, int, bytes]], kept: tuple[int, ...], fold: int,
                   dead: list[bytes], dead_seqs: list[int]) -> None:
    """Add the versions of one block (ascending seq, all at or below the fold) no kept seq can see.

    Newest first, ``cover[i]`` is the seq of the nearest newer version that
    covers sector i; a version is hidden once all its sectors are covered,
    at the largest of those seqs. It is dead if no kept seq lies between its
    own seq and that one. A version not hidden by the fold is seen by every
    seq after it: always kept.
    """
    inf = 1 << 64
    cover = [inf] * 8
    for vseq, mask, key in reversed(group):
        hidden = 0
        for i in range(8):
            if mask >> i & 1:
                c = cover[i]
                if c > hidden:
                    hidden = c
                cover[i] = vseq
        if hidden >= inf or hidden > fold:
            continue
        i = bisect_left(kept, vseq)
        if i < len(kept) and kept[i] < hidden:
            continue
        dead.append(key)
        dead_seqs.append(vseq)


def _adjust_counts(index: Index, txn: lmdb.Transaction, kept: tuple[int, ...], dead_seqs: list[int]) -> None:
    """Keep every running total exact after ``dead_seqs`` (sorted) lost one entry each."""
    for k in kept:
        fewer = bisect_right(dead_seqs, k)
        if not fewer:
            continue
        if k == 0:
            index.put_meta(txn, "base_entries", index.require_meta(txn, "base_entries") - fewer)
        else:
            _rewrite_seq(index, txn, k, lambda v, f=fewer: v[:8] + (v[8] - f, v[9]))
    index.put_meta(txn, "entries_dropped", index.get_meta(txn, "entries_dropped", 0) + len(dead_seqs))


def _rewrite_seq(index: Index, txn: lmdb.Transaction, seq: int, change: Callable[[tuple], tuple]) -> None:
    key = U64.pack(seq)
    db = index.db("seq")
    raw = txn.get(key, db=db)
    if raw is None:
        raise CorruptJournal(f"kept point seq {seq} has no record in the index; {REINDEX_HINT}")
    value = SEQ_VAL.pack(*change(SEQ_VAL.unpack(unseal("seq", key, raw))))
    txn.put(key, seal(key, value), db=db)


def _merge_ranges(ranges: list[tuple[int, int]], more: list[int]) -> list[tuple[int, int]]:
    """Segment id ranges [lo, hi] with ``more`` added, merged."""
    ids = sorted(set(more))
    spans = sorted([tuple(r) for r in ranges] + [(s, s) for s in ids])
    out: list[list[int]] = []
    for lo, hi in spans:
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def dropped_ids(ranges: list[list[int]] | list[tuple[int, int]]) -> Callable[[int], bool]:
    """A test for 'segment id was deleted by a compaction'."""
    spans = sorted(tuple(r) for r in ranges)

    def dropped(seg: int) -> bool:
        i = bisect_right(spans, (seg, 1 << 62)) - 1
        return i >= 0 and spans[i][0] <= seg <= spans[i][1]

    return dropped
