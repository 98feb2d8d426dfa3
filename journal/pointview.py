"""A read-only view of the device at one seq: any byte range, checked, on demand.

`cdp export` serves a rewind point as a block device; its reads arrive one
request at a time, at any offset, in any order, while the drain service may
be appending. This view answers them from the index and the segments with
the same checks a restore makes: every byte taken from a segment is checked
against the CRC-32C the index holds for it, so a damaged block raises
:class:`~journal.errors.CorruptJournal` (an I/O error to the client), never
wrong bytes.

What the view adds to a ranged read (:mod:`journal.blockread`, the same
path ``JournalReader.read`` takes for ``cdp``'s reads and the TUI's block
views): state kept for a point served for hours. The index's page tree is
checked in full once, when the view is made (a ranged read has no count to
catch an entry lost from a page), the big zeroing extents at or below the
seq are gathered once, each request is planned in one short read
transaction that also checks the point was not folded away meanwhile, and
the segments are read through descriptors the view keeps open.

Threads: nbdkit may call from several threads. Index work is serialized by
one lock: ``Index.read`` may call ``set_mapsize`` when another process grew
the map, which LMDB allows only while this process has no transaction open.
Segment reads and CRC checks (which release the GIL) run outside the lock.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from journal.blockread import fill, plan, winners
from journal.errors import OutOfRange
from journal.format import BLOCK, BLOCK_VAL, FULL_MASK, KIND_ZERO
from journal.points import retained
from journal.reader import JournalReader
from journal.segments import SegmentReader

if TYPE_CHECKING:
    from journal.journal import Journal

#: At most this many blocks with versions are classified per ``extents`` call
#: (NBD lets a server describe less than was asked; the client asks again).
_EXTENT_BLOCKS = 16384


@dataclass(frozen=True, slots=True)
class Extent:
    """A byte range of the view that is all data or all zeros."""

    offset: int
    length: int
    zero: bool


def open_readonly(path: str | os.PathLike[str]) -> Journal:
    """``Journal.open(path, readonly=True)``: an export only ever reads.

    (A map grown by the drain between mapping the file and opening the
    databases is adopted by :class:`journal.index.Index` itself.)
    """
    from journal.journal import Journal

    return Journal.open(path, readonly=True)


class PointView:
    """The device as of ``seq``: reads, zero/data extents; see the module docstring."""

    def __init__(self, journal: JournalReader, seq: int) -> None:
        self.journal = journal
        self.seq = seq
        self.size = journal.info.device_bytes
        self._index = journal.index
        self._lock = threading.Lock()
        self._segments = SegmentReader(journal.path / "segments")
        # in full: a ranged read has no count to catch an entry lost from a page (journal.lmdbcheck)
        self._index.check_tree(full=True)
        with self._lock, self._index.read() as txn:
            last = self._index.get_meta(txn, "last_seq", 0)
            if not 0 <= seq <= last:
                raise OutOfRange(f"seq {seq} is not in the journal (0..{last})")
            self._check_kept(txn)
            self._zext = journal.zero_extents(txn, seq)

    def _check_kept(self, txn: Any) -> None:
        """Refuse to serve a point retention folded away (a compaction may run while it is exported).

        Checked in the same read transaction as the blocks it reads: either
        the compaction has not begun in that snapshot (every version is
        there) or the point is answered by another and this view says so.
        """
        sel = retained(self._index, txn)
        if sel is not None and sel.maps(self.seq) != self.seq:
            raise OutOfRange(f"seq {self.seq} was folded away by retention ('cdp retain') while it was "
                             "being read: export a kept point")

    def close(self) -> None:
        """Close the segment descriptors (the journal stays open: it is the caller's)."""
        self._segments.close()

    # ------------------------------------------------------------------ reads

    def read(self, offset: int, length: int) -> bytes:
        """The device's bytes ``[offset, offset+length)`` at the view's seq."""
        buf = bytearray(length)
        self.readinto(offset, buf)
        return bytes(buf)

    def readinto(self, offset: int, buf: bytearray | memoryview) -> None:
        """Fill ``buf`` with the device's bytes from ``offset``; raises on any damage."""
        out = memoryview(buf).cast("B")
        length = len(out)
        if offset < 0 or offset + length > self.size:
            raise OutOfRange(f"range {offset}+{length} is outside the device ({self.size} bytes)")
        if length == 0:
            return
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        if offset % BLOCK == 0 and length % BLOCK == 0:
            self._fill(first, last, out)
            return
        # unaligned ends: build the whole blocks, hand back the part asked for
        whole = bytearray((last - first + 1) * BLOCK)
        self._fill(first, last, memoryview(whole))
        start = offset - first * BLOCK
        out[:] = memoryview(whole)[start:start + length]

    def _fill(self, first: int, last: int, out: memoryview) -> None:
        """Write blocks ``first..last`` into ``out`` (``out`` starts at block ``first``)."""
        sector_seqs = self._zext.sector_seqs if self._zext else None
        with self._lock, self._index.read() as txn:
            self._check_kept(txn)
            steps = plan(txn, self._index.db("blocks"), first, last, self.seq, sector_seqs)
        fill(self._segments, steps, first, out)

    # ---------------------------------------------------------------- extents

    def extents(self, offset: int, length: int) -> list[Extent]:
        """Data and zero extents from ``offset``, covering at least its first block.

        A zero extent is certain (no version at or below the seq, a zeroing
        version, or zeroing extents newer than every version); anything else
        is reported as data, which is always safe. Long runs of blocks with
        versions are described in pieces of :data:`_EXTENT_BLOCKS`.
        """
        if offset < 0 or length <= 0 or offset + length > self.size:
            raise OutOfRange(f"range {offset}+{length} is outside the device ({self.size} bytes)")
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        sector_seqs = self._zext.sector_seqs if self._zext else None
        unpack_val = BLOCK_VAL.unpack_from  # the value's last 4 bytes are its seal
        out: list[list] = []  # [first block, end block, zero]

        def add(lo: int, hi: int, zero: bool) -> None:
            if out and out[-1][2] == zero and out[-1][1] == lo:
                out[-1][1] = hi
            else:
                out.append([lo, hi, zero])

        end = last + 1
        seen = 0
        with self._lock, self._index.read() as txn:
            cur = txn.cursor(db=self._index.db("blocks"))
            at = first
            for block, top_seq, raw in winners(cur, first, last, self.seq):
                if block > at:
                    add(at, block, True)
                _seg, _pos0, mask, kind, _crc, _stored = unpack_val(raw)
                zseqs = sector_seqs(block) if sector_seqs is not None else None
                zero = ((zseqs is not None and min(zseqs) > top_seq)
                        or (mask == FULL_MASK and kind == KIND_ZERO))
                add(block, block + 1, zero)
                at = block + 1
                seen += 1
                if seen >= _EXTENT_BLOCKS:
                    end = at
                    break
            if at < end:
                add(at, end, True)
        stop = offset + length
        return [Extent(max(lo * BLOCK, offset), min(hi * BLOCK, stop) - max(lo * BLOCK, offset), zero)
                for lo, hi, zero in out if min(hi * BLOCK, stop) > max(lo * BLOCK, offset)]


__all__ = ["Extent", "PointView", "open_readonly"]
