"""A structural check of the index's LMDB file, made before LMDB walks it.

LMDB trusts its own pages: a leaf page whose header was zeroed or flipped
stops the process with an assertion (``IS_LEAF(mp)`` failed in
``mdb_cursor_next``: SIGABRT, exit 134) instead of an error, and a node
offset past its page can make it read garbage. The sealed entries catch
damage to keys and values (:mod:`journal.index`), not to the tree that
holds them. So before a restore walks the block index, and in `cdp
verify`, the tree is checked here against LMDB's on-disk format (0.9, the
layout py-lmdb builds): from the meta page of the caller's read
transaction, every page reachable from the main and free databases and
from each named database must carry its own page number, be a branch or
a leaf at the depth its database records, have its node offsets inside
the page, and be reached once. Damage is one :class:`CorruptJournal`
line that points at ``cdp reindex``.

Written here rather than taken from a library: no maintained Python
package reads LMDB's page format, and LMDB's own ``mdb_stat``/``mdb_dump``
walk the tree with the same assertions. The check reads page headers and
branch nodes only (a few microseconds a page: tens of milliseconds for a
50 MB index); ``full=True`` (verify, export) also bounds every leaf node
and holds each leaf's nodes to the bytes they fill. LMDB keeps a page's
nodes packed from its ``upper`` bound to its end, so a node whose pointer
was lost (a flipped bit of ``lower`` drops the last one) shows as bytes
no pointer reaches: the one damage that would hide an entry without any
seal failing. A restore catches that by its counts; a ranged read (an
export) cannot, so it checks in full before it serves.

The caller holds a read transaction for the whole check, so the writer
cannot reuse a page of the snapshot being checked while it is read.
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
from pathlib import Path

from journal.errors import REINDEX_HINT, CorruptJournal

_PAGE_HDR = struct.Struct("<QHHHH")      # pgno, pad, flags, lower, upper
_NODE = struct.Struct("<HHHH")           # lo, hi, flags, ksize
_DB = struct.Struct("<IHHQQQQQ")         # pad (psize in a meta), flags, depth, branch, leaf, overflow, entries, root
_META_HEAD = struct.Struct("<II")        # magic, version (after the page header)
_LAST = struct.Struct("<QQ")             # last_pg, txnid
PAGE_HDR = 16
NODE_HDR = 8
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2, P_SUBP = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
P_INVALID = (1 << 64) - 1
MAGIC = 0xBEEFC0DE


def _damage(what: str) -> CorruptJournal:
    return CorruptJournal(f"the index is damaged ({what}); {REINDEX_HINT}")


class _Meta:
    def __init__(self, psize: int, last_pg: int, free: tuple, main: tuple) -> None:
        self.psize = psize
        self.last_pg = last_pg
        self.free = free
        self.main = main


def _meta(m: mmap.mmap, txnid: int) -> _Meta:
    """The meta page written by transaction ``txnid`` (the caller's snapshot)."""
    psize = _DB.unpack_from(m, PAGE_HDR + 24)[0]
    if psize not in (4096, 8192, 16384, 32768, 65536):
        raise _damage(f"meta page size {psize}")
    for page in (0, 1):
        base = page * psize + PAGE_HDR
        if base + 8 + 2 * _DB.size + _LAST.size > len(m):
            continue
        magic, _version = _META_HEAD.unpack_from(m, base)
        if magic != MAGIC:
            continue
        free = _DB.unpack_from(m, base + 24)
        main = _DB.unpack_from(m, base + 24 + _DB.size)
        last_pg, meta_txnid = _LAST.unpack_from(m, base + 24 + 2 * _DB.size)
        if meta_txnid == txnid:
            return _Meta(psize, last_pg, free, main)
    raise StaleSnapshot


class StaleSnapshot(Exception):
    """Neither meta page is the snapshot's any more (two commits since it began): try again."""


def check_tree(path: Path, txnid: int, *, full: bool = False) -> None:
    """Check the tree of snapshot ``txnid`` of the environment in directory ``path``.

    Raises :class:`CorruptJournal` on damage, :class:`StaleSnapshot` (caught by
    :func:`journal.index.Index.check_tree`) if the snapshot's meta page was
    already overwritten.
    """
    with open(path / "data.mdb", "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise _damage("an empty data file")
        m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    try:
        meta = _meta(m, txnid)
        if (meta.last_pg + 1) * meta.psize > size:
            raise _damage(f"the data file is shorter than page {meta.last_pg}")
        seen: set[int] = set()
        _walk(m, meta, "free", meta.free, seen, full, named=False)
        _walk(m, meta, "main", meta.main, seen, full, named=True)
    finally:
        m.close()


def _walk(m: mmap.mmap, meta: _Meta, name: str, db: tuple, seen: set[int], full: bool, *, named: bool) -> None:
    """Every page of one database's tree; the main database's leaves name the others."""
    _pad, _flags, depth, _branch, _leaf, _overflow, entries, root = db
    if root == P_INVALID:
        if entries:
            raise _damage(f"database {name!r} has {entries} entries and no root page")
        return
    psize, last_pg = meta.psize, meta.last_pg
    stack = [(root, 1)]
    while stack:
        pgno, level = stack.pop()
        if not 2 <= pgno <= last_pg:
            raise _damage(f"database {name!r} points to page {pgno}, outside pages 2..{last_pg}")
        if pgno in seen:
            raise _damage(f"page {pgno} is reached twice")
        seen.add(pgno)
        base = pgno * psize
        own, _pad2, flags, lower, upper = _PAGE_HDR.unpack_from(m, base)
        kind = flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP)
        if own != pgno:
            raise _damage(f"page {pgno} says it is page {own}")
        if kind not in (P_BRANCH, P_LEAF):
            raise _damage(f"page {pgno} of database {name!r} is neither a branch nor a leaf (flags {flags:#x})")
        if not (PAGE_HDR <= lower <= upper <= psize) or (lower - PAGE_HDR) % 2:
            raise _damage(f"page {pgno} has bounds {lower}..{upper}")
        count = (lower - PAGE_HDR) // 2
        if count == 0 or (kind == P_LEAF) != (level == depth) or level > depth:
            raise _damage(f"page {pgno} of database {name!r} does not fit its tree (level {level} of {depth}, "
                          f"{count} nodes)")
        ptrs = _pointers(count).unpack_from(m, base + PAGE_HDR)
        # one sorted() is cheaper than min() and max() here: a page's pointers come in long
        # descending runs, which timsort takes in one pass (the check's hot line, once a page)
        low_high = sorted(ptrs)
        if low_high[0] < upper or low_high[-1] > psize - NODE_HDR:
            raise _damage(f"page {pgno} has a node outside it")
        if kind == P_BRANCH:
            used = 0
            for ptr in ptrs:
                lo, hi, nflags, ksize = _NODE.unpack_from(m, base + ptr)
                if ptr + NODE_HDR + ksize > psize:
                    raise _damage(f"page {pgno} has a key past its end")
                used += (NODE_HDR + ksize + 1) & ~1
                stack.append((lo | hi << 16 | nflags << 32, level + 1))
            if used != psize - upper:
                raise _damage(f"page {pgno} holds {psize - upper} bytes of nodes but its pointers reach {used}")
        elif named or full:
            used = 0  # bytes of the nodes: LMDB keeps them packed from ``upper`` to the page's end
            for ptr in ptrs:
                lo, hi, nflags, ksize = _NODE.unpack_from(m, base + ptr)
                dsize = lo | hi << 16
                start = ptr + NODE_HDR + ksize
                if nflags & F_BIGDATA:
                    if start + 8 > psize:
                        raise _damage(f"page {pgno} has a value past its end")
                    _overflow_pages(m, meta, struct.unpack_from("<Q", m, base + start)[0], dsize, seen)
                    dsize = 8
                elif start + dsize > psize:
                    raise _damage(f"page {pgno} has a value past its end")
                used += (NODE_HDR + ksize + dsize + 1) & ~1
                if nflags & F_DUPDATA:
                    raise _damage(f"page {pgno} holds duplicate-sorted data, which the journal never writes")
                if named and nflags & F_SUBDATA:
                    if dsize != _DB.size:
                        raise _damage(f"page {pgno} has a database record of {dsize} bytes")
                    sub = bytes(m[base + ptr + NODE_HDR:base + ptr + NODE_HDR + ksize]).decode("utf-8", "replace")
                    _walk(m, meta, sub, _DB.unpack_from(m, base + start), seen, full, named=False)
            if used != psize - upper:
                # a node lost from the pointer array (a flipped ``lower``) or a moved ``upper``:
                # an entry LMDB would silently not see
                raise _damage(f"page {pgno} holds {psize - upper} bytes of nodes but its pointers reach {used}")


@functools.cache
def _pointers(count: int) -> struct.Struct:
    """The compiled layout of a page's ``count`` node pointers (a few hundred counts occur)."""
    return struct.Struct(f"<{count}H")


def _overflow_pages(m: mmap.mmap, meta: _Meta, pgno: int, dsize: int, seen: set[int]) -> None:
    """The run of overflow pages that holds one big value."""
    pages = (PAGE_HDR + dsize + meta.psize - 1) // meta.psize
    if not 2 <= pgno or pgno + pages - 1 > meta.last_pg:
        raise _damage(f"a big value points to pages {pgno}..{pgno + pages - 1}, outside pages 2..{meta.last_pg}")
    own, _pad, flags, _lo, _up = _PAGE_HDR.unpack_from(m, pgno * meta.psize)
    if own != pgno or not flags & P_OVERFLOW:
        raise _damage(f"overflow page {pgno} is not one")
    for p in range(pgno, pgno + pages):
        if p in seen:
            raise _damage(f"page {p} is reached twice")
        seen.add(p)
