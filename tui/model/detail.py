"""A point's detail: what the records since the previous point did, and the blocks they changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from journal import Journal, Point, RecordType
from journal.format import BLOCK
from journal.records import ZERO_TYPES, RecordFlag
from tui.model.points import points_page

#: A point detail compares at most this many written blocks byte for byte.
COMPARE_BLOCKS = 4096
#: what changes device bytes between two points: writes, zeroing, the service's resync copies
_CHANGE_TYPES = ZERO_TYPES | {RecordType.WRITE, RecordType.RESYNC}


@dataclass(frozen=True, slots=True)
class PointDetail:
    """What happened between the previous point and this one."""

    point: Point
    previous: Point | None
    records: int
    writes: int
    write_bytes: int
    zeroed_bytes: int
    #: every 4 KiB block a record touched, in block order
    touched: list[int]
    #: touched blocks whose content differs (compared up to COMPARE_BLOCKS)
    changed: list[int]
    compared: int


class Cancelled(Exception):
    """The worker computing a detail was superseded."""


def previous_point(j: Journal, point: Point) -> Point | None:
    """The point just before ``point`` among all kinds (what it is compared to)."""
    page = points_page(j, None, point, 1)
    return page.points[0] if page.points else None


def point_detail(j: Journal, point: Point, cancelled: Callable[[], bool] = lambda: False) -> PointDetail:
    """Count the records since the previous point and find the blocks they changed."""
    prev = previous_point(j, point)
    prev_seq = prev.seq if prev is not None else 0
    touched: set[int] = set()
    records = writes = write_bytes = zeroed = 0
    device = j.info.device_bytes
    if point.seq > prev_seq:
        for n, r in enumerate(j.records(prev_seq + 1, point.seq)):
            if n % 4096 == 0 and cancelled():
                raise Cancelled
            records += 1
            if r.type not in _CHANGE_TYPES or (r.type == RecordType.RESYNC and r.flags & RecordFlag.UNCHANGED):
                continue  # an unchanged RESYNC (a reattach's compare) changed nothing
            if r.type == RecordType.WRITE:
                writes += 1
                write_bytes += r.length
            elif r.type != RecordType.RESYNC:
                zeroed += r.length
            end = min(r.offset + r.length, device)
            touched.update(range(r.offset // BLOCK, (end - 1) // BLOCK + 1))
    blocks = sorted(touched)
    changed = []
    for n, block in enumerate(blocks[:COMPARE_BLOCKS]):
        if n % 256 == 0 and cancelled():
            raise Cancelled
        before, after = block_pair(j, block, point.seq, prev_seq)
        if before != after:
            changed.append(block)
    return PointDetail(point, prev, records, writes, write_bytes, zeroed, blocks, changed,
                       min(len(blocks), COMPARE_BLOCKS))


def block_pair(j: Journal, block: int, seq: int, prev_seq: int) -> tuple[bytes, bytes]:
    """(before, after): one 4 KiB block at the previous point and at this one."""
    offset = block * BLOCK
    length = min(BLOCK, j.info.device_bytes - offset)
    return j.read(offset, length, seq=prev_seq), j.read(offset, length, seq=seq)
