"""Ring -> journal drain speed, against Journal.append alone in the same run.

A producer fills a fresh ring file (untimed) with N WRITE records, then the
drain service empties it into a journal (timed: open, read and check every
record, build journal records, group-commit appends, release, status). The
baseline appends the same payloads with ``Journal.append`` directly, in the
batches the service forms (8 MiB or 4096 records), into another journal.

Targets: 4 KiB writes >= 80,000 records/s end to end; 64 KiB writes >= 0.7x
the journal's own append throughput.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.conftest import Ratio, compare, figure, scaled
from cdp.ringabi import CONTROL_SIZE, RecType, rec_len_for
from cdp.ringwriter import RingWriter
from cdp.service import drain
from journal import Journal, Record, RecordType

DEVICE = 1 << 30
BATCH_BYTES = 8 << 20
BATCH_RECORDS = 4096


@pytest.mark.parametrize("size, count, target", [(4096, 32768, None), (65536, 2048, 0.7)])
def test_drain_vs_journal_append(benchmark, tmp_path: Path, size: int, count: int, target: float | None) -> None:
    count = scaled(count, 64)
    rng = random.Random(size)
    payload = rng.randbytes(size)
    offsets = [rng.randrange(DEVICE // size) * size for _ in range(count)]
    data_size = 1 << 16
    while data_size < count * rec_len_for(size) + (1 << 20):
        data_size <<= 1
    # the kernel's ring is memory: keep the ring file off the disk the journal syncs to
    shm = Path("/dev/shm")
    ring_dir = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    ring_path = ring_dir / "ring"
    drained = Journal.create(tmp_path / "drained", device_bytes=DEVICE)
    drained.close()
    direct = Journal.create(tmp_path / "direct", device_bytes=DEVICE)
    per_batch = min(BATCH_RECORDS, BATCH_BYTES // rec_len_for(size) + 1)

    def fill_ring() -> None:
        writer = RingWriter.create(ring_path, data_size, DEVICE)
        for offset in offsets:
            for slot in writer.submit(RecType.WRITE, offset=offset, length=size, data=payload):
                slot.commit()
        writer.close()

    # the baseline's payloads span as much memory as the ring's, so neither side runs from cache
    spread = memoryview(payload * count)

    def baseline() -> None:
        seq = direct.last_seq
        ts = direct.last_ts_ns
        for start in range(0, count, per_batch):
            batch = [Record(seq + i + 1, ts + i + 1, RecordType.WRITE, 0, offsets[i], size,
                            spread[i * size:(i + 1) * size])
                     for i in range(start, min(start + per_batch, count))]
            direct.append(batch, cursor={"v": 1})

    results = []

    def subject() -> None:
        stats = drain(tmp_path / "drained", ring_path, until_detached=True, handle_signals=False,
                      batch_bytes=BATCH_BYTES, batch_records=BATCH_RECORDS)
        results.append(stats)

    ratio = compare(benchmark, Ratio(f"drain ring -> journal, {size // 1024} KiB writes", units=count * size,
                                     baseline_name="Journal.append alone", target=target),
                    subject, baseline, rounds=5, prepare=fill_ring)
    assert all(r.records == count and r.corrupt == 0 and r.overflows == 0 for r in results)
    rate = count / statistics.median(ratio.subject_s)
    figure(f"drain ring -> journal, {size // 1024} KiB writes: {rate:,.0f} records/s, "
           f"{rate * size / 2**20:,.0f} MiB/s" + (" (target >= 80,000 records/s)" if size == 4096 else ""))
    if size == 4096:
        # what the disk allows at all: the same bytes (headers included) appended with one
        # fdatasync per batch, as the journal's segment does, and nothing else
        plain = os.open(tmp_path / "plain", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        chunk = bytes(per_batch * (size + 64))
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(0, count, per_batch):
                os.write(plain, chunk)
                os.fdatasync(plain)
            times.append(time.perf_counter() - start)
        os.close(plain)
        figure(f"  the disk's bound for that: plain appends of the same bytes, fdatasync per batch: "
               f"{count / statistics.median(times):,.0f} records/s")
    direct.close()
    assert CONTROL_SIZE + data_size == ring_path.stat().st_size
    if ring_dir != tmp_path:
        shutil.rmtree(ring_dir)
