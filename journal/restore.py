"""Rebuild the whole device as of a seq, reading each block's winner once.

The block-version index is walked in key order (block, then seq), so every
block's versions arrive together: the newest at or below the target seq
wins, and runs of winners that lie back to back in one segment are read with
one ``pread``. History that lost is never read, only its index entries.
The walk goes in chunks of short read transactions: entries at or below the
target seq never change, so the chunks see one consistent state without a
long transaction pinning the writer's pages.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import crc32c

from journal.blockmap import Version, ZeroExtents, compose_block
from journal.errors import CorruptJournal, JournalError, OutOfRange
from journal.format import BLOCK, BLOCK_VAL, FULL_MASK, KIND_DATA, U64X2, segment_name

if TYPE_CHECKING:
    from journal.journal import Journal, Progress, RestoreResult

_CHUNK_ENTRIES = 65536
_MAX_RUN = 8 << 20
_ZERO_FILL = bytes(1 << 20)


class Cancelled(JournalError):
    """The restore was cancelled; a target file it created was removed."""


class _Output:
    """The restore target: a new sparse file, or a block device written in full."""

    def __init__(self, target: Path, device_bytes: int, overwrite: bool) -> None:
        self.path = target
        self.size = device_bytes
        self.created = False
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise JournalError(f"cannot use {target}: {exc.strerror}") from None
        self.is_device = st is not None and stat.S_ISBLK(st.st_mode)
        try:
            if self.is_device:
                self.fd = os.open(target, os.O_WRONLY)
                have = os.lseek(self.fd, 0, os.SEEK_END)
                if have < device_bytes:
                    os.close(self.fd)
                    raise OutOfRange(f"{target} holds {have} bytes; the journaled device needs {device_bytes}")
            else:
                if st is not None and not overwrite:
                    raise JournalError(f"{target} exists; refusing to overwrite it")
                if st is not None and not stat.S_ISREG(st.st_mode):
                    raise JournalError(f"{target} is neither a regular file nor a block device")
                self.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                self.created = st is None
        except OSError as exc:
            raise JournalError(f"cannot write {target}: {exc.strerror}") from None
        self.filled = 0  # block devices: everything below this is written

    def write(self, block: int, data: bytes) -> None:
        """Put ``data`` at ``block``; a file skips zeros and keeps the hole."""
        pos = block * BLOCK
        data = data[:self.size - pos]
        if self.is_device:
            self._zero_to(pos)
            self.filled = pos + len(data)
        elif _is_zero(data):
            return
        os.pwrite(self.fd, data, pos)

    def _zero_to(self, pos: int) -> None:
        while self.filled < pos:
            n = min(len(_ZERO_FILL), pos - self.filled)
            os.pwrite(self.fd, _ZERO_FILL[:n], self.filled)
            self.filled += n

    def finish(self) -> None:
        if self.is_device:
            self._zero_to(self.size)
        else:
            os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)
        os.close(self.fd)

    def abandon(self) -> None:
        os.close(self.fd)
        if self.created:
            self.path.unlink(missing_ok=True)


_ZEROS = bytes(_MAX_RUN)


def _is_zero(data: bytes) -> bool:
    # random data is rejected by its first or last byte without a scan
    return not data or (not data[0] and not data[-1] and data == _ZEROS[:len(data)])


class _Run:
    """Winners that lie back to back in one segment, read with one pread."""

    def __init__(self) -> None:
        self.seg = -1
        self.pos = 0
        self.block = 0
        self.versions: list[Version] = []

    def extends(self, block: int, v: Version) -> bool:
        n = len(self.versions)
        return (n > 0 and v.seg == self.seg and v.pos0 == self.pos + n * BLOCK
                and block == self.block + n and n * BLOCK < _MAX_RUN)

    def flush(self, journal: Journal, out: _Output) -> None:
        if not self.versions:
            return
        raw = journal._reader.pread(self.seg, self.pos, len(self.versions) * BLOCK)
        data = memoryview(raw)
        for i, v in enumerate(self.versions):
            piece = data[i * BLOCK:(i + 1) * BLOCK]
            if crc32c.crc32c(piece) != v.crc:
                raise CorruptJournal(
                    f"block {self.block + i} of record seq {v.seq} (segment {segment_name(v.seg)}, "
                    f"offset {v.pos0}) fails its CRC-32C; run 'cdp verify'")
        out.write(self.block, raw)
        self.versions = []

    def start(self, block: int, v: Version) -> None:
        self.seg, self.pos, self.block, self.versions = v.seg, v.pos0, block, [v]


def restore_to(
    journal: Journal, target: str | os.PathLike[str], *, seq: int | None, at_ns: int | None,
    progress: Progress | None, allow_partial: bool, overwrite: bool,
    cancel: threading.Event | None,
) -> RestoreResult:
    """See :meth:`journal.journal.Journal.restore`."""
    from journal.journal import RestoreResult

    index = journal._index
    with index.read() as txn:
        seq, ts = journal._target(txn, seq, at_ns)
        zext = journal._zero_extents(txn, seq)
    whole = journal.is_whole(seq, ts)
    if not whole and not allow_partial:
        journal.check_whole(seq, ts)
    device = journal.info.device_bytes
    nblocks = (device + BLOCK - 1) // BLOCK
    out = _Output(Path(target), device, overwrite)
    try:
        _walk(journal, out, seq, zext, nblocks, progress, cancel)
        out.finish()
    except BaseException:
        out.abandon()
        raise
    if progress is not None:
        progress(device, device)
    return RestoreResult(seq, ts, device, os.fspath(target), whole)


def _walk(journal: Journal, out: _Output, seq: int, zext: ZeroExtents, nblocks: int,
          progress: Progress | None, cancel: threading.Event | None) -> None:
    """Visit every block that has versions, in block order, and write its winner.

    The loop is the restore's hot path, so it touches each index entry once
    with C-level calls (``iternext``, precompiled structs) and builds
    :class:`Version` objects only for the rare blocks that need composing.
    """
    index = journal._index
    run = _Run()
    unpack_key = U64X2.unpack
    unpack_val = BLOCK_VAL.unpack
    group: list[tuple[int, bytes]] = []  # (seq, value) of the current block, ascending, <= seq
    group_block = -1
    resume = U64X2.pack(0, 0)

    def settle(block: int) -> None:
        vseq, raw = group[-1]
        seg, pos0, mask, kind, crc = unpack_val(raw)
        if mask == FULL_MASK and kind == KIND_DATA:
            zseqs = zext.sector_seqs(block) if zext else None
            if zseqs is None or max(zseqs) < vseq:
                v = Version(vseq, seg, pos0, mask, kind, crc)
                if run.extends(block, v):
                    run.versions.append(v)
                else:
                    run.flush(journal, out)
                    run.start(block, v)
                return
        versions = [Version(q, *unpack_val(r)) for q, r in reversed(group)]
        run.flush(journal, out)
        out.write(block, compose_block(journal._reader, block, versions,
                                       zext.sector_seqs(block) if zext else None))

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
                block, vseq = unpack_key(key)
                if block != group_block:
                    if group:
                        settle(group_block)
                        group = []
                    if block >= nblocks:
                        done = True
                        break
                    group_block = block
                if vseq <= seq:
                    group.append((vseq, raw))
                n += 1
                if n >= _CHUNK_ENTRIES:
                    resume = U64X2.pack(block, vseq + 1)
                    break
            else:
                done = True
        if progress is not None:
            progress(min(max(group_block, 0), nblocks) * BLOCK, nblocks * BLOCK)
    if group:
        settle(group_block)
    run.flush(journal, out)
