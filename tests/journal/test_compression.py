"""Compressed and zero-elided payloads against the independent model, and their damage.

Hypothesis draws writes at any 512-byte aligned offset and length whose
4 KiB pieces are compressible text, random bytes, zeros or a mix, with
discards and flushes, cut into random batches; then `restore`, `read` and
the export's `PointView` at random seqs must equal the model byte for byte,
`verify` must pass, and a reindex from the segments alone must rebuild the
very same block index. Damage to a compressed payload is an error naming
the record, never a wrong answer.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal, Record, RecordType
from journal.codec import OFF, Compression
from journal.errors import CorruptJournal, UnsupportedVersion
from journal.format import BLOCK, BLOCK_VAL, ENC_PIECES, KIND_DATA, KIND_ZERO, KIND_ZSTD, MARKER, REC_HDR
from journal.pointview import PointView
from journal.reindex import reindex
from tests.journal.model import DeviceModel
from tests.support.blockdev import loop_device, needs
from tests.support.devices import random_device
from tests.support.journals import append_in_cuts

SIZE = 512 * 1024
SECTORS = SIZE // 512
WORDS = [b"def ", b"return ", b"self", b".path", b"(", b")", b"\n    ", b"import ", b"journal", b"# ", b"block"]


def text(rng: random.Random, n: int) -> bytes:
    """Source-like bytes: compress 2x or better at 4 KiB."""
    out = bytearray()
    while len(out) < n:
        out += rng.choice(WORDS)
    return bytes(out[:n])


def payload(kind: str, n: int, rng: random.Random) -> bytes:
    if kind == "text":
        return text(rng, n)
    if kind == "random":
        return rng.randbytes(n)
    if kind == "zeros":
        return bytes(n)
    # a mix, piece by piece: what a filesystem's blocks look like
    return b"".join(payload(rng.choice(["text", "random", "zeros"]), min(BLOCK, n - at), rng)
                    for at in range(0, n, BLOCK))


@st.composite
def operations(draw: st.DrawFn) -> list[tuple]:
    ops = []
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["text", "random", "zeros", "mixed", "mixed", "discard", "flush"]))
        if kind == "flush":
            ops.append((kind, 0, 0))
            continue
        start = draw(st.integers(0, SECTORS - 1))
        if draw(st.booleans()):
            start -= start % 8  # block-aligned, the common case
        count = draw(st.integers(1, min(SECTORS - start, 96)))
        ops.append((kind, start * 512, count * 512))
    return ops


def build(tmp: Path, ops: list[tuple], seed: int, splits: list[int]) -> tuple[Journal, DeviceModel]:
    rng = random.Random(seed)
    base = bytearray(random_device(SIZE, seed))
    for at in range(0, SIZE, 4 * BLOCK):  # a baseline with compressible blocks too
        base[at:at + BLOCK] = text(rng, BLOCK)
    image = tmp / "base.img"
    image.write_bytes(base)
    journal = Journal.create(tmp / "j", device_bytes=SIZE, source=image)
    model = DeviceModel(bytes(base))
    ts = journal.info.created_ns
    records = []
    for seq, (kind, offset, length) in enumerate(ops, start=1):
        ts += rng.choice([0, 1000])
        if kind == "flush":
            r = Record(seq, ts, RecordType.FLUSH)
        elif kind == "discard":
            r = Record(seq, ts, RecordType.DISCARD, 0, offset, length)
        else:
            r = Record(seq, ts, RecordType.WRITE, 0, offset, length, payload(kind, length, rng))
        records.append(r)
        model.apply(r)
    append_in_cuts(journal, records, splits)
    return journal, model


def block_index(journal: Journal) -> list[tuple[bytes, bytes]]:
    with journal.index.read() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=journal.index.db("blocks"))]


def kinds(journal: Journal) -> Counter:
    return Counter(BLOCK_VAL.unpack_from(v)[3] for _k, v in block_index(journal))


def check_against_model(journal: Journal, model: DeviceModel, tmp: Path, seqs: list[int],
                        probes: list[tuple[int, int]]) -> None:
    for seq in seqs:
        out = tmp / f"r{seq}.img"
        journal.restore(out, seq=seq, overwrite=True)
        assert out.read_bytes() == model.states[seq], f"restore at seq {seq}"
        view = PointView(journal, seq)
        try:
            for sector, count in probes:
                lo, n = sector * 512, min(count * 512, SIZE - sector * 512)
                want = model.states[seq][lo:lo + n]
                assert view.read(lo, n) == want, f"export read at seq {seq}"
                assert journal.read(lo, n, seq=seq) == want, f"read at seq {seq}"
        finally:
            view.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations(), seed=st.integers(0, 2**16), splits=st.lists(st.integers(0, 100), max_size=4),
       picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=3),
       probes=st.lists(st.tuples(st.integers(0, SECTORS - 1), st.integers(1, 24)), min_size=1, max_size=6))
def test_compressed_journal_matches_model_and_reindexes(tmp_path_factory: pytest.TempPathFactory, ops, seed,
                                                        splits, picks, probes) -> None:
    tmp = tmp_path_factory.mktemp("compressed")
    journal, model = build(tmp, ops, seed, splits)
    seqs = sorted({0, len(ops)} | {p % (len(ops) + 1) for p in picks})
    try:
        check_against_model(journal, model, tmp, seqs, probes)
        assert journal.verify().ok
        before = block_index(journal)
    finally:
        journal.close()
    shutil.rmtree(tmp / "j" / "index")
    reindex(tmp / "j")
    with Journal.open(tmp / "j", readonly=True) as journal:
        assert block_index(journal) == before  # the same entries, positions and CRCs
        assert journal.verify().ok
        check_against_model(journal, model, tmp, seqs[-1:], probes)


def _mixed_journal(path: Path, compression: Compression | None = None) -> tuple[Journal, dict[int, bytes]]:
    """Ten 16 KiB writes, each text, zeros, random, text piece by piece."""
    rng = random.Random(7)
    journal = Journal.create(path, device_bytes=1 << 20, compression=compression)
    t = journal.info.created_ns
    data = {s: text(rng, BLOCK) + bytes(BLOCK) + rng.randbytes(BLOCK) + text(rng, BLOCK) for s in range(1, 11)}
    journal.append([Record(s, t + s, RecordType.WRITE, 0, (s - 1) * 4 * BLOCK, 4 * BLOCK, data[s])
                    for s in range(1, 11)])
    return journal, data


def test_pieces_are_stored_as_their_kind(tmp_path: Path) -> None:
    journal, data = _mixed_journal(tmp_path / "j")
    with journal:
        assert kinds(journal) == Counter({KIND_ZSTD: 20, KIND_ZERO: 10, KIND_DATA: 10})
        stored = sum(r.data_len for r in journal.segments.scan(1) if not isinstance(r, tuple))
        assert stored < sum(map(len, data.values())) * 0.6
        assert all(r.encoding == ENC_PIECES for r in journal.segments.scan(1) if not isinstance(r, tuple))
        assert journal.read(0, 10 * 4 * BLOCK) == b"".join(data[s] for s in range(1, 11))
    off, _ = _mixed_journal(tmp_path / "off", OFF)
    with off:
        assert kinds(off) == Counter({KIND_DATA: 40})
        assert off.compression == OFF
        assert off.read(0, 10 * 4 * BLOCK) == b"".join(data[s] for s in range(1, 11))


def test_random_data_is_stored_raw(tmp_path: Path) -> None:
    """Incompressible writes cost exactly what they cost without compression: raw records."""
    rng = random.Random(3)
    with Journal.create(tmp_path / "j", device_bytes=1 << 20) as journal:
        t = journal.info.created_ns
        journal.append([Record(s, t + s, RecordType.WRITE, 0, s * 65536, 65536, rng.randbytes(65536))
                        for s in range(1, 9)])
        recs = [r for r in journal.segments.scan(1) if not isinstance(r, tuple)]
        assert [r.data_len for r in recs] == [65536] * 8
        assert all(r.encoding == 0 for r in recs)


def _record(journal: Journal, seq: int):  # noqa: ANN202
    return next(r for r in journal.segments.scan(1) if not isinstance(r, tuple) and r.seq == seq)


def test_damaged_frame_is_an_error_never_wrong_bytes(tmp_path: Path) -> None:
    journal, data = _mixed_journal(tmp_path / "j")
    seg = tmp_path / "j" / "segments" / "00000001.seg"
    rec = _record(journal, 3)
    with open(seg, "r+b") as f:  # a byte inside the first piece's zstd frame
        at = rec.pos + REC_HDR.size + 40
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))
    with journal:
        report = journal.verify()
        assert not report.ok
        assert any(p.seq == 3 and p.offset == rec.pos for p in report.problems), report.problems
        with pytest.raises(CorruptJournal, match="seq 3") as info:
            journal.read(2 * 4 * BLOCK, BLOCK)
        assert "\n" not in str(info.value)
        view = PointView(journal, 10)
        with pytest.raises(CorruptJournal, match="seq 3"):
            view.read(2 * 4 * BLOCK, BLOCK)
        view.close()
        with pytest.raises(CorruptJournal, match="seq 3"):
            journal.restore(tmp_path / "out.img")
        assert not (tmp_path / "out.img").exists()
        # the record's other pieces and the other records still read
        assert journal.read(2 * 4 * BLOCK + BLOCK, 3 * BLOCK) == data[3][BLOCK:]
        assert journal.read(0, 2 * 4 * BLOCK) == data[1] + data[2]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.integers(0, 10**9), bit=st.integers(0, 7))
def test_any_flipped_payload_bit_is_caught(tmp_path_factory: pytest.TempPathFactory, where: int, bit: int) -> None:
    tmp = tmp_path_factory.mktemp("flip")
    journal, data = _mixed_journal(tmp / "j")
    journal.close()
    recs = [r for r in Journal.open(tmp / "j", readonly=True).segments.scan(1) if not isinstance(r, tuple)]
    rec = recs[where % len(recs)]
    at = rec.pos + REC_HDR.size + where % rec.data_len
    seg = tmp / "j" / "segments" / "00000001.seg"
    raw = bytearray(seg.read_bytes())
    raw[at] ^= 1 << bit
    seg.write_bytes(raw)
    with Journal.open(tmp / "j", readonly=True) as journal:
        assert not journal.verify().ok  # the record's own CRC at least
        for s in range(1, 11):
            for piece in range(4):
                at = (s - 1) * 4 * BLOCK + piece * BLOCK
                try:
                    got = journal.read(at, BLOCK)
                except CorruptJournal:
                    continue
                assert got == data[s][piece * BLOCK:(piece + 1) * BLOCK]


def test_schema_2_journal_is_refused_then_reindexed_and_compresses(tmp_path: Path) -> None:
    """A schema-2 journal (raw records, old index) needs a reindex; its records then read as they lie."""
    path = tmp_path / "j"
    journal, data = _mixed_journal(path, OFF)  # raw records: what schema 2 wrote
    journal.close()
    marker = path / MARKER
    marker.write_text(marker.read_text().replace(f"{MARKER} 3\n", f"{MARKER} 2\n"))
    shutil.rmtree(path / "index")  # a schema-2 index (no 'compress' setting) is rebuilt whole
    (path / "index").mkdir()
    with pytest.raises(UnsupportedVersion, match="cdp reindex"):
        Journal.open(path)
    reindex(path)
    assert marker.read_text().startswith(f"{MARKER} 3\n")
    with Journal.open(path) as journal:
        assert journal.compression.enabled  # what a journal without the setting gets
        t = journal.last_ts_ns
        more = text(random.Random(1), 4 * BLOCK)
        journal.append([Record(11, t + 1, RecordType.WRITE, 0, 40 * BLOCK, 4 * BLOCK, more)])
        assert kinds(journal)[KIND_ZSTD] == 4
        assert journal.read(0, 44 * BLOCK) == b"".join(data[s] for s in range(1, 11)) + more
        assert journal.verify().ok


def test_single_block_records(tmp_path: Path) -> None:
    """The one-block fast path: zeros, text and random blocks, each as its kind, each read back."""
    rng = random.Random(5)
    blocks = {1: bytes(BLOCK), 2: text(rng, BLOCK), 3: rng.randbytes(BLOCK)}
    with Journal.create(tmp_path / "j", device_bytes=1 << 20) as journal:
        t = journal.info.created_ns
        journal.append([Record(s, t + s, RecordType.WRITE, 0, s * BLOCK, BLOCK, blocks[s]) for s in blocks])
        assert kinds(journal) == Counter({KIND_ZERO: 1, KIND_ZSTD: 1, KIND_DATA: 1})
        assert journal.read(BLOCK, 3 * BLOCK) == blocks[1] + blocks[2] + blocks[3]
        assert journal.verify().ok


@needs()
def test_restore_to_a_block_device_writes_zero_blocks(tmp_path: Path) -> None:
    """Elided zero blocks are left out of a file (holes) but written to a device over old bytes."""
    journal, data = _mixed_journal(tmp_path / "j")
    rng = random.Random(2)
    with journal, loop_device(tmp_path / "loop.img", 1 << 20) as dev:
        with open(dev, "r+b") as f:  # whatever the device held before: not zeros
            f.write(rng.randbytes(1 << 20))
        journal.restore(dev, overwrite=True)
        with open(dev, "rb") as f:
            got = f.read(1 << 20)
        want = b"".join(data[s] for s in range(1, 11))
        assert got[:len(want)] == want
        assert got[len(want):] == bytes((1 << 20) - len(want))
