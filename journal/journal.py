"""The journal: every write to a device, durable, answerable by time.

One writer (the drain service) appends batches; any number of readers (the
CLI, the TUI, restores) open the same directory at the same time. See
:mod:`journal.format` for the layout and :mod:`journal.blockmap` for how a
block's content at a seq is decided.

Append is all-or-nothing: the batch's records go to the segment and are
made durable first, then one LMDB transaction indexes them and moves the
committed end of the segment. A crash before the commit leaves bytes the
next writer cuts off; a crash after leaves a whole batch. The service's
resume cursor is committed in the same transaction, so it always names the
last batch that is really there.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import lmdb
import msgpack

from journal.blockcrc import block_crcs
from journal.blockmap import ZeroExtents, compose_block, is_zero, versions_back
from journal.errors import (
    DeviceMismatch,
    JournalBusy,
    JournalError,
    NotAJournal,
    NotWhole,
    OutOfRange,
    UnsupportedVersion,
)
from journal.format import (
    BIG_ZERO,
    BLOCK,
    BLOCK_VAL,
    FULL_MASK,
    KIND_DATA,
    KIND_ZERO,
    MARKER,
    REC_HDR,
    SCHEMA,
    SECTOR,
    SEG_HDR,
    SEGMENT_TARGET,
    SEQ_VAL,
    U64,
    U64X2,
)
from journal.index import Index
from journal.records import DATA_TYPES, ZERO_TYPES, Point, Record, RecordType
from journal.segments import SegmentReader, SegmentWriter, pack_header

Progress = Callable[[int, int], None]
_NS = 1_000_000_000
_MAX_NAME = 255
_KNOWN_TYPES = frozenset(int(t) for t in RecordType)


@dataclass(frozen=True, slots=True)
class JournalInfo:
    """What the journal protects; fixed when it is created."""

    device_bytes: int
    block_size: int
    device_id: bytes
    created_ns: int
    schema: int
    source: str


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A record as the index knows it (no payload)."""

    seq: int
    ts_ns: int
    type: int
    flags: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class JournalStats:
    """Counters for `cdp status` and the TUI's status bar."""

    records: int
    data_bytes: int
    disk_bytes: int
    first_ts_ns: int
    last_ts_ns: int
    last_seq: int
    segments: int


@dataclass(slots=True)
class OverflowWindow:
    """A span of time in which writes were dropped, until a resync closes it."""

    seq: int
    start_ts: int
    end_ts: int
    offset: int
    length: int
    resynced_to: int
    resync_seq: int | None = None
    resync_ts: int | None = None

    def covers(self, seq: int, ts_ns: int) -> bool:
        """Whether the device is not whole at the point (seq, ts_ns)."""
        if ts_ns < self.start_ts:
            return False
        if self.resync_seq is None or self.resync_ts is None:
            return True
        return not (seq >= self.resync_seq and ts_ns >= self.resync_ts)

    def pack(self) -> bytes:
        return msgpack.packb([self.start_ts, self.end_ts, self.offset, self.length,
                              self.resynced_to, self.resync_seq, self.resync_ts])

    @classmethod
    def unpack(cls, seq: int, raw: bytes) -> OverflowWindow:
        return cls(seq, *msgpack.unpackb(raw))


def _check_dir(path: Path) -> None:
    marker = path / MARKER
    try:
        text = marker.read_text()
    except (FileNotFoundError, NotADirectoryError):
        raise NotAJournal(f"{path} is not a cdp journal (no {MARKER} file)") from None
    except OSError as exc:
        raise NotAJournal(f"{path}: cannot read the journal: {exc.strerror}") from None
    parts = text.split()
    if len(parts) != 2 or parts[0] != MARKER or not parts[1].isdigit():
        raise NotAJournal(f"{path} is not a cdp journal (bad {MARKER} file)")
    if int(parts[1]) != SCHEMA:
        raise UnsupportedVersion(
            f"{path} is a journal of schema {parts[1]}; this cdp reads schema {SCHEMA}")


