"""Restore's extent gathering at its edges, against the device model.

A restore hands the target contiguous extents of checked blocks, cut at
8 MiB, at IOV_MAX pieces, at gaps and at zero runs (left as holes). These
workloads put every cut where it can go wrong: thousands of one-block
winners that sit apart in the segments but back to back on the device, a
write longer than one extent, zero-filled writes inside data, and a device
whose last block is partial.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from tests.support.devices import random_device
from tests.journal.model import DeviceModel

BLOCK = 4096
SIZE = 12 * (1 << 20) + 1536  # the last block is partial


def _records(rng: random.Random, ts0: int) -> list[Record]:
    out: list[Record] = []

    def add(rtype: RecordType, offset: int, data: bytes) -> None:
        out.append(Record(len(out) + 1, ts0 + len(out), rtype, 0, offset, len(data), data))

    # 2100 single blocks, newest first: back to back on the device, apart in the segment
    for block in reversed(range(100, 2200)):
        add(RecordType.WRITE, block * BLOCK, rng.randbytes(BLOCK))
    add(RecordType.WRITE, 0, rng.randbytes(9 << 20))                # longer than one extent
    add(RecordType.WRITE, 3 << 20, bytes(1 << 20))                  # zeros written as data
    add(RecordType.WRITE, (5 << 20) + 512, bytes(3 * BLOCK))        # zeros, unaligned
    add(RecordType.WRITE, SIZE - 1536 - 2 * BLOCK, rng.randbytes(2 * BLOCK + 1536))  # through the partial end
    add(RecordType.WRITE, SIZE - 1024, rng.randbytes(1024))        # inside the partial block
    return out


def _scattered(rng: random.Random, ts0: int) -> list[Record]:
    """Writes of 1-3 blocks at random places over an empty baseline: gaps everywhere."""
    return [Record(i + 1, ts0 + i, RecordType.WRITE, 0, rng.randrange(SIZE // BLOCK - 3) * BLOCK, n * BLOCK,
                   rng.randbytes(n * BLOCK)) for i, n in enumerate(rng.choice((1, 1, 2, 3)) for _ in range(600))]


def _journal(tmp_path: Path, seed: int, keep: set[int] | None, batch: int,
             sparse: bool = False) -> tuple[Journal, DeviceModel, int]:
    """A journal of :func:`_records` over a random baseline (or :func:`_scattered` over an empty one),
    the model beside it, the last seq."""
    rng = random.Random(seed)
    base = bytes(SIZE) if sparse else random_device(SIZE, seed)
    image = tmp_path / "base.img"
    image.write_bytes(base)
    journal = Journal.create(tmp_path / "j", device_bytes=SIZE, source=image)
    records = (_scattered if sparse else _records)(rng, journal.info.created_ns)
    model = DeviceModel(base, keep=keep if keep is not None else {len(records)})
    for r in records:
        model.apply(r)
    for at in range(0, len(records), batch):
        journal.append(records[at:at + batch])
    return journal, model, len(records)


def test_restores_at_every_stage_match_the_model(tmp_path: Path) -> None:
    journal, model, _last = _journal(tmp_path, 11, {0, 1, 1050, 2100, 2101, 2102, 2103, 2104, 2105}, 700)
    out = tmp_path / "out.img"
    for seq in sorted(model.keep):
        journal.restore(out, seq=seq, overwrite=True)
        assert out.read_bytes() == model.states[seq], f"restore at seq {seq} differs"
    # the megabyte of zeros written as data is a hole in the restored file
    fd = os.open(out, os.O_RDONLY)
    try:
        assert os.lseek(fd, 3 << 20, os.SEEK_HOLE) == 3 << 20
    finally:
        os.close(fd)
    journal.close()


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_restore_to_a_block_device_writes_every_byte(tmp_path: Path, sparse: bool) -> None:
    """The zero fill between extents on a target that has no holes (the workers write out of order)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup for a loop device")
    journal, model, last = _journal(tmp_path, 12, None, 10_000, sparse)
    backing = tmp_path / "disk.img"
    backing.write_bytes(random.Random(13).randbytes(SIZE))  # exactly the device, garbage to be overwritten
    loop = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                          check=False)
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    dev = loop.stdout.strip()
    try:
        journal.restore(dev, seq=last)
        with open(dev, "rb") as f:
            got = f.read(SIZE)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
    assert got == model.states[last]
    journal.close()


def _hot(rng: random.Random, ts0: int) -> list[Record]:
    """A few blocks rewritten hundreds of times (whole, in part, zeroed) among scattered writes:
    the walk leaves the versions newer than the point with a seek, wherever they begin."""
    out: list[Record] = []
    hot = [7, 8, 300, 301, 302, SIZE // BLOCK - 1]
    for i in range(1500):
        roll = rng.random()
        block = rng.choice(hot) if roll < 0.8 else rng.randrange(SIZE // BLOCK - 1)
        end = min(SIZE, block * BLOCK + BLOCK)
        if roll < 0.5 or block * BLOCK + BLOCK > SIZE:
            offset, data = block * BLOCK, rng.randbytes(end - block * BLOCK)
        elif roll < 0.7:
            first = rng.randrange(8)
            offset = block * BLOCK + first * 512
            data = rng.randbytes(rng.randrange(1, 9 - first) * 512)
        else:
            offset, data = block * BLOCK, rng.randbytes(BLOCK * rng.choice((1, 2)))
            if offset + len(data) > SIZE:
                data = data[:SIZE - offset]
        if roll > 0.95:
            out.append(Record(i + 1, ts0 + i, RecordType.WRITE_ZEROES, 0, offset, len(data)))
        else:
            out.append(Record(i + 1, ts0 + i, RecordType.WRITE, 0, offset, len(data), data))
    return out


@pytest.mark.parametrize("chunk", [5, 65536], ids=["tiny-chunks", "default-chunks"])
def test_hot_blocks_restore_and_read_exactly_at_every_point(tmp_path: Path, chunk: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from journal import restore as restore_mod
    from journal.pointview import PointView

    monkeypatch.setattr(restore_mod, "_CHUNK_ENTRIES", chunk)
    rng = random.Random(21)
    base = random_device(SIZE, 21)
    image = tmp_path / "base.img"
    image.write_bytes(base)
    journal = Journal.create(tmp_path / "j", device_bytes=SIZE, source=image)
    records = _hot(rng, journal.info.created_ns)
    keep = {0, 1, 2, 17, 18, 40, 250, 749, 750, 1200, 1499, 1500}
    model = DeviceModel(base, keep=keep)
    for r in records:
        model.apply(r)
    for at in range(0, len(records), 97):
        journal.append(records[at:at + 97])
    out = tmp_path / "out.img"
    for seq in sorted(keep):
        journal.restore(out, seq=seq, overwrite=True)
        assert out.read_bytes() == model.states[seq], f"restore at seq {seq} differs"
        view = PointView(journal, seq)
        try:
            for block in (7, 8, 300, 302, SIZE // BLOCK - 1):
                lo = block * BLOCK
                hi = min(SIZE, lo + BLOCK)
                want = model.states[seq][lo:hi]
                assert view.read(lo, hi - lo) == want, f"export read of block {block} at seq {seq}"
                assert journal.read(lo, hi - lo, seq=seq) == want, f"read of block {block} at seq {seq}"
        finally:
            view.close()
    journal.close()
