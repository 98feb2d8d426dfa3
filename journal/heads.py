"""A checkpoint of the block map: every block's newest version at one seq.

Why it exists: a restore's walk over the block index visits every entry at
or below its point (their count against the records' running totals is
what catches an entry lost with a damaged page), so restoring the present
costs the whole history. The checkpoint holds, for every block that has a
version at or below its seq C, that version (where its bytes lie and their
CRC-32C): a restore at T >= C reads one head per block, plus the entries of
the records in (C, T] fetched by exact key, and costs what its answer
costs (:func:`journal.restore.restore_to` picks whichever way is cheaper).

Why it can be trusted as much as the walk:

- every head is sealed like every index entry (key: the block);
- ``meta['heads']`` holds C, how many heads there are and the sum of their
  seals (mod 2^64): a head lost with a damaged page changes the count, a
  stale or altered one the sum, and a restore holds both against what it read;
- a head whose version is partial (or meets a newer zeroing extent) is
  composed from the block's older versions, read from the block index: the
  head holds how many versions that chain at C has and the sum of their
  seals, so a version lost from that chain is found too;
- a *build* walks every block entry at or below C with the restore walk's
  checks (seals, order, the device's end, and the count against the
  records' running total at C); an *advance* takes the entries of each
  record in (C, C'] by exact key, and a record must have exactly the
  entries its running total says (:func:`records_after`);
- only a compaction and a reindex change entries at or below C: a
  compaction's first step drops the checkpoint and none is built while one
  is in progress; a reindex makes a new index and builds one.

Kept by the process that appends, in the background (the Retainer thread
of :mod:`journal.maintain`), one short write transaction a step
(:func:`step`), so the drain waits at most one step. A journal nobody
maintains just has an older checkpoint or none, and restores walk.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lmdb

from journal.blockmap import versions_back
from journal.errors import REINDEX_HINT, CorruptJournal
from journal.format import BLOCK, BLOCK_VAL, FULL_MASK, HEAD_VAL, SEQ_VAL, U64, U64X2
from journal.index import Index, check, damaged, seal, unseal
from journal.reader import JournalReader

HEADS_META = "heads"
#: journal.compact's meta key of a compaction in progress (compact imports this module, not the reverse).
COMPACTION_META = "compaction"
_VAL_AT = 8  # where the BLOCK_VAL fields start in a head
_SEAL_AT = HEAD_VAL.size
_U32 = struct.Struct("<I")
_MOD = 1 << 64
#: Block entries one build step walks, and one advance step takes, in one write transaction.
BUILD_STEP = 1 << 16
ADVANCE_STEP = 1 << 14
#: Entries appended since the checkpoint before it is moved on: each move costs a few
#: microseconds an entry, and a restore of the present reads at most this many more.
MIN_LAG = 1 << 15


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``meta['heads']``: where the checkpoint stands."""

    seq: int
    #: Heads in the table, and the sum of their seals mod 2^64.
    count: int
    total: int
    #: Zero-extent entries at or below ``seq`` (a restore holds the table's own to it).
    zext: int
    #: While a build is under way: the first block it has not walked, and entries it counted.
    next_block: int | None = None
    seen: int = 0

    @property
    def complete(self) -> bool:
        return self.next_block is None

    def to_meta(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"seq": self.seq, "count": self.count, "total": self.total, "zext": self.zext}
        if self.next_block is not None:
            doc.update(next_block=self.next_block, seen=self.seen)
        return doc


def state(index: Index, txn: lmdb.Transaction) -> Checkpoint | None:
    """The checkpoint's state, or None (no table, none built, or being rebuilt from nothing)."""
    if HEADS_META not in index.dbs:
        return None
    doc = index.get_meta(txn, HEADS_META)
    if doc is None:
        return None
    try:
        return Checkpoint(int(doc["seq"]), int(doc["count"]), int(doc["total"]), int(doc["zext"]),
                          None if doc.get("next_block") is None else int(doc["next_block"]),
                          int(doc.get("seen", 0)))
    except (KeyError, TypeError, ValueError):
        raise CorruptJournal(f"the index's checkpoint state is not one; {REINDEX_HINT}") from None


