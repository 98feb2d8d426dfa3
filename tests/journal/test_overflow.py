"""Overflow windows: points inside are not whole until a resync closes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from journal.errors import NotWhole

SIZE = 1 << 16


def test_window_opens_and_resync_closes_it(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=SIZE) as journal:
        t = journal.info.created_ns
        W, M, O, R = RecordType.WRITE, RecordType.MARK, RecordType.OVERFLOW, RecordType.RESYNC
        journal.append([
            Record(1, t + 10, W, 0, 0, 4096, b"a" * 4096),
            Record(2, t + 20, M, data=b"before"),
            # writes to [8192, 16384) were dropped from t+25 on
            Record(3, t + 30, O, 0, 8192, 8192, (t + 25).to_bytes(8, "little")),
            Record(4, t + 40, M, data=b"inside"),
        ])
        points = {p.name or p.kind: p for p in journal.points()}
        assert points["before"].whole and not points["inside"].whole and not points["overflow"].whole
        with pytest.raises(NotWhole, match="not whole"):
            journal.restore(tmp_path / "x.img", at_ns=t + 40)
        assert not (tmp_path / "x.img").exists()
        journal.restore(tmp_path / "x.img", at_ns=t + 40, allow_partial=True)
        # the service copies the range in two chunks; the copy completes at t+60
        journal.append([
            Record(5, t + 60, R, 0, 8192, 4096, b"r" * 4096),
            Record(6, t + 45, M, data=b"halfway"),
            Record(7, t + 60, R, 0, 12288, 4096, b"s" * 4096),
            Record(8, t + 50, M, data=b"before-copy-time"),
            Record(9, t + 70, M, data=b"after"),
        ])
        points = {p.name or p.kind: p for p in journal.points()}
        assert not points["halfway"].whole
        assert not points["before-copy-time"].whole
        assert points["after"].whole and points["resync"].seq == 7
        result = journal.restore(tmp_path / "after.img", at_ns=t + 70)
        assert result.whole and result.seq == 9
        data = (tmp_path / "after.img").read_bytes()
        assert data[:4096] == b"a" * 4096 and data[8192:12288] == b"r" * 4096 and data[12288:16384] == b"s" * 4096
        window = journal.overflow_windows()[0]
        assert (window.start_ts, window.resync_seq, window.resync_ts) == (t + 25, 7, t + 60)
    with Journal.open(tmp_path / "j") as journal:  # open windows survive reopen
        assert journal.overflow_windows()[0].resync_seq == 7


def test_points_filters(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=SIZE) as journal:
        t = journal.info.created_ns
        journal.append([Record(s, t + s * 10, RecordType.FLUSH if s % 2 else RecordType.MARK,
                               data=b"" if s % 2 else f"m{s}".encode()) for s in range(1, 21)])
        journal.add_mark("user", t + 55)
        everything = journal.points()
        assert [p.seq for p in everything] == sorted(p.seq for p in everything)
        assert len(everything) == 22
        marks = journal.points(kinds={"mark", "user-mark"})
        assert [p.name for p in marks][:4] == ["m2", "m4", "user", "m6"]
        window = journal.points(start_ns=t + 50, end_ns=t + 100)
        assert [p.seq for p in window] == [5, 5, 6, 7, 8, 9, 10]
        newest = journal.points(reverse=True, limit=3)
        assert [p.seq for p in newest] == [20, 19, 18]
        assert [p.seq for p in journal.points(reverse=True, end_ns=t + 45, limit=2)] == [4, 3]
        assert journal.activity(t, t + 10**9) == []


# --- against the model: dropped writes, an OVERFLOW record, a later resync ---

import random as _random  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MODEL_SIZE = 1 << 16


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**20), n=st.integers(6, 30), data=st.data())
def test_whole_points_restore_exactly_around_an_overflow(tmp_path_factory, seed, n, data) -> None:
    rng = _random.Random(seed)
    tmp = tmp_path_factory.mktemp("ovf")
    journal = Journal.create(tmp / "j", device_bytes=MODEL_SIZE)
    t0 = journal.info.created_ns
    # the true device: every write, with its time
    events = []
    for i in range(n):
        off = rng.randrange(MODEL_SIZE // 512) * 512
        length = min(rng.randrange(1, 32) * 512, MODEL_SIZE - off)
        events.append((t0 + (i + 1) * 100, off, rng.randbytes(length)))
    drop_lo = data.draw(st.integers(1, n - 2))
    drop_hi = data.draw(st.integers(drop_lo, n - 2))  # events drop_lo..drop_hi were dropped
    resync_after = data.draw(st.integers(drop_hi + 1, n - 1))  # in journal order, after this event
    read_at = data.draw(st.integers(resync_after, n - 1))  # the copy saw the device after this event

    def device_at(ts: int) -> bytearray:
        dev = bytearray(MODEL_SIZE)
        for ets, off, payload in events:
            if ets <= ts:
                dev[off:off + len(payload)] = payload
        return dev

    dropped = events[drop_lo:drop_hi + 1]
    lo = min(off for _, off, _ in dropped)
    hi = max(off + len(p) for _, off, p in dropped)
    records: list[Record] = []

    def add(rtype, ts, offset=0, length=0, payload=b"") -> None:
        records.append(Record(len(records) + 1, ts, rtype, 0, offset, length, payload))

    for i, (ts, off, payload) in enumerate(events):
        if not drop_lo <= i <= drop_hi:
            add(RecordType.WRITE, ts, off, len(payload), payload)
        if i == drop_hi:
            add(RecordType.OVERFLOW, ts, lo, hi - lo, dropped[0][0].to_bytes(8, "little"))
        if i == resync_after:
            read_ts = events[read_at][0]
            copy = device_at(read_ts)[lo:hi]
            add(RecordType.RESYNC, read_ts, lo, hi - lo, bytes(copy))
        add(RecordType.FLUSH, ts)
    journal.append(records)
    resync_seq = next(r.seq for r in records if r.type == RecordType.RESYNC)
    for ts in sorted({e[0] for e in events} | {e[0] + 50 for e in events}):
        seq = journal.resolve(ts)
        whole = journal.is_whole(seq, ts)
        if ts < dropped[0][0]:
            assert whole
        elif seq < resync_seq or ts < events[read_at][0]:
            assert not whole, (ts, seq)
        else:
            assert whole, (ts, seq)
        if whole:
            out = tmp / f"r{ts}.img"
            journal.restore(out, at_ns=ts)
            assert out.read_bytes() == bytes(device_at(ts)), (ts, seq)
    journal.close()
