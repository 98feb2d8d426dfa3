"""The baseline copy: sparse-aware, exact, and cheap for holes."""

from __future__ import annotations

import os
from pathlib import Path

from journal import Journal


def test_sparse_source_with_holes_and_zero_runs(tmp_path: Path) -> None:
    size = 64 << 20
    src = tmp_path / "sparse.img"
    rng = os.urandom
    with open(src, "wb") as f:
        f.truncate(size)
        for offset, length in ((0, 4096), (3 << 20, 1 << 20), ((40 << 20) + 512, 9000), (size - 4096, 4096)):
            f.seek(offset)
            f.write(rng(length))
        f.seek(50 << 20)
        f.write(bytes(2 << 20))  # written zeros: data to SEEK_DATA, zeros to the copy
    with Journal.create(tmp_path / "j", device_bytes=size, source=src) as journal:
        stored = journal.stats().disk_bytes
        assert stored < 8 << 20  # holes and zero runs cost nothing
        out = tmp_path / "out.img"
        journal.restore(out)
        assert out.read_bytes() == src.read_bytes()
        assert out.stat().st_blocks * 512 < 8 << 20  # the restore is sparse too


def test_dense_source_round_trips(tmp_path: Path) -> None:
    size = 8 << 20
    data = bytearray(os.urandom(size))
    data[1 << 20:3 << 20] = bytes(2 << 20)
    src = tmp_path / "dense.img"
    src.write_bytes(data)
    progress: list[tuple[int, int]] = []
    with Journal.create(tmp_path / "j", device_bytes=size, source=src,
                        progress=lambda done, total: progress.append((done, total))) as journal:
        assert journal.read(0, size, seq=0) == bytes(data)
    assert progress[-1] == (size, size)
    assert all(a[0] <= b[0] for a, b in zip(progress, progress[1:]))
