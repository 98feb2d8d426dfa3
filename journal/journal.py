"""The journal: every write to a device, durable, answerable by time.

One writer (the drain service) appends batches; any number of readers (the
CLI, the TUI, restores) open the same directory at the same time. See
:mod:`journal.format` for the layout, :mod:`journal.reader` for what a
reader can ask and :mod:`journal.blockmap` for how a block's content at a
seq is decided.

Append is all-or-nothing: the batch's records go to the segment and are
made durable first, then one LMDB transaction indexes them and moves the
committed end of the segment. A crash before the commit leaves bytes the
next writer cuts off; a crash after leaves a whole batch. The service's
resume cursor is committed in the same transaction, so it always names the
last batch that is really there.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from journal import points as _points
from journal.baseline import copy_baseline, source_size
from journal.batch import AppendState, Batch
from journal.codec import Compression, Encoder
from journal.errors import (
    DeviceMismatch,
    JournalError,
    JournalFull,
    OutOfRange,
    UnsupportedVersion,
)
from journal.compact import CompactionResult, Compactor, remove_dropped
from journal.facts import PINS_LOG, Facts, append_mark, fsync_dir, lock_writer, read_marker, write_marker
from journal.format import SCHEMA, SECTOR, SEG_HDR, SEGMENT_TARGET, U64
from journal.index import Index, seal
from journal.reader import JournalReader, Progress
from journal.records import Point, PointKind, Record
from journal.reserve import RESERVE, keep_reserve
from journal.restore import RestoreResult, restore_to
from journal.retention import Policy
from journal.segments import SegmentWriter
from journal.verify import VerifyReport, verify_journal


def _check_dir(path: Path) -> None:
    """Refuse what is not a journal this code can read, with what to do about it."""
    schema, _facts = read_marker(path)
    if schema != SCHEMA:
        raise UnsupportedVersion(
            f"{path} is a journal of schema {schema}; this cdp reads schema {SCHEMA}: "
            "run 'cdp reindex' to rebuild its index in the new format")


#: Free bytes under which an EIO from LMDB counts as a full filesystem (see :func:`_disk_full`).
FULL_BELOW = 1 << 20
#: What a refused append leaves behind, and what a refused compaction does.
BATCH_LEFT = ("the batch in hand was not committed and nothing committed is lost; free space (or fix the "
              "disk) and start 'cdp run' again, it resumes exactly")
COMPACTION_LEFT = ("the compaction stopped between two of its steps and nothing committed is lost; it "
                   "resumes where it stopped once there is room ('cdp compact', or the service's next look)")


def _disk_full(exc: OSError | lmdb.Error, path: Path | None = None) -> bool:
    """Whether the disk (or LMDB's map) refused a write for want of room.

    LMDB reports a short write as EIO, and a short write is what a full
    filesystem gives a write that only partly fits: with ``path``, an EIO
    while its filesystem has under :data:`FULL_BELOW` free counts as full.
    """
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "No space" in text or "MDB_MAP_FULL" in text:
        return True
    if path is None or not (code == errno.EIO or "Input/output error" in text):
        return False
    try:
        vfs = os.statvfs(path)
    except OSError:
        return False
    return vfs.f_bavail * vfs.f_frsize < FULL_BELOW


def _storage_error(path: Path, exc: OSError | lmdb.Error, left: str = BATCH_LEFT) -> JournalError:
    """One line for a journal whose disk refused a write, saying what it leaves behind (``left``)."""
    text = str(exc)
    reason = getattr(exc, "strerror", None) or text.split(": ", 1)[-1]
    full = _disk_full(exc, path)
    if full:
        what = "the journal's filesystem is full"
    elif getattr(exc, "errno", None) == errno.EIO or "Input/output error" in text:
        what = "the journal's disk failed a write (EIO)"
    else:
        what = f"the journal could not be written ({reason})"
    return (JournalFull if full else JournalError)(f"{what} at {path}: {left}")


#: Kept under its old name: the CLI sizes devices with it.
device_size = source_size


class Journal(JournalReader):
    """One journal directory, opened for appending or for reading."""

    #: Segments roll once they grow past this (tests make it small to see many segments).
    segment_target = SEGMENT_TARGET

    def __init__(self, path: Path, index: Index, writer: SegmentWriter | None, lock_fd: int) -> None:
        super().__init__(path, index)
        self._writer = writer
        self._lock_fd = lock_fd
        self._pool: ThreadPoolExecutor | None = None
        #: Held while the segment writer is used: the drain's appends and a background
        #: compaction's own records share it (LMDB serializes their transactions itself).
        self._write_lock = threading.Lock()
        self._encoder = Encoder(self.compression) if writer is not None and self.compression.enabled else None
        with index.read() as txn:
            need = lambda key: index.require_meta(txn, key)  # noqa: E731
            self._state = AppendState(
                need("last_seq"), need("last_ts"), need("records"), need("data_bytes"),
                need("entries"), need("overflows"),
                {w.seq: w for w in _points.windows(index, txn) if w.resync_seq is None})

    # ----------------------------------------------------------------- opening

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], *, device_bytes: int, block_size: int = 512,
        device_id: bytes = bytes(16), source: str | os.PathLike[str] | None = None,
        progress: Progress | None = None, compression: Compression | None = None,
    ) -> Journal:
        """Make a new journal whose baseline is a copy of ``source`` (zeros if None).

        ``compression``: how payloads are stored (default: zstd at a low
        level, zero blocks elided; :data:`journal.codec.OFF` stores them as given).
        """
        compression = Compression() if compression is None else compression
        path = Path(path)
        if device_bytes <= 0 or device_bytes % SECTOR:
            raise OutOfRange(f"device size {device_bytes} is not a positive multiple of {SECTOR}")
        if block_size not in (512, 4096):
            raise JournalError(f"block size {block_size} is not 512 or 4096")
        if len(device_id) != 16:
            raise JournalError("device id must be 16 bytes")
        if source is not None:
            size = source_size(source)
            if size != device_bytes:
                raise DeviceMismatch(f"{source} holds {size} bytes, not {device_bytes}")
        if occupied(path):
            raise JournalError(f"{path} already exists and is not an empty directory")
        existed = path.exists()
        again = unfinished_create(path)
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise JournalError(f"cannot create {path}: {exc.strerror}") from None
        # the writer lock first: a create still running elsewhere holds it, and its files are not ours
        lock_fd = lock_writer(path)
        index = writer = journal = None
        try:
            if again:  # a create killed before its marker file: start it over
                _remove_unfinished(path, keep_dir=True, keep="lock")
            try:
                for sub in (path, path / "segments", path / "index"):
                    sub.mkdir(exist_ok=True, mode=0o700)
                    os.chmod(sub, 0o700)  # whatever the umask: payloads and marks are the owner's alone
            except OSError as exc:
                raise JournalError(f"cannot create {path}: {exc.strerror}") from None
            created = time.time_ns()
            index = Index(path / "index", create=True)

            def init(txn: lmdb.Transaction) -> None:
                for key, value in (("schema", SCHEMA), ("device_bytes", device_bytes),
                                   ("block_size", block_size), ("device_id", bytes(device_id)),
                                   ("created_ns", created), ("source", os.fspath(source or "")),
                                   ("last_seq", 0), ("last_ts", created), ("seg_id", 1),
                                   ("seg_end", SEG_HDR.size), ("records", 0), ("data_bytes", 0),
                                   ("entries", 0), ("base_entries", 0), ("overflows", 0),
                                   ("compress", compression.to_meta())):
                    index.put_meta(txn, key, value)
                key = U64.pack(0)
                txn.put(key, seal(key, msgpack.packb([PointKind.BASELINE.value, created, ""])),
                        db=index.db("points"))

            index.write(init)
            writer = SegmentWriter(path / "segments", bytes(device_id), 1, SEG_HDR.size)
            journal = cls(path, index, writer, lock_fd)
            if source is not None:
                copy_baseline(index, writer, journal._state, device_bytes, created, source, progress,
                              journal._encoder)
            write_marker(path, Facts(device_bytes, block_size, bytes(device_id).hex(), created,
                                     os.fspath(source or "")))
            fsync_dir(path)
            return journal
        except BaseException:
            # a journal without its marker file is no journal: undo all of it (the path was
            # absent or empty, so everything in it is this call's), then report the failure
            if journal is not None:
                journal.close()
            else:
                if writer is not None:
                    writer.close()
                if index is not None:
                    index.close()
                os.close(lock_fd)
            _remove_unfinished(path, keep_dir=existed)
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False, marks: bool = False) -> Journal:
        """Open an existing journal; the writer (``readonly=False``) is exclusive.

        A reader (``readonly=True``) opens the index read-only and changes
        nothing; ``marks=True`` lets it add user marks too, where the
        filesystem allows writing.
        """
        path = Path(path)
        _check_dir(path)
        lock_fd = -1 if readonly else lock_writer(path)
        try:
            index = Index(path / "index", readonly=(None if marks else True) if readonly else False)
        except BaseException:
            if lock_fd >= 0:
                os.close(lock_fd)
            raise
        writer = None
        if not readonly:
            with index.read() as txn:
                seg_id = index.require_meta(txn, "seg_id")
                seg_end = index.require_meta(txn, "seg_end")
                device_id = bytes(index.require_meta(txn, "device_id"))
            writer = SegmentWriter(path / "segments", device_id, seg_id, seg_end)
            remove_dropped(index, path / "segments")
            keep_reserve(path)
        return cls(path, index, writer, lock_fd)

    def close(self) -> None:
        """Release the segment files, the index and the writer lock."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        super().close()
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
        return self._state.last_seq if self._writer is not None else super().last_seq

    @property
    def last_ts_ns(self) -> int:
        """Time of the newest committed record (creation time if none)."""
        return self._state.last_ts if self._writer is not None else super().last_ts_ns

    def append(self, records: Iterable[Record], cursor: dict[str, Any] | None = None) -> int:
        """Make one batch durable: one segment sync, one index transaction.

        Records at or below :attr:`last_seq` are skipped, so replaying a batch
        after a crash never duplicates. Returns how many were appended.
        """
        with self._write_lock:
            return self._append(records, cursor)

    def _append(self, records: Iterable[Record], cursor: dict[str, Any] | None) -> int:
        writer = self._require_writer()
        batch = Batch(self._state, self.info.device_bytes, writer.seg_id, writer.end, self._encoder)
        for record in records:
            batch.add(record)
        if not batch.count and cursor is None:
            return 0
        try:
            if batch.count:
                writer.write(batch.buffers, batch.pos - writer.end)
                # fdatasync releases the GIL: index the blocks while the disk works
                synced = self._sync_pool().submit(writer.sync)
                try:
                    batch.build_blocks()
                finally:
                    synced.result()
            self.index.write(lambda txn: batch.commit(self.index, txn, writer.end, cursor))
        except (OSError, lmdb.Error) as exc:
            writer.cut_back(batch.start)
            raise _storage_error(self.path, exc) from None
        except BaseException:
            writer.cut_back(batch.start)
            raise
        self._state.advance(batch)
        if writer.end >= self.segment_target:
            writer.roll()
        return batch.count

    @property
    def writer_seg(self) -> int:
        """The segment appends go to now."""
        return self._require_writer().seg_id

    def write_note(self, payload: bytes | Callable[[], bytes], extra: Callable[[lmdb.Transaction], None]) -> None:
        """Append a COMPACTION record durably and commit ``extra``'s changes with it, atomically.

        A callable ``payload`` is made under the writer's lock, so what it reads
        of the index is what the record is committed after (no append between).
        """
        def frame(batch: Batch) -> None:
            data = payload() if callable(payload) else payload
            batch.add_note(time.time_ns(), memoryview(data))

        self.write_compaction(frame, extra)

    def write_compaction(self, frame: Callable[[Batch], None], extra: Callable[[lmdb.Transaction], None]) -> None:
        """A compaction's own records (notes, moved versions) made durable, then committed with ``extra``."""
        with self._write_lock:
            self._write_compaction(frame, extra)

    def _write_compaction(self, frame: Callable[[Batch], None], extra: Callable[[lmdb.Transaction], None]) -> None:
        writer = self._require_writer()
        batch = Batch(self._state, self.info.device_bytes, writer.seg_id, writer.end)
        frame(batch)
        try:
            writer.write(batch.buffers, batch.pos - writer.end)
            writer.sync()

            def commit(txn: lmdb.Transaction) -> None:
                batch.commit(self.index, txn, writer.end, None)
                extra(txn)

            self.index.write(commit)
        except (OSError, lmdb.Error) as exc:
            writer.cut_back(batch.start)
            raise _storage_error(self.path, exc, COMPACTION_LEFT) from None
        except BaseException:
            writer.cut_back(batch.start)
            raise
        if writer.end >= self.segment_target:
            writer.roll()

    def _sync_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="cdp-journal-sync")
        return self._pool

    def _require_writer(self) -> SegmentWriter:
        if self._writer is None:
            raise JournalError(f"{self.path} was opened read-only")
        return self._writer

    # ------------------------------------------------------------ other writes

    def add_mark(self, name: str, ts_ns: int | None = None) -> Point:
        """Name the present (or a given) moment; works while the service runs."""
        raw = _points.check_mark_name(name)
        ts = time.time_ns() if ts_ns is None else ts_ns
        self._check_not_before(ts)
        key = U64.pack(ts) + raw
        if self.index.readonly:
            raise JournalError(f"{self.path} is read-only here: no mark can be added")
        append_mark(self.path, ts, raw)
        self.index.write(lambda txn: txn.put(key, seal(key, b""), db=self.index.db("umarks")))
        with self.index.read() as txn:
            seq = _points.resolve(self.index, txn, ts)
        return Point(seq, ts, PointKind.USER_MARK, name, self.is_whole(seq, ts))

    def set_retention(self, policy: Policy) -> None:
        """Store the retention policy; works while the service runs (it applies it next)."""
        if self.index.readonly:
            raise JournalError(f"{self.path} is read-only here: the retention policy cannot be changed")
        self.index.write(lambda txn: self.index.put_meta(txn, "retention", policy.to_meta()))

    def pin_mark(self, name: str, ts_ns: int | None = None) -> Point:
        """A user mark that retention never drops (``cdp mark --keep-forever``)."""
        ts = time.time_ns() if ts_ns is None else ts_ns
        raw = _points.check_mark_name(name)
        if self.index.readonly:
            raise JournalError(f"{self.path} is read-only here: no mark can be added")
        append_mark(self.path, ts, raw, PINS_LOG)  # pinned before it exists: never a moment unpinned
        return self.add_mark(name, ts)

    def compact(self, now_ns: int | None = None, *, reason: str = "policy", horizon_ts: int | None = None,
                on_step: Callable[[str], None] | None = None,
                move_budget: int | None = None, min_share: float = 0.0) -> CompactionResult | None:
        """Apply the retention policy now (or fold up to ``horizon_ts``); see :mod:`journal.compact`.

        A disk that refuses one of its steps is one :class:`JournalError`
        line (JournalFull when full): the steps done stay done, the rest
        resumes at the next compaction.
        """
        self._require_writer()
        try:
            return Compactor(self, move_budget=move_budget).run(now_ns, reason=reason, horizon_ts=horizon_ts,
                                                                on_step=on_step, min_share=min_share)
        except (OSError, lmdb.Error) as exc:
            raise _storage_error(self.path, exc, COMPACTION_LEFT) from None

    def set_status(self, status: dict[str, Any]) -> None:
        """Publish the service's live status (read by `cdp status` and the TUI).

        A disk that refuses it is one :class:`JournalError` line (JournalFull
        when full), like a batch's, never LMDB's own exception.
        """
        try:
            self.index.write(lambda txn: self.index.put_meta(txn, "status", status))
        except (OSError, lmdb.Error) as exc:
            raise (JournalFull if _disk_full(exc, self.path) else JournalError)(
                f"the live status could not be written: {str(exc) or type(exc).__name__}") from None

    # ---------------------------------------------------- restore and verify

    def restore(
        self, target: str | os.PathLike[str], *, seq: int | None = None, at_ns: int | None = None,
        progress: Progress | None = None, allow_partial: bool = False, overwrite: bool = False,
        cancel: threading.Event | None = None,
    ) -> RestoreResult:
        """Write the whole device as of a seq or time to a file or block device."""
        return restore_to(self, target, seq=seq, at_ns=at_ns, progress=progress,
                          allow_partial=allow_partial, overwrite=overwrite, cancel=cancel)

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Check every segment record's CRCs and the index against the segments."""
        return verify_journal(self, progress)


