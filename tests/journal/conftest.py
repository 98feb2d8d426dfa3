"""Fixtures for journal tests: real journals in temporary directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.devices import random_device


@pytest.fixture
def image(tmp_path: Path):
    """Write a device image of a given size; returns (path, bytes)."""

    def make(size: int, seed: int = 1) -> tuple[Path, bytes]:
        data = random_device(size, seed)
        path = tmp_path / f"device-{seed}.img"
        path.write_bytes(data)
        return path, data

    return make
