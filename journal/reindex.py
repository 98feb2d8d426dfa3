"""Rebuild a journal's index from its segments alone: a damaged index costs time, never history.

The segments hold every record with its own CRC-32Cs; the marker file the
journal's facts; ``marks.log`` the user marks. Reindexing feeds the
records, in segment order, through the same :class:`journal.batch.Batch`
that indexed them when they were appended (framing is deterministic, so
every position comes out where the record lies), into a new LMDB
environment beside the old one, which replaces it only once complete:
``index.new`` is built and synced, then ``index`` -> ``index.old`` and
``index.new`` -> ``index``, then ``index.old`` is removed. A crash before
the renames leaves the old index; between them, no ``index`` (open says
so, and a new reindex starts over).

What only the old index knew is taken from it where its seal still checks:
how far the newest segment was committed (bytes past it are a batch whose
commit never happened, cut off as the writer would) and the service's
resume cursor. Without them every well-formed record counts and the
service treats its ring as a new session (its ranges resynced).

Reindex needs the writer lock: it refuses while ``cdp run`` runs. A
damaged segment record stops it with the old index untouched: history
past that point cannot be rebuilt and ``cdp verify`` says where.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import lmdb
import msgpack

from journal.batch import FOLD_EXTENT, AppendState, Batch
from journal.codec import Compression, DecodeError, stored_pieces
from journal.compact import dropped_ids
from journal.refold import refold
from journal.errors import CorruptJournal, JournalError
from journal.facts import Facts, fsync_dir, lock_writer, read_marker, read_marks, write_marker
from journal.format import (
    ENC_PIECES,
    REC_HDR,
    SCHEMA,
    SEG_HDR,
    SEG_MAGIC,
    U64,
    segment_name,
)
from journal.index import Index, check, check_data_file, seal, unseal
from journal.points import OverflowWindow
from journal import heads
from journal.reader import JournalReader, Progress
from journal.records import PointKind, Record, RecordType
from journal.segments import SegmentViews, parse_header

#: Records per index transaction while rebuilding.
_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class ReindexResult:
    """What the rebuilt index holds."""

    records: int
    last_seq: int
    segments: int
    marks: int
    bytes_scanned: int
    kept_cursor: bool


def reindex(path: str | os.PathLike[str], progress: Progress | None = None) -> ReindexResult:
    """Rebuild ``path``'s index from its segments; see the module docstring."""
    path = Path(path)
    schema, facts = read_marker(path)
    lock_fd = lock_writer(path)
    try:
        old = _salvage(path / "index")
        if facts is None:
            facts = old.get("facts")
        if facts is None:
            raise CorruptJournal(f"{path}: neither the marker nor the old index says what device this "
                                 "journal protects; it cannot be reindexed")
        new_dir = path / "index.new"
        shutil.rmtree(new_dir, ignore_errors=True)
        new_dir.mkdir(mode=0o700)
        index = Index(new_dir, create=True)
        try:
            result = _rebuild(path, index, facts, old, progress)
            _checkpoint(path, index)
            index.env.sync(True)
        finally:
            index.close()
        _swap(path)
        if schema != SCHEMA:
            write_marker(path, facts)
        return result
    finally:
        os.close(lock_fd)


def _salvage(index_dir: Path) -> dict[str, Any]:
    """What the old index still knows intact: committed end, cursor, facts, user marks."""
    out: dict[str, Any] = {"umarks": []}
    data = index_dir / "data.mdb"
    if not data.exists():
        return out
    try:
        check_data_file(index_dir)
        env = lmdb.open(str(index_dir), readonly=True, lock=False, max_dbs=16, subdir=True)
    except (lmdb.Error, JournalError):
        return out
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            for key in ("seg_id", "seg_end", "cursor", "device_bytes", "block_size", "device_id",
                        "created_ns", "source", "retention", "compress"):
                raw = txn.get(key.encode(), db=meta)
                if raw is not None and check(key.encode(), raw):
                    out[key] = msgpack.unpackb(raw[:-4])
        umarks = env.open_db(b"umarks", create=False)
        with env.begin(db=umarks) as txn:
            out["umarks"] = [(U64.unpack(k[:8])[0], k[8:]) for k, v in txn.cursor(db=umarks) if check(k, v)]
    except (lmdb.Error, ValueError):
        pass
    finally:
        env.close()
    need = ("device_bytes", "block_size", "device_id", "created_ns")
    if all(k in out for k in need):
        out["facts"] = Facts(out["device_bytes"], out["block_size"], bytes(out["device_id"]).hex(),
                             out["created_ns"], out.get("source", ""))
    return out


