"""The LMDB half of the journal: small values, short transactions.

This module owns the environment and its growth. A write transaction that
hits the end of the map is aborted, the map doubled and the transaction run
again, so no MapFullError reaches a user; a reader whose map was grown by
another process adopts the new size and retries. Every transaction is opened
for one call and closed at its end, so a reader (the TUI) never pins pages
the writer wants to reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TypeVar

import lmdb
import msgpack

T = TypeVar("T")

DB_NAMES = ("meta", "seq", "time", "blocks", "zext", "points", "umarks", "windows", "activity")
_INITIAL_MAP = 64 << 20


class Index:
    """An open LMDB environment with the journal's named databases."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.env = lmdb.open(
            str(path), map_size=_INITIAL_MAP, max_dbs=len(DB_NAMES) + 1, subdir=True,
            create=create, readahead=False, max_readers=256)
        self.dbs: dict[str, Any] = {}
        with self.env.begin(write=True) as txn:
            for name in DB_NAMES:
                self.dbs[name] = self.env.open_db(name.encode(), txn=txn, create=True)

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
        self.env.close()
