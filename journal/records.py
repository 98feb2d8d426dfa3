"""The record and point types shared by the journal, the service and the UIs.

A :class:`Record` is what the drain service hands to ``Journal.append``: one
ring record (see ``docs/ring-abi.md``) after its checks passed, or a resync copy
the service read from the device itself. Types 1..6 are the ring's own;
:data:`RecordType.RESYNC` and :data:`RecordType.BASELINE` exist only in the
journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class RecordType(IntEnum):
    """What a record did to the device (values 1..6 match the ring ABI)."""

    WRITE = 1
    DISCARD = 2
    WRITE_ZEROES = 3
    FLUSH = 4
    MARK = 5
    OVERFLOW = 6
    #: A copy of a device range read by the service to close an overflow
    #: window. Its ``ts_ns`` is when the read completed.
    RESYNC = 100
    #: Part of the baseline copy taken when the journal was created (seq 0).
    BASELINE = 101
    #: What a compaction kept and deleted (seq 0, msgpack payload; see journal.compact).
    COMPACTION = 102
    #: A block version a compaction moved out of a mostly-dead segment: its seq is the
    #: version's, its range the sectors it covers; no seq entry of its own.
    FOLD = 103


class RecordFlag(IntEnum):
    """Flags carried over from the ring record."""

    FUA = 1
    PREFLUSH = 2
    #: OVERFLOW written by a reattach: the service closes its window by
    #: comparing the device with the journal (CRC-32C per block) instead of
    #: copying the whole range.
    REATTACH = 0x100
    #: RESYNC with no payload: the range was read from the device and found
    #: equal to the journal's state just before this record, so it changes
    #: nothing but still advances (and may close) overflow windows.
    UNCHANGED = 0x100


#: Types whose payload is device data.
DATA_TYPES = frozenset({RecordType.WRITE, RecordType.RESYNC, RecordType.BASELINE})
#: Types after which the range reads as zeros.
ZERO_TYPES = frozenset({RecordType.DISCARD, RecordType.WRITE_ZEROES})


@dataclass(frozen=True, slots=True)
class Record:
    """One journaled event, as handed to ``Journal.append``.

    ``data`` may be a memoryview straight into the ring: the journal copies
    it into its segment before ``append`` returns, so the caller may release
    the ring space afterwards.

    - WRITE / RESYNC: ``data`` is ``length`` bytes of device content.
    - DISCARD / WRITE_ZEROES: no data; ``[offset, offset+length)`` reads as zeros.
    - FLUSH: no data, no range.
    - MARK: ``data`` is the UTF-8 name.
    - OVERFLOW: ``data`` is the little-endian u64 ``ts_ns`` of the first
      dropped write; ``[offset, offset+length)`` changed while records were
      dropped.
    - RESYNC with :attr:`RecordFlag.UNCHANGED`: no data; the range compared
      equal to the journal, it only moves overflow windows on.

    ``data_crc`` and ``block_crcs`` are optional CRC-32Cs of ``data`` that
    the caller already has (the ring reader computes them to check the
    producer's CRC): of the whole payload, and of each 4 KiB piece of a
    block-aligned WRITE. The journal stores them instead of reading the
    payload again; they are the producer's own, checked, so the CRC on disk
    goes back to the moment of capture. A wrong one would be stored as
    given and caught when the block is read back, never applied.
    """

    seq: int
    ts_ns: int
    type: int
    flags: int = 0
    offset: int = 0
    length: int = 0
    data: bytes | bytearray | memoryview = b""
    data_crc: int | None = None
    block_crcs: list[int] | None = None


class PointKind(StrEnum):
    """Why a moment is a rewind point.

    The values are what the index's ``points`` table stores and what
    ``--json`` prints; a ``PointKind`` compares equal to its string.
    """

    #: The journal's creation: the baseline copy (seq 0).
    BASELINE = "baseline"
    #: A completed cache flush: a crash-consistent point.
    FLUSH = "flush"
    #: A MARK record from the ring, ordered exactly among the writes.
    MARK = "mark"
    #: A mark made by time (``cdp mark``, the TUI), in the ``umarks`` table.
    USER_MARK = "user-mark"
    #: Writes were dropped here: an overflow window opens.
    OVERFLOW = "overflow"
    #: The resync copy that closed an overflow window.
    RESYNC = "resync"


#: Both kinds of named point: what ``mark:NAME`` and "marks only" look at.
MARK_KINDS = frozenset({PointKind.MARK, PointKind.USER_MARK})


@dataclass(frozen=True, slots=True)
class Point:
    """A rewind point: a moment the device can be restored to.

    ``kind`` is a :class:`PointKind` value (``baseline``, ``flush``, ``mark``,
    ``user-mark``, ``overflow``, ``resync``). ``whole`` is False when the point lies inside
    an overflow window that no resync has closed yet: restoring it would not
    give the device as it was.
    """

    seq: int
    ts_ns: int
    kind: str
    name: str = ""
    whole: bool = True