def _rebuild(path: Path, index: Index, facts: Facts, old: dict[str, Any], progress: Progress | None) -> ReindexResult:
    seg_dir = path / "segments"
    segments = sorted(int(p.stem) for p in seg_dir.glob("*.seg") if p.stem.isdigit())
    if not segments:
        raise CorruptJournal(f"{seg_dir} holds no segment; nothing to rebuild from")
    notes: list[dict[str, Any]] = []
    damaged: list[tuple[int, CorruptJournal]] = []
    committed = (old["seg_id"], old["seg_end"]) if "seg_id" in old and "seg_end" in old else None
    _init_meta(index, facts, Compression.from_meta(old.get("compress")))
    state = AppendState(0, facts.created_ns, 0, 0)
    views = SegmentViews(seg_dir)
    total = sum((seg_dir / segment_name(s)).stat().st_size for s in segments)
    done = 0
    seg_id, seg_end = 1, SEG_HDR.size
    try:
        for seg in segments:
            if committed is not None and seg > committed[0]:
                break  # a segment the writer began but never committed into
            limit = committed[1] if committed is not None and seg == committed[0] else None
            size = (seg_dir / segment_name(seg)).stat().st_size
            end = size if limit is None else limit
            if size < end:
                raise CorruptJournal(f"segment {segment_name(seg)} holds {size} bytes but {end} were committed")
            if size < SEG_HDR.size or bytes(views.view(seg, 0, 4)) != SEG_MAGIC:
                raise CorruptJournal(f"segment {segment_name(seg)} has a bad header")
            # without the old index's committed end, a torn record at the very end of the
            # newest segment is the batch whose commit never happened
            tail_ok = committed is None and seg == segments[-1]
            try:
                seg_end = _index_segment(index, state, facts.device_bytes, views, seg, end, tail_ok, notes)
            except CorruptJournal as exc:
                if seg == segments[-1]:
                    raise
                # a segment a later COMPACTION record lists as dropped is no longer history (a killed
                # compaction may leave one behind, whatever state it is in): checked below
                damaged.append((seg, exc))
                continue
            seg_id = seg
            done += size
            if progress is not None:
                progress(done, total)
    finally:
        views.close()
    dropped = next((n["dropped"] for n in reversed(notes) if "dropped" in n), [])
    is_dropped = dropped_ids(dropped)
    for seg, exc in damaged:
        if not is_dropped(seg):
            raise exc
    missing = [s for s in range(1, segments[-1] + 1) if s not in set(segments) and not is_dropped(s)]
    if missing:
        raise CorruptJournal(f"segment {segment_name(missing[0])} is missing; the history past it is lost")
    marks = _index_marks(index, path, old, facts.created_ns)
    plan = next((n for n in reversed(notes) if "sel" in n), None)
    if plan is not None:
        refold(index, path, plan, dropped)
    cursor = old.get("cursor") if committed is not None else None

    def finish(txn: lmdb.Transaction) -> None:
        index.put_meta(txn, "seg_id", seg_id)
        index.put_meta(txn, "seg_end", seg_end)
        if cursor is not None:
            index.put_meta(txn, "cursor", cursor)
        if "retention" in old:
            index.put_meta(txn, "retention", old["retention"])

    index.write(finish)
    return ReindexResult(state.records, state.last_seq, seg_id, marks, done, cursor is not None)


