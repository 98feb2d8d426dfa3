"""Rebuild the whole device as of a seq: the cost of the answer, not of the history.

The block-version index is walked once in key order (block, then seq), so
every block's versions arrive together and the newest at or below the
target seq wins. Entries newer than the point are stepped over without
being unpacked further or checked (they cannot change the answer; a
damaged one that could is caught by its seal or by the count below), and
after :data:`journal.blockmap.SEEK_AFTER` of them in one block the rest are
left with one seek: a block rewritten ten thousand times after the point
costs what one rewritten twenty times does. Lost history is never read,
only its index entries. Every entry at or below the point is still
visited: their count, held against the index's own, is what catches an
entry lost from a damaged page (a restore that skipped them could answer
with an older version and exit 0). Retention bounds that part, and a point
at or after the block-map checkpoint (:mod:`journal.heads`) skips it: its
heads (one a block) and the entries of the records after it, fetched by
key and held to their own counts, give the same winners for fewer visits
(:func:`_walk_heads`, taken where :func:`_cheaper_checkpoint` says so). The
winners become jobs for :class:`journal.imagewriter.ImageWriter`: runs of blocks back to
back on the target, each made of pieces that lie back to back in a
segment, read, checked against their CRCs and written by worker threads
while the walk goes on.

The index file is read ahead once (:meth:`journal.index.Index.prefetch`):
a walk over every block entry of a cold index otherwise faults it in
4 KiB at a time. The walk goes in chunks of short read transactions:
entries at or below the target seq never change, so the chunks see one
consistent state without a long transaction pinning the writer's pages.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import lmdb

from journal.blockmap import SEEK_AFTER, ZeroExtents, compose_block, versions_back
from journal import heads as _heads
from journal import points as _points
from journal.errors import CorruptJournal, JournalError, OutOfRange
from journal.format import BLOCK, BLOCK_VAL, FULL_MASK, HEAD_VAL, KIND_DATA, KIND_ZERO, U64, U64X2
from journal.imagewriter import JOB_BLOCKS, ImageWriter
from journal.index import REINDEX_HINT, RESIDUE, damaged
from journal.output import RestoreTarget
from journal.reader import JournalReader, Progress

_CHUNK_ENTRIES = 65536
#: What fetching one block entry by key costs against stepping over one in the walk (measured: ~3x).
_GET_COST = 3
#: A head's value with its seal, unpacked at once (the heads walk's hot line).
_HEAD_SEALED = struct.Struct(HEAD_VAL.format + "I")


class Cancelled(JournalError):
    """The restore was cancelled; a target file it created was removed."""


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore wrote."""

    seq: int
    ts_ns: int
    bytes_written: int
    target: str
    whole: bool
    #: What the admin should know: an earlier restore to the same target that was interrupted.
    notes: tuple[str, ...] = ()
    #: The seq of the block-map checkpoint the restore read (None: it walked the block index).
    checkpoint: int | None = None


