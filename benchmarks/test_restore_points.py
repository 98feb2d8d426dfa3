"""Restore cost per point in time: does a restore cost what its answer costs?

One journal: a 1 GiB device with a sparse baseline of 240 MiB of data, then
2 GiB of writes of mixed sizes (4 KiB to 1 MiB) at random places, with a
point after every 10% of them. At each point, ``restore`` is timed against
``cp --sparse=always`` of the image it produced plus fsync (what copying the
answer costs), warm (the journal's pages cached) and cold (the journal's and
the image's pages dropped with ``posix_fadvise(DONTNEED)`` first), as
same-run ratios. Targets: within 1.5x of the copy warm, 2x cold; the 10%
point at least 2x faster than the 100% one (the last 90% rewrote most of
the device, so the answer at 10% is mostly the sparse baseline).

Then the same at 10^4, 10^5 and 10^6 records of 4 KiB (a 1 GiB device,
empty baseline) to show how the cost grows with the history; and a hot
history (10^6 rewrites of 1024 blocks) restored at 1% and at 100% of it, to
show that the versions newer than the point are not walked.

Each journal gets its block-map checkpoint brought up to its newest record
after it is written, as the service's background step would
(:mod:`journal.heads`): a restore reads it where that is cheaper than the
walk. On the hot history the newest point is restored both ways, and the
build of the checkpoint is timed against the walk it amounts to.

``CDP_BENCH_SCALE`` shrinks the sizes (CI's smoke run).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.conftest import Ratio, compare, figure, scaled
from journal import Journal, Record, RecordType, heads
from journal import restore as restore_module

MIB = 1 << 20
_SIZES = (4096, 16384, 65536, 262144, MIB)


def _drop_pages(paths: list[Path]) -> None:
    """Drop the page cache of ``paths`` (written pages are flushed first)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _journal_files(path: Path) -> list[Path]:
    return sorted((path / "segments").glob("*.seg")) + [path / "index" / "data.mdb"]


