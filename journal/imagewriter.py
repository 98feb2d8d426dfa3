"""Moving a restore's bytes: segment pieces read, checked and written by worker threads.

The restore's walk decides where each block's bytes come from; this module
moves them. The walk hands over *jobs*, each a run of blocks back to back
on the target, made of *pieces* (blocks back to back in one segment, with
the CRC-32C the index holds for each) or of bytes composed in memory.
Jobs go to the workers many at a time (up to 8 MiB or 1024 jobs per
hand-over): one ``queue.put`` per scattered 4 KiB block made the two
threads trade the GIL tens of thousands of times a second, a lock convoy
that cost a restore of 10^5 small writes 1.6 s (issue #11).

A worker checks each piece straight from a map of its segment, with one
CRC-32C call over the piece held against its blocks' CRCs combined, and
writes the job from the maps with one ``pwritev``: the bytes are copied
once, page cache to page cache. The one CRC call matters: crc32c releases
the GIL for a long buffer, so a page fault on a cold segment stalls only
that worker (a CRC call per 4 KiB block holds the GIL, and a fault inside
it stalled the walk too); two workers keep two pieces' faults in flight. A third thread asks for every piece of
a hand-over (``POSIX_FADV_WILLNEED``) as soon as the walk hands it over, so
the reads find their data on the way.

A block stored as a zstd frame (:mod:`journal.codec`) is a job item of its
own, decoded and checked by the worker that writes it: decoding releases
the GIL like the CRC does, so it runs beside the walk and the other worker.
Raw blocks keep the one-copy path above.

Jobs finish in any order. A file target's all-zero pieces are left out
(holes, the file is sized at the end); a block device gets every byte,
its never-written gaps as zero jobs the walk emits.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

from crc32c import crc32c

from journal.blockcrc import block_crcs, combined
from journal.blockmap import ZERO_RUN, bad_crc, decode_checked, is_zero
from journal.errors import CorruptJournal
from journal.format import BLOCK
from journal.output import RestoreTarget
from journal.segments import IOV_MAX, SegmentReader, SegmentViews, pwritev_all

#: The most bytes one job holds: one worker buffer.
JOB_BYTES = len(ZERO_RUN)
JOB_BLOCKS = JOB_BYTES // BLOCK
_HANDOVER_BYTES = 8 << 20
_HANDOVER_JOBS = 1024
_WORKERS = 2
#: Hand-overs whose reads are started ahead of the workers.
_PREFETCH_BATCHES = 4
#: Writeback of the target is started after this many bytes, so the closing fsync has little left.
_WRITE_BEHIND = 64 << 20

#: A piece: [segment number, position, first block, CRCs, seqs].
Piece = list
#: A compressed block: (segment number, position, stored length, CRC, seq, block).
Frame = tuple
#: A job: (first block, pieces, frames and composed bytes, or None for a gap of ``count`` zero blocks, count).
Job = tuple


class ImageWriter:
    """Writes jobs to a restore target on worker threads; :meth:`close` waits for all of them."""

    def __init__(self, target: RestoreTarget, segments: Path) -> None:
        self._target = target
        self._fd = target.fd
        self._size = target.size
        self.is_device = target.is_device
        self._reader = SegmentReader(segments)  # descriptors for the read-ahead
        self._views = SegmentViews(segments)    # maps for the checks and the writes
        self._queue: queue.Queue[list[Job] | None] = queue.Queue(maxsize=2 * _WORKERS)
        self._batch: list[Job] = []
        self._batch_bytes = 0
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._unflushed = 0
        # the walk hands over to the prefetcher, which starts the reads and passes the batch on
        self._ahead: queue.Queue[list[Job] | None] = queue.Queue(maxsize=_PREFETCH_BATCHES)
        self._threads = [threading.Thread(target=self._loop, name=f"cdp-restore-{i}", daemon=True)
                         for i in range(_WORKERS)]
        self._prefetcher = threading.Thread(target=self._prefetch_loop, name="cdp-restore-ahead", daemon=True)
        self._prefetcher.start()
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------ the walk's side

    def put(self, job: Job, nbytes: int) -> None:
        """Queue one job of ``nbytes``; the jobs go to the workers in hand-overs."""
        self._batch.append(job)
        self._batch_bytes += nbytes
        if self._batch_bytes >= _HANDOVER_BYTES or len(self._batch) >= _HANDOVER_JOBS:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        if self._batch:
            self._ahead.put(self._batch)
            self._batch, self._batch_bytes = [], 0

    def close(self) -> None:
        """Hand over the rest, wait for every job; raise what a worker ran into."""
        try:
            self._hand_over()
        finally:
            self._ahead.put(None)
            self._prefetcher.join()
            for t in self._threads:
                t.join()
            self._reader.close()
            self._views.close()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the workers without raising (the caller is already failing)."""
        self._error = self._error or CorruptJournal("restore stopped")
        try:
            self.close()
        except BaseException:  # noqa: BLE001 - the caller's error is the one to report
            pass

    # ------------------------------------------------------------ the workers' side

    def _prefetch_loop(self) -> None:
        """Start the reads of each hand-over's pieces, then pass it to the workers.

        The reads are then under way several hand-overs (tens of MiB) before
        a worker needs them, and the disk sees a queue rather than one read at
        a time. On a thread of its own: ``WILLNEED`` looks up every page of
        its range (up to 0.1 ms for a cached MiB), time the walk would lose.
        """
        willneed = os.POSIX_FADV_WILLNEED
        while (batch := self._ahead.get()) is not None:
            if self._error is None:
                try:
                    for _block, items, _count in batch:
                        if items is not None:
                            for item in items:
                                if type(item) is list:
                                    os.posix_fadvise(self._reader.fd(item[0]), item[1], len(item[3]) * BLOCK,
                                                     willneed)
                                elif type(item) is tuple:
                                    os.posix_fadvise(self._reader.fd(item[0]), item[1], item[2], willneed)
                except (OSError, CorruptJournal):
                    # only a speed-up: the worker that reads the piece reports a missing segment,
                    # and the batch must go on to it whatever happened here
                    pass
            self._queue.put(batch)
        for _ in self._threads:
            self._queue.put(None)

    def _loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain the queue so the walk never blocks on a full one
            try:
                for block, items, count in batch:
                    if items is None:
                        self._zeros(block, count)
                    else:
                        self._job(block, items)
            except BaseException as exc:  # handed to the walking thread
                self._error = exc

    def _job(self, block: int, items: list) -> None:
        holes = not self.is_device
        out: list[bytes | memoryview] = []
        start = at = block
        for item in items:
            if type(item) is list:
                seg, pos, first, crcs, seqs = item
                data = self._views.view(seg, pos, len(crcs) * BLOCK)
                # one call over the piece (the GIL is released for it), held against the blocks'
                # CRCs combined; only a mismatch looks block by block
                if crc32c(data) != combined(crcs):
                    got = block_crcs(data)
                    i = next((i for i, (a, b) in enumerate(zip(got, crcs)) if a != b), 0)
                    raise bad_crc(first + i, seqs[i], seg, pos + i * BLOCK)
            elif type(item) is tuple:
                seg, pos, stored, crc, seq, blk = item
                data = decode_checked(self._views.view(seg, pos, stored), BLOCK, crc, blk, seq, seg, pos)
            else:
                data = item
            nblocks = len(data) // BLOCK
            if holes and is_zero(data):
                if out:
                    self._write(start, out)
                    out = []
                at += nblocks
                start = at
                continue
            if len(out) >= IOV_MAX:
                self._write(start, out)
                out, start = [], at
            out.append(data)
            at += nblocks
        if out:
            self._write(start, out)

    def _zeros(self, block: int, count: int) -> None:
        zeros = memoryview(ZERO_RUN)
        pos, end = block * BLOCK, min((block + count) * BLOCK, self._size)
        while pos < end:
            n = min(len(zeros), end - pos)
            self._write_at(pos, [zeros[:n]], n)
            pos += n

    def _write(self, block: int, buffers: list[bytes | memoryview]) -> None:
        pos = block * BLOCK
        total = sum(map(len, buffers))
        if pos + total > self._size:  # the device's last block is partial
            buffers, total = _trim(buffers, self._size - pos), self._size - pos
        self._write_at(pos, buffers, total)

    def _write_at(self, pos: int, buffers: list[bytes | memoryview], total: int) -> None:
        pwritev_all(self._fd, buffers, pos)
        with self._lock:
            self._unflushed += total
            start = self._unflushed >= _WRITE_BEHIND
            if start:
                self._unflushed = 0
        if start:
            # POSIX_FADV_DONTNEED starts writeback of the dirty pages (and drops the
            # clean ones): the disk writes while the walk goes on, not all at the end
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _trim(buffers: list[bytes | memoryview], length: int) -> list[bytes | memoryview]:
    """The first ``length`` bytes of ``buffers``."""
    out = []
    for buf in buffers:
        if length <= 0:
            break
        out.append(buf[:length])
        length -= len(buf)
    return out
