"""Compaction while the drain appends: how fast it gives space back, how long appends wait.

One journal of 10^6 records of 4 KiB at random places on a 1 GiB device
(a flush every 100 records, 10 ms apart: about three hours of history),
then a retention policy whose horizon is halfway. The compaction runs while
a thread appends batches of 64 records of 4 KiB back to back, as the drain
service does under load, and every append's wall time is recorded:

- the compaction's speed: segments' bytes given back per second, and the
  live bytes it moved out of mostly-dead segments per second;
- the appends' 99th percentile and longest wait during the compaction,
  against the same appends with no compaction (target: p99 under 100 ms);
- restore of the newest point after the compaction against the same
  restore on an untouched copy of the journal, interleaved (target: at least
  as fast, ratio >= 1).

``CDP_BENCH_SCALE`` shrinks the record count and the device (CI's smoke run).
"""

from __future__ import annotations

import random
import shutil
import statistics
import threading
import time
from pathlib import Path

from benchmarks.conftest import Ratio, compare, figure, scaled
from journal import Journal, Record, RecordType
from journal.retention import Policy

MS = 1_000_000


def _build(path: Path, records: int, device: int) -> int:
    """The journal of the module docstring; returns the time of its newest record."""
    rng = random.Random(5)
    payload = rng.randbytes(8192)
    with Journal.create(path, device_bytes=device) as journal:
        ts = journal.info.created_ns
        batch = []
        for seq in range(1, records + 1):
            ts += 10 * MS
            if seq % 100 == 0:
                batch.append(Record(seq, ts, RecordType.FLUSH))
            else:
                batch.append(Record(seq, ts, RecordType.WRITE, 0, rng.randrange(device // 4096) * 4096, 4096,
                                    payload[seq % 4096:seq % 4096 + 4096]))
            if len(batch) == 8192:
                journal.append(batch)
                batch = []
        journal.append(batch)
        return ts


def _appends_while(journal: Journal, busy: threading.Event | None, seconds: float, device: int,
                   first_ts: int) -> list[float]:
    """Append 64 x 4 KiB batches back to back (for ``seconds``, or while ``busy`` is set); their wall times."""
    rng = random.Random(9)
    data = rng.randbytes(4096)
    waits = []
    seq, ts = journal.last_seq + 1, max(first_ts, journal.last_ts_ns)
    end = time.monotonic() + seconds
    while (busy.is_set() if busy is not None else time.monotonic() < end):
        recs = []
        for _ in range(64):
            ts += MS
            recs.append(Record(seq, ts, RecordType.WRITE, 0, rng.randrange(device // 4096) * 4096, 4096, data))
            seq += 1
        t0 = time.perf_counter()
        journal.append(recs)
        waits.append(time.perf_counter() - t0)
    return waits


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def test_compaction_speed_stall_and_restore_after(benchmark, tmp_path: Path, monkeypatch) -> None:
    records = scaled(1_000_000, 20_000)
    # segments shrink with the scale, so a smoke run has several to delete too
    monkeypatch.setattr(Journal, "segment_target", max(4 << 20, scaled(Journal.segment_target)))
    device = max(64 << 20, scaled(1 << 30) // 4096 * 4096)
    path = tmp_path / "j"
    last_ts = _build(path, records, device)
    untouched = tmp_path / "before"
    shutil.copytree(path, untouched)
    with Journal.open(path) as journal:
        quiet = _appends_while(journal, None, 3.0, device, last_ts)
        span = journal.last_ts_ns - journal.info.created_ns
        journal.set_retention(Policy(keep_ns=span // 2))
        segments = sum(p.stat().st_size for p in (path / "segments").glob("*.seg"))
        busy = threading.Event()
        busy.set()
        waits: list[float] = []
        appender = threading.Thread(
            target=lambda: waits.extend(_appends_while(journal, busy, 0, device, last_ts)))
        appender.start()
        try:
            t0 = time.perf_counter()
            result = journal.compact(journal.last_ts_ns)
            elapsed = time.perf_counter() - t0
        finally:
            busy.clear()
            appender.join()
        assert result is not None and result.segments_deleted > 0
        figure(f"compaction of {records:,} records of 4 KiB to a horizon halfway: {elapsed:.1f} s, "
               f"{result.bytes_freed / elapsed / 1e6:.1f} MB/s of segments deleted "
               f"({result.bytes_freed / segments * 100:.0f}% of {segments / 1e6:.0f} MB), "
               f"{result.bytes_moved / elapsed / 1e6:.1f} MB/s of live versions moved")
        figure(f"appends of 64 x 4 KiB during the compaction: p99 {_p99(waits) * 1000:.1f} ms, longest "
               f"{max(waits) * 1000:.1f} ms over {len(waits)} appends (target p99 < 100 ms); without it: p99 "
               f"{_p99(quiet) * 1000:.1f} ms, longest {max(quiet) * 1000:.1f} ms")
    # the newest point of the untouched copy: the compacted journal has the same records up to it
    out_a, out_b = tmp_path / "after.img", tmp_path / "before.img"
    with Journal.open(path, readonly=True) as after, Journal.open(untouched, readonly=True) as before:
        before_seq = before.last_seq
        compare(benchmark, Ratio("restore of a point after compaction", units=device,
                                 baseline_name="the same restore before it", target=1.0),
                lambda: after.restore(out_a, seq=before_seq, overwrite=True),
                lambda: before.restore(out_b, seq=before_seq, overwrite=True), rounds=3)
        assert out_a.read_bytes() == out_b.read_bytes()
