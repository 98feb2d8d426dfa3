"""One append's framing and index entries, built before anything is written.

``Journal.append`` hands each record to a :class:`Batch`: the batch frames
it for the segment (header + payload views, no copy) and gathers the index
entries it implies (seq, time, block versions, zero extents, points,
overflow windows, activity). The segment write, its sync and the one LMDB
transaction that commits the entries are the journal's job; a batch only
computes, so a failure before the commit leaves nothing behind.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import crc32c
import lmdb
import msgpack

from journal.blockcrc import block_crcs
from journal.codec import Encoded, Encoder
from journal.errors import JournalError, OutOfRange
from journal.format import (
    BIG_ZERO,
    BLOCK,
    BLOCK_VAL,
    ENC_PIECES,
    FULL_MASK,
    KIND_DATA,
    KIND_ZERO,
    REC_HDR,
    SECTOR,
    SEQ_VAL,
    U64,
    U64X2,
)
from journal.index import Index, seal, unseal
from journal.points import MAX_MARK_NAME, OverflowWindow
from journal.records import DATA_TYPES, ZERO_TYPES, PointKind, Record, RecordFlag, RecordType
from journal.units import NS
from journal.segments import pack_header

_KNOWN_TYPES = frozenset(int(t) for t in RecordType)
#: FOLD record flags: a zeroing block version (no payload), a big zeroing extent.
FOLD_ZERO = 1
FOLD_EXTENT = 2
_HDR = REC_HDR.size
_crc = crc32c.crc32c
_pack_u64 = U64.pack
_pack_u64x2 = U64X2.pack
_pack_seq = SEQ_VAL.pack
_pack_u32 = struct.Struct("<I").pack


@dataclass(slots=True)
class AppendState:
    """What the writer knows between batches: the committed end of the history."""

    last_seq: int
    last_ts: int
    records: int
    data_bytes: int
    #: Block and zero-extent entries at or below last_seq, the baseline's included.
    entries: int = 0
    #: OVERFLOW records at or below last_seq.
    overflows: int = 0
    #: Overflow windows no resync has closed yet, by the OVERFLOW record's seq.
    open_windows: dict[int, OverflowWindow] = field(default_factory=dict)

    def advance(self, batch: Batch) -> None:
        """Take in a batch that was committed."""
        self.last_seq, self.last_ts = batch.last_seq, batch.last_ts
        self.records += batch.count
        self.data_bytes += batch.data_bytes
        self.entries, self.overflows = batch.entries, batch.overflows
        for window in batch.windows.values():
            if window.resync_seq is None:
                self.open_windows[window.seq] = window
            else:
                self.open_windows.pop(window.seq, None)


class Batch:
    """Framing and index entries of one append."""

    def __init__(self, state: AppendState, device_bytes: int, seg_id: int, start: int,
                 encoder: Encoder | None = None) -> None:
        self.state = state
        #: Encodes data records' payloads (journal.codec); None stores them as given (reindex, compression off).
        self.encoder = encoder
        self.device = device_bytes
        self.seg = seg_id
        self.start = self.pos = start
        self.last_seq = state.last_seq
        self.last_ts = state.last_ts
        self.count = 0
        self.data_bytes = 0
        self.entries = state.entries
        self.overflows = state.overflows
        #: running total once the batch's baseline entries are in (None: it has none)
        self.base_entries: int | None = None
        #: seq -> block/zext entries it adds, filled as entries are built
        self.entry_counts: dict[int, int] = {}
        #: the seq entries' fields but the running totals, until build_blocks counts them
        self.records: list[tuple[int, int, int, int, int, int, int, int]] = []
        self.buffers: list[bytes | memoryview] = []
        self.seq_items: list[tuple[bytes, bytes]] = []
        self.time_items: list[tuple[bytes, bytes]] = []
        self.block_items: list[tuple[bytes, bytes]] = []
        #: block and extent entries of FOLD records: they replace entries that exist (not counted)
        self.moved_items: list[tuple[bytes, bytes]] = []
        self.moved_zext: list[tuple[bytes, bytes]] = []
        #: (seq, offset, length, kind, payload position, data, data CRC, block CRCs, encoded pieces)
        self.pending: list[tuple[int, int, int, int, int, memoryview | None, int, list[int] | None,
                                 list[tuple[int, int, int, int]] | None]] = []
        self._second = -1
        self._bucket = [0, 0]
        self.zext_items: list[tuple[bytes, bytes]] = []
        self.point_items: list[tuple[bytes, bytes]] = []
        self.activity: dict[int, list[int]] = {}
        self.windows: dict[int, OverflowWindow] = {}

    # ----------------------------------------------------------------- framing

    def _frame(self, rtype: int, flags: int, data: memoryview, seq: int, ts: int,
               offset: int, length: int, aux: int, dcrc: int) -> int:
        """Queue the record's header and payload; returns where the record starts."""
        self.buffers.append(pack_header(rtype, flags, len(data), seq, ts, offset, length, aux, dcrc))
        if len(data):
            self.buffers.append(data)
        rec_pos = self.pos
        self.pos = rec_pos + _HDR + len(data)
        return rec_pos

    def _frame_data(self, rtype: int, flags: int, data: memoryview | None, seq: int, ts: int,
                    offset: int, length: int, aux: int, dcrc: int | None, crcs: list[int] | None,
                    stored: Encoded | None) -> tuple[int, int]:
        """Frame a data record, its pieces encoded where that saves space; queue its block entries.

        ``stored``: the payload as a segment already holds it (reindex), framed
        as it is. Returns (record position, stored payload length).
        """
        if stored is None and self.encoder is not None:
            stored = self.encoder.encode(offset, length, data, crcs)
        if stored is None:
            if dcrc is None:
                dcrc = _crc(data)
            rec_pos = self._frame(rtype, flags, data, seq, ts, offset, length, aux, dcrc)
            self.pending.append((seq, offset, length, KIND_DATA, rec_pos + _HDR, data, dcrc, crcs, None))
            return rec_pos, length
        rec_pos = self.pos
        self.buffers.append(pack_header(rtype, flags, stored.size, seq, ts, offset, length, aux, stored.crc,
                                        ENC_PIECES))
        self.buffers.extend(stored.buffers)
        self.pos = rec_pos + _HDR + stored.size
        self.pending.append((seq, offset, length, KIND_DATA, rec_pos + _HDR, None, 0, None, stored.pieces))
        return rec_pos, stored.size

    def _index_record(self, seq: int, ts: int, rtype: int, flags: int, offset: int,
                      length: int, data_len: int, rec_pos: int) -> None:
        """The seq and time entries every record gets, and the batch's running end.

        The seq entry is packed by :meth:`build_blocks`, once the running
        totals it carries are known.
        """
        self.records.append((seq, rec_pos, ts, offset, length, data_len, rtype, flags))
        tkey = _pack_u64x2(ts, seq)
        self.time_items.append((tkey, _pack_u32(_crc(tkey))))
        self.last_seq = seq
        self.last_ts = ts
        self.count += 1

    def _count_activity(self, ts: int, length: int) -> None:
        second = ts - ts % NS
        if second != self._second:
            self._second = second
            self._bucket = self.activity.setdefault(second, [0, 0])
        self._bucket[0] += 1
        self._bucket[1] += length

    # ----------------------------------------------------------------- records

    def add_baseline(self, ts: int, offset: int, data: memoryview, stored: Encoded | None = None,
                     length: int | None = None) -> None:
        """Part of the baseline copy: seq 0, block entries only (``stored``/``length``: see :meth:`add`)."""
        self._frame_data(RecordType.BASELINE, 0, data, 0, ts, offset, len(data) if length is None else length,
                         0, None, None, stored)

    def add_note(self, ts: int, payload: memoryview) -> None:
        """A COMPACTION record: seq 0, framed only; its entries are the compaction's own work."""
        self._frame(RecordType.COMPACTION, 0, payload, 0, ts, 0, 0, 0, _crc(payload))

    def add_fold(self, vseq: int, offset: int, length: int, data: memoryview | None, crc: int,
                 *, extent: bool = False, stored: Encoded | None = None) -> None:
        """A moved version: framed, and its index entry pointed at (or made from) the copy.

        A data version carries exactly the sectors it covers inside one block;
        a zeroing version (``data`` None) only its range; a big zeroing
        extent (``extent``) is copied so a reindex finds it once the segment
        of its record is gone. The entry replaces the version's old one (same
        key), so it adds to no running total. A compressed version is moved
        as it is stored (``stored``: its frame as a one-piece ENC_PIECES
        payload, ``crc`` its device bytes' CRC), never decoded into a copy.
        """
        if stored is not None:
            rec_pos = self.pos
            self.buffers.append(pack_header(RecordType.FOLD, 0, stored.size, vseq, 0, offset, length, 0,
                                            stored.crc, ENC_PIECES))
            self.buffers.extend(stored.buffers)
            self.pos = rec_pos + _HDR + stored.size
            self._piece_entries(vseq, offset, length, rec_pos + _HDR, stored.pieces, self.moved_items)
            return
        flags = FOLD_EXTENT if extent else FOLD_ZERO if data is None else 0
        payload = data if data is not None else memoryview(b"")
        rec_pos = self._frame(RecordType.FOLD, flags, payload, vseq, 0, offset, length, 0, crc)
        if extent:
            k = _pack_u64(vseq)
            self.moved_zext.append((k, seal(k, U64X2.pack(offset, length))))
            return
        block = offset // BLOCK
        first = (offset - block * BLOCK) // SECTOR
        mask = ((1 << (length // SECTOR)) - 1) << first
        k = U64X2.pack(block, vseq)
        if data is None:
            v = BLOCK_VAL.pack(self.seg, 0, mask, KIND_ZERO, 0, 0)
        else:
            v = BLOCK_VAL.pack(self.seg, rec_pos + _HDR - first * SECTOR, mask, KIND_DATA, crc, length)
        self.moved_items.append((k, v + _pack_u32(_crc(v, _crc(k)))))

    def add(self, r: Record, stored: Encoded | None = None) -> None:
        """Frame and index one record; records at or below the last seq are skipped.

        ``stored`` is a data record's payload as a segment holds it, encoded
        (a reindex hands it back as it lies): ``r.data`` is then ignored.
        """
        if r.seq <= self.last_seq:
            return
        if r.type == RecordType.WRITE and stored is None and self._add_write(r):
            return
        self._add_checked(r, stored)

    def _add_write(self, r: Record) -> bool:
        """The hot path for a well-formed WRITE; False sends it to the checks."""
        data = r.data
        offset = r.offset
        length = r.length
        if (offset | length) & (SECTOR - 1) or length <= 0 or offset + length > self.device or len(data) != length:
            return False
        if not isinstance(data, memoryview):
            data = memoryview(data)
        ts = r.ts_ns if r.ts_ns > self.last_ts else self.last_ts
        crcs = r.block_crcs
        if crcs is not None and (offset % BLOCK or len(crcs) * BLOCK != length):
            crcs = None  # not one per 4 KiB block of this record: work them out
        rec_pos, data_len = self._frame_data(RecordType.WRITE, r.flags, data, r.seq, ts, offset, length, 0,
                                             r.data_crc, crcs, None)
        self._index_record(r.seq, ts, RecordType.WRITE, r.flags, offset, length, data_len, rec_pos)
        self.data_bytes += length
        self._count_activity(ts, length)
        return True

    def _add_checked(self, r: Record, stored: Encoded | None = None) -> None:
        """Every other record, and a WRITE the hot path turned down: check, then frame."""
        seq, rtype = r.seq, r.type
        if rtype not in _KNOWN_TYPES or rtype in (RecordType.BASELINE, RecordType.COMPACTION, RecordType.FOLD):
            raise JournalError(f"record seq {seq} has unknown type {rtype}")
        data = r.data if isinstance(r.data, memoryview) else memoryview(r.data)
        offset, length = r.offset, r.length
        if rtype in DATA_TYPES or rtype in ZERO_TYPES or rtype == RecordType.OVERFLOW:
            if offset % SECTOR or length % SECTOR or length <= 0 or offset + length > self.device:
                raise OutOfRange(f"record seq {seq} range {offset}+{length} is not sector-aligned "
                                 f"inside the device ({self.device} bytes)")
        # a RESYNC that found its range unchanged carries no payload and indexes no block
        unchanged = rtype == RecordType.RESYNC and r.flags & RecordFlag.UNCHANGED
        if unchanged and (len(data) or stored is not None):
            raise JournalError(f"record seq {seq}: an unchanged RESYNC carries a payload")
        if stored is not None and rtype not in DATA_TYPES:
            raise JournalError(f"record seq {seq}: only data records have an encoded payload")
        if rtype in DATA_TYPES and stored is None and len(data) != length and not unchanged:
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
            if len(data) > MAX_MARK_NAME:
                raise JournalError(f"record seq {seq}: mark name longer than {MAX_MARK_NAME} bytes")
        if rtype in DATA_TYPES and not unchanged:
            rec_pos, data_len = self._frame_data(rtype, r.flags, data, seq, ts, offset, length, aux,
                                                 r.data_crc, None, stored)
            self.data_bytes += length
        else:
            data_len = len(data)
            rec_pos = self._frame(rtype, r.flags, data, seq, ts, offset, length, aux, _crc(data) if data_len else 0)
        self._index_record(seq, ts, rtype, r.flags, offset, length, data_len, rec_pos)
        key = _pack_u64(seq)
        if rtype in ZERO_TYPES:
            if length >= BIG_ZERO:
                self.zext_items.append((key, seal(key, U64X2.pack(offset, length))))
                self.entry_counts[seq] = 1
            else:
                self.pending.append((seq, offset, length, KIND_ZERO, 0, None, 0, None, None))
        if rtype == RecordType.FLUSH:
            self.point_items.append((key, seal(key, msgpack.packb([PointKind.FLUSH.value, ts, ""]))))
        elif rtype == RecordType.MARK:
            self.point_items.append((key, seal(key, msgpack.packb([PointKind.MARK.value, ts, name]))))
        elif rtype == RecordType.OVERFLOW:
            self.windows[seq] = OverflowWindow(seq, aux, ts, offset, length, offset)
            self.point_items.append((key, seal(key, msgpack.packb([PointKind.OVERFLOW.value, ts, ""]))))
        elif rtype == RecordType.RESYNC:
            self._resync(seq, ts, aux, offset, length)
        if rtype == RecordType.WRITE or rtype in ZERO_TYPES:
            self._count_activity(ts, length)

    def _resync(self, seq: int, ts: int, read_ts: int, offset: int, length: int) -> None:
        """Advance every open window this copy continues; close the ones it completes."""
        pending = dict(self.state.open_windows)
        pending.update({k: w for k, w in self.windows.items() if w.resync_seq is None})
        for wseq, w in pending.items():
            if w.resync_seq is not None or wseq >= seq:
                continue
            if offset <= w.resynced_to < offset + length:
                w = OverflowWindow(w.seq, w.start_ts, w.end_ts, w.offset, w.length,
                                   max(w.resynced_to, offset + length))
                if w.resynced_to >= w.offset + w.length:
                    w.resync_seq, w.resync_ts = seq, max(read_ts, w.end_ts)
                    pkey = _pack_u64(seq)
                    self.point_items.append((pkey, seal(pkey, msgpack.packb([PointKind.RESYNC.value, ts, ""]))))
                self.windows[wseq] = w

    # ------------------------------------------------------------------ blocks

    def build_blocks(self) -> None:
        """Turn the batch's ranges into block-version entries (one per 4 KiB block), sealed.

        Then pack the seq entries, whose running totals count these entries.
        """
        items = self.block_items
        pack_key = U64X2.pack
        pack_val = BLOCK_VAL.pack
        seg = self.seg
        counts = self.entry_counts
        before = len(items)
        for seq, offset, length, kind, payload_pos, data, dcrc, crcs, pieces in self.pending:
            if pieces is not None:
                self._piece_entries(seq, offset, length, payload_pos, pieces)
            elif offset % BLOCK == 0 and length % BLOCK == 0:
                first = offset // BLOCK
                if kind == KIND_DATA and length == BLOCK:
                    k = pack_key(first, seq)
                    v = pack_val(seg, payload_pos, FULL_MASK, kind, dcrc, BLOCK)
                    items.append((k, v + _pack_u32(_crc(v, _crc(k)))))
                elif kind == KIND_DATA:
                    # the ring reader's CRCs when it handed them over, else one pass here
                    for i, c in enumerate(crcs if crcs is not None else block_crcs(data)):
                        k = pack_key(first + i, seq)
                        v = pack_val(seg, payload_pos + i * BLOCK, FULL_MASK, kind, c, BLOCK)
                        items.append((k, v + _pack_u32(_crc(v, _crc(k)))))
                else:
                    v = pack_val(seg, 0, FULL_MASK, kind, 0, 0)
                    for i in range(length // BLOCK):
                        k = pack_key(first + i, seq)
                        items.append((k, v + _pack_u32(_crc(v, _crc(k)))))
            else:
                end = offset + length
                for block in range(offset // BLOCK, (end - 1) // BLOCK + 1):
                    lo = max(offset, block * BLOCK)
                    hi = min(end, block * BLOCK + BLOCK)
                    s0 = (lo - block * BLOCK) // SECTOR
                    mask = ((1 << ((hi - lo) // SECTOR)) - 1) << s0
                    bcrc = _crc(data[lo - offset:hi - offset]) if data is not None else 0
                    pos0 = payload_pos + block * BLOCK - offset if data is not None else 0
                    k = pack_key(block, seq)
                    v = pack_val(seg, pos0, mask, kind, bcrc, hi - lo if data is not None else 0)
                    items.append((k, v + _pack_u32(_crc(v, _crc(k)))))
            counts[seq] = counts.get(seq, 0) + len(items) - before
            before = len(items)
        self.pending = []
        self._pack_seq_items()

    def _piece_entries(self, seq: int, offset: int, length: int, payload_pos: int,
                       pieces: list[tuple[int, int, int, int]],
                       items: list[tuple[bytes, bytes]] | None = None) -> None:
        """The block entries of an encoded record: one per piece, where its stored bytes lie."""
        items = self.block_items if items is None else items
        pack_key = U64X2.pack
        pack_val = BLOCK_VAL.pack
        seg = self.seg
        block = offset // BLOCK
        end = offset + length
        for kind, ppos, n, crc in pieces:
            base = block * BLOCK
            lo = offset if offset > base else base
            hi = end if end < base + BLOCK else base + BLOCK
            s0 = (lo - base) // SECTOR
            mask = ((1 << ((hi - lo) // SECTOR)) - 1) << s0
            if kind == KIND_DATA:
                v = pack_val(seg, payload_pos + ppos - s0 * SECTOR, mask, kind, crc, n)
            elif kind == KIND_ZERO:
                v = pack_val(seg, 0, mask, kind, 0, 0)
            else:
                v = pack_val(seg, payload_pos + ppos, mask, kind, crc, n)
            k = pack_key(block, seq)
            items.append((k, v + _pack_u32(_crc(v, _crc(k)))))
            block += 1

    def _pack_seq_items(self) -> None:
        """The seq entries, with the running entry and OVERFLOW totals at each seq."""
        entries = self.entries
        overflows = self.overflows
        counts = self.entry_counts
        if 0 in counts:  # the baseline's entries
            entries += counts.pop(0)
            self.base_entries = entries
        seg = self.seg
        out = self.seq_items
        for seq, rec_pos, ts, offset, length, data_len, rtype, flags in self.records:
            entries += counts.get(seq, 0)
            if rtype == RecordType.OVERFLOW:
                overflows += 1
            k = _pack_u64(seq)
            v = _pack_seq(seg, rec_pos, ts, offset, length, data_len, rtype, flags, entries, overflows)
            out.append((k, v + _pack_u32(_crc(v, _crc(k)))))
        self.records = []
        self.entries, self.overflows = entries, overflows

    # ------------------------------------------------------------------ commit

    def commit(self, index: Index, txn: lmdb.Transaction, seg_end: int, cursor: dict[str, Any] | None) -> None:
        """Put every entry of the batch and the new committed end, in the caller's transaction."""
        if self.seq_items:
            txn.cursor(db=index.db("seq")).putmulti(self.seq_items, append=True)
            txn.cursor(db=index.db("time")).putmulti(self.time_items, append=True)
        if self.block_items:
            txn.cursor(db=index.db("blocks")).putmulti(self.block_items)
        if self.moved_items:
            txn.cursor(db=index.db("blocks")).putmulti(self.moved_items)
        if self.moved_zext:
            txn.cursor(db=index.db("zext")).putmulti(self.moved_zext)
        if self.zext_items:
            txn.cursor(db=index.db("zext")).putmulti(self.zext_items)
        if self.point_items:
            txn.cursor(db=index.db("points")).putmulti(self.point_items)
        for wseq, w in self.windows.items():
            wkey = U64.pack(wseq)
            txn.put(wkey, seal(wkey, w.pack()), db=index.db("windows"))
        adb = index.db("activity")
        for second, (count, nbytes) in self.activity.items():
            key = U64.pack(second)
            old = txn.get(key, db=adb)
            if old is not None:
                c0, b0 = msgpack.unpackb(unseal("activity", key, old))
                count, nbytes = count + c0, nbytes + b0
            txn.put(key, seal(key, msgpack.packb([count, nbytes])), db=adb)
        put = index.put_meta
        put(txn, "seg_id", self.seg)
        put(txn, "seg_end", seg_end)
        put(txn, "entries", self.entries)
        if self.base_entries is not None:
            put(txn, "base_entries", self.base_entries)
        if self.count:
            put(txn, "overflows", self.overflows)
            put(txn, "last_seq", self.last_seq)
            put(txn, "last_ts", self.last_ts)
            put(txn, "records", self.state.records + self.count)
            put(txn, "data_bytes", self.state.data_bytes + self.data_bytes)
        if cursor is not None:
            put(txn, "cursor", cursor)