def restore_to(
    journal: JournalReader, target: str | os.PathLike[str], *, seq: int | None, at_ns: int | None,
    progress: Progress | None, allow_partial: bool, overwrite: bool,
    cancel: threading.Event | None,
) -> RestoreResult:
    """Write the whole device as of a seq or time (the newest without either) to ``target``.

    A point inside an overflow window is refused unless ``allow_partial``;
    a target file that exists is refused unless ``overwrite``; ``cancel``
    stops the walk at its next chunk and removes a file this call created.
    """
    index = journal.index
    index.prefetch()
    index.check_tree()  # LMDB would abort on a damaged page, or miss what it holds, not report it
    with index.read() as txn:
        found = journal.locate(txn, seq, at_ns)
        seq, ts = found.seq, found.ts_ns
        zext = journal.zero_extents(txn, seq)
        expected, overflows = journal.expected_counts(txn, seq)
        checkpoint = _cheaper_checkpoint(journal, txn, seq, expected)
    if sum(1 for w in journal.overflow_windows() if w.seq <= seq) != overflows:
        raise CorruptJournal(f"the index's overflow windows do not match its OVERFLOW records at seq {seq}; "
                             f"{REINDEX_HINT}")
    whole = journal.is_whole(seq, ts)
    if not whole and not allow_partial:
        journal.check_whole(seq, ts)
    device = journal.info.device_bytes
    nblocks = journal.info.index_blocks
    target_ = RestoreTarget(Path(target), device, overwrite, journal.path)
    try:
        writer = ImageWriter(target_, journal.path / "segments")
        try:
            if checkpoint is not None:
                try:
                    _walk_heads(journal, _Jobs(writer, nblocks), seq, zext, nblocks, checkpoint, progress, cancel)
                except _Moved:
                    # the checkpoint moved on (or a compaction dropped it) under the restore: what
                    # was queued is right for the point, and the walk writes every block again
                    checkpoint = None
            if checkpoint is None:
                seen = _walk(journal, _Jobs(writer, nblocks), seq, zext, nblocks, progress, cancel)
                if seen + zext.count != expected:
                    _folded_meanwhile(journal, seq)
                    raise CorruptJournal(
                        f"the index holds {seen + zext.count} block entries at or below seq {seq} where its "
                        f"records count {expected}; {REINDEX_HINT}")
        except BaseException:
            writer.abort()
            raise
        writer.close()
        if not target_.is_device:
            os.ftruncate(target_.fd, device)
        target_.finish()
    except BaseException:
        target_.abandon()
        raise
    if progress is not None:
        progress(device, device)
    notes = ([found.note] if found.note else []) + list(target_.notes)
    return RestoreResult(seq, ts, device, os.fspath(target), whole, tuple(notes),
                         None if checkpoint is None else checkpoint.seq)


def _cheaper_checkpoint(journal: JournalReader, txn: lmdb.Transaction, seq: int,
                        expected: int) -> _heads.Checkpoint | None:
    """The block-map checkpoint, where reading it costs less than walking the ``expected`` entries."""
    cp = _heads.state(journal.index, txn)
    if cp is None or not cp.complete or cp.seq > seq:
        return None
    since = expected - journal.expected_counts(txn, cp.seq)[0]
    return cp if cp.count + _GET_COST * since <= expected else None


class _Moved(Exception):
    """The checkpoint a restore reads changed between two of its transactions."""


def _folded_meanwhile(journal: JournalReader, seq: int) -> None:
    """A count that does not add up because a compaction folded ``seq`` away during the walk says so."""
    with journal.index.read() as txn:
        sel = _points.retained(journal.index, txn)
    if sel is not None and sel.maps(seq) != seq:
        raise OutOfRange(f"seq {seq} was folded away by retention while it was being restored; "
                         "restore again (it now answers as the newest kept point before it)")


