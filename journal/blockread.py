"""Ranged reads of the device at a seq: one path for exports, the TUI and ``cdp``'s reads.

A read of blocks ``first..last`` at a seq is made in two halves:

- :func:`plan`, inside a read transaction: for each block with versions,
  its newest version at or below the seq (:func:`winners`: the entries are
  walked with the cursor's C-level iterator, and a block with a long
  history is settled with one seek instead), turned into *steps*: runs of
  whole blocks that lie back to back in one segment, single zstd frames,
  and the rare block that must be composed from several versions.
- :func:`fill`, outside it: the runs read with one ``preadv`` straight into
  the caller's buffer and checked with one CRC-32C call each (crc32c
  releases the GIL for it), frames decoded and checked, the rest zeros.

Everything at or below the seq is immutable, so a plan stays true after its
transaction ends. A whole-device restore has its own walk
(:mod:`journal.restore`): it must also count every entry at or below the
seq against the index's own count, which a ranged read cannot do; the
per-block decisions (what a winner's kind and mask mean, when a zeroing
extent forces a compose) are the same, and so is the seek that leaves a
long history (:data:`journal.blockmap.SEEK_AFTER`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from crc32c import crc32c

from journal.blockcrc import block_crcs, combined
from journal.blockmap import SEEK_AFTER, ZERO_RUN, bad_crc, compose_block, decode_checked, versions_back
from journal.format import BLOCK, BLOCK_VAL, FULL_MASK, KIND_DATA, KIND_ZERO, U64X2
from journal.index import RESIDUE, damaged
from journal.segments import SegmentReader

# A read's plan, made inside a read transaction and carried out after it:
# ("run", first block, segment, position, crcs, seqs): full data blocks back to back in a segment;
# ("frame", block, segment, position, stored length, crc, seq): a whole block stored as a zstd frame;
# ("compose", block, versions, sector seqs of zeroing extents): a block that needs composing.
Step = tuple

#: What a block's zeroing extents are asked through: ``ZeroExtents.sector_seqs`` or None (none at all).
SectorSeqs = Callable[[int], "list[int] | None"] | None


def plan(txn: Any, blocks_db: Any, first: int, last: int, seq: int, sector_seqs: SectorSeqs) -> list[Step]:
    """The steps that produce blocks ``first..last`` at ``seq``; blocks with no step read as zeros.

    The hot path of every ranged read: per block one index entry unpacked
    and a few comparisons, runs kept in locals.
    """
    steps: list[Step] = []
    unpack_val = BLOCK_VAL.unpack_from  # the value's last 4 bytes are its seal
    r_block = r_seg = r_pos = -1  # the run being gathered: first block, segment, position
    r_next = -1                   # the block that would extend it
    crcs: list[int] = []
    seqs: list[int] = []
    vcur = None
    for block, top_seq, raw in winners(txn.cursor(db=blocks_db), first, last, seq):
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


def fill(segments: SegmentReader, steps: list[Step], first: int, out: memoryview) -> None:
    """Carry out ``steps`` into ``out``, which starts at block ``first``; every other byte is zeroed.

    Raises :class:`~journal.errors.CorruptJournal` on any byte that fails
    its CRC-32C or frame, never hands back wrong bytes.
    """
    filled = 0  # bytes of ``out`` known written, from its start
    for step in steps:
        at = (step[1] - first) * BLOCK
        zero(out, filled, at)
        if step[0] == "run":
            _kind, block, seg, pos, crcs, seqs = step
            dst = out[at:at + len(crcs) * BLOCK]
            segments.readinto(seg, pos, dst)
            # one CRC over the run, checked against the blocks' CRCs combined;
            # only a mismatch looks block by block
            if crc32c(dst) != combined(crcs):
                got = block_crcs(dst)
                i = next((i for i, (a, b) in enumerate(zip(got, crcs)) if a != b), 0)
                raise bad_crc(block + i, seqs[i], seg, pos + i * BLOCK)
            filled = at + len(dst)
            continue
        if step[0] == "frame":
            _kind, block, seg, pos, stored, crc, vseq = step
            data = decode_checked(segments.pread(seg, pos, stored), BLOCK, crc, block, vseq, seg, pos)
        else:
            _kind, block, versions, zseqs = step
            data = compose_block(segments, block, versions, zseqs)
        n = min(BLOCK, len(out) - at)
        out[at:at + n] = data[:n]
        filled = at + n
    zero(out, filled, len(out))


def zero(out: memoryview, start: int, end: int) -> None:
    """Zero ``out[start:end]`` from the shared zero run."""
    while start < end:
        n = min(end - start, len(ZERO_RUN))
        out[start:start + n] = ZERO_RUN[:n]
        start += n


def winners(cur: Any, first: int, last: int, seq: int) -> Iterator[tuple[int, int, bytes]]:
    """(block, seq, raw index value) of the newest version at or below ``seq`` of each block.

    Blocks ``first..last`` in order; a block with no version at or below
    ``seq`` is left out. Entries are walked in key order with the cursor's
    C-level iterator, which costs least when blocks have few versions; a
    block with more than :data:`SEEK_AFTER` entries is settled with one seek
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
            if seen > SEEK_AFTER:
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
