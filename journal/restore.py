"""Rebuild the whole device as of a seq, reading each block's winner once.

The block-version index is walked in key order (block, then seq), so every
block's versions arrive together: the newest at or below the target seq
wins, and runs of winners that lie back to back in one segment are checked
straight from a map of the segment. History that lost is never read, only
its index entries. Winners that land back to back on the target go out as
one ``pwritev`` of up to 8 MiB on a worker thread, with writeback started
behind it so the closing fsync has little left to do.
The walk goes in chunks of short read transactions: entries at or below the
target seq never change, so the chunks see one consistent state without a
long transaction pinning the writer's pages.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import crc32c
import lmdb

from journal.blockcrc import block_crcs
from journal.blockmap import ZERO_RUN, ZeroExtents, bad_crc, compose_block, is_zero, versions_back
from journal.errors import CorruptJournal, JournalError
from journal.format import BLOCK, BLOCK_VAL, FULL_MASK, KIND_DATA, U64X2
from journal.index import REINDEX_HINT, RESIDUE, damaged
from journal.output import RestoreTarget
from journal.reader import JournalReader, Progress
from journal.segments import IOV_MAX, SegmentViews, pwritev_all

_CHUNK_ENTRIES = 65536
_MAX_RUN = len(ZERO_RUN)  # 8 MiB: a run is checked for zeros against ZERO_RUN
_MAX_RUN_BLOCKS = _MAX_RUN // BLOCK
_WRITE_BEHIND = 64 << 20


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


class _Output:
    """Writes the image to the target: extents for a file (holes stay holes), every byte for a device."""

    def __init__(self, target: RestoreTarget) -> None:
        self.target = target
        self.fd = target.fd
        self.size = target.size
        self.is_device = target.is_device
        self.filled = 0  # block devices: everything below this is written
        self.flushed = 0  # writeback was started for everything below this

    def write(self, block: int, buffers: list[bytes | memoryview]) -> None:
        """Put ``buffers``, back to back, at ``block`` with one ``pwritev``.

        Zeros never reach here (the walk leaves them out as holes); a block
        device gets the gaps zero-filled, in order, so everything is written.
        """
        pos = block * BLOCK
        total = sum(map(len, buffers))
        if pos + total > self.size:  # the device's last block is partial
            buffers, total = _trim(buffers, self.size - pos), self.size - pos
        if self.is_device:
            self._zero_to(pos)
            self.filled = pos + total
        self._write_behind(pos + pwritev_all(self.fd, buffers, pos))

    def _write_behind(self, end: int) -> None:
        """Start writeback of what lies behind ``end``, so the closing fsync finds little left.

        POSIX_FADV_DONTNEED starts asynchronous writeback of dirty pages in
        the range (and drops the clean ones); the disk then writes while the
        walk goes on instead of all at once at the end.
        """
        if end - self.flushed >= _WRITE_BEHIND:
            os.posix_fadvise(self.fd, self.flushed, end - self.flushed, os.POSIX_FADV_DONTNEED)
            self.flushed = end

    def _zero_to(self, pos: int) -> None:
        zeros = memoryview(ZERO_RUN)
        while self.filled < pos:
            n = min(len(zeros), pos - self.filled)
            os.pwrite(self.fd, zeros[:n], self.filled)
            self.filled += n

    def finish(self) -> None:
        if self.is_device:
            self._zero_to(self.size)
        else:
            os.ftruncate(self.fd, self.size)
        self.target.finish()

    def abandon(self) -> None:
        self.target.abandon()


def _trim(buffers: list[bytes | memoryview], length: int) -> list[bytes | memoryview]:
    """The first ``length`` bytes of ``buffers``."""
    out = []
    for buf in buffers:
        if length <= 0:
            break
        out.append(buf[:length])
        length -= len(buf)
    return out


class _Writer:
    """Checks the winners and writes them, in extents, on a worker thread.

    The index walk and the CRC checks are Python work that holds the GIL; the
    writes are system calls that release it. The walking thread checks each
    run and gathers what lands back to back on the target into one extent
    (up to 8 MiB, IOV_MAX pieces); the worker writes an extent with one
    ``pwritev``. Few, large hand-overs keep the two threads from trading the
    GIL thousands of times a second, which cost as much CPU as the walk
    itself. One worker keeps the writes in block order, which the block
    device's zero fill relies on. An error stops the walk at the next put.
    """

    def __init__(self, journal: JournalReader, out: _Output) -> None:
        self._views = SegmentViews(journal.path / "segments")
        self._out = out
        self._queue: queue.Queue[tuple[int, list[bytes | memoryview]] | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._start = -1       # first block of the extent being gathered
        self._next = -1        # the block that would extend it
        self._bufs: list[bytes | memoryview] = []
        self._bytes = 0
        self._thread = threading.Thread(target=self._loop, name="cdp-restore-writer", daemon=True)
        self._thread.start()

    def run(self, seg: int, pos: int, block: int, crcs: list[int], seqs: list[int]) -> None:
        """Check blocks ``block..`` that lie back to back at ``pos`` in ``seg`` and add them."""
        data = self._views.view(seg, pos, len(crcs) * BLOCK)
        got = block_crcs(data)
        if got != crcs:
            i = next(i for i, (a, b) in enumerate(zip(got, crcs)) if a != b)
            raise bad_crc(block + i, seqs[i], seg, pos + i * BLOCK)
        self.data(block, data)

    def data(self, block: int, data: bytes | memoryview) -> None:
        """Add checked bytes for ``block..``; zeros are left out (a hole, or zero-filled)."""
        if is_zero(data):
            self._flush()
            return
        if block != self._next or self._bytes >= _MAX_RUN or len(self._bufs) >= IOV_MAX:
            self._flush()
            self._start = block
        self._bufs.append(data)
        self._bytes += len(data)
        self._next = block + len(data) // BLOCK

    def _flush(self) -> None:
        if self._bufs:
            if self._error is not None:
                raise self._error
            self._queue.put((self._start, self._bufs))
            self._bufs, self._bytes, self._next = [], 0, -1

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(*item)
                except BaseException as exc:  # handed to the walking thread
                    self._error = exc

    def close(self) -> None:
        """Write what is gathered, wait for every queued write; raise what the worker ran into."""
        try:
            self._flush()
        finally:
            self._queue.put(None)
            self._thread.join()
            self._bufs = []
            self._views.close()
        if self._error is not None:
            raise self._error


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
    with index.read() as txn:
        seq, ts = journal.target(txn, seq, at_ns)
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
    out = _Output(RestoreTarget(Path(target), device, overwrite, journal.path))
    try:
        writer = _Writer(journal, out)
        try:
            seen = _walk(journal, writer, seq, zext, nblocks, progress, cancel)
            if seen + zext.count != expected:
                raise CorruptJournal(
                    f"the index holds {seen + zext.count} block entries at or below seq {seq} where its "
                    f"records count {expected}; {REINDEX_HINT}")
        finally:
            writer.close()
        out.finish()
    except BaseException:
        out.abandon()
        raise
    if progress is not None:
        progress(device, device)
    return RestoreResult(seq, ts, device, os.fspath(target), whole, tuple(out.target.notes))


def _walk(journal: JournalReader, writer: _Writer, seq: int, zext: ZeroExtents, nblocks: int,
          progress: Progress | None, cancel: threading.Event | None) -> int:
    """Visit every block that has versions, in block order, and queue its winner.

    Every entry's seal is checked, keys must come in strictly increasing
    order and lie on the device; the return value is how many entries at or
    below ``seq`` were seen, for the caller to hold against the index's own
    count (an entry lost with a damaged page shows there).

    This is the restore's hot path: each index entry is touched once through
    C-level calls (``iternext``, precompiled structs); per block only the
    newest version at or below ``seq`` is unpacked, and winners that lie back
    to back in a segment are gathered into one run (one pread, one write).
    The rare block that needs composing (a partial newest version, or a newer
    zeroing extent) has its versions fetched again and composed.
    """
    index = journal.index
    unpack_key = U64X2.unpack
    unpack_val = BLOCK_VAL.unpack_from
    crc = crc32c.crc32c
    seen = 0
    prev_key = b""
    sector_seqs = zext.sector_seqs if zext else None
    run: list = [-1, -1, -1, [], []]  # segment, position, first block, crcs, seqs

    def flush() -> None:
        if run[3]:
            writer.run(run[0], run[1], run[2], run[3], run[4])
            run[3], run[4] = [], []

    def settle(txn: lmdb.Transaction, block: int, top_seq: int, top_raw: bytes) -> None:
        seg, pos0, mask, kind, crc = unpack_val(top_raw)
        if mask == FULL_MASK and kind == KIND_DATA:
            zseqs = sector_seqs(block) if sector_seqs is not None else None
            if zseqs is None or max(zseqs) < top_seq:
                crcs = run[3]
                n = len(crcs)
                if not (n and seg == run[0] and pos0 == run[1] + n * BLOCK
                        and block == run[2] + n and n < _MAX_RUN_BLOCKS):
                    flush()
                    run[0], run[1], run[2] = seg, pos0, block
                    crcs = run[3]
                crcs.append(crc)
                run[4].append(top_seq)
                return
        flush()
        # in the walk's own transaction: a second one here could meet a map
        # the writer grew while the first is still open
        versions = versions_back(txn.cursor(db=index.db("blocks")), block, seq)
        writer.data(block, compose_block(journal.segments, block, versions,
                                         sector_seqs(block) if sector_seqs is not None else None))

    top_seq = -1
    top_raw = b""
    group_block = -1
    resume = U64X2.pack(0, 0)
    done = False
    while not done:
        if cancel is not None and cancel.is_set():
            raise Cancelled("restore cancelled")
        with index.read() as txn:
            cur = txn.cursor(db=index.db("blocks"))
            n = 0
            # an unpositioned cursor would iterate from the first entry again
            entries = cur.iternext() if cur.set_range(resume) else iter(())
            for key, raw in entries:
                if crc(key + raw) != RESIDUE:
                    raise damaged("blocks", key)
                if key <= prev_key:
                    raise CorruptJournal(f"the index's block entries are out of order at key {key.hex()}; "
                                         f"{REINDEX_HINT}")
                prev_key = key
                block, vseq = unpack_key(key)
                if block != group_block:
                    if top_seq >= 0:
                        settle(txn, group_block, top_seq, top_raw)
                        top_seq = -1
                    if block >= nblocks:
                        raise CorruptJournal(f"the index has an entry for block {block}, past the device's "
                                             f"{nblocks}; {REINDEX_HINT}")
                    group_block = block
                if vseq <= seq:
                    top_seq = vseq
                    top_raw = raw
                    seen += 1
                n += 1
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
    flush()
    return seen
