"""The LMDB half of the journal: self-checking entries, short transactions.

Every value in every database carries, in its last four bytes, the CRC-32C
of its key followed by the rest of the value (:func:`seal`). A byte flipped
anywhere in an entry, key or value, is then found by the one check
:func:`check` (the CRC of key ‖ value ‖ crc is a constant, the CRC-32C
residue), so a damaged entry is an error, never a block, a time or a mark
applied to the wrong place.

This module owns the environment and its growth. A write transaction that
hits the end of the map is aborted, the map doubled and the transaction run
again, so no MapFullError reaches a user; a reader whose map was grown by
another process adopts the new size and retries. LMDB allows
``set_mapsize`` only while no transaction of the process is open, and
py-lmdb invalidates the open ones if it is called anyway, so every
transaction is counted and a resize waits until the count is zero.
Transactions are opened for one call and closed at its end, so a reader
(the TUI) never pins pages the writer wants to reuse, and never nested.

Readers open the environment read-only and never create anything: a
journal on a read-only mount or a copy is readable, and a damaged or
truncated ``data.mdb`` is refused before LMDB maps it (a map past the end
of its file is SIGBUS, not an error).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TypeVar

import crc32c
import lmdb
import msgpack

from journal.errors import REINDEX_HINT, CorruptJournal, JournalError

T = TypeVar("T")

DB_NAMES = ("meta", "seq", "time", "blocks", "zext", "points", "umarks", "windows", "activity", "heads")
#: Tables a journal made by an older cdp lacks until a writer opens it: a reader goes without them.
OPTIONAL_DBS = frozenset({"heads"})
_INITIAL_MAP = 64 << 20
_U32 = struct.Struct("<I")
_crc = crc32c.crc32c


def seal(key: bytes, value: bytes) -> bytes:
    """``value`` with the CRC-32C of ``key ‖ value`` appended."""
    return value + _U32.pack(_crc(value, _crc(key)))


#: crc32c(key + sealed value), the same for every intact entry (CRC-32C's residue).
RESIDUE = _crc(b"k" + seal(b"k", b"v"))


def check(key: bytes, raw: bytes) -> bool:
    """Whether a sealed entry is intact."""
    return _crc(key + raw) == RESIDUE


def damaged(db: str, key: bytes) -> CorruptJournal:
    """The error for an index entry that fails its check."""
    return CorruptJournal(f"the index is damaged (a '{db}' entry, key {key.hex()}, fails its CRC-32C); "
                          f"{REINDEX_HINT}")


def unseal(db: str, key: bytes, raw: bytes) -> bytes:
    """The value of a sealed entry, or :class:`CorruptJournal`."""
    if len(raw) < 4 or _crc(key + raw) != RESIDUE:
        raise damaged(db, key)
    return raw[:-4]


def check_data_file(path: Path) -> None:
    """Refuse a ``data.mdb`` that is missing, empty or shorter than its own meta pages say.

    LMDB keeps two meta pages at the start of the file; the newer valid one
    names the last page in use. A file shorter than that was truncated:
    mapping it would end in SIGBUS on the first read past its end.
    """
    data = path / "data.mdb"
    try:
        with open(data, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4096)
            psize = _U32.unpack_from(head, 40)[0] if len(head) >= 44 else 0
            if psize in (4096, 8192, 16384, 32768, 65536) and len(head) == 4096 and psize != 4096:
                f.seek(0)
                head = f.read(psize)
            second = b""
            if psize >= 4096:
                f.seek(psize)
                second = f.read(160)
    except FileNotFoundError:
        raise CorruptJournal(f"cannot open the index: {data} is missing; {REINDEX_HINT}") from None
    except OSError as exc:
        raise CorruptJournal(f"cannot open the index: {data}: {exc.strerror}") from None
    best = None
    for page in (head[:160], second):
        if len(page) < 152:
            continue
        magic, _version = struct.unpack_from("<II", page, 16)
        if magic != 0xBEEFC0DE:
            continue
        last_pg, txnid = struct.unpack_from("<QQ", page, 136)
        if best is None or txnid > best[1]:
            best = (last_pg, txnid)
    if best is None or psize < 4096:
        raise CorruptJournal(f"cannot open the index: {data} is empty or not an LMDB file; {REINDEX_HINT}")
    if (best[0] + 1) * psize > size:
        raise CorruptJournal(f"cannot open the index: {data} is truncated ({size} bytes, its meta page needs "
                             f"{(best[0] + 1) * psize}); {REINDEX_HINT}")


class _Shared:
    """One environment per path per process: LMDB's locks break if opened twice."""

    def __init__(self, env: lmdb.Environment, dbs: dict[str, Any], readonly: bool) -> None:
        self.env = env
        self.dbs = dbs
        self.readonly = readonly
        self.users = 0
        #: Open transactions of this process; a resize waits for zero.
        self.active = 0
        self.cond = threading.Condition()


