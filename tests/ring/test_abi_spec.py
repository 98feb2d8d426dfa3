"""Hold cdp.ringabi to the ring ABI v1: every size, offset and constant.

The expected values are written here by hand from the layout that
``kernel/cdp_ring_abi.h`` and cdp/ringabi.py's docstring describe, not read
from either, so a change on any side shows up as a failing test.
"""

from __future__ import annotations

import itertools
import struct

import crc32c
import pytest

from cdp import ringabi as abi

CONTROL_FIELDS = {  # name: (offset, size) from the control page table
    "MAGIC": (0, 4), "VERSION": (4, 4), "DATA_SIZE": (8, 8), "DEVICE_BYTES": (16, 8),
    "BLOCK_SIZE": (24, 4), "FLAGS": (28, 4), "DEVICE_ID": (32, 16), "DROPPED": (48, 8),
    "HEAD": (64, 8), "TAIL": (128, 8),
}
RECORD_FIELDS = {  # name: (offset, size) from the record header table
    "MAGIC": (0, 4), "TYPE": (4, 2), "FLAGS": (6, 2), "REC_LEN": (8, 4), "DATA_LEN": (12, 4),
    "SEQ": (16, 8), "TS_NS": (24, 8), "OFFSET": (32, 8), "LENGTH": (40, 8), "DATA_CRC": (48, 4),
    "HDR_CRC": (52, 4), "STATE": (56, 4), "RESERVED": (60, 4),
}


def test_constants() -> None:
    assert abi.CONTROL_SIZE == 4096
    assert abi.RING_MAGIC == 0x47525043
    assert abi.RING_MAGIC.to_bytes(4, "little") == b"CPRG"
    assert abi.RING_VERSION == 1
    assert abi.MIN_DATA_SIZE == 65536
    assert abi.REC_MAGIC == 0x52504443
    assert abi.REC_MAGIC.to_bytes(4, "little") == b"CDPR"
    assert abi.REC_HDR_SIZE == 64
    assert abi.REC_ALIGN == 64
    assert abi.MAX_MARK_NAME == 255
    assert abi.RING_FLAG_OVERFLOW == 1
    assert abi.RING_FLAG_DETACHED == 2


@pytest.mark.parametrize("name", sorted(CONTROL_FIELDS))
def test_control_offsets(name: str) -> None:
    assert getattr(abi, f"OFF_{name}") == CONTROL_FIELDS[name][0]


@pytest.mark.parametrize("name", sorted(RECORD_FIELDS))
def test_record_offsets(name: str) -> None:
    assert getattr(abi, f"REC_OFF_{name}") == RECORD_FIELDS[name][0]


def test_record_fields_tile_the_header() -> None:
    spans = sorted(RECORD_FIELDS.values())
    assert spans[0][0] == 0
    for (off, size), (nxt, _) in itertools.pairwise(spans):
        assert off + size == nxt
    assert spans[-1][0] + spans[-1][1] == 64


def test_enums() -> None:
    assert {t.name: t.value for t in abi.RecType} == {
        "WRITE": 1, "DISCARD": 2, "WRITE_ZEROES": 3, "FLUSH": 4, "MARK": 5, "OVERFLOW": 6, "PAD": 7}
    assert {f.name: f.value for f in abi.RecFlag} == {"FUA": 1, "PREFLUSH": 2}
    assert {s.name: s.value for s in abi.RecState} == {"BUSY": 0, "COMMITTED": 1, "DISCARDED": 2}


def test_control_page_layout() -> None:
    page = abi.pack_control(1 << 20, 123 * 512, 4096, bytes(range(16)), flags=3, dropped=7,
                            head=640, tail=128)
    assert len(page) == 4096
    u32 = lambda off: struct.unpack_from("<I", page, off)[0]
    u64 = lambda off: struct.unpack_from("<Q", page, off)[0]
    assert page[0:4] == b"CPRG" and u32(4) == 1
    assert u64(8) == 1 << 20 and u64(16) == 123 * 512
    assert u32(24) == 4096 and u32(28) == 3
    assert page[32:48] == bytes(range(16))
    assert u64(48) == 7 and u64(56) == 0
    assert u64(64) == 640 and page[72:128] == bytes(56)
    assert u64(128) == 128 and page[136:] == bytes(3960)
    assert abi.unpack_control(page) == (abi.RING_MAGIC, 1, 1 << 20, 123 * 512, 4096, 3,
                                        bytes(range(16)), 7, 640, 128)
    assert abi.CONTROL.size == 136


def test_record_header_layout() -> None:
    hdr = abi.pack_record_header(abi.RecType.WRITE, 3, 4160, 4096, 9, 1_700_000_000_123456789,
                                 8192, 4096, 0xDEADBEEF, abi.RecState.COMMITTED)
    assert len(hdr) == 64 and abi.REC_HDR.size == 64
    fields = struct.unpack("<IHHIIQQQQIIII", hdr)
    assert fields == (0x52504443, 1, 3, 4160, 4096, 9, 1_700_000_000_123456789, 8192, 4096,
                      0xDEADBEEF, crc32c.crc32c(hdr[:52]), 1, 0)
    assert hdr[:4] == b"CDPR"
    assert abi.hdr_crc(hdr) == crc32c.crc32c(hdr[0:52])
    # the state word is outside the CRC: committing does not touch hdr_crc
    other = abi.pack_record_header(abi.RecType.WRITE, 3, 4160, 4096, 9, 1_700_000_000_123456789,
                                   8192, 4096, 0xDEADBEEF, abi.RecState.BUSY)
    assert other[52:56] == hdr[52:56] and other[56:60] != hdr[56:60]
    assert abi.unpack_record_header(b"x" * 64 + hdr, 64).seq == 9


def test_crc_is_castagnoli() -> None:
    # the standard CRC-32C check value
    assert abi.data_crc(b"123456789") == 0xE3069283
    assert abi.data_crc(b"") == 0


@pytest.mark.parametrize("data_len, rec_len", [(0, 64), (1, 128), (8, 128), (64, 128), (4096, 4160), (65, 192)])
def test_rec_len(data_len: int, rec_len: int) -> None:
    assert abi.rec_len_for(data_len) == rec_len
