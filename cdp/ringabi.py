"""The write ring, ABI v1: every number the producer and the consumer share.

This module is the Python half of the contract; the other half is the
kernel's C header, ``kernel/cdp_ring_abi.h``, which holds the same values
(tests/kernel/test_abi_header.py holds the two to each other, and
tests/ring/test_abi_spec.py holds this module to the layout below).
Everything is little-endian, positions and lengths are in bytes.

Layout of a ring (the filter's character device, or a ring file)::

    [ control page: CONTROL_SIZE bytes ][ data area: data_size bytes ]

Control page (only the consumer writes ``tail``; only the producer writes the
rest)::

      0 u32 magic  'CPRG'         4 u32 version (1)       8 u64 data_size
     16 u64 device_bytes         24 u32 block_size       28 u32 flags
     32 16B device_id            48 u64 dropped          56 u64 reserved
     64 u64 head   72..127 reserved   128 u64 tail   136..4095 reserved

Record (starts at a multiple of 64 in the data area)::

      0 u32 magic 'CDPR'   4 u16 type    6 u16 flags    8 u32 rec_len
     12 u32 data_len      16 u64 seq    24 u64 ts_ns   32 u64 offset
     40 u64 length        48 u32 data_crc              52 u32 hdr_crc
     56 u32 state         60 u32 reserved

``hdr_crc`` covers bytes 0..51, so the producer can flip ``state`` from BUSY
to COMMITTED or DISCARDED without touching it. ``data_crc`` and ``hdr_crc``
are final only once ``state`` is not BUSY (the kernel computes a WRITE's CRC
after its bio completed): the consumer reads ``state`` first and stops at
BUSY before it checks anything else.
"""

from __future__ import annotations

import struct
import sys
from enum import IntEnum
from typing import NamedTuple

import crc32c

# --------------------------------------------------------------- the layout

CONTROL_SIZE = 4096
RING_MAGIC = 0x47525043  # the bytes b"CPRG" read as a little-endian u32
RING_VERSION = 1
MIN_DATA_SIZE = 65536

# Control page field offsets.
OFF_MAGIC = 0
OFF_VERSION = 4
OFF_DATA_SIZE = 8
OFF_DEVICE_BYTES = 16
OFF_BLOCK_SIZE = 24
OFF_FLAGS = 28
OFF_DEVICE_ID = 32
OFF_DROPPED = 48
OFF_HEAD = 64
OFF_TAIL = 128

DEVICE_ID_SIZE = 16

# Ring flags (the control page's ``flags`` word).
RING_FLAG_OVERFLOW = 1
RING_FLAG_DETACHED = 2

# --------------------------------------------------------------- the record

REC_MAGIC = 0x52504443  # the bytes b"CDPR" read as a little-endian u32
REC_HDR_SIZE = 64
REC_ALIGN = 64
MAX_MARK_NAME = 255
#: Bytes of the header covered by ``hdr_crc`` (0..51).
HDR_CRC_SPAN = 52

# Record header field offsets.
REC_OFF_MAGIC = 0
REC_OFF_TYPE = 4
REC_OFF_FLAGS = 6
REC_OFF_REC_LEN = 8
REC_OFF_DATA_LEN = 12
REC_OFF_SEQ = 16
REC_OFF_TS_NS = 24
REC_OFF_OFFSET = 32
REC_OFF_LENGTH = 40
REC_OFF_DATA_CRC = 48
REC_OFF_HDR_CRC = 52
REC_OFF_STATE = 56
REC_OFF_RESERVED = 60

#: Device offsets and lengths in records are multiples of this.
SECTOR = 512
#: Payload of an OVERFLOW record: the u64 ts_ns of the first dropped write.
OVERFLOW_PAYLOAD_SIZE = 8


class RecType(IntEnum):
    """What a ring record says happened to the device."""

    WRITE = 1
    DISCARD = 2
    WRITE_ZEROES = 3
    FLUSH = 4
    MARK = 5
    OVERFLOW = 6
    PAD = 7


class RecFlag(IntEnum):
    """Request flags carried by a record (bits of the ``flags`` field)."""

    FUA = 1
    PREFLUSH = 2


class RecState(IntEnum):
    """The record's state word, the last thing the producer writes."""

    BUSY = 0
    COMMITTED = 1
    DISCARDED = 2


#: Types whose [offset, offset+length) is a device range that must be valid.
RANGE_TYPES = frozenset({RecType.WRITE, RecType.DISCARD, RecType.WRITE_ZEROES, RecType.OVERFLOW})
REC_TYPE_MIN = int(RecType.WRITE)
REC_TYPE_MAX = int(RecType.PAD)

# ------------------------------------------------------------------- structs

