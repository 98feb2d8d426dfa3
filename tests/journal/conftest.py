"""Fixtures for journal tests: real journals in temporary directories."""

from __future__ import annotations

import random
from pathlib import Path

import pytest


def random_device(size: int, seed: int) -> bytes:
    """A device image with random data and runs of zero blocks."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    for block in range(0, size, 4096):
        if rng.random() < 0.3:
            data[block:block + 4096] = bytes(4096)
    return bytes(data[:size])


@pytest.fixture
def image(tmp_path: Path):
    """Write a device image of a given size; returns (path, bytes)."""

    def make(size: int, seed: int = 1) -> tuple[Path, bytes]:
        data = random_device(size, seed)
        path = tmp_path / f"device-{seed}.img"
        path.write_bytes(data)
        return path, data

    return make
