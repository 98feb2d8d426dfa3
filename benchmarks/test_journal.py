"""Journal speed, each against a baseline measured in the same run.

- append of 64 KiB writes vs plain appends of the same bytes with the same
  fsync policy (one fdatasync per batch): target >= 0.8x;
- append of 4 KiB writes: records/s (target >= 100k/s), and vs raw LMDB puts
  of the same payloads in the same batches;
- restore of a 1 GiB device with 2 GiB of journaled writes vs `cp` of a
  1 GiB file: target >= 0.5x;
- `read` of one 4 KiB block at a random time with a million records:
  median latency (target < 100 us).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
from pathlib import Path

import lmdb

from benchmarks.conftest import Ratio, compare, figure, scaled
from journal import Journal, Record, RecordType

WRITE = RecordType.WRITE


def _batches(seq0: int, ts0: int, count: int, per_batch: int, size: int, device: int, seed: int) -> list[list[Record]]:
    rng = random.Random(seed)
    payload = rng.randbytes(size)
    out, seq = [], seq0
    for _ in range(count):
        out.append([Record(seq + i, ts0 + seq + i, WRITE, 0, rng.randrange(device // size) * size, size, payload)
                    for i in range(per_batch)])
        seq += per_batch
    return out


def test_append_64k_vs_plain_appends(benchmark, tmp_path: Path) -> None:
    device = 1 << 30
    per_batch, nbatches = 128, scaled(16, 2)  # 8 MiB group commits
    journal = Journal.create(tmp_path / "j", device_bytes=device)
    rounds = 5
    work = _batches(1, journal.info.created_ns, rounds * nbatches, per_batch, 65536, device, 1)
    plain = os.open(tmp_path / "plain", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    state = {"round": 0}

    def baseline() -> None:
        for batch in work[:nbatches]:
            os.writev(plain, [r.data for r in batch])
            os.fdatasync(plain)

    def subject() -> None:
        i = state["round"]
        for batch in work[i * nbatches:(i + 1) * nbatches]:
            journal.append(batch)
        state["round"] += 1

    compare(benchmark, Ratio("append 64 KiB writes", units=nbatches * per_batch * 65536,
                             baseline_name="plain appends + fdatasync per batch", target=0.8),
            subject, baseline, rounds=rounds)
    journal.close()
    os.close(plain)


def test_append_4k_records_per_second(benchmark, tmp_path: Path) -> None:
    device = 1 << 30
    per_batch, nbatches = 4096, scaled(8, 1)
    rounds = 5
    journal = Journal.create(tmp_path / "j", device_bytes=device)
    work = _batches(1, journal.info.created_ns, rounds * nbatches, per_batch, 4096, device, 2)
    env = lmdb.open(str(tmp_path / "raw"), map_size=8 << 30)
    state = {"round": 0, "base": 0}

    def baseline() -> None:
        i = state["base"]
        for batch in work[i * nbatches:(i + 1) * nbatches]:
            with env.begin(write=True) as txn:
                txn.cursor().putmulti([(r.seq.to_bytes(8, "big"), r.data) for r in batch], append=True)
        state["base"] += 1

    def subject() -> None:
        i = state["round"]
        for batch in work[i * nbatches:(i + 1) * nbatches]:
            journal.append(batch)
        state["round"] += 1

    ratio = compare(benchmark, Ratio("append 4 KiB writes", units=nbatches * per_batch, unit_name="rec",
                                     baseline_name="raw LMDB puts of the payloads"),
                    subject, baseline, rounds=rounds)
    figure(f"append 4 KiB writes: {nbatches * per_batch / statistics.median(ratio.subject_s):,.0f} records/s "
           "(target >= 100,000)")
    journal.close()
    env.close()


def test_restore_vs_cp(benchmark, tmp_path: Path) -> None:
    device = scaled(1 << 30, 64 << 20) // (1 << 20) * (1 << 20)
    rng = random.Random(3)
    image = tmp_path / "device.img"
    with open(image, "wb") as f:
        block = rng.randbytes(1 << 20)
        for i in range(device >> 20):
            f.write(block[i % 7:] + block[:i % 7])
    journal = Journal.create(tmp_path / "j", device_bytes=device, source=image)
    # 2x the device in 64 KiB writes at random places, in 8 MiB batches
    for batch in _batches(1, journal.info.created_ns, 2 * device // (8 << 20), 128, 65536, device, 4):
        journal.append(batch)
    last = journal.last_seq
    out = tmp_path / "restored.img"
    copy = tmp_path / "copy.img"

    def clean() -> None:
        for p in (out, copy):
            p.unlink(missing_ok=True)
        os.sync()

    def baseline() -> None:
        # a restore returns once its output is on disk; the copy must be too
        subprocess.run(["cp", str(image), str(copy)], check=True)
        fd = os.open(copy, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def subject() -> None:
        journal.restore(out, seq=last // 2 + 1, overwrite=True)

    compare(benchmark, Ratio("restore 1 GiB device, 2 GiB journaled" if device == 1 << 30 else
                             f"restore {device >> 20} MiB device, 2x journaled", units=device,
                             baseline_name="cp of the device image + fsync", target=0.5),
            subject, baseline, rounds=5, prepare=clean)
    journal.close()


def test_read_block_latency_million_records(benchmark, tmp_path_factory) -> None:
    records = scaled(1_000_000, 20_000)
    path = tmp_path_factory.mktemp("million") / "j"
    device = 1 << 30
    journal = Journal.create(path, device_bytes=device)
    rng = random.Random(5)
    payload = rng.randbytes(512)
    ts0 = journal.info.created_ns
    for start in range(1, records + 1, 8192):
        journal.append([Record(s, ts0 + s * 1000, WRITE, 0, rng.randrange(device // 512) * 512, 512, payload)
                        for s in range(start, min(start + 8192, records + 1))])
    span = records * 1000
    picks = [(rng.randrange(device // 4096) * 4096, ts0 + rng.randrange(span)) for _ in range(2000)]
    state = {"i": 0}

    def one_read() -> None:
        offset, at = picks[state["i"] % len(picks)]
        state["i"] += 1
        journal.read(offset, 4096, at_ns=at)

    benchmark.pedantic(one_read, rounds=2000, iterations=1, warmup_rounds=50)
    if benchmark.stats is not None:
        median_us = benchmark.stats.stats.median * 1e6
        figure(f"read one 4 KiB block at a random time, {records:,} records: median {median_us:.0f} us "
               "(target < 100 us)")
    journal.close()