_OPEN: dict[str, _Shared] = {}
_OPEN_LOCK = threading.Lock()
_local = threading.local()


def _cannot_write(exc: lmdb.Error) -> bool:
    text = str(exc)
    return "Read-only file system" in text or "Permission denied" in text


def _open_env(path: Path, *, create: bool, readonly: bool | None) -> tuple[lmdb.Environment, bool]:
    """The environment and whether it is read-only.

    ``readonly=None`` asks for read-write where the filesystem allows it
    (a reader that may add marks), else read-only. A read-only environment
    goes without LMDB's lock file only where that file cannot be made.
    """
    kwargs = dict(map_size=_INITIAL_MAP, max_dbs=len(DB_NAMES) + 1, subdir=True, create=create,
                  readahead=False, max_readers=256, mode=0o600)
    if not readonly:
        try:
            return lmdb.open(str(path), **kwargs), False
        except lmdb.Error as exc:
            if readonly is not None or not _cannot_write(exc):
                raise
    try:
        return lmdb.open(str(path), readonly=True, **kwargs), True
    except lmdb.Error as exc:
        # a read-only mount (EROFS) or directory (EACCES) cannot hold lock.mdb:
        # nobody can be writing there, so reading without the lock is safe
        if not _cannot_write(exc):
            raise
        return lmdb.open(str(path), readonly=True, lock=False, **kwargs), True


def _open(path: Path, *, create: bool, readonly: bool | None) -> tuple[lmdb.Environment, dict[str, Any], bool]:
    """The environment, its named databases, and whether it is read-only."""
    try:
        env, ro = _open_env(path, create=create, readonly=readonly)
        dbs: dict[str, Any] = {}
        if ro:  # py-lmdb opens them in its own read transaction (one of ours loses them)
            for name in DB_NAMES:
                while True:
                    try:
                        dbs[name] = env.open_db(name.encode(), create=False)
                        break
                    except lmdb.NotFoundError:
                        if name not in OPTIONAL_DBS:
                            raise
                        break
                    except lmdb.MapResizedError:
                        # the writer grew the map since this environment was opened: adopt
                        # its size (no transaction of ours is open yet) and ask again
                        env.set_mapsize(0)
        else:
            with env.begin(write=True) as txn:
                for name in DB_NAMES:
                    dbs[name] = env.open_db(name.encode(), txn=txn, create=True)
    except lmdb.NotFoundError:
        raise CorruptJournal(f"{path}: the index lacks a database; {REINDEX_HINT}") from None
    except lmdb.Error as exc:
        raise CorruptJournal(f"{path}: cannot open the index ({exc}); {REINDEX_HINT}") from None
    return env, dbs, ro


def _upgrade(shared: _Shared, path: Path, *, required: bool) -> None:
    """Reopen a process's read-only environment read-write, for a writer that came after a reader.

    One process may hold an environment only once, so the readers' one is
    closed (once no transaction is open) and every user goes on with the
    new one. Where the filesystem refuses and writing is only wished for
    (``required=False``), the read-only one stays.
    """
    with shared.cond:
        while shared.active:
            shared.cond.wait()
        shared.env.close()
        try:
            shared.env, shared.dbs, shared.readonly = _open(path, create=False, readonly=None)
        except BaseException:
            shared.env, shared.dbs, shared.readonly = _open(path, create=False, readonly=True)
            raise
    if required and shared.readonly:
        raise JournalError(f"{path} cannot be written here (a read-only mount or copy?)")


