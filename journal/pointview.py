"""A read-only view of the device at one seq: any byte range, checked, on demand.

`cdp export` serves a rewind point as a block device; its reads arrive one
request at a time, at any offset, in any order, while the drain service may
be appending. This view answers them from the index and the segments with
the same checks a restore makes: every byte taken from a segment is checked
against the CRC-32C the index holds for it, so a damaged block raises
:class:`~journal.errors.CorruptJournal` (an I/O error to the client), never
wrong bytes.

Why a module of its own rather than ``JournalReader.read``: that method
seeks and composes block by block and copies each piece twice, about 17 us
per 4 KiB block, which caps a sequential read of an export near 200 MiB/s.
Here each request is planned in one short read transaction (for each block,
one seek to its newest version at or below the seq; runs of blocks with no
entries are skipped with one seek), then blocks that lie back to back in a
segment are read with one ``preadv`` straight into the caller's buffer and
checked a block at a time. Everything at or below the seq is immutable, so
the plan stays true after its transaction ends, and the big zeroing extents
at or below the seq are gathered once, when the view is made.

Threads: nbdkit may call from several threads. Index work is serialized by
one lock: ``Index.read`` may call ``set_mapsize`` when another process grew
the map, which LMDB allows only while this process has no transaction open.
Segment reads and CRC checks (which release the GIL) run outside the lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crc32c import crc32c

from journal.blockcrc import block_crcs, combined
from journal.blockmap import ZERO_RUN, bad_crc, compose_block, decode_checked, versions_back
from journal.errors import OutOfRange
from journal.format import BLOCK, BLOCK_VAL, FULL_MASK, KIND_DATA, KIND_ZERO, U64X2
from journal.index import RESIDUE, damaged
from journal.points import retained
from journal.reader import JournalReader

if TYPE_CHECKING:
    from journal.journal import Journal
from journal.segments import SegmentReader

#: At most this many blocks with versions are classified per ``extents`` call
#: (NBD lets a server describe less than was asked; the client asks again).
_EXTENT_BLOCKS = 16384
#: A block with more index entries than this is settled with a seek, not walked.
_DEEP = 16


@dataclass(frozen=True, slots=True)
class Extent:
    """A byte range of the view that is all data or all zeros."""

    offset: int
    length: int
    zero: bool


# A request's plan, made under the index lock and carried out outside it:
# ("run", first block, segment, position, crcs, seqs): full data blocks back to back in a segment;
# ("frame", block, segment, position, stored length, crc, seq): a whole block stored as a zstd frame;
# ("compose", block, versions, sector seqs of zeroing extents): a block that needs composing.
_Step = tuple


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
        steps = self._plan(first, last)
        filled = 0  # bytes of ``out`` known written, from its start
        for step in steps:
            at = (step[1] - first) * BLOCK
            _zero(out, filled, at)
            if step[0] == "run":
                _kind, block, seg, pos, crcs, seqs = step
                dst = out[at:at + len(crcs) * BLOCK]
                self._segments.readinto(seg, pos, dst)
                # one CRC over the run (crc32c releases the GIL for it), checked against
                # the blocks' CRCs combined; only a mismatch looks block by block
                if crc32c(dst) != combined(crcs):
                    got = block_crcs(dst)
                    i = next((i for i, (a, b) in enumerate(zip(got, crcs)) if a != b), 0)
                    raise bad_crc(block + i, seqs[i], seg, pos + i * BLOCK)
                filled = at + len(dst)
            elif step[0] == "frame":
                _kind, block, seg, pos, stored, crc, vseq = step
                data = decode_checked(self._segments.pread(seg, pos, stored), BLOCK, crc, block, vseq, seg, pos)
                n = min(BLOCK, len(out) - at)
                out[at:at + n] = data[:n]
                filled = at + n
            else:
                _kind, block, versions, zseqs = step
                data = compose_block(self._segments, block, versions, zseqs)
                n = min(BLOCK, len(out) - at)
                out[at:at + n] = data[:n]
                filled = at + n
        _zero(out, filled, len(out))

    def _plan(self, first: int, last: int) -> list[_Step]:
        """The steps that produce blocks ``first..last``; blocks with no step read as zeros.

        The hot path of every read: per block one index entry unpacked and a
        few comparisons, runs kept in locals (see :func:`_winners` for the walk).
        """
        steps: list[_Step] = []
        sector_seqs = self._zext.sector_seqs if self._zext else None
        unpack_val = BLOCK_VAL.unpack_from  # the value's last 4 bytes are its seal
        seq = self.seq
        r_block = r_seg = r_pos = -1  # the run being gathered: first block, segment, position
        r_next = -1                   # the block that would extend it
        crcs: list[int] = []
        seqs: list[int] = []
        with self._lock, self._index.read() as txn:
            self._check_kept(txn)
            blocks_db = self._index.db("blocks")
            vcur = None
            for block, top_seq, raw in _winners(txn.cursor(db=blocks_db), first, last, seq):
                seg, pos0, mask, kind, crc, stored = unpack_val(raw)
                if mask == FULL_MASK:
                    if kind == KIND_ZERO:
                        continue  # zeroed whole by its newest version: zeros
                    zseqs = sector_seqs(block) if sector_seqs is not None else None
                    if zseqs is None or max(zseqs) < top_seq:
                        if kind != KIND_DATA:
                            steps.append(("frame", block, seg, pos0, stored, crc, top_seq))
                            continue
                        if block == r_next and seg == r_seg and pos0 == r_pos + (block - r_block) * BLOCK:
                            crcs.append(crc)
                            seqs.append(top_seq)
                        else:
                            if crcs:
                                steps.append(("run", r_block, r_seg, r_pos, crcs, seqs))
                            r_block, r_seg, r_pos, crcs, seqs = block, seg, pos0, [crc], [top_seq]
                        r_next = block + 1
                        continue
                else:
                    zseqs = sector_seqs(block) if sector_seqs is not None else None
                if zseqs is not None and min(zseqs) > top_seq:
                    continue  # every sector zeroed by an extent newer than any version: zeros
                if vcur is None:
                    vcur = txn.cursor(db=blocks_db)
                steps.append(("compose", block, versions_back(vcur, block, seq), zseqs))
            if crcs:
                steps.append(("run", r_block, r_seg, r_pos, crcs, seqs))
        steps.sort(key=lambda step: step[1])
        return steps

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
            for block, top_seq, raw in _winners(cur, first, last, self.seq):
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


def _zero(out: memoryview, start: int, end: int) -> None:
    """Zero ``out[start:end]`` from the shared zero run."""
    while start < end:
        n = min(end - start, len(ZERO_RUN))
        out[start:start + n] = ZERO_RUN[:n]
        start += n


def _winners(cur, first: int, last: int, seq: int) -> Iterator[tuple[int, int, bytes]]:  # noqa: ANN001
    """(block, seq, raw index value) of the newest version at or below ``seq`` of each block.

    Blocks ``first..last`` in order; a block with no version at or below
    ``seq`` is left out. Entries are walked in key order with the cursor's
    C-level iterator, which costs least when blocks have few versions; a
    block with more than :data:`_DEEP` entries is settled with one seek
    instead, and the walk goes on at the next block, so a long history of
    one block (before or after ``seq``) is never walked entry by entry.
    Every entry walked or sought has its seal checked (a damaged one is
    :class:`CorruptJournal`), as a restore's walk does. The caller must not
    move ``cur`` while iterating.
    """
    pack = U64X2.pack
    unpack = U64X2.unpack
    ok = cur.set_range(pack(first, 0))
    block = -1
    top_seq = -1
    top_raw = None
    while ok:
        seen = 0
        deep = False
        for key, raw in cur.iternext():
            if crc32c(key + raw) != RESIDUE:
                raise damaged("blocks", key)
            b, vseq = unpack(key)
            if b != block:
                if top_raw is not None:
                    yield block, top_seq, top_raw
                    top_raw = None
                if b > last:
                    return
                block = b
                seen = 0
            seen += 1
            if vseq <= seq:
                top_seq, top_raw = vseq, raw
            if seen > _DEEP:
                deep = True
                break
        if not deep:
            break
        # settle this block with a seek, then go on at the next one
        top_raw = None
        found = cur.prev() if cur.set_range(pack(block, seq + 1)) else cur.last()
        if found:
            key, raw = cur.key(), cur.value()
            b, vseq = unpack(key)
            if b == block:
                if crc32c(key + raw) != RESIDUE:
                    raise damaged("blocks", key)
                yield block, vseq, raw
        ok = cur.set_range(pack(block + 1, 0))
        block = -1
    if top_raw is not None:
        yield block, top_seq, top_raw


__all__ = ["Extent", "PointView", "open_readonly"]
