"""PointView, the read path of `cdp export`, against the independent model (in process).

For random histories (partial-block writes, discards, zeroing extents,
overflow windows and resyncs) and random points: reads at random offsets
and lengths equal the model, a read of everything equals it too (and
``JournalReader.read``), extents tile the range exactly and every extent
called zero reads as zeros. A damaged segment byte makes the read of that
block fail, and only that block.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal, Record, RecordType
from journal.codec import OFF  # raw payloads: the damage is placed by framing arithmetic
from journal.errors import CorruptJournal, OutOfRange
from journal.pointview import PointView
from tests.export.conftest import build_journal, model_at


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), big=st.booleans(), data=st.data())
def test_reads_and_extents_match_the_model(tmp_path_factory: pytest.TempPathFactory, seed: int, big: bool,
                                          data: st.DataObject) -> None:
    size = (3 << 20) + 512 * 3 if big else 256 * 1024 + 512  # a partial last block, too
    built = build_journal(tmp_path_factory.mktemp("pv") / "j", random.Random(seed), size=size, records=60)
    with Journal.open(built.path, readonly=True) as journal:
        for seq in data.draw(st.lists(st.integers(0, built.last_seq), min_size=1, max_size=3)):
            want = model_at(built, seq)
            view = PointView(journal, seq)
            try:
                assert view.read(0, size) == want
                for _ in range(12):
                    offset = data.draw(st.integers(0, size - 1))
                    length = data.draw(st.integers(1, min(size - offset, 300_000)))
                    assert view.read(offset, length) == want[offset:offset + length], (seq, offset, length)
                offset = data.draw(st.integers(0, size - 1))
                length = data.draw(st.integers(1, size - offset))
                extents = view.extents(offset, length)
                assert extents and extents[0].offset == offset
                at = offset
                for e in extents:
                    assert e.offset == at and e.length > 0
                    if e.zero:
                        assert want[e.offset:e.offset + e.length] == bytes(e.length)
                    at += e.length
                assert at <= offset + length
            finally:
                view.close()
        assert journal.read(0, size, seq=built.last_seq) == model_at(built, built.last_seq)


def test_deep_history_of_one_block(tmp_path: Path) -> None:
    """Hundreds of versions of a block, before and after the point: the walk seeks past them."""
    with Journal.create(tmp_path / "j", device_bytes=1 << 20) as journal:
        t = journal.info.created_ns
        journal.append([Record(s, t + s, RecordType.WRITE, 0, 4096, 4096, bytes([s % 251]) * 4096)
                        for s in range(1, 401)])
        journal.append([Record(401, t + 401, RecordType.WRITE, 0, 8192, 512, b"x" * 512)])
        for seq in (0, 1, 17, 200, 400, 401):
            view = PointView(journal, seq)
            got = view.read(0, 3 * 4096)
            assert got[:4096] == bytes(4096)
            assert got[4096:8192] == (bytes([min(seq, 400) % 251]) * 4096 if seq else bytes(4096))
            assert got[8192:8704] == (b"x" * 512 if seq >= 401 else bytes(512))
            view.close()


def test_damaged_byte_fails_that_block_only(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=1 << 18, compression=OFF) as journal:
        t = journal.info.created_ns
        journal.append([Record(s, t + s, RecordType.WRITE, 0, (s - 1) * 8192, 8192, bytes([s]) * 8192)
                        for s in range(1, 11)])
        seg = tmp_path / "j" / "segments" / "00000001.seg"
        rec3 = 64 + 2 * (64 + 8192)  # segment header, two records, then record 3's header
        with open(seg, "r+b") as f:
            f.seek(rec3 + 64 + 5000)
            byte = f.read(1)
            f.seek(rec3 + 64 + 5000)
            f.write(bytes([byte[0] ^ 0x40]))
        view = PointView(journal, 10)
        with pytest.raises(CorruptJournal, match="seq 3"):
            view.read(0, 1 << 18)
        with pytest.raises(CorruptJournal, match="block 5 of record seq 3"):
            view.read(5 * 4096, 10)
        assert view.read(0, 2 * 8192) == bytes([1]) * 8192 + bytes([2]) * 8192
        assert view.read(3 * 8192, 8192) == bytes([4]) * 8192
        view.close()


def test_bad_ranges_and_seqs(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=1 << 16) as journal:
        with pytest.raises(OutOfRange):
            PointView(journal, 1)
        view = PointView(journal, 0)
        assert view.read(0, 0) == b""
        for offset, length in ((-1, 1), (0, (1 << 16) + 1), (1 << 16, 1)):
            with pytest.raises(OutOfRange):
                view.read(offset, length)
        with pytest.raises(OutOfRange):
            view.extents(0, 0)
        assert [(e.offset, e.length, e.zero) for e in view.extents(100, 5000)] == [(100, 5000, True)]
        view.close()
