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
with an older version and exit 0). Retention bounds that part. The winners become
jobs for :class:`journal.imagewriter.ImageWriter`: runs of blocks back to
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
import threading
from dataclasses import dataclass
from pathlib import Path

import crc32c
import lmdb

from journal.blockmap import SEEK_AFTER, ZeroExtents, compose_block, versions_back
from journal import points as _points
from journal.errors import CorruptJournal, JournalError, OutOfRange
from journal.format import BLOCK, BLOCK_VAL, FULL_MASK, KIND_DATA, KIND_ZERO, U64X2
from journal.imagewriter import JOB_BLOCKS, ImageWriter
from journal.index import REINDEX_HINT, RESIDUE, damaged
from journal.output import RestoreTarget
from journal.reader import JournalReader, Progress

_CHUNK_ENTRIES = 65536


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
    if sum(1 for w in journal.overflow_windows() if w.seq <= seq) != overflows:
        raise CorruptJournal(f"the index's overflow windows do not match its OVERFLOW records at seq {seq}; "
                             f"{REINDEX_HINT}")
    whole = journal.is_whole(seq, ts)
    if not whole and not allow_partial:
        journal.check_whole(seq, ts)
    device = journal.info.device_bytes
    nblocks = (device + BLOCK - 1) // BLOCK
    target_ = RestoreTarget(Path(target), device, overwrite, journal.path)
    try:
        writer = ImageWriter(target_, journal.path / "segments")
        try:
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
    return RestoreResult(seq, ts, device, os.fspath(target), whole, tuple(notes))


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
    unpack_val = BLOCK_VAL.unpack_from
    crc = crc32c.crc32c
    add = jobs.add
    seen = 0
    prev_key = b""
    sector_seqs = zext.sector_seqs if zext else None

    def settle(txn: lmdb.Transaction, block: int, top_seq: int, top_raw: bytes) -> None:
        seg, pos0, mask, kind, bcrc, stored = unpack_val(top_raw)
        if mask == FULL_MASK:
            if kind == KIND_ZERO:
                return  # zeros whatever else: left as a gap (a hole, or a block device's zero job)
            zseqs = sector_seqs(block) if sector_seqs is not None else None
            if zseqs is None or max(zseqs) < top_seq:
                if kind == KIND_DATA:
                    add(block, seg, pos0, bcrc, top_seq)
                else:
                    jobs.add_frame(block, seg, pos0, stored, bcrc, top_seq)
                return
        # in the walk's own transaction: a second one here could meet a map
        # the writer grew while the first is still open
        versions = versions_back(txn.cursor(db=index.db("blocks")), block, seq)
        jobs.add_bytes(block, compose_block(journal.segments, block, versions,
                                            sector_seqs(block) if sector_seqs is not None else None))

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
