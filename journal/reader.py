"""The read side of a journal: what restores, verifies and the user interfaces ask.

:class:`JournalReader` is the small public surface that every reader works
through: the journal's fixed facts (:class:`JournalInfo`), its index and
segment reader, the resolution of a seq or time to a point, block reads,
points, overflow windows, records and counters. ``journal.restore`` and
``journal.verify`` are functions over it; :class:`journal.journal.Journal`
adds the writer on top. Keeping the two apart keeps the import graph one
way: journal -> restore/verify -> reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from journal import points as _points
from journal.blockmap import ZeroExtents
from journal.blockread import fill, plan
from journal.codec import Compression
from journal.errors import OutOfRange
from journal.format import BLOCK, SEQ_VAL, U64, U64X2
from journal.index import Index, check, damaged, unseal
from journal.points import OverflowWindow
from journal.units import NS, format_ts
from journal.records import Point
from journal.segments import SegmentReader

#: A progress callback: (done, total) in bytes.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class JournalInfo:
    """What the journal protects; fixed when it is created."""

    device_bytes: int
    block_size: int
    device_id: bytes
    created_ns: int
    schema: int
    source: str

    @property
    def index_blocks(self) -> int:
        """How many 4 KiB blocks the block index divides the device into (the last may be partial)."""
        return (self.device_bytes + BLOCK - 1) // BLOCK


@dataclass(frozen=True, slots=True)
class Located:
    """The point a read or restore is for, and why it is not the one asked for (retention)."""

    seq: int
    ts_ns: int
    note: str | None = None


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A record as the index knows it (no payload)."""

    seq: int
    ts_ns: int
    type: int
    flags: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class JournalStats:
    """Counters for `cdp status` and the TUI's status bar."""

    records: int
    data_bytes: int
    disk_bytes: int
    first_ts_ns: int
    last_ts_ns: int
    last_seq: int
    segments: int