class Index:
    """An open LMDB environment with the journal's named databases."""

    def __init__(self, path: Path, *, create: bool = False, readonly: bool | None = False) -> None:
        self._key = os.path.realpath(path)
        with _OPEN_LOCK:
            shared = _OPEN.get(self._key)
            if shared is None:
                if not create:
                    check_data_file(Path(path))
                env, dbs, ro = _open(Path(path), create=create, readonly=readonly)
                shared = _OPEN[self._key] = _Shared(env, dbs, ro)
            elif shared.readonly and readonly is not True:
                _upgrade(shared, Path(path), required=readonly is False)
            shared.users += 1
        self._shared = shared

    @property
    def env(self) -> lmdb.Environment:
        return self._shared.env

    @property
    def dbs(self) -> dict[str, Any]:
        return self._shared.dbs

    @property
    def readonly(self) -> bool:
        return self._shared.readonly

    # ------------------------------------------------------------ transactions

    def _depth(self) -> int:
        return getattr(_local, "depth", 0)

    def _begin(self, write: bool) -> lmdb.Transaction:
        shared = self._shared
        with shared.cond:
            while True:
                try:
                    txn = self.env.begin(write=write, buffers=False)
                    break
                except lmdb.MapResizedError:
                    self._resize(0)
            shared.active += 1
        _local.depth = self._depth() + 1
        return txn

    def _end(self) -> None:
        _local.depth = self._depth() - 1
        shared = self._shared
        with shared.cond:
            shared.active -= 1
            shared.cond.notify_all()

    def _resize(self, size: int) -> None:
        """Set the map size (0: adopt the file's) once no transaction of this process is open.

        Called with the condition held. A thread that itself holds a
        transaction would wait for itself: the journal never nests them.
        """
        if self._depth():
            raise RuntimeError("an LMDB transaction was opened inside another one")
        while self._shared.active:
            self._shared.cond.wait()
        self.env.set_mapsize(size)

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in one write transaction, growing the map as needed."""
        if self.readonly:
            raise JournalError("the journal is open read-only here (a read-only mount or copy?)")
        while True:
            txn = self._begin(write=True)
            try:
                result = fn(txn)
                txn.commit()
                return result
            except lmdb.MapFullError:
                _abort(txn)
                self._end()
                txn = None
                with self._shared.cond:
                    self._resize(self.env.info()["map_size"] * 2)
            except BaseException:
                _abort(txn)
                raise
            finally:
                if txn is not None:
                    self._end()

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction that survives another process growing the map."""
        txn = self._begin(write=False)
        try:
            yield txn
        except lmdb.Error as exc:
            # LMDB's own checks found a damaged page (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, ...)
            raise CorruptJournal(f"the index is damaged ({str(exc).splitlines()[0]}); {REINDEX_HINT}") from None
        except struct.error:
            # an entry whose key or value has the wrong size: its length field was damaged
            raise CorruptJournal(f"the index is damaged (an entry of the wrong size); {REINDEX_HINT}") from None
        finally:
            txn.abort()
            self._end()

    def db(self, name: str) -> Any:
        return self.dbs[name]

    def check_tree(self, *, full: bool = False) -> None:
        """Check the LMDB tree itself before a walk (see :mod:`journal.lmdbcheck`).

        Inside a read transaction, so the writer reuses no page of the
        snapshot while it is checked.
        """
        from journal import lmdbcheck

        for _attempt in range(5):
            with self.read() as txn:
                try:
                    lmdbcheck.check_tree(Path(self.env.path()), txn.id(), full=full)
                    return
                except lmdbcheck.StaleSnapshot:
                    continue
        raise CorruptJournal(f"the index's meta pages name no transaction this reader can see; {REINDEX_HINT}")

    def prefetch(self) -> None:
        """Read the data file once, front to back, before a walk over most of it.

        The environment is opened with readahead off (``MADV_RANDOM``), right
        for the point lookups of ``read``, ``points`` and the TUI; a restore's
        walk over every block entry then faults the file in 4 KiB at a time:
        0.78 s for a 49 MB index with a cold cache, against 0.04 s to read it
        sequentially first. Skipped where the file would crowd out more than a
        quarter of the memory the system has available.
        """
        path = os.path.join(self.env.path(), "data.mdb")
        try:
            with open(path, "rb", buffering=0) as f:
                if os.fstat(f.fileno()).st_size > _available_memory() // 4:
                    return
                buf = bytearray(4 << 20)
                while f.readinto(buf):
                    pass
        except OSError:
            return  # only a speed-up: the walk reports a real problem itself

    # -------------------------------------------------------------------- meta

    def get_meta(self, txn: lmdb.Transaction, key: str, default: Any = None) -> Any:
        """A meta value, checked; ``default`` when the key is absent."""
        k = key.encode()
        raw = txn.get(k, db=self.dbs["meta"])
        if raw is None:
            return default
        return msgpack.unpackb(unseal("meta", k, raw))

    def require_meta(self, txn: lmdb.Transaction, key: str) -> Any:
        """A meta value that every journal has: its absence is damage."""
        value = self.get_meta(txn, key, _MISSING)
        if value is _MISSING:
            raise CorruptJournal(f"the index has no '{key}' value; {REINDEX_HINT}")
        return value

    def put_meta(self, txn: lmdb.Transaction, key: str, value: Any) -> None:
        k = key.encode()
        txn.put(k, seal(k, msgpack.packb(value)), db=self.dbs["meta"])

    def size_bytes(self) -> int:
        """Bytes the index uses on disk (the data file, not the map).

        Asked inside a counted transaction: the environment must not be
        resized by another thread of the process while it answers.
        """
        with self.read():
            return self.env.info()["last_pgno"] * self.env.stat()["psize"]

    def close(self) -> None:
        """Drop this user of the environment; the last one closes it."""
        with _OPEN_LOCK:
            if self._shared is None:
                return
            self._shared.users -= 1
            if self._shared.users == 0:
                _OPEN.pop(self._key, None)
                self.env.close()
            self._shared = None


_MISSING = object()


def _abort(txn: lmdb.Transaction) -> None:
    """Abort a transaction that a failed commit may already have ended."""
    try:
        txn.abort()
    except lmdb.Error:
        pass


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo in bytes (0 where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