def drop(index: Index, txn: lmdb.Transaction) -> None:
    """Forget the checkpoint (a compaction is about to change what it was made of)."""
    if HEADS_META in index.dbs:
        txn.drop(index.db(HEADS_META), delete=False)
        txn.delete(HEADS_META.encode(), db=index.db("meta"))


def head_seal(raw: bytes) -> int:
    """The seal of a head's value: what the checkpoint's sum adds up."""
    return _U32.unpack_from(raw, _SEAL_AT)[0]


def entry_seal(raw: bytes) -> int:
    """The seal of a block entry's value (its last four bytes): what a chain's sum adds up."""
    return _U32.unpack_from(raw, len(raw) - 4)[0]


def block_val(raw: bytes) -> bytes:
    """A head's version as a block entry's value (for the code that reads block entries)."""
    return raw[_VAL_AT:_VAL_AT + BLOCK_VAL.size]


def chain(raw: bytes) -> tuple[int, int]:
    """(versions, sum of seals) of the chain a head's block is composed from at the checkpoint."""
    _seq, *_val, depth, total = HEAD_VAL.unpack_from(raw)
    return depth, total


def chain_of(cur: Any, block: int, seq: int) -> tuple[int, int]:
    """(versions, sum of seals) of what a composed read of ``block`` at ``seq`` takes (``versions_back``)."""
    total = 0
    versions = versions_back(cur, block, seq)
    for v in versions:
        key = U64X2.pack(block, v.seq)
        total += _U32.unpack_from(seal(key, BLOCK_VAL.pack(*v[1:])), BLOCK_VAL.size)[0]
    return len(versions), total % _MOD


def make_head(block: int, vseq: int, entry: bytes, depth: int, total: int) -> tuple[bytes, bytes]:
    """The sealed heads entry for ``block``'s version ``vseq`` (``entry``: its sealed block value)."""
    key = U64.pack(block)
    fields = BLOCK_VAL.unpack_from(entry)
    return key, seal(key, HEAD_VAL.pack(vseq, *fields, depth, total))


def records_after(journal: JournalReader, txn: lmdb.Transaction, after: int,
                  upto: int) -> Iterator[tuple[int, list[tuple[int, bytes]], bool]]:
    """Each record in (``after``, ``upto``]: its seq, its block entries (block, sealed value), and
    whether it has a zero-extent entry.

    The entries are fetched by exact key over the blocks the record's range
    touches (one entry a block: how the append indexes a record), and a
    record must have exactly as many as its running total adds: an entry
    lost, or one the running total does not know, is :class:`CorruptJournal`.
    """
    index = journal.index
    prev = journal.expected_counts(txn, after)[0]
    dropped_above = index.get_meta(txn, "dropped_above", 0)
    dropped = index.get_meta(txn, "entries_dropped", 0)
    nblocks = journal.info.index_blocks
    blocks_db, zext_db = index.db("blocks"), index.db("zext")
    get = txn.get
    cur = txn.cursor(db=index.db("seq"))
    if not cur.set_range(U64.pack(after + 1)):
        return
    for key, raw in cur.iternext():
        seq = U64.unpack(key)[0]
        if seq > upto:
            return
        val = SEQ_VAL.unpack_from(unseal("seq", key, raw))
        entries = val[8] - (dropped if seq > dropped_above else 0)
        added, prev = entries - prev, entries
        has_zext = get(key, db=zext_db) is not None
        added -= has_zext
        found: list[tuple[int, bytes]] = []
        if added:
            offset, length = val[3], val[4]
            first, last = offset // BLOCK, (offset + max(length, 1) - 1) // BLOCK
            if added != last - first + 1 or last >= nblocks:
                raise CorruptJournal(f"record seq {seq} should have {added} block entries, its range "
                                     f"{offset}+{length} touches {last - first + 1}; {REINDEX_HINT}")
            for block in range(first, last + 1):
                bkey = U64X2.pack(block, seq)
                braw = get(bkey, db=blocks_db)
                if braw is None:
                    raise CorruptJournal(f"the index lost the entry of block {block} of record seq {seq}; "
                                         f"{REINDEX_HINT}")
                if not check(bkey, braw):
                    raise damaged("blocks", bkey)
                found.append((block, braw))
        yield seq, found, has_zext


