"""The journal's on-disk format, written down once; the code follows it.

A journal is one directory::

    DIR/cdp-journal          marker, written last by create: "cdp-journal <schema>\\n"
    DIR/lock                 flock()ed exclusively by the one writer (the drain service)
    DIR/segments/NNNNNNNN.seg  append-only payload files, numbered from 1
    DIR/index/               the LMDB environment (data.mdb, lock.mdb)

Segment files
=============

A segment starts with a 64-byte file header (:data:`SEG_HDR`): magic
``CDPS``, schema, segment number, device id. Records follow back to back,
each a 64-byte header (:data:`REC_HDR`) then ``data_len`` payload bytes::

    0  u32 magic 'CDPJ'      4  u16 type        6  u16 flags
    8  u32 data_len         12  u32 encoding    16  u64 seq
    24 u64 ts_ns            32  u64 offset      40  u64 length
    48 u64 aux (OVERFLOW: first dropped ts; RESYNC: read time)
    56 u32 data_crc (CRC-32C of the payload)   60  u32 hdr_crc (CRC-32C of bytes 0..59)

so a segment can be scanned and checked with nothing but itself. A RESYNC
with flag 0x100 (UNCHANGED) has data_len 0: its range compared equal to the
journal (a reattach's compare), so it indexes no block but moves overflow
windows on like a copy; an OVERFLOW with flag 0x100 (REATTACH) opens the
window a reattach closes that way. Baseline records carry seq 0.

Payload encoding (schema 3)
---------------------------

``encoding`` says how a data record's (WRITE, RESYNC, BASELINE) payload
holds the device bytes ``[offset, offset+length)``:

- :data:`ENC_RAW` (0): the bytes as they are, ``data_len == length``. Every
  record of a schema-2 journal is one (the field was ``reserved``, always
  0), and so is a record none of whose pieces got smaller, so incompressible
  data costs what it did before compression existed.
- :data:`ENC_PIECES` (1): the range cut at 4 KiB block boundaries into
  *pieces* (the first and last may be partial blocks), each stored as
  :data:`KIND_DATA` (its bytes as they are), :data:`KIND_ZSTD` (one zstd
  frame that decodes to exactly the piece's bytes, with its content size in
  the frame header) or :data:`KIND_ZERO` (the piece is all zeros: no bytes
  at all). The stored pieces lie back to back in block order, followed by
  the *piece table*: one little-endian u16 per piece, ``kind << 13 |
  stored length`` (:data:`PIECE`), so ``data_len`` is the stored bytes plus
  two per piece. Raw pieces that follow each other stay back to back, so a
  restore still writes runs of them straight from a map of the segment.

Why per 4 KiB piece and not per record: a restore, an export's ranged read
and a block view read and check one block's bytes, never a whole 8 MiB
record. Why a record field and not a new record format: a schema-2 segment
is readable as it lies, so upgrading rewrites no segment, only the index
(``cdp reindex``: the block entries gained a field). ``data_crc`` covers the
stored payload (what verify and reindex scan); the block entries hold the
CRC-32C of the *device* bytes, checked after decoding, so a read checks what
it applies. Whether a journal encodes is the ``compress`` meta value
(``cdp init/attach --no-compress``): off, every record is written raw. The
setting lives only in the index: a reindex keeps it where the old index's
entry still checks, and otherwise (an index lost whole, a schema-2 journal)
turns compression on, which changes how new records are stored, never how
old ones read. Bytes past the index's committed end of the newest
segment are an unfinished batch: the writer cuts them off when it opens.

LMDB index
==========

All integer keys are big-endian so LMDB's byte order is numeric order.

Every value below is *sealed*: it is followed by a little-endian u32, the
CRC-32C of the entry's key then the value (``journal.index.seal``). A
reader checks each entry it uses, so a flipped byte in a key or a value is
reported as damage, never applied to the wrong block, seq, time or mark.
Entries that vanish as a whole (a damaged page) are caught by counts: each
``seq`` value carries how many ``blocks`` and ``zext`` entries exist at or
below its seq and how many OVERFLOW records; a restore at seq S counts what
its walk finds at or below S and fails unless both agree. The index can be
rebuilt from the segments alone (``cdp reindex``).

``meta``     str key -> msgpack value: schema, device_bytes, block_size,
             device_id, created_ns, source, compress (a map: codec
             "zstd" and its level, or codec "none"), last_seq, last_ts, seg_id,
             seg_end, records, data_bytes, cursor (the service's resume
             state), status (the service's live status).
``seq``      seq -> :data:`SEQ_VAL` (segment, record position, ts, offset,
             length, data_len, type, flags, entries, overflows): the last two
             are running totals at this seq (block + zero-extent entries,
             the baseline's included; OVERFLOW records). ``meta`` holds the
             baseline's as ``base_entries`` and the newest as ``entries``.
``time``     ts_ns ‖ seq -> b"" (only the seal): a time resolves to a seq with
             one seek, checked against the next record's time.
``blocks``   block ‖ seq -> :data:`BLOCK_VAL` (segment, pos0, mask, kind,
             crc, stored): one entry per 4 KiB block a WRITE, RESYNC,
             BASELINE or small zeroing record touched. ``mask`` is the
             512-byte sectors of the block the record covers, ``crc`` the
             CRC-32C of exactly those covered device bytes (0 for a zero
             kind), so a read checks what it applies. For :data:`KIND_DATA`
             ``pos0`` is where the block's first byte would sit in the
             segment (it may lie before the payload when the record starts
             mid-block); for :data:`KIND_ZSTD` it is where the piece's frame
             starts and ``stored`` its length; :data:`KIND_ZERO` has neither.
``zext``     seq -> offset ‖ length: zeroing records of at least
             :data:`BIG_ZERO` bytes (mkfs discards a whole disk), kept as
             extents instead of one entry per block.
``points``   seq -> msgpack [kind, ts_ns, name] for flush, mark, overflow
             and resync points.
``umarks``   ts_ns ‖ name -> b"": user marks made by time.
``windows``  seq of an OVERFLOW record -> msgpack map of the window:
             start_ts, end_ts, offset, length, resynced_to, resync_seq,
             resync_ts.
``activity`` second (ns, floored) -> msgpack [records, bytes].
``heads``    block -> :data:`HEAD_VAL` (seq, the BLOCK_VAL fields of that
             version, then its chain at the checkpoint: how many versions
             a composed read of the block takes and the sum of their seals):
             the block-map checkpoint, every block's newest version at seq
             C. ``meta['heads']`` holds C (``seq``), ``count`` (heads),
             ``total`` (sum of their seals mod 2^64), ``zext`` (zero
             extents at or below C) and, while a build is under way,
             ``next_block`` and ``seen``. Derived, never the truth: dropped
             by a compaction, built by a reindex and in the background by
             the service (``journal.heads``); a journal without it (one an
             older cdp made) restores by walking the block index.

Retention and compaction
========================

``meta`` also holds ``retention`` (the policy, see ``journal.retention``),
``retained`` (the newest compaction's selection: horizon, fold seq, kept
seqs), ``compaction`` (the step a compaction in progress is at),
``entries_dropped``/``dropped_above`` (block entries a compaction deleted:
seqs above the fold count that many fewer; kept seqs at or below it were
rewritten exact) and ``dropped_segments`` (segment id ranges deleted on
purpose). A kept record's ``seq`` entry may name segment 0: it no longer
holds its segment. Two record types exist only for compaction, both
written by the journal itself: COMPACTION (seq 0, a msgpack payload: the
selection with what each kept record's entries said, or the dropped
segments) and FOLD (a block version moved out of a mostly-dead segment:
its seq is the version's, its range the sectors it covers; flags 1 = a
zeroing version, 2 = a big zeroing extent; a compressed version keeps its
zstd frame: its payload is ENC_PIECES with that one piece). A reindex takes the newest of
each kind of COMPACTION record to rebuild the same state
(``journal.refold``).
"""

