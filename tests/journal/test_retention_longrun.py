"""Hours of simulated time with retention running beside the appends: bounded, and exact.

The appending thread plays the drain service: batches of writes (mostly to
a hot region, as a busy filesystem's metadata), flushes and marks, their
time stamps running ten seconds apart, so a few thousand records are many
hours. The :class:`journal.maintain.Retainer` thread applies the policy on
that simulated clock while the appends go on, as it does in `cdp run`. At
the end the journal holds only what the policy keeps, its segments stay
few however long the run, every kept point restores exactly as the model
says, and the longest an append waited on a compaction step is recorded.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from journal import Journal, Record, RecordType, heads
from journal.maintain import Retainer
from journal.retention import Policy, horizon_time, parse_tiers
from journal.timespec import parse_duration
from tests.journal.model import DeviceModel

SIZE = 256 * 1024
S = 1_000_000_000


def workload(rng: random.Random, first_seq: int, count: int, ts: int) -> list[Record]:
    out = []
    for seq in range(first_seq, first_seq + count):
        ts += 10 * S
        roll = rng.random()
        if roll < 0.7:
            offset = rng.randrange(0, 128) * 512
            length = rng.randrange(1, 17) * 512
        elif roll < 0.85:
            offset = rng.randrange(0, SIZE // 512 - 16) * 512
            length = rng.randrange(1, 17) * 512
        else:
            out.append(Record(seq, ts, RecordType.FLUSH) if roll < 0.98 else
                       Record(seq, ts, RecordType.MARK, data=f"m{seq}".encode()))
            continue
        out.append(Record(seq, ts, RecordType.WRITE, 0, offset, length, rng.randbytes(length)))
    return out


def _segment_bytes(directory: Path) -> int:
    """The segments' bytes now (the retainer may delete one between the listing and its stat)."""
    total = 0
    for p in directory.glob("*.seg"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


@pytest.mark.slow
def test_hours_of_points_with_retention_stay_bounded_and_exact(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Journal, "segment_target", 64 * 1024)
    monkeypatch.setattr(heads, "MIN_LAG", 64)  # the checkpoint moves on between compactions, which drop it
    rng = random.Random(2)
    base = rng.randbytes(SIZE)
    (tmp_path / "base.img").write_bytes(base)
    journal = Journal.create(tmp_path / "j", device_bytes=SIZE, source=tmp_path / "base.img")
    policy = Policy(keep_ns=parse_duration("3h"), tiers=parse_tiers("20m:all,1h:1m,3h:10m"))
    journal.set_retention(policy)
    model = DeviceModel(base)
    clock = [journal.info.created_ns]
    log: list[str] = []
    retainer = Retainer(journal, log.append, interval=0.05, clock=lambda: clock[0])
    retainer.start()
    waits = []
    segments = []
    try:
        seq, ts = 1, journal.info.created_ns
        for _hour in range(24):  # 24 simulated hours of 360 records each
            for _ in range(12):
                recs = workload(rng, seq, 30, ts)
                t0 = time.perf_counter()
                journal.append(recs)
                waits.append(time.perf_counter() - t0)
                for r in recs:
                    model.apply(r)
                seq, ts = recs[-1].seq + 1, recs[-1].ts_ns
                clock[0] = ts
                time.sleep(0.005)
            segments.append(_segment_bytes(tmp_path / "j" / "segments"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # let the retainer catch up with the last hour
            before = retainer.compactions
            time.sleep(0.3)
            if retainer.compactions == before and journal.compact(clock[0]) is None:
                break
    finally:
        retainer.stop()
    assert retainer.compactions >= 6, log
    print(f"segment bytes per simulated hour: {segments}; longest append {max(waits) * 1000:.1f} ms")
    # bounded: once the horizon is reached (3 h), the segments' bytes stop growing with the history
    assert max(segments[12:]) <= 1.3 * max(segments[3:12]), segments
    points = journal.points()
    horizon = horizon_time(policy, clock[0])
    assert min(p.ts_ns for p in points) <= horizon < sorted({p.ts_ns for p in points})[1]
    assert len(points) < 3 * 60 + 6 * 40  # thinned: 20 min all (~20 flushes), 40 min of minutes, 2 h of 10 min
    for p in points:
        assert journal.read(0, SIZE, seq=p.seq) == model.states[p.seq], p
    journal.restore(tmp_path / "out.img", seq=points[0].seq)
    assert (tmp_path / "out.img").read_bytes() == model.states[points[0].seq]
    assert journal.verify().ok  # the checkpoint's heads included
    assert not [line for line in log if line.startswith("checkpoint:")], log
    heads.bring_up_to_date(journal, min_lag=1)
    newest = journal.restore(tmp_path / "newest.img", overwrite=True)
    assert newest.checkpoint is not None
    assert (tmp_path / "newest.img").read_bytes() == model.states[journal.last_seq]
    journal.close()
