"""The baseline copy: the device as it was when its journal was created.

Every non-zero run of the source is stored as BASELINE records (seq 0), in
batches of 64 MiB, each made durable and indexed before the next. Holes
(``SEEK_DATA``) and all-zero blocks are skipped: a sparse baseline reads
as zeros wherever nothing was stored.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from journal.batch import AppendState, Batch
from journal.codec import Encoder
from journal.blockmap import is_zero
from journal.errors import DeviceMismatch
from journal.format import BLOCK, SEGMENT_TARGET
from journal.index import Index
from journal.reader import Progress
from journal.segments import SegmentWriter

_CHUNK = 1 << 20
_BATCH_BYTES = 64 << 20


def copy_baseline(
    index: Index, writer: SegmentWriter, state: AppendState, device_bytes: int, ts: int,
    source: str | os.PathLike[str], progress: Progress | None, encoder: Encoder | None = None,
) -> None:
    """Store every non-zero run of ``source`` as BASELINE records stamped ``ts`` (encoded by ``encoder``)."""
    fd = os.open(source, os.O_RDONLY)
    try:
        done = 0
        batch = Batch(state, device_bytes, writer.seg_id, writer.end, encoder)
        while done < device_bytes:
            done = _next_data(fd, done, device_bytes)
            if done >= device_bytes:
                data = b""
            else:
                data = os.pread(fd, min(_CHUNK, device_bytes - done), done)
                if not data:
                    raise DeviceMismatch(f"{source} ended at byte {done} of {device_bytes}")
            for start, end in _nonzero_runs(data):
                batch.add_baseline(ts, done + start, memoryview(data)[start:end])
            done += len(data)
            if batch.pos - batch.start >= _BATCH_BYTES or done >= device_bytes:
                if batch.pos > batch.start:
                    writer.write(batch.buffers, batch.pos - writer.end)
                    batch.build_blocks()
                    writer.sync()
                    index.write(lambda txn, b=batch: b.commit(index, txn, writer.end, None))
                    state.advance(batch)
                    if writer.end >= SEGMENT_TARGET:
                        writer.roll()
                batch = Batch(state, device_bytes, writer.seg_id, writer.end, encoder)
            if progress is not None:
                progress(done, device_bytes)
    finally:
        os.close(fd)


def source_size(path: str | os.PathLike[str]) -> int:
    """Size in bytes of a regular file or a block device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            return os.lseek(fd, 0, os.SEEK_END)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _next_data(fd: int, pos: int, end: int) -> int:
    """Where data resumes at or after ``pos`` (block-aligned); holes are skipped unread."""
    try:
        found = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:  # ENXIO: only a hole is left; EINVAL: no hole support (a device)
        return end if stat.S_ISREG(os.fstat(fd).st_mode) else pos
    return max(pos, found - found % BLOCK)


def _nonzero_runs(data: bytes) -> Iterator[tuple[int, int]]:
    """[start, end) of the runs of non-zero 4 KiB blocks in ``data``."""
    if is_zero(data):
        return
    start = None
    for pos in range(0, len(data), BLOCK):
        if is_zero(data[pos:pos + BLOCK]):
            if start is not None:
                yield start, pos
                start = None
        elif start is None:
            start = pos
    if start is not None:
        yield start, len(data)


__all__ = ["copy_baseline", "source_size"]
