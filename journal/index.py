"""The LMDB half of the journal: small values, short transactions.

This module owns the environment and its growth. A write transaction that
hits the end of the map is aborted, the map doubled and the transaction run
again, so no MapFullError reaches a user; a reader whose map was grown by
another process adopts the new size and retries. Every transaction is opened
for one call and closed at its end, so a reader (the TUI) never pins pages
the writer wants to reuse.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TypeVar

import lmdb
import msgpack

T = TypeVar("T")

DB_NAMES = ("meta", "seq", "time", "blocks", "zext", "points", "umarks", "windows", "activity")
_INITIAL_MAP = 64 << 20


class _Shared:
    """One environment per path per process: LMDB's locks break if opened twice."""

    def __init__(self, env: lmdb.Environment, dbs: dict[str, Any]) -> None:
        self.env = env
        self.dbs = dbs
        self.users = 0


_OPEN: dict[str, _Shared] = {}
_OPEN_LOCK = threading.Lock()


class Index:
    """An open LMDB environment with the journal's named databases."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self._key = os.path.realpath(path)
        with _OPEN_LOCK:
            shared = _OPEN.get(self._key)
            if shared is None:
                if not create and not (Path(path) / "data.mdb").exists():
                    raise lmdb.Error(f"{path}/data.mdb: no such file")
                env = lmdb.open(
                    str(path), map_size=_INITIAL_MAP, max_dbs=len(DB_NAMES) + 1, subdir=True,
                    create=create, readahead=False, max_readers=256)
                dbs: dict[str, Any] = {}
                with env.begin(write=True) as txn:
                    for name in DB_NAMES:
                        dbs[name] = env.open_db(name.encode(), txn=txn, create=True)
                shared = _OPEN[self._key] = _Shared(env, dbs)
            shared.users += 1
        self._shared = shared
        self.env = shared.env
        self.dbs = shared.dbs

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in one write transaction, growing the map as needed."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction that survives another process growing the map."""
        while True:
            try:
                txn = self.env.begin(buffers=False)
                break
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
        try:
            yield txn
        finally:
            txn.abort()

    def db(self, name: str) -> Any:
        return self.dbs[name]

    def get_meta(self, txn: lmdb.Transaction, key: str, default: Any = None) -> Any:
        raw = txn.get(key.encode(), db=self.dbs["meta"])
        return default if raw is None else msgpack.unpackb(raw)

    def put_meta(self, txn: lmdb.Transaction, key: str, value: Any) -> None:
        txn.put(key.encode(), msgpack.packb(value), db=self.dbs["meta"])

    def size_bytes(self) -> int:
        """Bytes the index uses on disk (the data file, not the map)."""
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