def device_size(path: str | os.PathLike[str]) -> int:
    """Size in bytes of a regular file or a block device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            return os.lseek(fd, 0, os.SEEK_END)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


class Journal:
    """One journal directory, opened for appending or for reading."""

    def __init__(self, path: Path, index: Index, writer: SegmentWriter | None, lock_fd: int) -> None:
        self.path = path
        self._index = index
        self._writer = writer
        self._lock_fd = lock_fd
        self._reader = SegmentReader(path / "segments")
        self._pool: ThreadPoolExecutor | None = None
        with index.read() as txn:
            get = lambda key, default=None: index.get_meta(txn, key, default)  # noqa: E731
            self.info = JournalInfo(get("device_bytes"), get("block_size"), bytes(get("device_id")),
                                    get("created_ns"), get("schema"), get("source", ""))
            self._last_seq: int = get("last_seq", 0)
            self._last_ts: int = get("last_ts", self.info.created_ns)
            self._records: int = get("records", 0)
            self._data_bytes: int = get("data_bytes", 0)
            self._open_windows = {w.seq: w for w in self._windows(txn) if w.resync_seq is None}

    # ----------------------------------------------------------------- opening

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], *, device_bytes: int, block_size: int = 512,
        device_id: bytes = bytes(16), source: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
    ) -> Journal:
        """Make a new journal whose baseline is a copy of ``source`` (zeros if None)."""
        path = Path(path)
        if device_bytes <= 0 or device_bytes % SECTOR:
            raise OutOfRange(f"device size {device_bytes} is not a positive multiple of {SECTOR}")
        if block_size not in (512, 4096):
            raise JournalError(f"block size {block_size} is not 512 or 4096")
        if len(device_id) != 16:
            raise JournalError("device id must be 16 bytes")
        if source is not None:
            size = device_size(source)
            if size != device_bytes:
                raise DeviceMismatch(f"{source} holds {size} bytes, not {device_bytes}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise JournalError(f"{path} already exists and is not an empty directory")
        try:
            (path / "segments").mkdir(parents=True, exist_ok=True)
            (path / "index").mkdir(exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create {path}: {exc.strerror}") from None
        created = time.time_ns()
        index = Index(path / "index", create=True)

        def init(txn: lmdb.Transaction) -> None:
            for key, value in (("schema", SCHEMA), ("device_bytes", device_bytes),
                               ("block_size", block_size), ("device_id", bytes(device_id)),
                               ("created_ns", created), ("source", os.fspath(source or "")),
                               ("last_seq", 0), ("last_ts", created), ("seg_id", 1),
                               ("seg_end", SEG_HDR.size), ("records", 0), ("data_bytes", 0)):
                index.put_meta(txn, key, value)
            txn.put(U64.pack(0), msgpack.packb(["baseline", created, ""]), db=index.db("points"))

        index.write(init)
        lock_fd = cls._lock(path)
        writer = SegmentWriter(path / "segments", bytes(device_id), 1, SEG_HDR.size)
        journal = cls(path, index, writer, lock_fd)
        if source is not None:
            journal._copy_baseline(source, progress)
        (path / MARKER).write_text(f"{MARKER} {SCHEMA}\n")
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return journal

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Journal:
        """Open an existing journal; the writer (``readonly=False``) is exclusive."""
        path = Path(path)
        _check_dir(path)
        lock_fd = -1 if readonly else cls._lock(path)
        try:
            index = Index(path / "index")
        except lmdb.Error as exc:
            if lock_fd >= 0:
                os.close(lock_fd)
            raise NotAJournal(f"{path}: cannot open the index: {exc}") from None
        writer = None
        if not readonly:
            with index.read() as txn:
                seg_id = index.get_meta(txn, "seg_id")
                seg_end = index.get_meta(txn, "seg_end")
                device_id = bytes(index.get_meta(txn, "device_id"))
            writer = SegmentWriter(path / "segments", device_id, seg_id, seg_end)
        return cls(path, index, writer, lock_fd)

    @staticmethod
    def _lock(path: Path) -> int:
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalBusy(f"{path} is being written by another process (is 'cdp run' running?)") from None
        return fd

    def close(self) -> None:
        """Release the segment files, the index and the writer lock."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._reader.close()
        self._index.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ append

    @property
    def last_seq(self) -> int:
        """The newest committed seq (0: only the baseline)."""
        if self._writer is None:
            with self._index.read() as txn:
                return self._index.get_meta(txn, "last_seq", 0)
        return self._last_seq

    @property
    def last_ts_ns(self) -> int:
        """Time of the newest committed record (creation time if none)."""
        if self._writer is None:
            with self._index.read() as txn:
                return self._index.get_meta(txn, "last_ts", self.info.created_ns)
        return self._last_ts

    def cursor(self) -> dict[str, Any] | None:
        """The resume state the service committed with its last batch."""
        with self._index.read() as txn:
            return self._index.get_meta(txn, "cursor")

    def append(self, records: Iterable[Record], cursor: dict[str, Any] | None = None) -> int:
        """Make one batch durable: one segment sync, one index transaction.

        Records at or below :attr:`last_seq` are skipped, so replaying a batch
        after a crash never duplicates. Returns how many were appended.
        """
        writer = self._require_writer()
        batch = _Batch(self, writer.seg_id, writer.end)
        for record in records:
            batch.add(record)
        if not batch.count and cursor is None:
            return 0
        if batch.count:
            writer.write(batch.buffers, batch.pos - writer.end)
            # fdatasync releases the GIL: index the blocks while the disk works
            synced = self._sync_pool().submit(writer.sync)
            try:
                batch.build_blocks()
            finally:
                synced.result()
        try:
            self._index.write(lambda txn: batch.commit(txn, writer.end, cursor))
        except BaseException:
            writer.end = batch.start
            raise
        self._last_seq, self._last_ts = batch.last_seq, batch.last_ts
        self._records += batch.count
        self._data_bytes += batch.data_bytes
        for window in batch.windows.values():
            if window.resync_seq is None:
                self._open_windows[window.seq] = window
            else:
                self._open_windows.pop(window.seq, None)
        if writer.end >= SEGMENT_TARGET:
            writer.roll()
        return batch.count

    def _sync_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="cdp-journal-sync")
        return self._pool

    def _require_writer(self) -> SegmentWriter:
        if self._writer is None:
            raise JournalError(f"{self.path} was opened read-only")
        return self._writer

    def _copy_baseline(self, source: str | os.PathLike[str], progress: Progress | None) -> None:
        """Store every non-zero run of the source as BASELINE records (seq 0)."""
        writer = self._require_writer()
        total = self.info.device_bytes
        chunk = 1 << 20
        batch_bytes = 64 << 20
        ts = self.info.created_ns
        fd = os.open(source, os.O_RDONLY)
        try:
            done = 0
            batch = _Batch(self, writer.seg_id, writer.end)
            while done < total:
                done = _next_data(fd, done, total)
                if done >= total:
                    data = b""
                else:
                    data = os.pread(fd, min(chunk, total - done), done)
                    if not data:
                        raise DeviceMismatch(f"{source} ended at byte {done} of {total}")
                for start, end in _nonzero_runs(data):
                    batch.add_baseline(ts, done + start, memoryview(data)[start:end])
                done += len(data)
                if batch.pos - batch.start >= batch_bytes or done >= total:
                    if batch.pos > batch.start:
                        writer.write(batch.buffers, batch.pos - writer.end)
                        batch.build_blocks()
                        writer.sync()
                        self._index.write(lambda txn, b=batch: b.commit(txn, writer.end, None))
                        if writer.end >= SEGMENT_TARGET:
                            writer.roll()
                    batch = _Batch(self, writer.seg_id, writer.end)
                if progress is not None:
                    progress(done, total)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------- reads

    def resolve(self, ts_ns: int) -> int:
        """Seq of the last record at or before ``ts_ns`` (0: the baseline)."""
        if ts_ns < self.info.created_ns:
            raise OutOfRange(f"that time is before the journal began ({_fmt(self.info.created_ns)})")
        with self._index.read() as txn:
            return self._resolve(txn, ts_ns)

    def _resolve(self, txn: lmdb.Transaction, ts_ns: int) -> int:
        cur = txn.cursor(db=self._index.db("time"))
        if cur.set_range(U64X2.pack(ts_ns + 1, 0)):
            if not cur.prev():
                return 0
        elif not cur.last():
            return 0
        return U64X2.unpack(cur.key())[1]

    def _target(self, txn: lmdb.Transaction, seq: int | None, at_ns: int | None) -> tuple[int, int]:
        """(seq, ts) a read or restore is for."""
        if at_ns is not None:
            if at_ns < self.info.created_ns:
                raise OutOfRange(f"that time is before the journal began ({_fmt(self.info.created_ns)})")
            return self._resolve(txn, at_ns), at_ns
        last = self._index.get_meta(txn, "last_seq", 0)
        if seq is None:
            seq = last
        if not 0 <= seq <= last:
            raise OutOfRange(f"seq {seq} is not in the journal (0..{last})")
        return seq, self._ts_of(txn, seq)

    def _ts_of(self, txn: lmdb.Transaction, seq: int) -> int:
        if seq == 0:
            return self.info.created_ns
        raw = txn.get(U64.pack(seq), db=self._index.db("seq"))
        if raw is None:
            raise OutOfRange(f"seq {seq} is not in the journal")
        return SEQ_VAL.unpack(raw)[2]

    def read(self, offset: int, length: int, *, seq: int | None = None, at_ns: int | None = None) -> bytes:
        """The device's bytes ``[offset, offset+length)`` at a seq or time."""
        if offset < 0 or length < 0 or offset + length > self.info.device_bytes:
            raise OutOfRange(f"range {offset}+{length} is outside the device ({self.info.device_bytes} bytes)")
        if length == 0:
            return b""
        with self._index.read() as txn:
            seq, _ts = self._target(txn, seq, at_ns)
            zext = self._zero_extents(txn, seq, offset, offset + length)
            cur = txn.cursor(db=self._index.db("blocks"))
            first, last = offset // BLOCK, (offset + length - 1) // BLOCK
            out = bytearray()
            for block in range(first, last + 1):
                versions = versions_back(cur, block, seq)
                out += compose_block(self._reader, block, versions, zext.sector_seqs(block))
        start = offset - first * BLOCK
        return bytes(out[start:start + length])

    def _zero_extents(self, txn: lmdb.Transaction, seq: int, lo: int = 0, hi: int | None = None) -> ZeroExtents:
        hi = self.info.device_bytes if hi is None else hi
        found = []
        for key, raw in txn.cursor(db=self._index.db("zext")):
            zseq = U64.unpack(key)[0]
            if zseq > seq:
                break
            offset, length = U64X2.unpack(raw)
            if offset < hi and offset + length > lo:
                found.append((zseq, offset, length))
        return ZeroExtents(found)

    def restore(
        self, target: str | os.PathLike[str], *, seq: int | None = None, at_ns: int | None = None,
        progress: Progress | None = None, allow_partial: bool = False, overwrite: bool = False,
        cancel: threading.Event | None = None,
    ) -> RestoreResult:
        """Write the whole device as of a seq or time to a file or block device."""
        from journal.restore import restore_to

        return restore_to(self, target, seq=seq, at_ns=at_ns, progress=progress,
                          allow_partial=allow_partial, overwrite=overwrite, cancel=cancel)

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Check every segment record's CRCs and the index against the segments."""
        from journal.verify import verify_journal

        return verify_journal(self, progress)

    # ------------------------------------------------------------------ points

    def _windows(self, txn: lmdb.Transaction) -> list[OverflowWindow]:
        return [OverflowWindow.unpack(U64.unpack(k)[0], v)
                for k, v in txn.cursor(db=self._index.db("windows"))]

    def overflow_windows(self) -> list[OverflowWindow]:
        """Every overflow window, open or closed, oldest first."""
        with self._index.read() as txn:
            return self._windows(txn)

    def is_whole(self, seq: int, ts_ns: int) -> bool:
        """Whether the device at (seq, ts) is known byte for byte."""
        return not any(w.covers(seq, ts_ns) for w in self.overflow_windows())

    def check_whole(self, seq: int, ts_ns: int) -> None:
        """Raise :class:`NotWhole` for a point inside an unresynced overflow window."""
        for w in self.overflow_windows():
            if w.covers(seq, ts_ns):
                state = "not resynced yet" if w.resync_seq is None else f"resynced at seq {w.resync_seq}"
                raise NotWhole(
                    f"the device is not whole at {_fmt(ts_ns)}: writes were dropped from "
                    f"{_fmt(w.start_ts)} (overflow at seq {w.seq}, {state}); "
                    "pick another point or allow a partial restore")

    def points(
        self, *, kinds: Iterable[str] | None = None, start_ns: int | None = None,
        end_ns: int | None = None, reverse: bool = False, limit: int | None = None,
    ) -> list[Point]:
        """Rewind points in time order (newest first with ``reverse``)."""
        wanted = None if kinds is None else frozenset(kinds)
        with self._index.read() as txn:
            windows = self._windows(txn)
            marks: list[Point] = []
            if wanted is None or "user-mark" in wanted:
                for key in txn.cursor(db=self._index.db("umarks")).iternext(values=False):
                    ts = U64.unpack(key[:8])[0]
                    if (start_ns is None or ts >= start_ns) and (end_ns is None or ts <= end_ns):
                        seq = self._resolve(txn, ts)
                        marks.append(Point(seq, ts, "user-mark", key[8:].decode("utf-8", "replace"),
                                           not any(w.covers(seq, ts) for w in windows)))
            found: list[Point] = []
            cur = txn.cursor(db=self._index.db("points"))
            if reverse:
                ok = end_ns is not None and cur.set_range(U64.pack(self._resolve(txn, end_ns) + 1))
                ok = cur.prev() if ok else cur.last()
                step = cur.prev
            else:
                ok = (start_ns is not None and start_ns > self.info.created_ns
                      and cur.set_range(U64.pack(self._first_seq_at(txn, start_ns))))
                ok = ok or (start_ns is None or start_ns <= self.info.created_ns) and cur.first()
                step = cur.next
            while ok:
                seq = U64.unpack(cur.key())[0]
                kind, ts, name = msgpack.unpackb(cur.value())
                ok = step()
                if (end_ns is not None and ts > end_ns) or (start_ns is not None and ts < start_ns):
                    if reverse == (start_ns is not None and ts < start_ns):
                        break
                    continue
                if wanted is not None and kind not in wanted:
                    continue
                found.append(Point(seq, ts, kind, name, not any(w.covers(seq, ts) for w in windows)))
                if limit is not None and len(found) >= limit and not marks:
                    break
        merged = sorted(found + marks, key=lambda p: (p.ts_ns, p.seq), reverse=reverse)
        return merged if limit is None else merged[:limit]

    def _first_seq_at(self, txn: lmdb.Transaction, ts_ns: int) -> int:
        cur = txn.cursor(db=self._index.db("time"))
        if cur.set_range(U64X2.pack(ts_ns, 0)):
            return U64X2.unpack(cur.key())[1]
        return self._index.get_meta(txn, "last_seq", 0) + 1

    def add_mark(self, name: str, ts_ns: int | None = None) -> Point:
        """Name the present (or a given) moment; works while the service runs."""
        raw = name.encode("utf-8")
        if not name or len(raw) > _MAX_NAME or any(ch in name for ch in "\0\n"):
            raise JournalError(f"a mark name must be 1..{_MAX_NAME} bytes of UTF-8 with no newline")
        ts = time.time_ns() if ts_ns is None else ts_ns
        if ts < self.info.created_ns:
            raise OutOfRange(f"that time is before the journal began ({_fmt(self.info.created_ns)})")
        self._index.write(lambda txn: txn.put(U64.pack(ts) + raw, b"", db=self._index.db("umarks")))
        with self._index.read() as txn:
            seq = self._resolve(txn, ts)
        return Point(seq, ts, "user-mark", name, self.is_whole(seq, ts))

    # ------------------------------------------------------------- inspection

    def records(self, start_seq: int = 1, end_seq: int | None = None, reverse: bool = False) -> Iterator[RecordInfo]:
        """Index entries in seq order, a short transaction per chunk of rows."""
        pos = end_seq if reverse else start_seq
        while True:
            rows: list[RecordInfo] = []
            with self._index.read() as txn:
                cur = txn.cursor(db=self._index.db("seq"))
                if reverse:
                    ok = cur.set_range(U64.pack(pos + 1)) if pos is not None else False
                    ok = cur.prev() if ok else cur.last()
                else:
                    ok = cur.set_range(U64.pack(pos))
                while ok and len(rows) < 4096:
                    seq = U64.unpack(cur.key())[0]
                    if (not reverse and end_seq is not None and seq > end_seq) or (reverse and seq < start_seq):
                        ok = False
                        break
                    _seg, _pos, ts, off, length, _dl, rtype, flags = SEQ_VAL.unpack(cur.value())
                    rows.append(RecordInfo(seq, ts, rtype, flags, off, length))
                    ok = cur.prev() if reverse else cur.next()
            yield from rows
            if not ok or not rows:
                return
            pos = rows[-1].seq - 1 if reverse else rows[-1].seq + 1

    def activity(self, start_ns: int, end_ns: int) -> list[tuple[int, int, int]]:
        """(second, records, bytes) for each second in the range that had writes."""
        out = []
        with self._index.read() as txn:
            cur = txn.cursor(db=self._index.db("activity"))
            ok = cur.set_range(U64.pack(start_ns - start_ns % _NS))
            while ok:
                second = U64.unpack(cur.key())[0]
                if second > end_ns:
                    break
                count, nbytes = msgpack.unpackb(cur.value())
                out.append((second, count, nbytes))
                ok = cur.next()
        return out

    def stats(self) -> JournalStats:
        """Counters and on-disk size."""
        segs = list((self.path / "segments").glob("*.seg"))
        disk = sum(p.stat().st_size for p in segs) + self._index.size_bytes()
        with self._index.read() as txn:
            get = lambda key, default=0: self._index.get_meta(txn, key, default)  # noqa: E731
            first = self._resolve_first(txn)
            return JournalStats(get("records"), get("data_bytes"), disk, first,
                                get("last_ts", self.info.created_ns), get("last_seq"), len(segs))

    def _resolve_first(self, txn: lmdb.Transaction) -> int:
        cur = txn.cursor(db=self._index.db("time"))
        return U64X2.unpack(cur.key())[0] if cur.first() else self.info.created_ns

    def set_status(self, status: dict[str, Any]) -> None:
        """Publish the service's live status (read by `cdp status` and the TUI)."""
        self._index.write(lambda txn: self._index.put_meta(txn, "status", status))

    def status(self) -> dict[str, Any] | None:
        """The service's last published status, if any."""
        with self._index.read() as txn:
            return self._index.get_meta(txn, "status")


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore wrote."""

    seq: int
    ts_ns: int
    bytes_written: int
    target: str
    whole: bool


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing `verify` found wrong, located precisely."""

    segment: str
    offset: int
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"segment {self.segment} offset {self.offset}"
        return f"{where}{'' if self.seq is None else f' seq {self.seq}'}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of `verify`: how much was checked, what was wrong."""

    records: int
    bytes: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