def _copy_sparse(src: Path, dst: Path) -> None:
    """What copying the answer costs: ``cp --sparse=always`` and the copy made durable."""
    dst.unlink(missing_ok=True)
    subprocess.run(["cp", "--sparse=always", os.fspath(src), os.fspath(dst)], check=True)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build_mixed(root: Path) -> tuple[Path, list[int], int]:
    """The journal of the module docstring; returns its path, the marks' seqs and the device size."""
    device = max(16 * MIB, scaled(1 << 30) // MIB * MIB)
    rng = random.Random(11)
    image = root / "base.img"
    with open(image, "wb") as f:
        f.truncate(device)
        chunk = rng.randbytes(MIB)
        for i in rng.sample(range(device // MIB), device * 240 // 1024 // MIB):
            f.seek(i * MIB)
            f.write(chunk[i % 13:] + chunk[:i % 13])
    path = root / "j"
    payload = rng.randbytes(MIB)
    marks: list[int] = []
    with Journal.create(path, device_bytes=device, source=image) as journal:
        ts, seq = journal.info.created_ns, 1
        total, written, tenth = 2 * device, 0, 1
        batch: list[Record] = []
        batch_bytes = 0
        while written < total:
            size = rng.choice(_SIZES)
            offset = rng.randrange(device // size) * size
            batch.append(Record(seq, ts + seq, RecordType.WRITE, 0, offset, size,
                                payload[seq % 64:seq % 64 + size] if size < MIB else payload))
            seq += 1
            written += size
            batch_bytes += size
            if batch_bytes >= 8 * MIB or written >= total:
                journal.append(batch)
                batch, batch_bytes = [], 0
                if written >= total * tenth // 10:
                    marks.append(journal.last_seq)
                    tenth += 1
        heads.bring_up_to_date(journal, min_lag=1)
    image.unlink()
    return path, marks, device


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int], int]:
    return _build_mixed(tmp_path_factory.mktemp("points"))


def _restore_vs_copy(benchmark, journal: Journal, seq: int | None, tmp_path: Path, name: str, units: int,
                     target: float | None = None, drop: list[Path] | None = None) -> Ratio:
    """Time a restore at ``seq`` against ``cp --sparse=always`` + fsync of the image it produces.

    ``drop``: files whose pages are dropped before each round (a cold cache), the reference image too.
    """
    out = tmp_path / "restored.img"
    ref = tmp_path / "reference.img"
    copy = tmp_path / "copy.img"
    journal.restore(ref, seq=seq)

    def prepare() -> None:
        out.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)
        os.sync()
        if drop is not None:
            _drop_pages(drop + [ref])

    return compare(benchmark, Ratio(name, units=units, baseline_name="cp --sparse=always of the image + fsync",
                                    target=target),
                   lambda: journal.restore(out, seq=seq, overwrite=True), lambda: _copy_sparse(ref, copy),
                   rounds=3, prepare=prepare)


def _journal_of_4k_writes(path: Path, device: int, records: int, block_of: Callable[[int], int],
                          seed: int) -> None:
    """A journal of ``records`` writes of 4 KiB over an empty ``device``; record ``s`` goes to block ``block_of(s)``."""
    payload = random.Random(seed).randbytes(8192)
    with Journal.create(path, device_bytes=device) as journal:
        ts = journal.info.created_ns
        for start in range(1, records + 1, 8192):
            journal.append([Record(s, ts + s, RecordType.WRITE, 0, block_of(s) * 4096, 4096,
                                   payload[s % 4096:s % 4096 + 4096])
                            for s in range(start, min(start + 8192, records + 1))])
        heads.bring_up_to_date(journal, min_lag=1)


@pytest.mark.parametrize("cache", ["warm", "cold"])
@pytest.mark.parametrize("tenth", [1, 5, 10])
def test_restore_at_point_vs_copy(benchmark, mixed, tmp_path: Path, tenth: int, cache: str) -> None:
    path, marks, device = mixed
    with Journal.open(path, readonly=True) as journal:
        ratio = _restore_vs_copy(benchmark, journal, marks[tenth - 1], tmp_path,
                                 f"restore at {tenth * 10}% of the history, {cache}", device,
                                 target=1 / 1.5 if cache == "warm" else 0.5,
                                 drop=_journal_files(path) if cache == "cold" else None)
    _TIMES[(tenth, cache)] = statistics.median(ratio.subject_s)
    if tenth == 10 and (1, cache) in _TIMES:
        figure(f"restore at 10% vs at 100% of the history, {cache}: "
               f"{_TIMES[(10, cache)] / _TIMES[(1, cache)]:.2f}x faster (target >= 2x)")


_TIMES: dict[tuple[int, str], float] = {}


@pytest.mark.parametrize("records", [10_000, 100_000, 1_000_000])
def test_restore_growth_4k(benchmark, tmp_path: Path, records: int) -> None:
    records = scaled(records, 2000)
    device = 1 << 30
    rng = random.Random(records)
    path = tmp_path / "j"
    _journal_of_4k_writes(path, device, records, lambda _s: rng.randrange(device // 4096), records)
    with Journal.open(path, readonly=True) as journal:
        ratio = _restore_vs_copy(benchmark, journal, None, tmp_path, f"restore after {records:,} records of 4 KiB",
                                 device)
    figure(f"restore after {records:,} records of 4 KiB: median {statistics.median(ratio.subject_s):.3f} s, "
           f"copy of the image {statistics.median(ratio.baseline_s):.3f} s")


_HOT: dict[int, float] = {}


@pytest.fixture(scope="module")
def hot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """10^6 records of 4 KiB rewriting 1024 blocks of a 1 GiB device (empty baseline) over and over."""
    records = scaled(1_000_000, 5000)
    blocks = random.Random(5).sample(range((1 << 30) // 4096), 1024)
    path = tmp_path_factory.mktemp("hot") / "j"
    _journal_of_4k_writes(path, 1 << 30, records, lambda s: blocks[s % 1024], 5)
    return path, records


@pytest.mark.parametrize("percent", [1, 100])
def test_restore_hot_history(benchmark, hot, tmp_path: Path, percent: int) -> None:
    path, records = hot
    with Journal.open(path, readonly=True) as journal:
        ratio = _restore_vs_copy(benchmark, journal, records * percent // 100, tmp_path,
                                 f"restore at {percent}% of {records:,} rewrites of 1024 blocks", 1 << 30)
    _HOT[percent] = statistics.median(ratio.subject_s)
    if percent == 100 and 1 in _HOT:
        figure(f"hot history of {records:,} rewrites: restore at 1% {_HOT[1]:.3f} s, at 100% {_HOT[100]:.3f} s "
               f"(the copy of either image {statistics.median(ratio.baseline_s):.3f} s)")


@contextmanager
def _walking() -> Iterator[None]:
    """Restores inside walk the block index (the checkpoint left unread)."""
    saved = restore_module._cheaper_checkpoint
    restore_module._cheaper_checkpoint = lambda *_a: None
    try:
        yield
    finally:
        restore_module._cheaper_checkpoint = saved


def test_restore_newest_checkpoint_vs_walk(benchmark, hot, tmp_path: Path) -> None:
    """The newest point of the hot history read from the checkpoint, against the walk of every entry."""
    path, records = hot
    out = tmp_path / "restored.img"
    walk_out = tmp_path / "walked.img"

    def walked() -> None:
        walk_out.unlink(missing_ok=True)
        with _walking():
            assert journal.restore(walk_out).checkpoint is None

    def prepare() -> None:
        out.unlink(missing_ok=True)

    with Journal.open(path, readonly=True) as journal:
        assert journal.restore(out).checkpoint == journal.last_seq
        compare(benchmark, Ratio(f"restore of the newest of {records:,} rewrites from the checkpoint", units=1 << 30,
                                 baseline_name="the same restore walking the block index", target=2.0),
                lambda: journal.restore(out, overwrite=True), walked, rounds=3, prepare=prepare)
        assert out.read_bytes() == walk_out.read_bytes()


def test_checkpoint_build(benchmark, tmp_path: Path) -> None:
    """What building a checkpoint costs in the background: one walk of the block index, written out."""
    records = scaled(1_000_000, 5000)
    rng = random.Random(9)
    path = tmp_path / "j"
    _journal_of_4k_writes(path, 1 << 30, records, lambda _s: rng.randrange((1 << 30) // 4096), 9)
    times: list[float] = []

    def build() -> None:
        with Journal.open(path) as journal:
            journal.index.write(lambda txn: heads.drop(journal.index, txn))
            start = time.perf_counter()
            heads.bring_up_to_date(journal, min_lag=1)
            times.append(time.perf_counter() - start)

    benchmark.pedantic(build, rounds=3, iterations=1)
    figure(f"checkpoint build over {records:,} records of 4 KiB: median {statistics.median(times):.3f} s "
           f"(in the background, {heads.BUILD_STEP:,} entries a write transaction)")
