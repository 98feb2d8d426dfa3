"""Which bytes a 4 KiB block holds at a given seq, from its versions.

A block's content at seq S is decided sector by sector: the newest version
at or below S that covers the sector wins, unless a big zeroing extent newer
than that version covers it (then it reads as zeros); a sector no version
covers reads as zeros (sparse baseline). Most blocks take the fast path: the
newest version covers all eight sectors and no newer extent touches it.

A data version is stored raw or as a zstd frame (:mod:`journal.codec`);
either way the bytes it stands for are checked against the CRC-32C the
index holds for the *device* bytes, after decoding, and a frame that does
not decode is reported as damage just like a CRC mismatch.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import crc32c

from journal.codec import DecodeError, decode
from journal.errors import CorruptJournal
from journal.format import (
    BLOCK,
    BLOCK_VAL,
    FULL_MASK,
    KIND_ZERO,
    KIND_ZSTD,
    SECTOR,
    SECTORS_PER_BLOCK,
    U64X2,
    segment_name,
)
from journal.index import check, damaged
from journal.segments import SegmentReader

ZERO_BLOCK = bytes(BLOCK)
#: Zeros to compare against and to write from (a restore's largest extent).
ZERO_RUN = bytes(8 << 20)
#: After stepping over this many index entries of one block that a read or a
#: restore does not need, the rest of them is left with one cursor seek.
#: A step over an entry costs about 0.2 us and a seek a few us, so a block with
#: a short history is walked and a long one is never walked entry by entry.
SEEK_AFTER = 16


def is_zero(data: bytes | memoryview) -> bool:
    """Whether ``data`` (at most :data:`ZERO_RUN` long) is all zeros.

    Data that is not is nearly always rejected by its first or last byte
    without a scan; ``startswith`` compares with memcmp, where ``==`` on a
    memoryview would go item by item.
    """
    return not data or (not data[0] and not data[-1] and ZERO_RUN.startswith(data))


def bad_crc(block: int, seq: int, seg: int, offset: int) -> CorruptJournal:
    """The error for a block whose bytes fail the CRC-32C the index holds for them."""
    return CorruptJournal(f"block {block} of record seq {seq} (segment {segment_name(seg)}, "
                          f"offset {offset}) fails its CRC-32C; run 'cdp verify'")


def bad_frame(block: int, seq: int, seg: int, offset: int, error: DecodeError) -> CorruptJournal:
    """The error for a block whose stored frame does not decode to its bytes."""
    return CorruptJournal(f"block {block} of record seq {seq} (segment {segment_name(seg)}, "
                          f"offset {offset}): {error}; run 'cdp verify'")


def decode_checked(stored: bytes | memoryview, size: int, crc: int, block: int, seq: int, seg: int,
                   pos: int) -> bytes:
    """A zstd piece's ``size`` device bytes, decoded and held against their CRC-32C."""
    try:
        data = decode(stored, size)
    except DecodeError as exc:
        raise bad_frame(block, seq, seg, pos, exc) from None
    if crc32c.crc32c(data) != crc:
        raise bad_crc(block, seq, seg, pos)
    return data


class Version(NamedTuple):
    """One entry of the block-version index."""

    seq: int
    seg: int
    pos0: int
    mask: int
    kind: int
    crc: int
    stored: int


def covered_span(mask: int) -> tuple[int, int]:
    """First sector and sector count of a version's (contiguous) mask."""
    first = (mask & -mask).bit_length() - 1
    return first, mask.bit_length() - first


def read_version(reader: SegmentReader, block: int, v: Version) -> bytes:
    """The bytes a data version covers (decoded if compressed), checked against its CRC-32C."""
    first, count = covered_span(v.mask)
    if v.kind == KIND_ZSTD:
        return decode_checked(reader.pread(v.seg, v.pos0, v.stored), count * SECTOR, v.crc, block, v.seq,
                              v.seg, v.pos0)
    data = reader.pread(v.seg, v.pos0 + first * SECTOR, count * SECTOR)
    if crc32c.crc32c(data) != v.crc:
        raise bad_crc(block, v.seq, v.seg, v.pos0 + first * SECTOR)
    return data