class JournalReader:
    """One journal directory, read through its index; see the module docstring."""

    def __init__(self, path: Path, index: Index) -> None:
        self.path = path
        self.index = index
        self.segments = SegmentReader(path / "segments")
        with index.read() as txn:
            need = lambda key: index.require_meta(txn, key)  # noqa: E731
            self.info = JournalInfo(need("device_bytes"), need("block_size"), bytes(need("device_id")),
                                    need("created_ns"), need("schema"), index.get_meta(txn, "source", ""))
            #: How new payloads are stored (the ``compress`` meta value).
            self.compression = Compression.from_meta(index.get_meta(txn, "compress"))

    def close(self) -> None:
        """Release the segment files and the index."""
        self.segments.close()
        self.index.close()

    # ----------------------------------------------------------------- where

    @property
    def last_seq(self) -> int:
        """The newest committed seq (0: only the baseline)."""
        with self.index.read() as txn:
            return self.index.require_meta(txn, "last_seq")

    @property
    def last_ts_ns(self) -> int:
        """Time of the newest committed record (creation time if none)."""
        with self.index.read() as txn:
            return self.index.require_meta(txn, "last_ts")

    def cursor(self) -> dict[str, Any] | None:
        """The resume state the service committed with its last batch."""
        with self.index.read() as txn:
            return self.index.get_meta(txn, "cursor")

    def resolve(self, ts_ns: int) -> int:
        """Seq of the last record at or before ``ts_ns`` (0: the baseline)."""
        self._check_not_before(ts_ns)
        with self.index.read() as txn:
            return _points.resolve(self.index, txn, ts_ns)

    def _check_not_before(self, ts_ns: int) -> None:
        if ts_ns < self.info.created_ns:
            raise OutOfRange(f"that time is before the journal began ({format_ts(self.info.created_ns)})")

    def target(self, txn: lmdb.Transaction, seq: int | None, at_ns: int | None) -> tuple[int, int]:
        """(seq, ts) a read or restore is for: a time, a seq, or (neither) the newest."""
        found = self.locate(txn, seq, at_ns)
        return found.seq, found.ts_ns

    def locate(self, txn: lmdb.Transaction, seq: int | None, at_ns: int | None) -> Located:
        """Like :meth:`target`, and what the answer stands for when retention thinned the history.

        A seq or time that a compaction folded away answers as the newest
        kept point before it (``note`` says so); one behind the retention
        horizon is an error naming the oldest point there is.
        """
        sel = _points.retained(self.index, txn)
        if at_ns is not None:
            self._check_not_before(at_ns)
            asked = _points.resolve(self.index, txn, at_ns)
            ts = at_ns
        else:
            last = self.index.require_meta(txn, "last_seq")
            asked = last if seq is None else seq
            if not 0 <= asked <= last:
                raise OutOfRange(f"seq {asked} is not in the journal (0..{last})")
            ts = None
        kept = asked if sel is None else sel.maps(asked)
        if kept is None:
            raise OutOfRange(f"{'that time' if at_ns is not None else f'seq {asked}'} is behind the retention "
                             f"horizon: the oldest point kept is seq {sel.horizon_seq} at "
                             f"{format_ts(sel.horizon_ts)}")
        note = None
        if kept == asked and at_ns is not None and sel is not None and sel.thinned_at(kept, at_ns):
            note = (f"{format_ts(at_ns)} was thinned by retention: this is the newest point kept before it, "
                    f"seq {kept} at {format_ts(self.ts_of(txn, kept))}")
        elif kept != asked:
            kept_ts = self.ts_of(txn, kept)
            what = f"{format_ts(at_ns)}" if at_ns is not None else f"seq {asked}"
            note = (f"{what} was thinned by retention: this is the newest point kept before it, "
                    f"seq {kept} at {format_ts(kept_ts)}")
            ts = kept_ts if ts is None else ts
        return Located(kept, self.ts_of(txn, kept) if ts is None else ts, note)

    def ts_of(self, txn: lmdb.Transaction, seq: int) -> int:
        """The time stamp of record ``seq`` (the creation time for 0, the baseline)."""
        if seq == 0:
            return self.info.created_ns
        key = U64.pack(seq)
        raw = txn.get(key, db=self.index.db("seq"))
        if raw is None:
            raise OutOfRange(f"seq {seq} is not in the journal")
        return SEQ_VAL.unpack_from(unseal("seq", key, raw))[2]

    def expected_counts(self, txn: lmdb.Transaction, seq: int) -> tuple[int, int]:
        """(block + zero-extent entries, OVERFLOW records) the index holds at or below ``seq``."""
        if seq == 0:
            return self.index.require_meta(txn, "base_entries"), 0
        key = U64.pack(seq)
        raw = txn.get(key, db=self.index.db("seq"))
        if raw is None:
            raise OutOfRange(f"seq {seq} is not in the journal")
        entries, overflows = SEQ_VAL.unpack_from(unseal("seq", key, raw))[8:]
        if seq > self.index.get_meta(txn, "dropped_above", 0):
            # a compaction deleted entries at or below its fold: seqs after it carry the offset
            entries -= self.index.get_meta(txn, "entries_dropped", 0)
        return entries, overflows

    # ----------------------------------------------------------------- bytes

    def read(self, offset: int, length: int, *, seq: int | None = None, at_ns: int | None = None) -> bytes:
        """The device's bytes ``[offset, offset+length)`` at a seq or time, checked (:mod:`journal.blockread`)."""
        if offset < 0 or length < 0 or offset + length > self.info.device_bytes:
            raise OutOfRange(f"range {offset}+{length} is outside the device ({self.info.device_bytes} bytes)")
        if length == 0:
            return b""
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        with self.index.read() as txn:
            seq, _ts = self.target(txn, seq, at_ns)
            zext = self.zero_extents(txn, seq, offset, offset + length)
            steps = plan(txn, self.index.db("blocks"), first, last, seq, zext.sector_seqs if zext else None)
        out = bytearray((last - first + 1) * BLOCK)
        fill(self.segments, steps, first, memoryview(out))
        start = offset - first * BLOCK
        return bytes(out[start:start + length])

    def zero_extents(self, txn: lmdb.Transaction, seq: int, lo: int = 0, hi: int | None = None) -> ZeroExtents:
        """The big zeroing extents at or below ``seq`` that touch ``[lo, hi)``."""
        hi = self.info.device_bytes if hi is None else hi
        found = []
        count = 0
        for key, raw in txn.cursor(db=self.index.db("zext")):
            zseq = U64.unpack(key)[0]
            if zseq > seq:
                break
            offset, length = U64X2.unpack(unseal("zext", key, raw))
            count += 1
            if offset < hi and offset + length > lo:
                found.append((zseq, offset, length))
        return ZeroExtents(found, count)

    # ---------------------------------------------------------------- points

    def overflow_windows(self) -> list[OverflowWindow]:
        """Every overflow window, open or closed, oldest first."""
        with self.index.read() as txn:
            return _points.windows(self.index, txn)

    def is_whole(self, seq: int, ts_ns: int) -> bool:
        """Whether the device at (seq, ts) is known byte for byte."""
        return not any(w.covers(seq, ts_ns) for w in self.overflow_windows())

    def check_whole(self, seq: int, ts_ns: int) -> None:
        """Raise :class:`NotWhole` for a point inside an unresynced overflow window."""
        error = _points.not_whole_error(self.overflow_windows(), seq, ts_ns)
        if error is not None:
            raise error

    def points(
        self, *, kinds: Iterable[str] | None = None, start_ns: int | None = None,
        end_ns: int | None = None, reverse: bool = False, limit: int | None = None,
    ) -> list[Point]:
        """Rewind points in time order (newest first with ``reverse``)."""
        with self.index.read() as txn:
            return _points.query(self.index, txn, self.info.created_ns, kinds=kinds, start_ns=start_ns,
                                 end_ns=end_ns, reverse=reverse, limit=limit)

    # ------------------------------------------------------------ inspection

    def records(self, start_seq: int = 1, end_seq: int | None = None, reverse: bool = False) -> Iterator[RecordInfo]:
        """Index entries in seq order, a short transaction per chunk of rows."""
        pos = end_seq if reverse else start_seq
        while True:
            rows: list[RecordInfo] = []
            with self.index.read() as txn:
                cur = txn.cursor(db=self.index.db("seq"))
                if reverse:
                    ok = cur.set_range(U64.pack(pos + 1)) if pos is not None else False
                    ok = cur.prev() if ok else cur.last()
                else:
                    ok = cur.set_range(U64.pack(pos))
                while ok and len(rows) < 4096:
                    key = cur.key()
                    seq = U64.unpack(key)[0]
                    if (not reverse and end_seq is not None and seq > end_seq) or (reverse and seq < start_seq):
                        ok = False
                        break
                    _seg, _pos, ts, off, length, _dl, rtype, flags, _e, _o = SEQ_VAL.unpack(
                        unseal("seq", key, cur.value()))
                    rows.append(RecordInfo(seq, ts, rtype, flags, off, length))
                    ok = cur.prev() if reverse else cur.next()
            yield from rows
            if not ok or not rows:
                return
            pos = rows[-1].seq - 1 if reverse else rows[-1].seq + 1

    def activity(self, start_ns: int, end_ns: int) -> list[tuple[int, int, int]]:
        """(second, records, bytes) for each second in the range that had writes."""
        out = []
        with self.index.read() as txn:
            cur = txn.cursor(db=self.index.db("activity"))
            ok = cur.set_range(U64.pack(start_ns - start_ns % NS))
            while ok:
                key = cur.key()
                second = U64.unpack(key)[0]
                if second > end_ns:
                    break
                count, nbytes = msgpack.unpackb(unseal("activity", key, cur.value()))
                out.append((second, count, nbytes))
                ok = cur.next()
        return out

    def stats(self) -> JournalStats:
        """Counters and on-disk size."""
        segs = list((self.path / "segments").glob("*.seg"))
        disk = sum(p.stat().st_size for p in segs) + self.index.size_bytes()
        with self.index.read() as txn:
            need = lambda key: self.index.require_meta(txn, key)  # noqa: E731
            cur = txn.cursor(db=self.index.db("time"))
            first = self.info.created_ns
            if cur.first():
                if not check(cur.key(), cur.value()):
                    raise damaged("time", cur.key())
                first = U64X2.unpack(cur.key())[0]
            return JournalStats(need("records"), need("data_bytes"), disk, first,
                                need("last_ts"), need("last_seq"), len(segs))

    def status(self) -> dict[str, Any] | None:
        """The service's last published status, if any."""
        with self.index.read() as txn:
            return self.index.get_meta(txn, "status")
