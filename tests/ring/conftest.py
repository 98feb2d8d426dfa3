"""Helpers for ring tests: real ring files in temporary directories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cdp.ring import Corrupt, Entry, Ring
from cdp.ringabi import RecType
from cdp.ringwriter import RingWriter

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


@pytest.fixture
def ring_pair(tmp_path: Path) -> Iterator:
    """Make (writer, reader) on a fresh ring file; closes both."""
    made: list = []

    def make(data_size: int = 1 << 16, device_bytes: int = DEVICE) -> tuple[RingWriter, Ring]:
        path = tmp_path / f"ring{len(made)}"
        writer = RingWriter.create(path, data_size, device_bytes, 512, bytes(range(16)))
        reader = Ring(path)
        made.append((writer, reader))
        return writer, reader

    yield make
    for writer, reader in made:
        reader.close()
        writer.close(wait_s=0)
