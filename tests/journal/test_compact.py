"""Retention and compaction against an independent model of the device.

Hypothesis draws workloads over simulated hours, retention policies and
the moments compactions run, interleaved with appends. After every
compaction: every point the journal still lists reads and restores exactly
as the model says; a time resolves to the model's record, or (thinned) to
the newest kept point before it, never to anything else; the points kept
are the ones the policy names (marks inside the horizon, everything in the
"keep all" age, pinned marks whatever their age); verify is clean; and a
reindex rebuilds the same state. A second test kills a compacting process
at every step and at random moments: the journal is always exact, and the
next compaction finishes the job.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal, JournalError, Record, RecordType, heads
from journal.compact import CRASH_ENV
from journal.records import MARK_KINDS
from journal.points import retained
from journal.reindex import reindex
from journal.retention import Policy, horizon_time, parse_tiers
from journal.timespec import parse_duration
from journal.format import BLOCK_VAL, ENC_PIECES, KIND_ZSTD, U64
from tests.journal.compact_workload import S, SEGMENT, SIZE, mixed, records
from tests.journal.model import DeviceModel

ROOT = Path(__file__).resolve().parents[2]

POLICIES = [
    Policy(keep_ns=parse_duration("2h")),
    Policy(keep_ns=parse_duration("6h"), tiers=parse_tiers("10m:all,1h:1m,6h:10m")),
    Policy(tiers=parse_tiers("30m:all,3h:15m")),
    Policy(tiers=parse_tiers("1h:5m")),
    Policy(keep_ns=parse_duration("1d"), tiers=parse_tiers("1h:all,2h:30m")),
]


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Journal, "segment_target", SEGMENT)


def grow(journal: Journal, model: DeviceModel, recs: list[Record], rng: random.Random,
         pins: set[int], *, checkpoint: bool = False) -> None:
    """Append ``recs`` in random batches, with user marks (some pinned) between them.

    ``model.made`` gathers (kind, ts) of every point made, for the policy checks. With
    ``checkpoint``, a step of the block-map checkpoint after each batch, as the service takes.
    """
    made = model.__dict__.setdefault("made", [])
    i = 0
    while i < len(recs):
        n = rng.randrange(1, 40)
        chunk = recs[i:i + n]
        journal.append(chunk)
        if checkpoint:
            heads.step(journal, min_lag=1)
        for r in chunk:
            model.apply(r)
            if r.type in (RecordType.FLUSH, RecordType.MARK):
                made.append(("mark" if r.type == RecordType.MARK else "flush", r.ts_ns))
        i += n
        roll = rng.random()
        if roll < 0.15:
            journal.add_mark(f"u{chunk[-1].seq}", chunk[-1].ts_ns + 1)
            made.append(("user-mark", chunk[-1].ts_ns + 1))
        elif roll < 0.2:
            journal.pin_mark(f"pin{chunk[-1].seq}", chunk[-1].ts_ns + 1)
            pins.add(chunk[-1].ts_ns + 1)
            made.append(("user-mark", chunk[-1].ts_ns + 1))


def restores_from_checkpoint(journal: Journal, model: DeviceModel, out: Path) -> None:
    """Restores at points at or after the block-map checkpoint read it, and equal the model."""
    from journal import restore

    with journal.index.read() as txn:
        cp = heads.state(journal.index, txn)
    assert cp is not None and cp.complete
    after = sorted({p.seq for p in journal.points() if p.seq >= cp.seq} | {journal.last_seq})
    saved = restore._GET_COST
    restore._GET_COST = 0  # read the checkpoint whatever it costs against the walk
    try:
        for seq in {after[0], after[len(after) // 2], after[-1]}:
            result = journal.restore(out, seq=seq, overwrite=True, allow_partial=True)
            assert result.checkpoint == cp.seq
            assert out.read_bytes() == model.states[seq]
    finally:
        restore._GET_COST = saved


def check_exact(journal: Journal, model: DeviceModel, rng: random.Random, policy: Policy | None,
                now: int | None, pins: set[int], out: Path) -> list[tuple[int, int, str]]:
    """Everything a reader can ask of the journal, against the model; returns the listed points."""
    points = journal.points()
    for p in points:
        assert journal.read(0, SIZE, seq=p.seq) == model.states[p.seq], p
    pick = rng.choice(points)
    journal.restore(out, seq=pick.seq, overwrite=True, allow_partial=True)
    assert out.read_bytes() == model.states[pick.seq]
    listed = sorted({p.seq for p in points})
    first, last = journal.info.created_ns, journal.last_ts_ns
    for _ in range(12):
        at = rng.randrange(first, last + 600 * S)
        want_seq = model.at_time(at)[0]
        try:
            with journal.index.read() as txn:
                found = journal.locate(txn, None, at)
        except JournalError as exc:
            assert "retention horizon" in str(exc)
            assert not listed or want_seq < listed[0] or want_seq not in listed
            continue
        assert found.seq <= want_seq
        if found.seq != want_seq:
            # thinned: the newest kept point at or before the record the time names
            assert found.seq in listed and found.note
            assert not [s for s in listed if found.seq < s <= want_seq]
        assert journal.read(0, SIZE, at_ns=at) == model.states[found.seq]
    if policy is not None and now is not None:
        # the points kept are the ones the policy names
        horizon = horizon_time(policy, now)
        all_age = max((t.age_ns for t in policy.tiers if t.every_ns is None), default=None)
        by_ts = {p.ts_ns for p in points}
        made = model.__dict__.get("made", [])
        assert all(ts in by_ts for _kind, ts in made if ts in pins), "a pinned mark was dropped"
        assert all(ts in by_ts for kind, ts in made if kind in MARK_KINDS and ts >= horizon), "a mark was dropped"
        if all_age is not None:
            assert all(ts in by_ts for _kind, ts in made if ts >= now - all_age), "a point in the keep-all age went"
        # behind the horizon: pins, and the one point the device is kept as of (the new base)
        pinned = {p.seq for p in points if p.ts_ns in pins}
        # (and, where the horizon had to step back out of an overflow window, what lies inside it)
        assert len({p.seq for p in points if p.ts_ns < horizon and p.seq not in pinned and p.whole
                    and p.kind not in ("overflow", "resync") and p.kind not in MARK_KINDS}) <= 1
    report = journal.verify()
    assert report.ok, report.problems[:5]
    return [(p.seq, p.ts_ns, p.kind) for p in points]


def build(tmp: Path, seed: int, count: int) -> tuple[Journal, DeviceModel, random.Random, set[int]]:
    rng = random.Random(seed)
    base = rng.randbytes(SIZE)
    (tmp / "base.img").write_bytes(base)
    journal = Journal.create(tmp / "j", device_bytes=SIZE, source=tmp / "base.img")
    model = DeviceModel(base)
    pins: set[int] = set()
    grow(journal, model, records(seed, count, journal.info.created_ns), rng, pins)
    return journal, model, rng, pins


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), first=st.integers(20, 260), second=st.integers(0, 200),
       policy=st.sampled_from(POLICIES), lag1=st.integers(0, 7200), lag2=st.integers(0, 7200))
def test_compaction_keeps_every_kept_point_exact(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                                 first: int, second: int, policy: Policy,
                                                 lag1: int, lag2: int) -> None:
    tmp = tmp_path_factory.mktemp("compact")
    journal, model, rng, pins = build(tmp, seed, first)
    out = tmp / "out.img"
    with journal:
        before = check_exact(journal, model, rng, None, None, pins, out)
        heads.bring_up_to_date(journal, min_lag=1)  # the compaction must drop it
        journal.set_retention(policy)
        now = journal.last_ts_ns + lag1 * S
        journal.compact(now)
        after = check_exact(journal, model, rng, policy, now, pins, out)
        assert set(after) <= set(before)  # a compaction only ever drops points
        heads.bring_up_to_date(journal, min_lag=1)  # built on the folded index, moved on as it grows
        recs = records(seed + 1, second, journal.info.created_ns, journal.last_seq + 1, journal.last_ts_ns)
        grow(journal, model, recs, rng, pins, checkpoint=True)
        restores_from_checkpoint(journal, model, out)
        now = max(now, journal.last_ts_ns) + lag2 * S
        journal.compact(now)
        heads.bring_up_to_date(journal, min_lag=1)
        restores_from_checkpoint(journal, model, out)
        final = check_exact(journal, model, rng, policy, now, pins, out)
    reindex(tmp / "j")
    with Journal.open(tmp / "j") as journal:
        assert check_exact(journal, model, rng, None, None, pins, out) == final


def test_compaction_gives_space_back(tmp_path: Path) -> None:
    """Segments that hold nothing live are deleted; the journal's size falls as the policy says."""
    journal, model, rng, pins = build(tmp_path, 5, 1500)
    seg_dir = tmp_path / "j" / "segments"
    backup = tmp_path / "segments-before"
    shutil.copytree(seg_dir, backup)
    with journal:
        segs_before = {p.name for p in seg_dir.glob("*.seg")}
        size_before = sum(p.stat().st_size for p in seg_dir.glob("*.seg"))
        journal.set_retention(Policy(keep_ns=parse_duration("1h")))
        result = journal.compact(journal.last_ts_ns)
        assert result is not None and result.segments_deleted > 0
        segs_after = {p.name for p in seg_dir.glob("*.seg")}
        size_after = sum(p.stat().st_size for p in seg_dir.glob("*.seg"))
        assert segs_before - segs_after and len(segs_before - segs_after) == result.segments_deleted
        assert result.bytes_freed > size_before // 2
        # what stays: the live versions, once (each moved one with a record header of its own)
        assert size_after <= size_before - result.bytes_freed + result.bytes_moved * 1.25 + 8192
        assert size_after < size_before // 4
        points = journal.points()
        horizon = journal.last_ts_ns - parse_duration("1h")
        pinned = {p.seq for p in points if p.ts_ns in pins}
        behind = {p.seq for p in points if p.ts_ns <= horizon and p.seq not in pinned}
        assert behind == {result.horizon_seq}  # the new base, and nothing else older than an hour
        for p in points:
            assert journal.read(0, SIZE, seq=p.seq) == model.states[p.seq]
        assert journal.verify().ok
        assert journal.compact(journal.last_ts_ns) is None  # nothing more to fold at the same moment
    # a dropped segment left behind (here damaged too), and the index lost
    torn = sorted(segs_before - segs_after)[len(segs_before - segs_after) // 2]
    data = (backup / torn).read_bytes()
    (seg_dir / torn).write_bytes(data[:len(data) // 2 + 77])
    shutil.rmtree(tmp_path / "j" / "index")
    reindex(tmp_path / "j")
    with Journal.open(tmp_path / "j", readonly=True) as journal:
        assert [p.seq for p in journal.points()] == [p.seq for p in points]
        for p in points:
            assert journal.read(0, SIZE, seq=p.seq) == model.states[p.seq]
        assert journal.verify().ok


def test_compaction_moves_compressed_versions_as_they_are(tmp_path: Path) -> None:
    """Compressed and zero-elided versions survive a compaction that moves them, and a reindex."""
    rng = random.Random(8)
    base = mixed(rng, SIZE)
    (tmp_path / "base.img").write_bytes(base)
    journal = Journal.create(tmp_path / "j", device_bytes=SIZE, source=tmp_path / "base.img")
    model = DeviceModel(base)
    pins: set[int] = set()
    grow(journal, model, records(9, 1500, journal.info.created_ns, payload=mixed), rng, pins)
    out = tmp_path / "out.img"
    with journal:
        journal.set_retention(Policy(keep_ns=parse_duration("1h")))
        result = journal.compact(journal.last_ts_ns)
        assert result is not None and result.bytes_moved > 0
        folds = [r for s in sorted(journal.path.glob("segments/*.seg"))
                 for r in journal.segments.scan(int(s.stem)) if not isinstance(r, tuple)
                 and r.type == RecordType.FOLD and r.encoding == ENC_PIECES]
        assert folds, "no compressed version was moved"
        with journal.index.read() as txn:
            kinds = {BLOCK_VAL.unpack_from(v)[3] for _k, v in txn.cursor(db=journal.index.db("blocks"))}
        assert KIND_ZSTD in kinds
        final = check_exact(journal, model, rng, None, None, pins, out)
    reindex(tmp_path / "j")
    with Journal.open(tmp_path / "j") as journal:
        assert check_exact(journal, model, rng, None, None, pins, out) == final


def _compact_in_child(path: Path, now: int, crash_at: int | None) -> int:
    env = {**__import__("os").environ}
    if crash_at is not None:
        env[CRASH_ENV] = str(crash_at)
    return subprocess.run([sys.executable, "-m", "tests.journal.compact_workload", str(path), str(now)],
                          cwd=ROOT, env=env, timeout=120).returncode


def test_sigkill_at_every_step_of_a_compaction(tmp_path: Path) -> None:
    """Kill -9 at each step boundary, then at random moments: always exact, and it finishes."""
    journal, model, rng, pins = build(tmp_path, 11, 900)
    with journal:
        journal.set_retention(Policy(keep_ns=parse_duration("3h"), tiers=parse_tiers("30m:all,3h:10m")))
        now = journal.last_ts_ns
    reference = tmp_path / "ref"
    shutil.copytree(tmp_path / "j", reference)
    assert _compact_in_child(reference, now, None) == 0
    with Journal.open(reference, readonly=True) as journal:
        want = check_exact(journal, model, rng, None, None, pins, tmp_path / "out.img")
    crashes = 0
    for step in range(1, 200):
        work = tmp_path / f"k{step}"
        shutil.copytree(tmp_path / "j", work)
        code = _compact_in_child(work, now, step)
        if code == 0:
            break
        assert code == -signal.SIGKILL
        crashes += 1
        with Journal.open(work) as journal:
            check_exact(journal, model, rng, None, None, pins, tmp_path / "out.img")
            journal.compact(now)  # finishes what the killed one began (or plans it again)
            assert check_exact(journal, model, rng, None, None, pins, tmp_path / "out.img") == want
        shutil.rmtree(work)
    assert crashes >= 6
    killed = 0
    for round_ in range(8):  # and at moments no step boundary chose
        work = tmp_path / f"r{round_}"
        shutil.copytree(tmp_path / "j", work)
        proc = subprocess.Popen([sys.executable, "-m", "tests.journal.compact_workload", str(work), str(now)],
                                cwd=ROOT, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"compacting\n"
        time.sleep(rng.uniform(0, 0.04))  # the compaction itself takes some tens of milliseconds
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        with Journal.open(work) as journal:
            check_exact(journal, model, rng, None, None, pins, tmp_path / "out.img")
            journal.compact(now)
            assert check_exact(journal, model, rng, None, None, pins, tmp_path / "out.img") == want
        shutil.rmtree(work)
    assert killed >= 2  # most kills land inside the compaction, not after it


def test_a_point_folded_while_exported_is_refused_not_misread(tmp_path: Path) -> None:
    """A long-lived reader (an export) of a point a compaction then folds gets an error, never wrong bytes."""
    from journal.errors import OutOfRange
    from journal.pointview import PointView

    journal, model, rng, pins = build(tmp_path, 8, 600)
    with journal:
        early = next(p.seq for p in journal.points() if p.kind == "flush" and p.seq > 50)
        view = PointView(journal, early)
        try:
            assert view.read(0, SIZE) == model.states[early]
            journal.set_retention(Policy(keep_ns=parse_duration("1h")))
            assert journal.compact(journal.last_ts_ns) is not None
            with journal.index.read() as txn, pytest.raises(OutOfRange, match="retention horizon"):
                journal.locate(txn, early, None)  # folded away
            with pytest.raises(OutOfRange, match="folded away by retention"):
                view.read(0, SIZE)
        finally:
            view.close()


class _Scene:
    """A journal over a random base, and records for it in seq order, a minute apart.

    ``same_time`` keeps the time of the record before, and a RESYNC always
    does (the service stamps it so); an OVERFLOW without ``data`` says its
    writes were lost from a second before it.
    """

    def __init__(self, tmp_path: Path, seed: int) -> None:
        self.rng = random.Random(seed)
        (tmp_path / "base.img").write_bytes(self.rng.randbytes(SIZE))
        self.journal = Journal.create(tmp_path / "j", device_bytes=SIZE, source=tmp_path / "base.img")
        self.ts = self.journal.info.created_ns
        self.seq = 0

    def record(self, rtype: int, off: int, length: int, data: bytes | None = None, *,
               same_time: bool = False) -> Record:
        self.seq += 1
        if not same_time and rtype != RecordType.RESYNC:
            self.ts += 60 * S
        if data is None:
            data = (self.ts - S).to_bytes(8, "little") if rtype == RecordType.OVERFLOW else b""
        return Record(self.seq, self.ts, rtype, 0, off, length, data)


def test_a_pinned_mark_inside_an_overflow_window_stays_not_whole_after_a_reindex(tmp_path: Path) -> None:
    """The window's OVERFLOW record folds away and its segment is deleted; the pin inside the window
    must still read as not whole, before and after a reindex (whole would restore unknown bytes)."""
    scene = _Scene(tmp_path, 3)
    journal, rng = scene.journal, scene.rng

    def write() -> Record:
        off = rng.randrange(0, SIZE // 512 - 16) * 512
        return scene.record(RecordType.WRITE, off, 8192, rng.randbytes(8192))

    def whole_device() -> Record:
        return scene.record(RecordType.WRITE, 0, SIZE, rng.randbytes(SIZE), same_time=True)

    with journal:
        journal.append([write() for _ in range(40)])
        journal.append([scene.record(RecordType.OVERFLOW, 0, SIZE)])
        journal.append([write() for _ in range(10)])
        journal.append([whole_device()])  # inside the window: nothing before it is live at the pin
        pin_ts = scene.ts + 1
        journal.pin_mark("inside", pin_ts)
        journal.append([write() for _ in range(10)])
        journal.append([scene.record(RecordType.RESYNC, 0, SIZE, rng.randbytes(SIZE))])
        for _ in range(6):   # hours more, rewriting the whole device: the window's segments hold nothing live
            journal.append([write() for _ in range(60)])
            journal.append([whole_device()])
        overflow_seq = 41
        holder = next(f for f in (tmp_path / "j" / "segments").glob("*.seg")
                      if any(getattr(r, "seq", None) == overflow_seq and r.type == RecordType.OVERFLOW
                             for r in journal.segments.scan(int(f.stem))))
        journal.set_retention(Policy(keep_ns=parse_duration("1h")))
        result = journal.compact(journal.last_ts_ns)
        assert result is not None and result.segments_deleted > 0

        def pinned_point() -> object:
            return next(p for p in journal.points() if p.ts_ns == pin_ts)

        assert not pinned_point().whole
        pinned_seq = pinned_point().seq
        assert not holder.exists(), "the OVERFLOW record's segment was meant to be deleted"
        with journal.index.read() as txn:
            assert txn.get(U64.pack(overflow_seq), db=journal.index.db("seq")) is None, \
                "the OVERFLOW record was meant to fold away"
    reindex(tmp_path / "j")
    with Journal.open(tmp_path / "j") as journal:
        p = next(p for p in journal.points() if p.ts_ns == pin_ts)
        assert not p.whole, "the window around a pinned mark was lost by the reindex"
        # the RESYNC after it keeps its time: stamped anew from the surviving records it would
        # have moved before the mark, and the mark with it
        assert p.seq == pinned_seq
        with pytest.raises(JournalError, match="not whole"):
            journal.restore(tmp_path / "out.img", seq=p.seq)
        assert journal.verify().ok


def test_the_background_waits_until_a_fold_is_worth_a_compaction(tmp_path: Path) -> None:
    """A few minutes' fold is left for later by the background's look (not by an explicit
    compaction); a fold of a sixteenth of the history since the last one runs."""
    from journal.compact import Compactor
    from journal.maintain import compact_now

    journal, model, rng, pins = build(tmp_path, 4, 400)
    with journal:
        journal.set_retention(Policy(keep_ns=parse_duration("12h")))  # about 250 of 19 h of records kept
        assert compact_now(journal, journal.last_ts_ns, eager=False)[0] is not None  # the first: always
        # a quarter of an hour of flushes: the horizon moves past a few of the oldest kept records
        ts = journal.last_ts_ns
        recs = [Record(journal.last_seq + i, ts + i * 60 * S, RecordType.FLUSH) for i in range(1, 16)]
        grow(journal, model, recs, rng, pins)
        now = journal.last_ts_ns
        assert Compactor(journal).choose(now) is not None  # there is something to fold
        assert compact_now(journal, now, eager=False)[0] is None
        assert compact_now(journal, now, eager=True)[0] is not None
        # hours more: a fold of a sixteenth and more runs by itself
        recs = records(42, 300, journal.info.created_ns, journal.last_seq + 1, journal.last_ts_ns)
        grow(journal, model, recs, rng, pins)
        assert compact_now(journal, journal.last_ts_ns, eager=False)[0] is not None
        check_exact(journal, model, rng, None, None, pins, tmp_path / "out.img")


def test_the_resync_point_a_compaction_keeps_is_still_listed_after_a_reindex(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept RESYNC that closed a window is a point because of its OVERFLOW record; once that record's
    segment is deleted a reindex cannot tell, and the plan's point must put it back (it read as kept, unlisted)."""
    monkeypatch.setattr(Journal, "segment_target", 64 << 10)  # the OVERFLOW's segment holds it alone
    scene = _Scene(tmp_path, 4)
    journal, rng, record = scene.journal, scene.rng, scene.record
    with journal:
        journal.append([record(RecordType.WRITE, 0, SIZE, rng.randbytes(SIZE))])
        overflow = record(RecordType.OVERFLOW, 0, SIZE)
        journal.append([overflow])
        journal.append([record(RecordType.WRITE, 0, SIZE, rng.randbytes(SIZE))])
        resync = record(RecordType.RESYNC, 0, SIZE, rng.randbytes(SIZE))
        journal.append([resync])
        for _ in range(4):  # later history that rewrites the device whole
            journal.append([record(RecordType.WRITE, 0, SIZE, rng.randbytes(SIZE))])
            journal.append([record(RecordType.FLUSH, 0, 0)])
        listed = {p.seq: p.kind for p in journal.points()}
        assert listed.get(resync.seq) == "resync", listed
        journal.set_retention(Policy(keep_ns=parse_duration("1h")))
        result = journal.compact(journal.last_ts_ns, horizon_ts=resync.ts_ns + 1)
        assert result is not None and result.horizon_seq == resync.seq
        before = {p.seq: (p.kind, p.whole) for p in journal.points()}
        images = {s: journal.read(0, SIZE, seq=s) for s in before}
        with journal.index.read() as txn:
            assert txn.get(U64.pack(overflow.seq), db=journal.index.db("seq")) is None, \
                "the OVERFLOW record was meant to fold away"
        assert not any(r.seq == overflow.seq for f in (tmp_path / "j" / "segments").glob("*.seg")
                       for r in journal.segments.scan(int(f.stem))), "its segment was meant to be deleted"
    reindex(tmp_path / "j")
    with Journal.open(tmp_path / "j") as journal:
        assert {p.seq: (p.kind, p.whole) for p in journal.points()} == before
        assert {s: journal.read(0, SIZE, seq=s) for s in before} == images
        assert journal.verify().ok


def test_verify_finds_a_kept_point_missing_from_the_list_and_a_reindex_puts_it_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept point's entry lost from the points table (the reindex bug above did that) is a verify problem."""
    journal, model, rng, pins = build(tmp_path, 9, 200)
    with journal:
        journal.set_retention(Policy(keep_ns=parse_duration("1h")))
        result = journal.compact(journal.last_ts_ns + 600 * S)
        assert result is not None and journal.verify().ok
        with journal.index.read() as txn:
            sel = retained(journal.index, txn)
        assert sel is not None
        points_db = journal.index.db("points")
        by_mark = {p.seq for p in journal.points() if p.kind == "user-mark"}  # listed through umarks too
        with journal.index.read() as txn:
            victim = next(k for k in sel.kept
                          if k and k not in by_mark and txn.get(U64.pack(k), db=points_db) is not None)
        journal.index.write(lambda txn: txn.delete(U64.pack(victim), db=points_db))
        report = journal.verify()
        assert not report.ok and any("not listed" in str(p) and f"seq {victim}" in str(p)
                                     for p in report.problems), report.problems
    reindex(tmp_path / "j")
    with Journal.open(tmp_path / "j") as journal:
        assert victim in {p.seq for p in journal.points()}
        assert journal.verify().ok


def compaction_notes(path: Path, journal: Journal) -> list[dict]:
    """The payloads of the COMPACTION records in ``path``'s segments, oldest first."""
    import msgpack

    from journal.segments import REC_HDR

    return [msgpack.unpackb(journal.segments.pread(int(f.stem), r.pos + REC_HDR.size, r.data_len))
            for f in sorted((path / "segments").glob("*.seg"))
            for r in journal.segments.scan(int(f.stem))
            if not isinstance(r, tuple) and r.type == RecordType.COMPACTION]


def test_refold_puts_back_a_window_the_plan_saw_closed(tmp_path: Path) -> None:
    """A rebuilt window that stopped short (a partial RESYNC that advanced it folded away with its segment)
    is replaced by the plan's closed one: the points after it are whole again, not refused forever."""
    from journal.points import OverflowWindow
    from journal.index import seal
    from journal.refold import refold

    scene = _Scene(tmp_path, 6)
    journal, rng, record, half = scene.journal, scene.rng, scene.record, SIZE // 2
    with journal:
        journal.append([record(RecordType.OVERFLOW, 0, SIZE)])
        journal.append([record(RecordType.RESYNC, 0, half, rng.randbytes(half))])
        journal.append([record(RecordType.WRITE, 0, 4096, rng.randbytes(4096))])
        journal.append([record(RecordType.RESYNC, half, half, rng.randbytes(half))])
        for _ in range(4):
            journal.append([record(RecordType.WRITE, 0, SIZE, rng.randbytes(SIZE))])
            journal.append([record(RecordType.FLUSH, 0, 0)])
        journal.set_retention(Policy(keep_ns=parse_duration("1h")))
        assert journal.compact(journal.last_ts_ns, horizon_ts=journal.last_ts_ns - 100 * S) is not None
        (window,) = journal.overflow_windows()
        assert window.resync_seq == 4
        points = [(p.seq, p.whole) for p in journal.points()]
        assert all(whole for _seq, whole in points)
        images = {s: journal.read(0, SIZE, seq=s) for s, _whole in points}
        plans = compaction_notes(tmp_path / "j", journal)
        # what a reindex rebuilds when the first RESYNC's segment is gone: the window open at half
        stale = OverflowWindow(window.seq, window.start_ts, window.end_ts, window.offset, window.length, half)
        key = U64.pack(window.seq)
        journal.index.write(lambda txn: txn.put(key, seal(key, stale.pack()), db=journal.index.db("windows")))
        assert not any(p.whole for p in journal.points())
        with journal.index.read() as txn:
            dropped = journal.index.get_meta(txn, "dropped_segments", [])
        refold(journal.index, tmp_path / "j", [p for p in plans if "sel" in p][-1], dropped)
        assert journal.overflow_windows() == [window]
        assert [(p.seq, p.whole) for p in journal.points()] == points
        assert {s: journal.read(0, SIZE, seq=s) for s, _whole in points} == images
        assert journal.verify().ok


def test_a_window_still_resyncing_at_a_compaction_closes_after_a_reindex_too(tmp_path: Path) -> None:
    """A long resync: the compaction folds its first partial RESYNC away (with its segment) while the window is
    open; the RESYNC after the compaction closes it. A reindex must close it the same way: before, it rebuilt the
    window from the plan after its scan, too late for that RESYNC, and every later point read as not whole."""
    scene = _Scene(tmp_path, 8)
    journal, rng, record, half = scene.journal, scene.rng, scene.record, SIZE // 2
    with journal:
        journal.append([record(RecordType.OVERFLOW, 0, SIZE)])
        journal.append([record(RecordType.RESYNC, 0, half, rng.randbytes(half))])
        for _ in range(6):  # the first half rewritten: the first partial RESYNC holds nothing live
            journal.append([record(RecordType.WRITE, 0, half, rng.randbytes(half))])
            journal.append([record(RecordType.FLUSH, 0, 0)])
        journal.set_retention(Policy(keep_ns=parse_duration("1d"), tiers=parse_tiers("10m:all")))
        now = scene.ts + 30 * 60 * S
        result = journal.compact(now, horizon_ts=journal.info.created_ns + 1)
        assert result is not None and result.records_dropped > 0
        (window,) = journal.overflow_windows()
        assert window.resync_seq is None and window.resynced_to == half
        scene.ts = now
        journal.append([record(RecordType.RESYNC, half, half, rng.randbytes(half))])  # closes it
        journal.append([record(RecordType.FLUSH, 0, 0)])
        journal.append([record(RecordType.WRITE, 0, 4096, rng.randbytes(4096))])
        journal.append([record(RecordType.FLUSH, 0, 0)])
        points = [(p.seq, p.kind, p.whole) for p in journal.points()]
        assert points[-1][2], points
        images = {s: journal.read(0, SIZE, seq=s) for s, _kind, whole in points if whole}
        stream = {r.seq for f in (tmp_path / "j" / "segments").glob("*.seg")
                  for r in journal.segments.scan(int(f.stem))}
        assert 2 not in stream, "the first partial RESYNC was meant to be gone with its segment"
    reindex(tmp_path / "j")
    with Journal.open(tmp_path / "j") as journal:
        assert [(p.seq, p.kind, p.whole) for p in journal.points()] == points
        assert {s: journal.read(0, SIZE, seq=s) for s in images} == images
        assert journal.verify().ok


def test_the_plan_sees_a_resync_appended_while_it_is_made(tmp_path: Path) -> None:
    """The drain appends beside a compaction: a RESYNC that closes a window, committed just before
    the COMPACTION record takes the writer's lock, must be in the plan's snapshot of the windows (a
    reindex takes the plan's windows as of its record). The snapshot used to be read before the lock
    was taken, so such a RESYNC was in the stream before the plan but missing from it."""
    scene = _Scene(tmp_path, 8)
    journal, rng, record = scene.journal, scene.rng, scene.record
    with journal:
        journal.append([record(RecordType.OVERFLOW, 0, SIZE)])
        for _ in range(6):
            journal.append([record(RecordType.WRITE, 0, 4096, rng.randbytes(4096))])
            journal.append([record(RecordType.FLUSH, 0, 0)])
        journal.set_retention(Policy(keep_ns=parse_duration("1d"), tiers=parse_tiers("10m:all")))
        original = journal.write_compaction
        raced = []

        def drain_first(frame, extra) -> None:
            if not raced:  # the plan's note: the drain's RESYNC wins the lock just before it
                raced.append(journal.append([record(RecordType.RESYNC, 0, SIZE, rng.randbytes(SIZE))]))
            original(frame, extra)

        journal.write_compaction = drain_first  # type: ignore[method-assign]
        now = scene.ts + 30 * 60 * S
        assert journal.compact(now, horizon_ts=journal.info.created_ns + 1) is not None
        assert raced == [1]
        plan = compaction_notes(tmp_path / "j", journal)[0]
        (wseq, packed), = plan["windows"]
        from journal.points import OverflowWindow

        assert OverflowWindow.unpack(wseq, packed).resync_seq is not None, "the plan missed the RESYNC"
