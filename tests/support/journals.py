"""Real journals for the TUI tests (and any test that wants fixed times), built through the journal API.

Every timestamp is fixed (the journal's creation time too), so the screens
render the same on every run and snapshots can be compared byte for byte.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from journal import Journal, Record, RecordType

#: 2026-03-01T12:00:00Z
BASE_NS = 1_772_366_400 * 1_000_000_000
MS = 1_000_000
DEVICE_BYTES = 4 << 20


@contextmanager
def fixed_clock(ns: int) -> Iterator[None]:
    """Journal.create stamps its creation with time.time_ns(); pin it for deterministic output."""
    real = time.time_ns
    time.time_ns = lambda: ns  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time_ns = real  # type: ignore[assignment]


def build(path: Path, *, writes: int = 300, seed: int = 7, flush_every: int = 25,
          overflow: bool = False, open_overflow: bool = False) -> Path:
    """A 4 MiB device with ``writes`` writes 20 ms apart, flushes, two ring marks and a user mark.

    With ``overflow`` a window of dropped writes is recorded two thirds of
    the way in and closed by a resync; with ``open_overflow`` it is left
    open at the end, so the newest points are not whole.
    """
    rng = random.Random(seed)
    with fixed_clock(BASE_NS):
        j = Journal.create(path, device_bytes=DEVICE_BYTES)
    with j:
        records: list[Record] = []
        seq = 0
        ts = BASE_NS + 1000 * MS

        def add(rtype: int, offset: int = 0, length: int = 0, data: bytes = b"") -> None:
            nonlocal seq
            seq += 1
            records.append(Record(seq, ts, rtype, 0, offset, length, data))

        for i in range(writes):
            ts += 20 * MS
            block = rng.randrange(DEVICE_BYTES // 4096 - 2)
            length = 4096 * rng.choice((1, 1, 2))
            add(RecordType.WRITE, block * 4096, length, rng.randbytes(length))
            if i == writes // 3:
                add(RecordType.MARK, data=b"before-upgrade")
            if i == writes // 2:
                add(RecordType.MARK, data=b"after-upgrade")
            if overflow and i == 2 * writes // 3:
                add(RecordType.OVERFLOW, 0, 65536, (ts - 5 * MS).to_bytes(8, "little"))
                if not open_overflow:
                    ts += 5 * MS
                    add(RecordType.RESYNC, 0, 65536, rng.randbytes(65536))
            if (i + 1) % flush_every == 0:
                add(RecordType.FLUSH)
        j.append(records[: len(records) // 2])
        j.append(records[len(records) // 2:])
        j.add_mark("checkpoint", BASE_NS + 1000 * MS + writes * 20 * MS // 4)
    return path


def build_many_entries(path: Path, *, entries: int = 655_360) -> Path:
    """A journal whose restore walks many index entries but stores almost no bytes.

    WRITE_ZEROES records under 1 MiB are indexed per 4 KiB block with no
    payload, so this journal makes a restore take several of the journal's
    chunks (and so several progress reports and cancel checks) while it
    costs a few MiB of disk: what the cancel test needs.
    """
    device = 64 << 20
    with fixed_clock(BASE_NS):
        j = Journal.create(path, device_bytes=device)
    with j:
        per = 512 << 10
        count = entries // (per // 4096)
        ts = BASE_NS + 1000 * MS
        batch: list[Record] = []
        for seq in range(1, count + 1):
            ts += MS
            batch.append(Record(seq, ts, RecordType.WRITE_ZEROES, 0, (seq * per) % device, per))
            if len(batch) == 2048:
                j.append(batch)
                batch = []
        batch.append(Record(count + 1, ts + MS, RecordType.WRITE, 0, 0, 4096, b"\x5a" * 4096))
        batch.append(Record(count + 2, ts + 2 * MS, RecordType.FLUSH))
        j.append(batch)
    return path


def append_in_cuts(journal: Journal, records: list[Record], splits: list[int]) -> None:
    """Append ``records`` in batches cut where ``splits`` (any ints, taken modulo) say: the model
    tests draw the cuts, so batch boundaries fall everywhere a batch's own work could go wrong."""
    cuts = sorted({c % (len(records) + 1) for c in splits} | {0, len(records)})
    for a, b in zip(cuts, cuts[1:]):
        journal.append(records[a:b])