def step(journal: JournalReader, min_lag: int | None = None) -> bool:
    """Build or move the checkpoint by one bounded step; whether there is more to do now.

    Nothing while a compaction is in progress (it changes what a
    checkpoint is made of) or on a read-only index.
    """
    index = journal.index
    if index.readonly or HEADS_META not in index.dbs:
        return False

    def work(txn: lmdb.Transaction) -> bool:
        if index.get_meta(txn, COMPACTION_META) is not None:
            return False
        cp = state(index, txn)
        if cp is None or not cp.complete:
            return _build(journal, txn, cp)
        return _advance(journal, txn, cp, MIN_LAG if min_lag is None else min_lag)

    return index.write(work)


def bring_up_to_date(journal: JournalReader, min_lag: int | None = None) -> None:
    """Run steps until the checkpoint is complete and within ``min_lag`` entries of the newest record.

    ``min_lag`` defaults to :data:`MIN_LAG`; 1 moves it onto the newest record
    with entries (a test, a benchmark, the end of a reindex).
    """
    while step(journal, min_lag):
        pass


def newest_at(txn: lmdb.Transaction, blocks_db: Any, at: int, start: int,
              nblocks: int) -> Iterator[tuple[int, int, bytes, int, int, int]]:
    """What the heads from block ``start`` on should be, from a walk of the block index.

    For each block with a version at or below ``at``: (block, that version's
    seq, its sealed entry, the versions and sum of seals of its chain, the
    block's entries at or below ``at``). Every entry at or below ``at`` is
    checked like a restore's walk checks it (seal, order, the device's end);
    a block's later versions are left with one seek.
    """
    cur = txn.cursor(db=blocks_db)
    group = -1
    seals: list[int] = []   # the block's versions at or below ``at``, oldest first
    masks: list[int] = []
    top = b""
    top_seq = -1
    prev_key = b""

    def settled() -> tuple[int, int, bytes, int, int, int]:
        depth = sealed = mask = 0
        for s, m in zip(reversed(seals), reversed(masks)):
            depth += 1
            sealed += s
            mask |= m
            if mask == FULL_MASK:
                break
        return group, top_seq, top, depth, sealed % _MOD, len(seals)

    ok = cur.set_range(U64X2.pack(start, 0))
    while ok:
        key = cur.key()
        block, vseq = U64X2.unpack(key)
        if block != group:
            if seals:
                yield settled()
            if block >= nblocks:
                raise CorruptJournal(f"the index has an entry for block {block}, past the device's {nblocks}; "
                                     f"{REINDEX_HINT}")
            group, seals, masks = block, [], []
        if vseq > at:
            ok = cur.set_range(U64X2.pack(block + 1, 0))  # the block's later versions: not the checkpoint's
            continue
        raw = cur.value()
        if not check(key, raw):
            raise damaged("blocks", key)
        if key <= prev_key:
            raise CorruptJournal(f"the index's block entries are out of order at key {key.hex()}; {REINDEX_HINT}")
        prev_key = key
        seals.append(entry_seal(raw))
        masks.append(BLOCK_VAL.unpack_from(raw)[2])
        top, top_seq = raw, vseq
        ok = cur.next()
    if seals:
        yield settled()


