"""Check a journal end to end: every segment record, and the index against them.

Verify never trusts what it reads: a damaged header is reported and the scan
searches on for the next good one; every problem names the segment, the
byte offset and the seq where known. It reads the newest segment only up to
the committed end, so it is safe to run while the service appends.
"""

from __future__ import annotations

from dataclasses import dataclass

import crc32c
import lmdb

from journal.format import (
    BLOCK,
    BLOCK_VAL,
    ENC_PIECES,
    KIND_DATA,
    KIND_ZERO,
    REC_HDR,
    SECTOR,
    SEQ_VAL,
    U64,
    U64X2,
    segment_name,
)

from journal.blockmap import covered_span
from journal.codec import DecodeError, decode, parse_pieces
from journal import heads
from journal.compact import dropped_ids
from journal.points import retained
from journal.errors import JournalError
from journal.index import DB_NAMES, check
from journal.reader import JournalReader, Progress
from journal.records import DATA_TYPES, RecordType
from journal.segments import SegmentRecord
from journal.selection import Selection


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


def verify_journal(journal: JournalReader, progress: Progress | None) -> VerifyReport:
    """Check every segment record's CRCs, and the index against the segments."""
    index = journal.index
    index.check_tree(full=True)  # LMDB would abort on a damaged page, not report it
    with index.read() as txn:
        seg_id = index.require_meta(txn, "seg_id")
        seg_end = index.require_meta(txn, "seg_end")
        last_seq = index.require_meta(txn, "last_seq")
        sel = retained(index, txn)
        dropped = dropped_ids(index.get_meta(txn, "dropped_segments", []))
    # a compaction folded everything at or below this seq: records there may be gone from the
    # index (not kept) and their block versions too (seen by no kept point)
    folded = sel.fold_seq if sel is not None else -1
    segments = sorted(int(p.stem) for p in (journal.path / "segments").glob("*.seg") if p.stem.isdigit())
    problems: list[Problem] = []
    for missing in sorted(set(range(1, seg_id + 1)) - set(segments)):
        if not dropped(missing):
            problems.append(Problem(segment_name(missing), 0, None, "segment file is missing"))
    sizes = {s: (journal.path / "segments" / segment_name(s)).stat().st_size for s in segments}
    total = sum(min(size, seg_end) if s == seg_id else size for s, size in sizes.items()
                if s <= seg_id and not dropped(s))
    seen = bytearray(last_seq + 1)
    records = checked = 0
    for seg in segments:
        if seg > seg_id or dropped(seg):
            continue  # a dropped segment a killed compaction left behind: the next writer deletes it
        limit = seg_end if seg == seg_id else None
        name = segment_name(seg)
        with index.read() as txn:
            db = index.db("seq")
            blocks_db = index.db("blocks")
            for item in journal.segments.scan(seg, limit):
                if isinstance(item, tuple):
                    pos, reason = item
                    problems.append(Problem(name, pos, None, reason))
                    continue
                records += 1
                checked += item.end - item.pos
                if item.type == RecordType.FOLD:
                    # a moved version: no seq entry of its own; its block entry is checked like any
                    # (it may be gone: a later compaction found it dead)
                    if item.data_len:
                        problems += _check_blocks(journal, txn, blocks_db, seg, item, True)
                    continue
                if item.type in DATA_TYPES and item.data_len:
                    problems += _check_blocks(journal, txn, blocks_db, seg, item, item.seq <= folded)
                if item.seq == 0:
                    continue
                key = U64.pack(item.seq)
                raw = txn.get(key, db=db)
                if raw is None:
                    if item.seq > folded:
                        problems.append(Problem(name, item.pos, item.seq, "record is not in the index"))
                    continue
                if not check(key, raw):
                    problems.append(Problem(name, item.pos, item.seq, "its index entry fails its CRC-32C"))
                    continue
                iseg, ipos, _ts, off, length, _dl, rtype, _fl, _e, _o = SEQ_VAL.unpack_from(raw)
                if iseg == 0 and item.seq <= folded:
                    iseg, ipos = seg, item.pos  # a kept record whose entry let go of its segment
                if (iseg, ipos, off, length, rtype) != (seg, item.pos, item.offset, item.length, item.type):
                    problems.append(Problem(name, item.pos, item.seq, "index entry does not match the record"))
                    continue
                if item.seq <= last_seq:
                    seen[item.seq] = 1
        if progress is not None:
            progress(checked, total)
    if sum(seen) != last_seq:
        with index.read() as txn:
            for key, raw in txn.cursor(db=index.db("seq")):
                seq = U64.unpack(key)[0]
                iseg, ipos = SEQ_VAL.unpack_from(raw)[:2]
                if seq <= last_seq and not seen[seq] and not (iseg == 0 and seq <= folded):
                    problems.append(Problem(segment_name(iseg), ipos, seq,
                                            "indexed record is missing or damaged in its segment"))
    problems += _check_index(journal, sel)
    return VerifyReport(records, checked, problems)