class _Batch:
    """Framing and index entries of one append, built before anything is written."""

    def __init__(self, journal: Journal, seg_id: int, start: int) -> None:
        self.j = journal
        self.seg = seg_id
        self.start = self.pos = start
        self.last_seq = journal._last_seq
        self.last_ts = journal._last_ts
        self.count = 0
        self.data_bytes = 0
        self.buffers: list[bytes | memoryview] = []
        self.seq_items: list[tuple[bytes, bytes]] = []
        self.time_items: list[tuple[bytes, bytes]] = []
        self.block_items: list[tuple[bytes, bytes]] = []
        self.pending: list[tuple[int, int, int, int, int, memoryview | None, int, list[int] | None]] = []
        self.device = journal.info.device_bytes
        self._second = -1
        self._bucket = [0, 0]
        self.zext_items: list[tuple[bytes, bytes]] = []
        self.point_items: list[tuple[bytes, bytes]] = []
        self.activity: dict[int, list[int]] = {}
        self.windows: dict[int, OverflowWindow] = {}

    def _frame(self, rtype: int, flags: int, data: memoryview, seq: int, ts: int,
               offset: int, length: int, aux: int) -> tuple[int, int]:
        dcrc = crc32c.crc32c(data) if len(data) else 0
        self.buffers.append(pack_header(rtype, flags, data, seq, ts, offset, length, aux, dcrc))
        if len(data):
            self.buffers.append(data)
        rec_pos = self.pos
        self.pos += REC_HDR.size + len(data)
        return rec_pos, dcrc

    def _blocks(self, seq: int, offset: int, length: int, kind: int, payload_pos: int,
                data: memoryview | None, dcrc: int) -> None:
        self.pending.append((seq, offset, length, kind, payload_pos, data, dcrc, None))

    def build_blocks(self) -> None:
        """Turn the batch's ranges into block-version entries (one per 4 KiB block)."""
        items = self.block_items
        pack_key = U64X2.pack
        pack_val = BLOCK_VAL.pack
        seg = self.seg
        crc = crc32c.crc32c
        for seq, offset, length, kind, payload_pos, data, dcrc, crcs in self.pending:
            if offset % BLOCK == 0 and length % BLOCK == 0:
                first = offset // BLOCK
                if kind == KIND_DATA and length == BLOCK:
                    items.append((pack_key(first, seq), pack_val(seg, payload_pos, FULL_MASK, kind, dcrc)))
                elif kind == KIND_DATA:
                    # the ring reader's CRCs when it handed them over, else one pass here
                    items += [(pack_key(first + i, seq), pack_val(seg, payload_pos + i * BLOCK, FULL_MASK, kind, c))
                              for i, c in enumerate(crcs if crcs is not None else block_crcs(data))]
                else:
                    items += [(pack_key(first + i, seq), pack_val(seg, 0, FULL_MASK, kind, 0))
                              for i in range(length // BLOCK)]
                continue
            end = offset + length
            for block in range(offset // BLOCK, (end - 1) // BLOCK + 1):
                lo = max(offset, block * BLOCK)
                hi = min(end, block * BLOCK + BLOCK)
                s0 = (lo - block * BLOCK) // SECTOR
                mask = ((1 << ((hi - lo) // SECTOR)) - 1) << s0
                bcrc = crc(data[lo - offset:hi - offset]) if data is not None else 0
                pos0 = payload_pos + block * BLOCK - offset if data is not None else 0
                items.append((pack_key(block, seq), pack_val(seg, pos0, mask, kind, bcrc)))
        self.pending = []

    def add_baseline(self, ts: int, offset: int, data: memoryview) -> None:
        rec_pos, dcrc = self._frame(RecordType.BASELINE, 0, data, 0, ts, offset, len(data), 0)
        self._blocks(0, offset, len(data), KIND_DATA, rec_pos + REC_HDR.size, data, dcrc)

    def add(self, r: Record) -> None:
        seq = r.seq
        if seq <= self.last_seq:
            return
        rtype = r.type
        if rtype == 1 and self._add_write(r):
            return
        if rtype not in _KNOWN_TYPES or rtype == RecordType.BASELINE:
            raise JournalError(f"record seq {seq} has unknown type {rtype}")
        data = r.data if isinstance(r.data, memoryview) else memoryview(r.data)
        offset, length = r.offset, r.length
        device = self.j.info.device_bytes
        if rtype in DATA_TYPES or rtype in ZERO_TYPES or rtype == RecordType.OVERFLOW:
            if offset % SECTOR or length % SECTOR or length <= 0 or offset + length > device:
                raise OutOfRange(f"record seq {seq} range {offset}+{length} is not sector-aligned "
                                 f"inside the device ({device} bytes)")
        if rtype in DATA_TYPES and len(data) != length:
            raise JournalError(f"record seq {seq} carries {len(data)} bytes for a {length}-byte range")
        ts = r.ts_ns if r.ts_ns > self.last_ts else self.last_ts
        aux = 0
        name = ""
        if rtype == RecordType.RESYNC:
            ts, aux = self.last_ts, r.ts_ns
        elif rtype == RecordType.OVERFLOW:
            aux = int.from_bytes(data[:8], "little") if len(data) >= 8 else ts
            aux = min(aux, ts)
        elif rtype == RecordType.MARK:
            try:
                name = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise JournalError(f"record seq {seq}: mark name is not UTF-8") from None
            if len(data) > _MAX_NAME:
                raise JournalError(f"record seq {seq}: mark name longer than {_MAX_NAME} bytes")
        rec_pos, dcrc = self._frame(rtype, r.flags, data, seq, ts, offset, length, aux)
        key = U64.pack(seq)
        self.seq_items.append((key, SEQ_VAL.pack(self.seg, rec_pos, ts, offset, length, len(data), rtype, r.flags)))
        self.time_items.append((U64X2.pack(ts, seq), b""))
        if rtype in DATA_TYPES:
            self._blocks(seq, offset, length, KIND_DATA, rec_pos + REC_HDR.size, data, dcrc)
            self.data_bytes += length
        elif rtype in ZERO_TYPES:
            if length >= BIG_ZERO:
                self.zext_items.append((key, U64X2.pack(offset, length)))
            else:
                self._blocks(seq, offset, length, KIND_ZERO, 0, None, 0)
        if rtype == RecordType.FLUSH:
            self.point_items.append((key, msgpack.packb(["flush", ts, ""])))
        elif rtype == RecordType.MARK:
            self.point_items.append((key, msgpack.packb(["mark", ts, name])))
        elif rtype == RecordType.OVERFLOW:
            self.windows[seq] = OverflowWindow(seq, aux, ts, offset, length, offset)
            self.point_items.append((key, msgpack.packb(["overflow", ts, ""])))
        elif rtype == RecordType.RESYNC:
            self._resync(seq, ts, aux, offset, length)
        if rtype == RecordType.WRITE or rtype in ZERO_TYPES:
            bucket = self.activity.setdefault(ts - ts % _NS, [0, 0])
            bucket[0] += 1
            bucket[1] += length
        self.last_seq, self.last_ts = seq, ts
        self.count += 1

    def _add_write(self, r: Record) -> bool:
        """The hot path for a well-formed WRITE; False sends it to the checks."""
        data = r.data
        offset = r.offset
        length = r.length
        if (offset | length) & (SECTOR - 1) or length <= 0 or offset + length > self.device or len(data) != length:
            return False
        if not isinstance(data, memoryview):
            data = memoryview(data)
        seq = r.seq
        ts = r.ts_ns
        if ts < self.last_ts:
            ts = self.last_ts
        dcrc = r.data_crc
        if dcrc is None:
            dcrc = _crc(data)
        crcs = r.block_crcs
        if crcs is not None and (offset % BLOCK or len(crcs) * BLOCK != length):
            crcs = None  # not one per 4 KiB block of this record: work them out
        pos = self.pos
        self.buffers.append(pack_header(1, r.flags, data, seq, ts, offset, length, 0, dcrc))
        self.buffers.append(data)
        self.pos = pos + 64 + length
        self.seq_items.append((_pack_u64(seq), _pack_seq(self.seg, pos, ts, offset, length, length, 1, r.flags)))
        self.time_items.append((_pack_u64x2(ts, seq), b""))
        self.pending.append((seq, offset, length, KIND_DATA, pos + 64, data, dcrc, crcs))
        self.data_bytes += length
        second = ts - ts % _NS
        if second != self._second:
            self._second = second
            self._bucket = self.activity.setdefault(second, [0, 0])
        self._bucket[0] += 1
        self._bucket[1] += length
        self.last_seq = seq
        self.last_ts = ts
        self.count += 1
        return True

    def _resync(self, seq: int, ts: int, read_ts: int, offset: int, length: int) -> None:
        """Advance every open window this copy continues; close the ones it completes."""
        pending = dict(self.j._open_windows)
        pending.update({k: w for k, w in self.windows.items() if w.resync_seq is None})
        for wseq, w in pending.items():
            if w.resync_seq is not None or wseq >= seq:
                continue
            if offset <= w.resynced_to < offset + length:
                w = OverflowWindow(w.seq, w.start_ts, w.end_ts, w.offset, w.length,
                                   max(w.resynced_to, offset + length))
                if w.resynced_to >= w.offset + w.length:
                    w.resync_seq, w.resync_ts = seq, max(read_ts, w.end_ts)
                    self.point_items.append((U64.pack(seq), msgpack.packb(["resync", ts, ""])))
                self.windows[wseq] = w

    def commit(self, txn: lmdb.Transaction, seg_end: int, cursor: dict[str, Any] | None) -> None:
        idx = self.j._index
        if self.seq_items:
            txn.cursor(db=idx.db("seq")).putmulti(self.seq_items, append=True)
            txn.cursor(db=idx.db("time")).putmulti(self.time_items, append=True)
        if self.block_items:
            txn.cursor(db=idx.db("blocks")).putmulti(self.block_items)
        if self.zext_items:
            txn.cursor(db=idx.db("zext")).putmulti(self.zext_items)
        if self.point_items:
            txn.cursor(db=idx.db("points")).putmulti(self.point_items)
        for wseq, w in self.windows.items():
            txn.put(U64.pack(wseq), w.pack(), db=idx.db("windows"))
        adb = idx.db("activity")
        for second, (count, nbytes) in self.activity.items():
            key = U64.pack(second)
            old = txn.get(key, db=adb)
            if old is not None:
                c0, b0 = msgpack.unpackb(old)
                count, nbytes = count + c0, nbytes + b0
            txn.put(key, msgpack.packb([count, nbytes]), db=adb)
        put = idx.put_meta
        put(txn, "seg_id", self.seg)
        put(txn, "seg_end", seg_end)
        if self.count:
            put(txn, "last_seq", self.last_seq)
            put(txn, "last_ts", self.last_ts)
            put(txn, "records", self.j._records + self.count)
            put(txn, "data_bytes", self.j._data_bytes + self.data_bytes)
        if cursor is not None:
            put(txn, "cursor", cursor)


_crc = crc32c.crc32c
_pack_u64 = U64.pack
_pack_u64x2 = U64X2.pack
_pack_seq = SEQ_VAL.pack


def _next_data(fd: int, pos: int, end: int) -> int:
    """Where data resumes at or after ``pos`` (block-aligned); holes are skipped unread."""
    try:
        found = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:  # ENXIO: only a hole is left; EINVAL: no hole support (a device)
        return end if _is_regular(fd) else pos
    return max(pos, found - found % BLOCK)


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


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


def _fmt(ts_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts_ns // _NS)) + f".{ts_ns % _NS:09d}"