def _build(journal: JournalReader, txn: lmdb.Transaction, cp: Checkpoint | None) -> bool:
    """One step of a build: the heads of the blocks holding the next :data:`BUILD_STEP` entries or so.

    The step that reaches the last block holds the entries it counted, with
    the zero extents, to the records' running total at the checkpoint's seq:
    a lost entry fails the build (every step after fails the same way, and
    restores walk, until a reindex).
    """
    index = journal.index
    heads_db = index.db(HEADS_META)
    if cp is None:
        txn.drop(heads_db, delete=False)
        cp = Checkpoint(index.require_meta(txn, "last_seq"), 0, 0, 0, 0, 0)
    at = cp.seq
    nblocks = journal.info.index_blocks
    count, total, seen = cp.count, cp.total, cp.seen
    heads = txn.cursor(db=heads_db)
    walked = 0
    for block, top_seq, top, depth, sealed, entries in newest_at(txn, index.db("blocks"), at, cp.next_block or 0,
                                                                 nblocks):
        key, value = make_head(block, top_seq, top, depth, sealed)
        heads.put(key, value, append=True)
        count += 1
        total = (total + head_seal(value)) % _MOD
        seen += entries
        walked += entries
        if walked >= BUILD_STEP:
            index.put_meta(txn, HEADS_META, Checkpoint(at, count, total, 0, block + 1, seen).to_meta())
            return True
    zext = sum(1 for key, _raw in txn.cursor(db=index.db("zext")) if U64.unpack(key)[0] <= at)
    expected = journal.expected_counts(txn, at)[0]
    if seen + zext != expected:
        raise CorruptJournal(f"the index holds {seen + zext} block entries at or below seq {at} where its "
                             f"records count {expected}; {REINDEX_HINT}")
    index.put_meta(txn, HEADS_META, Checkpoint(at, count, total, zext).to_meta())
    return True


def _advance(journal: JournalReader, txn: lmdb.Transaction, cp: Checkpoint, min_lag: int) -> bool:
    """Move a complete checkpoint on over up to :data:`ADVANCE_STEP` entries' worth of records."""
    index = journal.index
    last = index.require_meta(txn, "last_seq")
    lag = journal.expected_counts(txn, last)[0] - journal.expected_counts(txn, cp.seq)[0]
    if last <= cp.seq or lag < min_lag:
        return False
    newest: dict[int, tuple[int, bytes]] = {}
    taken = 0
    at = cp.seq
    zext = cp.zext
    for seq, entries, has_zext in records_after(journal, txn, cp.seq, last):
        for block, raw in entries:
            newest[block] = (seq, raw)
        taken += len(entries)
        zext += has_zext
        at = seq
        if taken >= ADVANCE_STEP:
            break
    heads_db = index.db(HEADS_META)
    blocks = txn.cursor(db=index.db("blocks"))
    count, total = cp.count, cp.total
    for block, (seq, raw) in newest.items():
        key = U64.pack(block)
        old = txn.get(key, db=heads_db)
        if old is not None:
            if not check(key, old):
                raise damaged(HEADS_META, key)
            total -= head_seal(old)
        else:
            count += 1
        depth, sealed = (1, entry_seal(raw)) if BLOCK_VAL.unpack_from(raw)[2] == FULL_MASK \
            else chain_of(blocks, block, at)
        _key, value = make_head(block, seq, raw, depth, sealed % _MOD)
        txn.put(key, value, db=heads_db)
        total = (total + head_seal(value)) % _MOD
    index.put_meta(txn, HEADS_META, Checkpoint(at, count, total, zext).to_meta())
    return True



def verify_heads(journal: JournalReader) -> str | None:
    """What is wrong with a complete checkpoint against the block index it was made from (None: nothing).

    For `cdp verify`: every head recomputed from a walk of the block index.
    """
    index = journal.index
    nblocks = journal.info.index_blocks
    with index.read() as txn:
        cp = state(index, txn)
        if cp is None or not cp.complete:
            return None
        stored = txn.cursor(db=index.db(HEADS_META)).iternext()
        count = total = 0
        for block, top_seq, top, depth, sealed, _n in newest_at(txn, index.db("blocks"), cp.seq, 0, nblocks):
            key, value = make_head(block, top_seq, top, depth, sealed)
            got = next(stored, None)
            if got is None or got[0] != key or got[1] != value:
                return f"the checkpoint at seq {cp.seq} does not hold block {block}'s version at that seq"
            count += 1
            total += head_seal(value)
        extra = next(stored, None)
        if extra is not None:
            return f"the checkpoint at seq {cp.seq} holds a head no version at that seq accounts for"
        if count != cp.count or total % _MOD != cp.total:
            return f"the checkpoint at seq {cp.seq} counted {cp.count} heads, or their seals, wrong"
    return None