__all__ = ["Journal", "device_size"]


#: What :meth:`Journal.create` makes in a journal's directory before the marker file that completes it:
#: a file (None), or a directory whose entries are all files with names the test accepts.
_CREATE_MAKES: dict[str, Callable[[str], bool] | None] = {
    "index": lambda name: name in ("data.mdb", "lock.mdb"),
    "segments": lambda name: name.endswith(".seg"),
    "lock": None,
    RESERVE: None,
}


def unfinished_create(path: Path) -> bool:
    """Whether ``path`` holds only what a :meth:`Journal.create` made that never finished.

    A create killed outright (SIGKILL, a power cut) cannot undo itself as
    a failed one does; its leftovers (no marker file, nothing but its own
    index, segment files, lock and reserve) are recognised, so the next
    create starts over rather than refusing the path. Anything else in the
    directory (the marker file included) is someone's data and is never
    taken for it.
    """
    try:
        if not path.is_dir() or path.is_symlink():
            return False
        children = list(path.iterdir())
        if not children or any(c.name not in _CREATE_MAKES for c in children):
            return False
        for child in children:
            if child.is_symlink():
                return False
            accepts = _CREATE_MAKES[child.name]
            if accepts is None:
                if not child.is_file():
                    return False
            elif not child.is_dir() or any(not accepts(g.name) or not g.is_file() or g.is_symlink()
                                           for g in child.iterdir()):
                return False
    except OSError:
        return False
    return True


def occupied(path: Path) -> bool:
    """Whether :meth:`Journal.create` would refuse ``path``: it exists and is neither an empty
    directory nor what a create cut short left there."""
    if not path.exists():
        return False
    if not path.is_dir():
        return True
    return any(path.iterdir()) and not unfinished_create(path)


def _remove_unfinished(path: Path, *, keep_dir: bool, keep: str | None = None) -> None:
    """Remove what an interrupted or failed :meth:`Journal.create` made under ``path`` (but ``keep``)."""
    try:
        children = [c for c in path.iterdir() if c.name != keep]
    except OSError:
        return
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            try:
                child.unlink()
            except OSError:
                pass
    if not keep_dir:
        try:
            path.rmdir()
        except OSError:
            pass
