"""A producer may finish a WRITE's CRCs after the copy, while the record is BUSY.

dm-cdp computes a WRITE's CRC-32C once its bio completed, on a worker, and
rewrites ``data_crc`` and ``hdr_crc`` before it stores COMMITTED. The reader
must therefore stop at BUSY before it checks a header: a BUSY record whose
CRCs are half written is not damage. These tests play that producer byte by
byte on a ring file.
"""

from __future__ import annotations

import random
from pathlib import Path

import crc32c

from cdp.ring import Corrupt, Entry, Ring
from cdp.ringabi import CONTROL_SIZE, REC_HDR_BODY, REC_MAGIC, RecState, RecType
from cdp.ringwriter import RingWriter


def _busy_write_with_unfinished_crcs(tmp_path: Path, data: bytes) -> tuple[Path, int]:
    """A ring holding one reserved WRITE whose header has data_crc 0 and a stale hdr_crc."""
    path = tmp_path / "ring"
    w = RingWriter.create(path, 1 << 16, 1 << 20)
    slot = w.reserve(RecType.WRITE, offset=0, length=len(data), data=data)
    assert slot is not None
    w.close(detach=False, wait_s=0)
    with open(path, "r+b") as f:
        f.seek(CONTROL_SIZE + 48)
        f.write(bytes(4) + b"\xde\xad\xbe\xef")  # data_crc not yet computed, hdr_crc half written
    return path, slot.pos


def _seal(path: Path, pos: int, data: bytes) -> None:
    """What the kernel's sealer does: both CRCs, then COMMITTED."""
    with open(path, "r+b") as f:
        at = CONTROL_SIZE + pos
        f.seek(at)
        body = bytearray(f.read(52))
        body[48:52] = crc32c.crc32c(data).to_bytes(4, "little")
        assert REC_HDR_BODY.unpack(bytes(body))[0] == REC_MAGIC
        f.seek(at + 48)
        f.write(bytes(body[48:52]) + crc32c.crc32c(bytes(body)).to_bytes(4, "little"))
        f.write(int(RecState.COMMITTED).to_bytes(4, "little"))


def test_busy_record_with_unfinished_crcs_is_waited_for_not_reported(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(8192)
    path, pos = _busy_write_with_unfinished_crcs(tmp_path, data)
    ring = Ring(path)
    assert ring.read() == []          # BUSY: wait, whatever the header says
    _seal(path, pos, data)
    got = ring.read()
    ring.close()
    assert len(got) == 1 and isinstance(got[0], Entry)
    assert bytes(got[0].payload) == data and got[0].data_crc == crc32c.crc32c(data)


def test_committed_record_with_a_bad_header_is_still_reported(tmp_path: Path) -> None:
    """Reading the state first does not skip the checks once a record is committed."""
    data = random.Random(2).randbytes(4096)
    path, _pos = _busy_write_with_unfinished_crcs(tmp_path, data)
    with open(path, "r+b") as f:
        f.seek(CONTROL_SIZE + 56)
        f.write(int(RecState.COMMITTED).to_bytes(4, "little"))
    ring = Ring(path)
    got = ring.read()
    ring.close()
    assert len(got) == 1 and isinstance(got[0], Corrupt)