from __future__ import annotations

import struct

#: 3: payload encoding (see above) and BLOCK_VAL's ``stored`` field.
SCHEMA = 3
#: Schemas whose journals are refused until ``cdp reindex`` rebuilds their index.
REINDEXABLE = (1, 2)
#: Segment files did not change with schemas 2 and 3 (each record says its encoding): their header says 1.
SEGMENT_SCHEMA = 1
MARKER = "cdp-journal"

#: The block-version index works in 4 KiB blocks of eight 512-byte sectors.
BLOCK = 4096
SECTOR = 512
SECTORS_PER_BLOCK = BLOCK // SECTOR
FULL_MASK = (1 << SECTORS_PER_BLOCK) - 1
#: Zeroing records at least this long go to the extent table.
BIG_ZERO = 1 << 20

SEG_MAGIC = b"CDPS"
SEG_HDR = struct.Struct("<4sIQ16s32x")
REC_MAGIC = 0x4A504443  # b"CDPJ"
REC_HDR = struct.Struct("<IHHIIQQQQQII")
REC_HDR_CRC_SPAN = 60
#: The header without its trailing hdr_crc, packed first so the CRC can follow.
REC_HDR_BODY = struct.Struct("<IHHIIQQQQQI")
assert SEG_HDR.size == 64 and REC_HDR.size == 64 and REC_HDR_BODY.size == REC_HDR_CRC_SPAN

SEQ_VAL = struct.Struct("<IQQQQIHHQI")
#: The seal every index value ends with (see journal.index).
SEAL = 4
BLOCK_VAL = struct.Struct("<IqBBIH")
#: A checkpoint head: the version's seq, its BLOCK_VAL fields, its chain (versions, sum of seals).
HEAD_VAL = struct.Struct("<QIqBBIHHQ")
#: Block entry and piece kinds: stored as they are, all zeros (nothing stored), a zstd frame.
KIND_DATA = 0
KIND_ZERO = 1
KIND_ZSTD = 2

#: The record header's ``encoding``: payload as it is, or pieces and a piece table.
ENC_RAW = 0
ENC_PIECES = 1
#: One piece table entry: ``kind << PIECE_KIND_SHIFT | stored length``.
PIECE = struct.Struct("<H")
PIECE_KIND_SHIFT = 13
PIECE_LEN_MASK = (1 << PIECE_KIND_SHIFT) - 1

U64 = struct.Struct(">Q")
U64X2 = struct.Struct(">QQ")

#: Segments are rolled once they grow past this size.
SEGMENT_TARGET = 256 << 20


def segment_name(seg_id: int) -> str:
    """File name of segment ``seg_id``."""
    return f"{seg_id:08d}.seg"
