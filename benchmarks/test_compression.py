"""Compression's cost and gain, each against the same thing with compression off, in the same run.

- append of 64 KiB writes of random (incompressible) data, compression on vs
  off (``--no-compress``), same batches: target >= 0.8x;
- bytes on disk per byte written, compression on and off, for random data and
  for filesystem-like data: an ext4 image (``mke2fs -d``) filled with the
  Python standard library's text and source files, written into the journal
  as a filesystem writes it (its allocated extents in 64 KiB writes, zero
  blocks inside them included): target >= 2x smaller than with compression off;
- restore of that filesystem-like journal vs ``cp --sparse=always`` of the
  image + fsync (what decoding costs a restore), and the same with
  compression off.

``CDP_BENCH_SCALE`` shrinks the sizes (CI's smoke run).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sysconfig
from pathlib import Path

import pytest

from benchmarks.conftest import Ratio, compare, figure, scaled
from journal import Journal, Record, RecordType
from journal.codec import OFF

MIB = 1 << 20
WRITE = RecordType.WRITE
_TEXT = (".py", ".txt", ".rst", ".cfg", ".toml", ".json", ".html", ".css", ".c", ".h", ".md", ".csv", ".xml")


def _random_batches(ts0: int, count: int, per_batch: int, size: int, device: int, seed: int) -> list[list[Record]]:
    rng = random.Random(seed)
    out, seq = [], 1
    for _ in range(count):
        out.append([Record(seq + i, ts0 + seq + i, WRITE, 0, rng.randrange(device // size) * size, size,
                           rng.randbytes(size)) for i in range(per_batch)])
        seq += per_batch
    return out


def _disk_bytes(path: Path) -> int:
    """Segments and index as the filesystem holds them (allocated blocks)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def test_append_incompressible_on_vs_off(benchmark, tmp_path: Path) -> None:
    device = 1 << 30
    per_batch, nbatches, rounds = 128, scaled(12, 2), 5  # 8 MiB group commits
    on = Journal.create(tmp_path / "on", device_bytes=device)
    off = Journal.create(tmp_path / "off", device_bytes=device, compression=OFF)
    work = _random_batches(on.info.created_ns, rounds * nbatches, per_batch, 65536, device, 1)
    state = {"on": 0, "off": 0}

    def run(journal: Journal, key: str) -> None:
        i = state[key]
        for batch in work[i * nbatches:(i + 1) * nbatches]:
            journal.append(batch)
        state[key] += 1

    compare(benchmark, Ratio("append 64 KiB random writes, compression on", units=nbatches * per_batch * 65536,
                             baseline_name="the same with compression off", target=0.8),
            lambda: run(on, "on"), lambda: run(off, "off"), rounds=rounds)
    written = state["on"] * nbatches * per_batch * 65536
    figure(f"random data on disk per byte written: {_disk_bytes(on.path) / written:.4f} with compression, "
           f"{_disk_bytes(off.path) / written:.4f} without")
    on.close()
    off.close()


def _text_tree(dst: Path, limit: int) -> int:
    """Copy text and source files of the standard library to ``dst``, up to ``limit`` bytes."""
    src = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(src.rglob("*")):
        if total >= limit:
            break
        if path.suffix not in _TEXT or not path.is_file() or "site-packages" in path.parts:
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        total += path.stat().st_size
    return total


def _extents(image: Path) -> list[tuple[int, int]]:
    """(offset, length) of the image's allocated data (what mke2fs wrote)."""
    out = []
    fd = os.open(image, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end - start))
            pos = end
    finally:
        os.close(fd)
    return out


@pytest.fixture(scope="module")
def ext4_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    if shutil.which("mke2fs") is None:
        pytest.skip("mke2fs is not installed (e2fsprogs)")
    root = tmp_path_factory.mktemp("fs")
    content = _text_tree(root / "tree", scaled(48 * MIB, 2 * MIB))
    size = max(16 * MIB, (content * 2 // MIB + 8) * MIB)
    image = root / "fs.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", os.fspath(root / "tree"),
                    os.fspath(image), f"{size // 1024}k"], check=True, capture_output=True)
    return image, content


def _write_image(path: Path, image: Path, compression) -> tuple[Journal, int, float]:  # noqa: ANN001
    """A journal with an empty baseline and the image's data written into it in 64 KiB writes."""
    import time

    size = image.stat().st_size
    journal = Journal.create(path, device_bytes=size, compression=compression)
    data = image.read_bytes()
    ts, seq, written = journal.info.created_ns, 1, 0
    batch: list[Record] = []
    start = time.perf_counter()
    for offset, length in _extents(image):
        for at in range(offset, offset + length, 65536):
            n = min(65536, offset + length - at)
            batch.append(Record(seq, ts + seq, WRITE, 0, at, n, memoryview(data)[at:at + n]))
            seq += 1
            written += n
            if len(batch) >= 128:
                journal.append(batch)
                batch = []
    journal.append(batch)
    return journal, written, time.perf_counter() - start


def test_filesystem_like_data_on_disk(benchmark, ext4_image, tmp_path: Path) -> None:
    image, content = ext4_image
    on, written, t_on = _write_image(tmp_path / "on", image, None)
    off, _, t_off = _write_image(tmp_path / "off", image, OFF)
    on_bytes, off_bytes = _disk_bytes(on.path), _disk_bytes(off.path)
    figure(f"ext4 image of {content / MIB:.0f} MiB of text and source files ({image.stat().st_size / MIB:.0f} MiB "
           f"device, {written / MIB:.0f} MiB written): on disk {on_bytes / written:.3f} bytes per byte written "
           f"with compression, {off_bytes / written:.3f} without: {off_bytes / on_bytes:.2f}x smaller "
           f"(target >= 2x); appended at {written / t_on / 1e6:.0f} MB/s vs {written / t_off / 1e6:.0f} MB/s")
    ref = tmp_path / "ref.img"
    on.restore(ref)
    assert ref.read_bytes() == image.read_bytes()
    out, out_off, copy = tmp_path / "out.img", tmp_path / "out-off.img", tmp_path / "copy.img"
    times_off: list[float] = []

    def prepare() -> None:
        import time

        for p in (out, out_off, copy):
            p.unlink(missing_ok=True)
        os.sync()
        start = time.perf_counter()
        off.restore(out_off)
        times_off.append(time.perf_counter() - start)
        out_off.unlink()
        os.sync()

    def copy_image() -> None:
        subprocess.run(["cp", "--sparse=always", os.fspath(ref), os.fspath(copy)], check=True)
        fd = os.open(copy, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    ratio = compare(benchmark, Ratio("restore of the ext4 journal, compressed", units=image.stat().st_size,
                                     baseline_name="cp --sparse=always of the image + fsync"),
                    lambda: on.restore(out, overwrite=True), copy_image, rounds=3, prepare=prepare)
    figure(f"restore of the ext4 journal: {statistics.median(ratio.subject_s):.3f} s compressed, "
           f"{statistics.median(times_off):.3f} s with compression off, "
           f"cp of the image {statistics.median(ratio.baseline_s):.3f} s")
    assert off_bytes / on_bytes >= 2 or content < 8 * MIB, "filesystem-like data shrank less than 2x"
    on.close()
    off.close()