def _checkpoint(path: Path, index: Index) -> None:
    """Build the new index's block-map checkpoint at its newest record (:mod:`journal.heads`)."""
    reader = JournalReader(path, index)
    try:
        heads.bring_up_to_date(reader, min_lag=1)
    finally:
        reader.segments.close()


def _init_meta(index: Index, facts: Facts, compression: Compression) -> None:
    def init(txn: lmdb.Transaction) -> None:
        for key, value in (("schema", SCHEMA), ("device_bytes", facts.device_bytes),
                           ("block_size", facts.block_size), ("device_id", bytes.fromhex(facts.device_id)),
                           ("created_ns", facts.created_ns), ("source", facts.source),
                           ("last_seq", 0), ("last_ts", facts.created_ns), ("seg_id", 1),
                           ("seg_end", SEG_HDR.size), ("records", 0), ("data_bytes", 0),
                           ("entries", 0), ("base_entries", 0), ("overflows", 0),
                           ("compress", compression.to_meta())):
            index.put_meta(txn, key, value)
        key = U64.pack(0)
        txn.put(key, seal(key, msgpack.packb([PointKind.BASELINE.value, facts.created_ns, ""])), db=index.db("points"))

    index.write(init)


def _index_segment(index: Index, state: AppendState, device_bytes: int, views: SegmentViews,
                   seg: int, end: int, tail_ok: bool, notes: list[dict[str, Any]]) -> int:
    """Index every record of segment ``seg`` up to ``end``; returns where its records end."""
    pos = SEG_HDR.size
    batch = Batch(state, device_bytes, seg, pos)
    pending = 0
    while pos < end:
        if pos + REC_HDR.size > end:
            if tail_ok:
                break
            raise CorruptJournal(f"segment {segment_name(seg)} offset {pos}: truncated record header")
        rec = parse_header(bytes(views.view(seg, pos, REC_HDR.size)), pos)
        if isinstance(rec, str):
            raise CorruptJournal(f"segment {segment_name(seg)} offset {pos}: {rec}; "
                                 "the history past it cannot be rebuilt ('cdp verify' lists the damage)")
        if rec.end > end:
            if tail_ok:
                break
            raise CorruptJournal(f"segment {segment_name(seg)} offset {pos}: record seq {rec.seq} runs past "
                                 "the committed end")
        data = views.view(seg, pos + REC_HDR.size, rec.data_len)
        if crc32c.crc32c(data) != rec.data_crc:
            raise CorruptJournal(f"segment {segment_name(seg)} offset {pos}: record seq {rec.seq} payload "
                                 "fails its CRC-32C; the history past it cannot be rebuilt")
        stored = None
        if rec.encoding == ENC_PIECES:
            try:
                stored = stored_pieces(data, rec.offset, rec.length, rec.data_crc)
            except DecodeError as exc:
                raise CorruptJournal(f"segment {segment_name(seg)} offset {pos}: record seq {rec.seq}: {exc}; "
                                     "the history past it cannot be rebuilt") from None
        if rec.type == RecordType.BASELINE:
            batch.add_baseline(rec.ts_ns, rec.offset, data, stored, rec.length)
        elif rec.type == RecordType.FOLD:
            batch.add_fold(rec.seq, rec.offset, rec.length, data if rec.data_len else None,
                           stored.pieces[0][3] if stored is not None else rec.data_crc,
                           extent=bool(rec.flags & FOLD_EXTENT), stored=stored)
        elif rec.type == RecordType.COMPACTION:
            batch.add_note(rec.ts_ns, data)
            try:
                notes.append(msgpack.unpackb(data))
            except (ValueError, msgpack.UnpackException):
                raise CorruptJournal(f"segment {segment_name(seg)} offset {pos}: a compaction record that "
                                     "cannot be read") from None
            _carry_windows(index, batch, notes[-1])
        else:
            ts = rec.ts_ns
            if rec.type == RecordType.RESYNC:
                # its header ts is the journal time the append stamped it with (the time of the
                # record before it, which a compaction may have folded away with its segment: the
                # batch must stamp it the same), its aux the read time the service handed append
                batch.last_ts = max(batch.last_ts, rec.ts_ns)
                ts = rec.aux
            batch.add(Record(rec.seq, ts, rec.type, rec.flags, rec.offset, rec.length, data,
                             data_crc=rec.data_crc), stored)
        if batch.pos != rec.end:
            raise CorruptJournal(f"segment {segment_name(seg)} offset {pos}: record seq {rec.seq} is not "
                                 "in seq order")
        pos = rec.end
        pending += 1
        if pending >= _CHUNK:
            _commit(index, state, batch, pos)
            batch = Batch(state, device_bytes, seg, pos)
            pending = 0
    _commit(index, state, batch, pos)
    return pos