def _check_index(journal: JournalReader, sel: Selection | None) -> list[Problem]:
    """Every entry of every table against its seal, the running totals against the tables, and
    the points the last compaction kept (``sel``) against the list.

    The segments are the truth and the index a view of them; this finds
    every damaged or lost index entry a read could otherwise trust, so that
    'cdp reindex' is run before a restore meets it.
    """
    index = journal.index
    out: list[Problem] = []

    def problem(message: str) -> None:
        out.append(Problem("index", 0, None, message))

    with index.read() as txn:
        for name in (n for n in DB_NAMES if n in index.dbs):
            bad = sum(1 for key, raw in txn.cursor(db=index.db(name)) if not check(key, raw))
            if bad:
                problem(f"{bad} '{name}' entries fail their CRC-32C; run 'cdp reindex'")
        if out:
            return out
        try:
            last_seq = index.require_meta(txn, "last_seq")
            want, overflows = journal.expected_counts(txn, last_seq)
        except JournalError as exc:
            problem(str(exc))
            return out
        have = txn.stat(index.db("blocks"))["entries"] + txn.stat(index.db("zext"))["entries"]
        if have != want:
            problem(f"the index holds {have} block entries where its records count {want}; "
                    "run 'cdp reindex'")
        windows = txn.stat(index.db("windows"))["entries"]
        if windows != overflows:
            problem(f"the index holds {windows} overflow windows for {overflows} OVERFLOW records; "
                    "run 'cdp reindex'")
    try:
        wrong = heads.verify_heads(journal)
        if wrong is not None:
            problem(f"{wrong}; run 'cdp reindex'")
    except JournalError as exc:
        problem(str(exc))
    if sel is not None:
        # every point a compaction kept is still a point: restores and thinned times resolve to
        # them, so one missing from the list is a point an admin cannot see (a reindex puts it back)
        listed = {p.seq for p in journal.points()}
        unlisted = [k for k in sel.kept if k and k not in listed]
        if unlisted:
            problem(f"{len(unlisted)} points the last compaction kept are not listed (seq {unlisted[0]} first); "
                    "run 'cdp reindex'")
    return out


def _check_blocks(journal: JournalReader, txn: lmdb.Transaction, blocks_db: object, rec_seg: int,
                  rec: SegmentRecord, folded: bool) -> list[Problem]:
    """Each block the record wrote: in the index, and its CRC there is the segment's bytes'.

    A restore checks exactly these CRCs before it applies a block, so this
    finds beforehand what would stop a restore. An encoded record's pieces
    are each held against its piece table and decoded before their CRC is
    checked: the CRC is of the device bytes.
    """
    name = segment_name(rec_seg)
    out = []
    first, last = rec.offset // BLOCK, (rec.offset + rec.length - 1) // BLOCK
    pieces = None
    payload_at = rec.pos + REC_HDR.size
    if rec.encoding == ENC_PIECES:
        try:
            pieces = parse_pieces(journal.segments.pread(rec_seg, payload_at, rec.data_len), rec.offset,
                                  rec.length)
        except (JournalError, DecodeError) as exc:
            return [Problem(name, rec.pos, rec.seq, f"its payload's piece table: {exc}")]
    for block in range(first, last + 1):
        raw = txn.get(U64X2.pack(block, rec.seq), db=blocks_db)
        if raw is None and folded:
            continue  # a version no kept point sees: the compaction deleted it
        if raw is None:
            out.append(Problem(name, rec.pos, rec.seq, f"block {block} is missing from the block index"))
            continue
        if not check(U64X2.pack(block, rec.seq), raw):
            out.append(Problem(name, rec.pos, rec.seq, f"block {block}: its index entry fails its CRC-32C"))
            continue
        seg, pos0, mask, kind, crc, stored = BLOCK_VAL.unpack_from(raw)
        low, count = covered_span(mask) if mask else (0, 0)
        if pieces is None:
            bad = kind != KIND_DATA or not mask
        else:
            pkind, ppos, plen = pieces[block - first]
            at = payload_at + ppos
            start = pos0 + low * SECTOR if kind == KIND_DATA else pos0
            # a version a compaction moved (a FOLD copy) is checked where it is now, by its own kind
            here = seg == rec_seg and payload_at <= start < payload_at + rec.data_len
            bad = (not mask or kind != pkind
                   or (here and kind == KIND_DATA and start != at)
                   or (here and kind not in (KIND_DATA, KIND_ZERO) and (start, stored) != (at, plen)))
        if bad:
            out.append(Problem(name, rec.pos, rec.seq, f"block {block} has a bad block index entry"))
            continue
        if kind == KIND_ZERO:
            continue
        try:
            if kind == KIND_DATA:
                data = journal.segments.pread(seg, pos0 + low * SECTOR, count * SECTOR)
            else:
                data = decode(journal.segments.pread(seg, pos0, stored), count * SECTOR)
        except JournalError as exc:
            out.append(Problem(name, rec.pos, rec.seq, f"block {block}: {exc}"))
            continue
        except DecodeError as exc:
            out.append(Problem(name, rec.pos, rec.seq, f"block {block}: {exc}"))
            continue
        if crc32c.crc32c(data) != crc:
            out.append(Problem(name, rec.pos, rec.seq,
                               f"block {block}: the block index CRC-32C does not match the segment's bytes"))
    return out
