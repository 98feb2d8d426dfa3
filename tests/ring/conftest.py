"""Fixtures for the ring tests: real ring files in temporary directories (helpers: tests.support.ring)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cdp.ring import Ring
from cdp.ringwriter import RingWriter
from tests.support.ring import DEVICE


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
