"""Ring helpers for tests: submit a WRITE through a producer, read a consumer dry."""

from __future__ import annotations

from cdp.ring import Corrupt, Entry, Ring
from cdp.ringabi import RecType
from cdp.ringwriter import RingWriter

#: The device size the ring tests' rings protect.
DEVICE = 4 << 20


def write(writer: RingWriter, offset: int, data: bytes, flags: int = 0, *, commit: bool = True):
    """Submit one WRITE; commit its slots unless told not to."""
    slots = writer.submit(RecType.WRITE, offset=offset, length=len(data), data=data, flags=flags)
    if commit:
        for slot in slots:
            slot.commit()
    return slots


def drain(ring: Ring) -> list[Entry | Corrupt]:
    """Read everything available and release it."""
    out: list[Entry | Corrupt] = []
    while True:
        got = ring.read()
        out += got
        ring.release(ring.cursor)
        if not got:
            return out
