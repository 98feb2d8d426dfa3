"""Device content for tests: random data with runs of zero blocks, from a seed.

The one builder of device images: the journal's baseline stores no zero
block, so a realistic image has some (``zero_fraction`` of the 4 KiB
blocks, 0 for none); the same seed always gives the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

from journal.format import BLOCK


def random_device(size: int, seed: int, zero_fraction: float = 0.4) -> bytes:
    """``size`` bytes of random data in which about ``zero_fraction`` of the blocks are zeros."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    for block in range(0, size, BLOCK):
        if rng.random() < zero_fraction:
            data[block:block + BLOCK] = bytes(BLOCK)
    return bytes(data[:size])


def write_device(path: Path, size: int, seed: int, zero_fraction: float = 0.4) -> bytes:
    """Write :func:`random_device` to ``path`` (an image file); returns the bytes."""
    data = random_device(size, seed, zero_fraction)
    path.write_bytes(data)
    return data