class _Jobs:
    """Gathers the walk's winners, in block order, into jobs for the :class:`ImageWriter`.

    A job is a run of blocks back to back on the target, at most
    :data:`JOB_BLOCKS` long; inside it, blocks that also lie back to back in
    one segment form one piece (one read, one CRC call per block). For a block device, the blocks no job covers (never
    written: zeros) become zero jobs, so every byte of the device is written.
    """

    __slots__ = ("writer", "nblocks", "items", "start", "next", "piece", "filled")

    def __init__(self, writer: ImageWriter, nblocks: int) -> None:
        self.writer = writer
        self.nblocks = nblocks
        self.items: list = []
        self.start = -1   # first block of the job being gathered
        self.next = -1    # the block that would extend it
        self.piece: list | None = None
        self.filled = 0   # block devices: every block below this has a job

    def add(self, block: int, seg: int, pos0: int, crc: int, seq: int) -> None:
        """Block ``block`` comes from ``seg`` at ``pos0``, checked against ``crc``."""
        piece = self.piece
        if (piece is not None and block == self.next and seg == piece[0]
                and pos0 == piece[1] + len(piece[3]) * BLOCK and block - self.start < JOB_BLOCKS):
            piece[3].append(crc)
            piece[4].append(seq)
            self.next = block + 1
            return
        self._extend_to(block)
        self.piece = [seg, pos0, block, [crc], [seq]]
        self.items.append(self.piece)
        self.next = block + 1

    def add_frame(self, block: int, seg: int, pos: int, stored: int, crc: int, seq: int) -> None:
        """Block ``block`` is the zstd frame of ``stored`` bytes at ``pos`` in ``seg`` (a worker decodes it)."""
        self._extend_to(block)
        self.piece = None
        self.items.append((seg, pos, stored, crc, seq, block))
        self.next = block + 1

    def add_bytes(self, block: int, data: bytes) -> None:
        """Block ``block`` holds ``data`` (composed from several versions, already checked)."""
        self._extend_to(block)
        self.piece = None
        self.items.append(data)
        self.next = block + 1

    def _extend_to(self, block: int) -> None:
        """Start a new job at ``block`` unless the current one goes on there."""
        if block != self.next or block - self.start >= JOB_BLOCKS:
            self._close_job()
            self.start = block

    def _close_job(self) -> None:
        if not self.items:
            return
        self.piece = None
        if self.writer.is_device and self.start > self.filled:
            self.writer.put((self.filled, None, self.start - self.filled), (self.start - self.filled) * BLOCK)
        self.writer.put((self.start, self.items, 0), (self.next - self.start) * BLOCK)
        self.filled = self.next
        self.items = []

    def finish(self) -> None:
        """Queue what is gathered, and a block device's zeros up to its end."""
        self._close_job()
        if self.writer.is_device and self.nblocks > self.filled:
            self.writer.put((self.filled, None, self.nblocks - self.filled), 0)
            self.filled = self.nblocks


class _Settle:
    """Turns a block's newest version at or below the point into a job (or a composed block).

    Shared by both walks: most blocks take the fast path (a full version, no
    newer zeroing extent); the rare block that needs composing has its
    versions fetched again from the block index and composed.
    """

    __slots__ = ("journal", "jobs", "seq", "sector_seqs", "blocks_db", "chain_check")

    def __init__(self, journal: JournalReader, jobs: _Jobs, seq: int, zext: ZeroExtents) -> None:
        self.journal = journal
        self.jobs = jobs
        self.seq = seq
        self.sector_seqs = zext.sector_seqs if zext else None
        self.blocks_db = journal.index.db("blocks")
        #: Called as (cursor, block) before a block is composed (the heads walk checks its chain).
        self.chain_check: Callable[[Any, int], None] | None = None

    def __call__(self, txn: lmdb.Transaction, block: int, top_seq: int, top_raw: bytes) -> None:
        seg, pos0, mask, kind, bcrc, stored = BLOCK_VAL.unpack_from(top_raw)
        sector_seqs = self.sector_seqs
        if mask == FULL_MASK:
            if kind == KIND_ZERO:
                return  # zeros whatever else: left as a gap (a hole, or a block device's zero job)
            zseqs = sector_seqs(block) if sector_seqs is not None else None
            if zseqs is None or max(zseqs) < top_seq:
                if kind == KIND_DATA:
                    self.jobs.add(block, seg, pos0, bcrc, top_seq)
                else:
                    self.jobs.add_frame(block, seg, pos0, stored, bcrc, top_seq)
                return
        # in the walk's own transaction: a second one here could meet a map
        # the writer grew while the first is still open
        cur = txn.cursor(db=self.blocks_db)
        if self.chain_check is not None:
            self.chain_check(cur, block)
        versions = versions_back(cur, block, self.seq)
        self.jobs.add_bytes(block, compose_block(self.journal.segments, block, versions,
                                                 sector_seqs(block) if sector_seqs is not None else None))