class ZeroExtents:
    """The big zeroing extents at or below a seq, painted newest-on-top.

    Kept as sorted disjoint sector intervals, each with the seq that last
    zeroed it, so a block asks in O(log n) which of its sectors were zeroed
    and when.
    """

    def __init__(self, extents: Iterable[tuple[int, int, int]], count: int = 0) -> None:
        #: How many extents at or below the seq the index held (all of them, not only these).
        self.count = count
        starts: list[int] = []
        spans: list[tuple[int, int, int]] = []
        for seq, offset, length in sorted(extents):
            spans = _paint(spans, offset // SECTOR, (offset + length) // SECTOR, seq)
        for start, _end, _seq in spans:
            starts.append(start)
        self._starts = starts
        self._spans = spans

    def __bool__(self) -> bool:
        return bool(self._spans)

    def sector_seqs(self, block: int) -> list[int] | None:
        """Per-sector seq of the newest extent covering it (-1: none), or None."""
        if not self._spans:
            return None
        lo = block * SECTORS_PER_BLOCK
        hi = lo + SECTORS_PER_BLOCK
        i = max(bisect_right(self._starts, lo) - 1, 0)
        out: list[int] | None = None
        while i < len(self._spans) and self._spans[i][0] < hi:
            start, end, seq = self._spans[i]
            if end > lo:
                if out is None:
                    out = [-1] * SECTORS_PER_BLOCK
                for s in range(max(start, lo), min(end, hi)):
                    out[s - lo] = seq
            i += 1
        return out


def _paint(spans: list[tuple[int, int, int]], start: int, end: int, seq: int) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    placed = False
    for s, e, q in spans:
        if e <= start or s >= end:
            if s >= end and not placed:
                out.append((start, end, seq))
                placed = True
            out.append((s, e, q))
            continue
        if s < start:
            out.append((s, start, q))
        if not placed:
            out.append((start, end, seq))
            placed = True
        if e > end:
            out.append((end, e, q))
    if not placed:
        out.append((start, end, seq))
    return out


def compose_block(
    reader: SegmentReader, block: int, newest_first: Sequence[Version],
    zero_seqs: list[int] | None,
) -> bytes:
    """The block's 4096 bytes given its versions at or below S, newest first."""
    if newest_first:
        top = newest_first[0]
        if top.mask == FULL_MASK and (zero_seqs is None or max(zero_seqs) < top.seq):
            return read_version(reader, block, top) if top.kind != KIND_ZERO else ZERO_BLOCK
    out = bytearray(BLOCK)
    need = FULL_MASK
    for v in newest_first:
        if zero_seqs is not None:
            for i, zseq in enumerate(zero_seqs):
                if zseq > v.seq:
                    need &= ~(1 << i)
        take = v.mask & need
        if not take:
            if not need:
                break
            continue
        if v.kind != KIND_ZERO:
            first, _count = covered_span(v.mask)
            data = read_version(reader, block, v)
            for i in range(SECTORS_PER_BLOCK):
                if take >> i & 1:
                    src = (i - first) * SECTOR
                    out[i * SECTOR:(i + 1) * SECTOR] = data[src:src + SECTOR]
        need &= ~take
        if not need:
            break
    return bytes(out)


def versions_back(cur: Any, block: int, seq: int) -> list[Version]:
    """Versions of ``block`` at or below ``seq``, newest first, until one fills the block."""
    out: list[Version] = []
    if cur.set_range(U64X2.pack(block, seq + 1)):
        ok = cur.prev()
    else:
        ok = cur.last()
    mask = 0
    while ok:
        key = cur.key()
        raw = cur.value()
        if not check(key, raw):
            raise damaged("blocks", key)
        b, vseq = U64X2.unpack(key)
        if b != block:
            break
        v = Version(vseq, *BLOCK_VAL.unpack_from(raw))
        out.append(v)
        mask |= v.mask
        if mask == FULL_MASK:
            break
        ok = cur.prev()
    return out