def _carry_windows(index: Index, batch: Batch, note: dict[str, Any]) -> None:
    """Take up the overflow windows a compaction plan saw, where they are further on than the scan's.

    A window still open when a compaction ran (a long resync) may have
    been advanced by partial RESYNCs that the compaction folded away with
    their segments, or its OVERFLOW record may be gone: the scan alone
    would rebuild it short (or not at all), and the RESYNCs after the
    plan would then no longer continue it, leaving every later point not
    whole. From the plan's record on, the scan goes on from the plan's
    window. Only where it is further on: a plan an older cdp wrote read its
    snapshot before taking the writer's lock, so a RESYNC may sit between
    the snapshot and its record, and a window's progress never goes back.
    """
    for wseq, packed in note.get("windows", ()):
        planned = OverflowWindow.unpack(wseq, bytes(packed))
        known = batch.windows.get(wseq) or batch.state.open_windows.get(wseq) or _stored_window(index, wseq)
        if known is not None and not _further(planned, known):
            continue
        batch.windows[wseq] = planned
        if planned.resync_seq is None:
            batch.state.open_windows[wseq] = planned
        else:
            batch.state.open_windows.pop(wseq, None)


def _further(a: OverflowWindow, b: OverflowWindow) -> bool:
    """Whether window ``a`` is further on than ``b`` (closed beats open, then more resynced)."""
    if b.resync_seq is not None:
        return False
    return a.resync_seq is not None or a.resynced_to > b.resynced_to


def _stored_window(index: Index, wseq: int) -> OverflowWindow | None:
    """The window of OVERFLOW ``wseq`` as an earlier chunk of the scan committed it."""
    key = U64.pack(wseq)
    with index.read() as txn:
        raw = txn.get(key, db=index.db("windows"))
        return OverflowWindow.unpack(wseq, bytes(unseal("windows", key, raw))) if raw is not None else None


def _commit(index: Index, state: AppendState, batch: Batch, seg_end: int) -> None:
    batch.build_blocks()
    index.write(lambda txn: batch.commit(index, txn, seg_end, None))
    state.advance(batch)
    batch.buffers.clear()


def _index_marks(index: Index, path: Path, old: dict[str, Any], created_ns: int) -> int:
    """User marks from the log, and any the old index held that the log lacks (older journals)."""
    marks = {(ts, name) for ts, name in read_marks(path)}
    marks.update((ts, bytes(name)) for ts, name in old.get("umarks", []))
    marks = {(ts, name) for ts, name in marks if ts >= created_ns and name}

    def put(txn: lmdb.Transaction) -> None:
        for ts, name in marks:
            key = U64.pack(ts) + name
            txn.put(key, seal(key, b""), db=index.db("umarks"))

    index.write(put)
    return len(marks)


def _swap(path: Path) -> None:
    """Put ``index.new`` in the place of ``index``; see the module docstring."""
    old, new, cur = path / "index.old", path / "index.new", path / "index"
    shutil.rmtree(old, ignore_errors=True)
    if cur.exists():
        os.rename(cur, old)
    os.rename(new, cur)
    fsync_dir(path)
    shutil.rmtree(old, ignore_errors=True)