def _walk(journal: JournalReader, jobs: _Jobs, seq: int, zext: ZeroExtents, nblocks: int,
          progress: Progress | None, cancel: threading.Event | None) -> int:
    """Visit every block that has versions, in block order, and queue its winner.

    Every entry at or below ``seq`` has its seal checked, comes in strictly
    increasing key order and lies on the device; the return value is how
    many such entries were seen, for the caller to hold against the index's
    own count (an entry lost with a damaged page shows there). Entries
    newer than ``seq`` are stepped over unchecked: they cannot change the
    answer, and one whose key damage makes it look older fails its seal.

    This is the restore's hot path: each index entry is touched once through
    C-level calls (``iternext``, precompiled structs); per block only the
    newest version at or below ``seq`` is unpacked. The rare block that needs
    composing (a partial newest version, or a newer zeroing extent) has its
    versions fetched again and composed.
    """
    index = journal.index
    unpack_key = U64X2.unpack
    crc = crc32c.crc32c
    seen = 0
    prev_key = b""
    settle = _Settle(journal, jobs, seq, zext)

    top_seq = -1
    top_raw = b""
    group_block = -1
    newer_block = newer = -1  # the block whose versions newer than ``seq`` are being stepped over, and how many
    resume = U64X2.pack(0, 0)
    done = False
    while not done:
        if cancel is not None and cancel.is_set():
            raise Cancelled("restore cancelled")
        with index.read() as txn:
            cur = txn.cursor(db=index.db("blocks"))
            n = 0
            jump = True
            while jump and not done and n < _CHUNK_ENTRIES:
                jump = False
                # an unpositioned cursor would iterate from the first entry again
                entries = cur.iternext() if cur.set_range(resume) else iter(())
                for key, raw in entries:
                    n += 1
                    block, vseq = unpack_key(key)
                    if vseq > seq:
                        # the rest of this block's versions are newer too: after a few,
                        # one seek leaves them (a block rewritten often after the point)
                        if block == newer_block:
                            newer += 1
                            if newer > SEEK_AFTER:
                                resume = U64X2.pack(block + 1, 0)
                                jump = True
                                break
                        else:
                            newer_block, newer = block, 1
                        if n >= _CHUNK_ENTRIES:
                            resume = U64X2.pack(block, vseq + 1)
                            break
                        continue
                    if crc(key + raw) != RESIDUE:
                        raise damaged("blocks", key)
                    if key <= prev_key:
                        raise CorruptJournal(f"the index's block entries are out of order at key {key.hex()}; "
                                             f"{REINDEX_HINT}")
                    prev_key = key
                    seen += 1
                    if block != group_block:
                        if top_seq >= 0:
                            settle(txn, group_block, top_seq, top_raw)
                        if block >= nblocks:
                            raise CorruptJournal(f"the index has an entry for block {block}, past the device's "
                                                 f"{nblocks}; {REINDEX_HINT}")
                        group_block = block
                    top_seq = vseq
                    top_raw = raw
                    if n >= _CHUNK_ENTRIES:
                        resume = U64X2.pack(block, vseq + 1)
                        break
                else:
                    done = True
        if progress is not None:
            progress(min(max(group_block, 0), nblocks) * BLOCK, nblocks * BLOCK)
    if top_seq >= 0:
        with index.read() as txn:
            settle(txn, group_block, top_seq, top_raw)
    jobs.finish()
    return seen