#: The used part of the control page (136 bytes; the rest is reserved zeros):
#: magic, version, data_size, device_bytes, block_size, flags, device_id,
#: dropped, head, tail.
CONTROL = struct.Struct("<IIQQII16sQ8xQ56xQ")
#: A full record header: magic, type, flags, rec_len, data_len, seq, ts_ns,
#: offset, length, data_crc, hdr_crc, state.
REC_HDR = struct.Struct("<IHHIIQQQQIII4x")
#: The part of the header covered by ``hdr_crc``.
REC_HDR_BODY = struct.Struct("<IHHIIQQQQI")

assert CONTROL.size == OFF_TAIL + 8
assert REC_HDR.size == REC_HDR_SIZE
assert REC_HDR_BODY.size == HDR_CRC_SPAN


class Control(NamedTuple):
    """A snapshot of the control page."""

    magic: int
    version: int
    data_size: int
    device_bytes: int
    block_size: int
    flags: int
    device_id: bytes
    dropped: int
    head: int
    tail: int


class RecordHeader(NamedTuple):
    """A record header as stored (no check made)."""

    magic: int
    type: int
    flags: int
    rec_len: int
    data_len: int
    seq: int
    ts_ns: int
    offset: int
    length: int
    data_crc: int
    hdr_crc: int
    state: int


def pack_control(
    data_size: int, device_bytes: int, block_size: int, device_id: bytes = bytes(DEVICE_ID_SIZE),
    flags: int = 0, dropped: int = 0, head: int = 0, tail: int = 0,
) -> bytes:
    """The whole 4096-byte control page of a ring with these fields."""
    used = CONTROL.pack(RING_MAGIC, RING_VERSION, data_size, device_bytes, block_size, flags,
                        bytes(device_id), dropped, head, tail)
    return used + bytes(CONTROL_SIZE - len(used))


def unpack_control(buf: bytes | bytearray | memoryview, offset: int = 0) -> Control:
    """Read the control page fields from ``buf`` (a snapshot, no check made)."""
    return Control._make(CONTROL.unpack_from(buf, offset))


def hdr_crc(header: bytes | bytearray | memoryview) -> int:
    """CRC-32C of header bytes 0..51 (``header`` holds at least 52 bytes)."""
    return crc32c.crc32c(header[:HDR_CRC_SPAN])


def data_crc(payload: bytes | bytearray | memoryview) -> int:
    """CRC-32C of a payload; 0 for an empty one, as the ABI says."""
    return crc32c.crc32c(payload) if len(payload) else 0


def rec_len_for(data_len: int) -> int:
    """Header plus payload rounded up to the record alignment."""
    return (REC_HDR_SIZE + data_len + REC_ALIGN - 1) & ~(REC_ALIGN - 1)


def pack_record_header(
    rtype: int, flags: int, rec_len: int, data_len: int, seq: int, ts_ns: int,
    offset: int, length: int, dcrc: int, state: int = RecState.BUSY,
) -> bytes:
    """A 64-byte record header with ``hdr_crc`` computed over bytes 0..51."""
    body = REC_HDR_BODY.pack(REC_MAGIC, rtype, flags, rec_len, data_len, seq, ts_ns, offset, length, dcrc)
    return body + struct.pack("<III", crc32c.crc32c(body), state, 0)


def unpack_record_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> RecordHeader:
    """Read a record header from ``buf`` at ``offset`` (no check made)."""
    return RecordHeader._make(REC_HDR.unpack_from(buf, offset))


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, ...; the data area's size must be one."""
    return n > 0 and n & (n - 1) == 0


def range_ok(offset: int, length: int, device_bytes: int) -> bool:
    """Whether ``[offset, offset+length)`` is a device range a record may name: sectors, not empty, inside."""
    return not (offset % SECTOR or length % SECTOR or length <= 0 or offset + length > device_bytes)


# ---------------------------------------------------------- mapping a ring

#: Indices of the control page's words in its ``memoryview.cast("Q")`` and
#: ``cast("I")`` views, and of a record's state word in the data area's
#: ``cast("I")`` view. Both ends map the ring natively: an aligned 8- or
#: 4-byte item access is one load or store of that size, never torn.
Q_HEAD = OFF_HEAD // 8
Q_TAIL = OFF_TAIL // 8
Q_DROPPED = OFF_DROPPED // 8
I_FLAGS = OFF_FLAGS // 4
I_STATE = REC_OFF_STATE // 4


class RingError(Exception):
    """A ring that cannot be used, by either end; the message is one printable line."""


def check_host() -> None:
    """Refuse to map a ring natively on a big-endian host."""
    if sys.byteorder != "little":
        raise RingError("the ring ABI is little-endian and cdp maps it natively; this host is big-endian")
