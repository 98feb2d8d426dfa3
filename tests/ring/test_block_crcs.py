"""One CRC pass serves the ring's check and the journal's block index.

The reader checks a block-aligned WRITE by combining the CRC-32Cs of its
4 KiB pieces and hands those to the journal, which stores them instead of
reading the payload again. These tests hold the combination to the plain
CRC, show a damaged piece is still caught, and that the CRCs the journal
stores are the ones a restore checks.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp.ring import Corrupt, Entry, Ring
from cdp.ringabi import CONTROL_SIZE, RecType
from cdp.ringwriter import RingWriter
from journal import Journal, Record, RecordType
from journal.blockcrc import block_crcs, combined
from journal.errors import CorruptJournal

DEVICE = 1 << 20


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 20), st.integers(0, 2**32 - 1))
def test_combined_equals_the_crc_of_the_whole(blocks: int, seed: int) -> None:
    data = random.Random(seed).randbytes(blocks * 4096)
    crcs = block_crcs(data)
    assert crcs == [crc32c.crc32c(data[i:i + 4096]) for i in range(0, len(data), 4096)]
    assert combined(crcs) == crc32c.crc32c(data)


def _ring_with(tmp_path: Path, writes: list[tuple[int, bytes]]) -> Path:
    path = tmp_path / "ring"
    with RingWriter.create(path, 1 << 20, DEVICE) as w:
        for offset, data in writes:
            for slot in w.submit(RecType.WRITE, offset=offset, length=len(data), data=data):
                slot.commit()
        w.close(detach=True, wait_s=0)
    return path


def test_entries_carry_the_checked_crcs(tmp_path: Path) -> None:
    rng = random.Random(1)
    writes = [(0, rng.randbytes(65536)), (8192, rng.randbytes(4096)), (512, rng.randbytes(4096)),
              (4096, rng.randbytes(1536))]
    ring = Ring(_ring_with(tmp_path, writes))
    got = ring.read()
    ring.close()
    assert [e.__class__ for e in got] == [Entry] * 4
    for e, (offset, data) in zip(got, writes, strict=True):
        assert e.data_crc == crc32c.crc32c(data)
        aligned = offset % 4096 == 0 and len(data) % 4096 == 0
        assert e.block_crcs == (block_crcs(data) if aligned else None)


@pytest.mark.parametrize("piece", [0, 7, 15])
def test_a_damaged_piece_is_caught(tmp_path: Path, piece: int) -> None:
    data = random.Random(2).randbytes(65536)
    path = _ring_with(tmp_path, [(65536, data)])
    with open(path, "r+b") as f:  # one byte of one 4 KiB piece of the payload
        at = CONTROL_SIZE + 64 + piece * 4096 + 100
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))
    ring = Ring(path)
    got = ring.read()
    ring.close()
    assert len(got) == 1 and isinstance(got[0], Corrupt)
    assert "CRC-32C" in got[0].reason and (got[0].offset, got[0].length) == (65536, 65536)


def test_journal_stores_the_given_crcs_and_restore_checks_them(tmp_path: Path) -> None:
    """A wrong block CRC handed in is stored as given, stops the restore (never applied) and verify reports it."""
    rng = random.Random(3)
    good, bad = rng.randbytes(16384), rng.randbytes(16384)
    journal = Journal.create(tmp_path / "j", device_bytes=DEVICE)
    ts = journal.info.created_ns
    crcs = block_crcs(bad)
    crcs[2] ^= 1
    journal.append([
        Record(1, ts + 1, RecordType.WRITE, 0, 0, len(good), good, crc32c.crc32c(good), block_crcs(good)),
        # crcs for another shape than the record's are not used: worked out again
        Record(2, ts + 2, RecordType.WRITE, 0, 1 << 16, len(good), good, None, [1, 2]),
        Record(3, ts + 3, RecordType.WRITE, 0, 1 << 17, len(bad), bad, crc32c.crc32c(bad), crcs),
    ])
    out = tmp_path / "out.img"
    journal.restore(out, seq=2)
    image = out.read_bytes()
    assert image[:16384] == good and image[1 << 16:(1 << 16) + 16384] == good
    assert image[16384:1 << 16] == bytes((1 << 16) - 16384)
    with pytest.raises(CorruptJournal, match="fails its CRC-32C"):
        journal.restore(out, seq=3, overwrite=True)
    # and verify finds it first, where a restore would stop
    problems = journal.verify().problems
    assert [(p.seq, "block 34" in p.message) for p in problems] == [(3, True)]
    journal.close()
    os.unlink(out)