def _walk_heads(journal: JournalReader, jobs: _Jobs, seq: int, zext: ZeroExtents, nblocks: int,
                cp: _heads.Checkpoint, progress: Progress | None, cancel: threading.Event | None) -> None:
    """The restore from the checkpoint ``cp`` (at or below ``seq``): its heads, and the records after it.

    The block entries of the records in (cp.seq, seq] are fetched by exact
    key first (:func:`journal.heads.records_after`, which holds each record
    to its running total); then the heads are read in block order, in
    chunks of short transactions like the walk's, each chunk making sure
    the checkpoint is still the one it began with (else :class:`_Moved`),
    and a block with a newer entry takes that instead. The heads read are
    held to the checkpoint's count and sum of seals, and a block composed
    from older versions has its chain at the checkpoint held to its head's.
    """
    index = journal.index
    newer: dict[int, tuple[int, bytes]] = {}
    zext_after = 0
    with index.read() as txn:
        if _heads.state(index, txn) != cp:
            raise _Moved
        for rseq, entries, has_zext in _heads.records_after(journal, txn, cp.seq, seq):
            for block, raw in entries:
                newer[block] = (rseq, raw)
            zext_after += has_zext
    if zext.count != cp.zext + zext_after:
        raise CorruptJournal(f"the index holds {zext.count} zeroing extents at or below seq {seq} where its "
                             f"records count {cp.zext + zext_after}; {REINDEX_HINT}")
    order = sorted(newer)
    settle = _Settle(journal, jobs, seq, zext)
    head: list[bytes | None] = [None]  # the head of the block being settled
    ni = 0

    def settle_newer_below(txn: lmdb.Transaction, limit: int, vouch: bytes | None = None) -> int:
        """Settle the blocks below ``limit`` not settled yet that have a newer entry, their chains held
        to the head ``vouch`` (None: they have none); the next block with a newer entry."""
        nonlocal ni
        head[0] = vouch
        while ni < len(order) and order[ni] < limit:
            settle(txn, order[ni], *newer[order[ni]])
            ni += 1
        return order[ni] if ni < len(order) else nblocks

    def chain_check(cur: Any, block: int) -> None:
        want = _heads.chain(head[0]) if head[0] is not None else (0, 0)
        if _heads.chain_of(cur, block, cp.seq) != want:
            raise CorruptJournal(f"the index's versions of block {block} at or below seq {cp.seq} are not the "
                                 f"ones its checkpoint counted; {REINDEX_HINT}")

    settle.chain_check = chain_check
    crc = crc32c.crc32c
    add = jobs.add
    sector_seqs = zext.sector_seqs if zext else None
    unpack_block = U64.unpack
    unpack_head = _HEAD_SEALED.unpack_from
    count = total = 0
    prev_block = -1
    upcoming = order[0] if order else nblocks  # the next block with a newer entry
    resume = 0
    done = False
    while not done:
        if cancel is not None and cancel.is_set():
            raise Cancelled("restore cancelled")
        with index.read() as txn:
            if _heads.state(index, txn) != cp:
                raise _Moved
            cur = txn.cursor(db=index.db(_heads.HEADS_META))
            n = 0
            for key, raw in (cur.iternext() if cur.set_range(U64.pack(resume)) else iter(())):
                if crc(key + raw) != RESIDUE:
                    raise damaged(_heads.HEADS_META, key)
                block = unpack_block(key)[0]
                vseq, seg, pos0, mask, kind, bcrc, _stored, _depth, _chain, seal = unpack_head(raw)
                if block <= prev_block or block >= nblocks or vseq > cp.seq:
                    raise CorruptJournal(f"the index's checkpoint has a head for block {block} at seq {vseq} that "
                                         f"cannot be one; {REINDEX_HINT}")
                prev_block = block
                count += 1
                total += seal
                n += 1
                if n >= _CHUNK_ENTRIES:
                    resume = block + 1
                if upcoming <= block:
                    upcoming = settle_newer_below(txn, block)
                    if upcoming == block:  # the newer entry wins; the head still vouches for the chain
                        upcoming = settle_newer_below(txn, block + 1, raw)
                        if n >= _CHUNK_ENTRIES:
                            break
                        continue
                if (mask == FULL_MASK and kind == KIND_DATA
                        and (sector_seqs is None or max(sector_seqs(block) or (-1,)) < vseq)):
                    add(block, seg, pos0, bcrc, vseq)  # the common case, inline
                else:
                    head[0] = raw
                    settle(txn, block, vseq, _heads.block_val(raw))
                if n >= _CHUNK_ENTRIES:
                    break
            else:
                done = True
                settle_newer_below(txn, nblocks)
        if progress is not None:
            progress(min(max(prev_block, 0), nblocks) * BLOCK, nblocks * BLOCK)
    if count != cp.count or total % (1 << 64) != cp.total:
        raise CorruptJournal(f"the index's checkpoint at seq {cp.seq} reads as {count} heads where it counted "
                             f"{cp.count}, or their seals do not add up; {REINDEX_HINT}")
    jobs.finish()
