"""The block-map checkpoint (journal.heads) against the model, and against damage.

A restore at or after the checkpoint reads its heads and the records after
it instead of walking the block index: every such restore must equal the
model byte for byte (points just before, at and after the checkpoint,
composed blocks, big zeroing extents), and every way the checkpoint or the
entries it relies on can be lost or altered must fail in one line, never
answer.
"""

from __future__ import annotations

import random
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal, Record, RecordType, heads
from journal.errors import CorruptJournal
from journal.format import U64, U64X2
from journal.index import seal
from journal.retention import Policy
from tests.journal.model import DeviceModel
from tests.journal.test_model import SIZE, build, operations


@pytest.fixture(autouse=True)
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of a few entries, so builds and advances take many steps and stop between records; and
    every restore at or after the checkpoint reads it, whatever it would cost (the choice is tested
    on its own)."""
    from journal import restore

    monkeypatch.setattr(heads, "BUILD_STEP", 7)
    monkeypatch.setattr(heads, "ADVANCE_STEP", 5)
    monkeypatch.setattr(restore, "_GET_COST", 0)
    monkeypatch.setattr(restore, "_CHUNK_ENTRIES", 5)  # heads read in many transactions


def _restore(journal: Journal, tmp: Path, seq: int) -> tuple[bytes, int | None]:
    out = tmp / f"r{seq}.img"
    out.unlink(missing_ok=True)
    result = journal.restore(out, seq=seq)
    return out.read_bytes(), result.checkpoint


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations(), seed=st.integers(0, 2**16), cut=st.integers(0, 100), more=st.integers(0, 100))
def test_restores_from_the_checkpoint_match_the_model(tmp_path_factory: pytest.TempPathFactory, ops, seed,
                                                      cut, more) -> None:
    tmp = tmp_path_factory.mktemp("cp")
    first = cut * len(ops) // 100
    journal, model = build(tmp, ops[:first], seed, [])
    with journal:
        heads.bring_up_to_date(journal, min_lag=1)
        rng = random.Random(seed)
        ts = journal.last_ts_ns
        for seq, (kind, offset, length) in enumerate(ops[first:], start=first + 1):
            ts += 1000
            if kind == "write":
                r = Record(seq, ts, RecordType.WRITE, 0, offset, length, rng.randbytes(length))
            elif kind in ("zeroes", "big"):
                r = Record(seq, ts, RecordType.WRITE_ZEROES, 0, offset, length)
            elif kind == "discard":
                r = Record(seq, ts, RecordType.DISCARD, 0, offset, length)
            else:
                r = Record(seq, ts, RecordType.FLUSH)
            journal.append([r])
            model.apply(r)
            if more and seq % (1 + more % 5) == 0:
                heads.step(journal, min_lag=1)  # advance part of the way, as the background does
        with journal.index.read() as txn:
            cp = heads.state(journal.index, txn)
        assert cp is not None
        last = journal.last_seq
        picks = {0, cp.seq - 1, cp.seq, cp.seq + 1, (cp.seq + last) // 2, last}
        for seq in sorted(p for p in picks if 0 <= p <= last):
            data, via = _restore(journal, tmp, seq)
            assert data == model.states[seq], seq
            assert via == (cp.seq if seq >= cp.seq else None)


def _journal(tmp: Path, writes: int = 60, *, partial: bool = True) -> tuple[Journal, DeviceModel]:
    """A journal of full and partial block writes and one big zeroing extent, checkpointed mid-way."""
    rng = random.Random(5)
    base = bytes(rng.randbytes(SIZE))
    (tmp / "base.img").write_bytes(base)
    journal = Journal.create(tmp / "j", device_bytes=SIZE, source=tmp / "base.img")
    model = DeviceModel(base)
    ts = journal.info.created_ns
    for seq in range(1, writes + 1):
        ts += 60 * 10**9
        if seq == writes // 3:
            r = Record(seq, ts, RecordType.WRITE_ZEROES, 0, 4096, 1 << 20)
        elif seq % 5 == 0:
            r = Record(seq, ts, RecordType.FLUSH)  # points retention can keep
        else:
            length = rng.choice([512, 1536, 4096, 12288]) if partial else 4096 * rng.randint(1, 3)
            offset = rng.randrange(0, 64 * 4096 - length, 512 if partial else 4096)
            r = Record(seq, ts, RecordType.WRITE, 0, offset, length, rng.randbytes(length))
        journal.append([r])
        model.apply(r)
        if seq == writes // 2:
            heads.bring_up_to_date(journal, min_lag=1)
    return journal, model


def test_points_around_the_checkpoint(tmp_path: Path) -> None:
    journal, model = _journal(tmp_path)
    with journal:
        with journal.index.read() as txn:
            cp = heads.state(journal.index, txn)
        assert cp is not None and cp.complete and cp.seq == 30
        for seq in (0, 29, 30, 31, 45, 60):
            data, via = _restore(journal, tmp_path, seq)
            assert data == model.states[seq]
            assert (via == 30) == (seq >= 30)


def _edit(journal: Journal, fn) -> None:
    journal.index.write(fn)


def _head_keys(journal: Journal) -> list[bytes]:
    with journal.index.read() as txn:
        return [bytes(k) for k, _v in txn.cursor(db=journal.index.db("heads"))]


def _fails(journal: Journal, tmp: Path, seq: int, text: str) -> None:
    with pytest.raises(CorruptJournal, match=text) as info:
        journal.restore(tmp / "bad.img", seq=seq)
    assert "\n" not in str(info.value)
    assert not (tmp / "bad.img").exists()


def test_a_lost_head_is_found(tmp_path: Path) -> None:
    journal, _model = _journal(tmp_path)
    with journal:
        key = _head_keys(journal)[3]
        _edit(journal, lambda txn: txn.delete(key, db=journal.index.db("heads")))
        _fails(journal, tmp_path, 60, "checkpoint")


def test_a_stale_head_is_found(tmp_path: Path) -> None:
    """A head that seals right but is not what the checkpoint summed (an old copy of a page)."""
    journal, _model = _journal(tmp_path)
    with journal:
        key = _head_keys(journal)[2]
        db = journal.index.db("heads")

        def older(txn: lmdb.Transaction) -> None:
            raw = txn.get(key, db=db)
            fields = list(heads.HEAD_VAL.unpack_from(raw))
            fields[0] = 0  # as if the block's version were the baseline's
            txn.put(key, seal(key, heads.HEAD_VAL.pack(*fields)), db=db)

        _edit(journal, older)
        _fails(journal, tmp_path, 60, "seals do not add up")


def test_a_version_lost_under_a_composed_head_is_found(tmp_path: Path) -> None:
    """A partial head is composed from older versions: one of them lost from the block index is damage."""
    journal, _model = _journal(tmp_path)
    with journal:
        with journal.index.read() as txn:
            victims = [(U64.unpack(k)[0], heads.HEAD_VAL.unpack_from(v)) for k, v in
                       txn.cursor(db=journal.index.db("heads"))]
        block, fields = next((b, f) for b, f in victims if f[-2] > 1 and f[0] > 0)
        with journal.index.read() as txn:
            cur = txn.cursor(db=journal.index.db("blocks"))
            older = [U64X2.unpack(k)[1] for k, _v in cur.iternext() if U64X2.unpack(k)[0] == block]
        lost = U64X2.pack(block, [s for s in older if s < fields[0]][-1])
        _edit(journal, lambda txn: txn.delete(lost, db=journal.index.db("blocks")))
        later = [s for s in older if s > 30]
        # the newest point whose answer for this block comes from the head
        seq = min(later) - 1 if later else 60
        _fails(journal, tmp_path, max(seq, 30), "not the ones its checkpoint counted")


def test_an_entry_lost_after_the_checkpoint_is_found(tmp_path: Path) -> None:
    journal, _model = _journal(tmp_path, partial=False)
    with journal:
        with journal.index.read() as txn:
            keys = [bytes(k) for k, _v in txn.cursor(db=journal.index.db("blocks"))
                    if U64X2.unpack(k)[1] == 51]
        _edit(journal, lambda txn: txn.delete(keys[0], db=journal.index.db("blocks")))
        _fails(journal, tmp_path, 60, "lost the entry of block")


def test_a_lost_zeroing_extent_is_found(tmp_path: Path) -> None:
    journal, _model = _journal(tmp_path)
    with journal:
        _edit(journal, lambda txn: txn.delete(U64.pack(20), db=journal.index.db("zext")))
        _fails(journal, tmp_path, 60, "zeroing extents")


def test_the_checkpoint_moving_under_a_restore_changes_no_byte(tmp_path: Path, monkeypatch) -> None:
    """A restore whose checkpoint moves on between two of its chunks walks instead, and is exact."""
    from journal import restore

    monkeypatch.setattr(restore, "_CHUNK_ENTRIES", 4)
    journal, model = _journal(tmp_path)
    with journal:
        moved = []

        def progress(done: int, total: int) -> None:
            if not moved:
                moved.append(heads.step(journal, min_lag=1))

        out = tmp_path / "moved.img"
        result = journal.restore(out, seq=60, progress=progress)
        assert moved == [True]
        assert result.checkpoint is None
        assert out.read_bytes() == model.states[60]


def test_a_compaction_drops_the_checkpoint_and_a_reindex_builds_one(tmp_path: Path) -> None:
    journal, model = _journal(tmp_path)
    path = journal.path
    with journal:
        journal.set_retention(Policy(keep_ns=10 * 60 * 10**9))  # the last ten records
        assert journal.compact(journal.last_ts_ns) is not None
        with journal.index.read() as txn:
            assert heads.state(journal.index, txn) is None
        heads.bring_up_to_date(journal, min_lag=1)
        data, via = _restore(journal, tmp_path, 60)
        assert via == 60 and data == model.states[60]
    from journal.reindex import reindex

    reindex(path)
    with Journal.open(path) as journal:
        with journal.index.read() as txn:
            cp = heads.state(journal.index, txn)
        assert cp is not None and cp.complete and cp.seq == 60
        data, via = _restore(journal, tmp_path, 60)
        assert via == 60 and data == model.states[60]


def test_verify_holds_the_checkpoint_to_the_block_index(tmp_path: Path) -> None:
    """A head that names the wrong version, with the checkpoint's sum made to agree (what only a bug
    could write), is invisible to a restore's checks: verify recomputes every head and says so."""
    journal, _model = _journal(tmp_path, partial=False)
    with journal:
        assert journal.verify().ok
        index = journal.index
        key = _head_keys(journal)[5]
        db = index.db("heads")

        def wrong(txn: lmdb.Transaction) -> None:
            raw = txn.get(key, db=db)
            fields = list(heads.HEAD_VAL.unpack_from(raw))
            fields[2] += 4096  # the version's bytes elsewhere in its segment
            value = seal(key, heads.HEAD_VAL.pack(*fields))
            txn.put(key, value, db=db)
            cp = heads.state(index, txn)
            total = (cp.total - heads.head_seal(raw) + heads.head_seal(value)) % (1 << 64)
            index.put_meta(txn, heads.HEADS_META, heads.Checkpoint(cp.seq, cp.count, total, cp.zext).to_meta())

        _edit(journal, wrong)
        report = journal.verify()
        assert [p.message for p in report.problems] == [
            f"the checkpoint at seq 30 does not hold block {U64.unpack(key)[0]}'s version at that seq; "
            "run 'cdp reindex'"]


def test_sigkill_during_a_build_or_an_advance_never_leaves_a_wrong_checkpoint(tmp_path: Path) -> None:
    """A process building or moving the checkpoint killed at moments spread over its work: the journal
    opens, verifies clean (every head recomputed), restores its newest point exactly, and the next
    process finishes the work."""
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    rng = random.Random(3)
    size = 4 << 20
    (tmp_path / "base.img").write_bytes(rng.randbytes(size))
    path = tmp_path / "j"
    Journal.create(path, device_bytes=size, source=tmp_path / "base.img").close()

    def grow(records: int) -> None:
        with Journal.open(path) as journal:
            ts, seq = journal.last_ts_ns, journal.last_seq
            recs = []
            for s in range(seq + 1, seq + records + 1):
                length = rng.choice([512, 4096, 16384])
                offset = rng.randrange(0, size - length, 512)
                recs.append(Record(s, ts + s, RecordType.WRITE, 0, offset, length, rng.randbytes(length)))
            for i in range(0, len(recs), 100):
                journal.append(recs[i:i + 100])

    code = (f"import sys; sys.path.insert(0, {str(root)!r}); from journal import Journal, heads; "
            f"heads.BUILD_STEP = 64; heads.ADVANCE_STEP = 32; j = Journal.open({str(path)!r}); "
            f"print('go', flush=True); heads.bring_up_to_date(j, min_lag=1)")

    def run(kill_after: float | None) -> float:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "go\n"
        started = time.monotonic()
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert kill_after is not None or proc.returncode == 0
        return time.monotonic() - started

    def check() -> None:
        with Journal.open(path) as journal:
            assert journal.verify().ok
            want = journal.read(0, size, seq=journal.last_seq)  # the ranged read: no checkpoint
            out = tmp_path / "newest.img"
            journal.restore(out, overwrite=True)
            assert out.read_bytes() == want

    grow(3000)
    took = run(None)  # how long a whole build takes here
    with Journal.open(path) as journal:
        journal.index.write(lambda txn: heads.drop(journal.index, txn))
    for phase in ("build", "advance"):
        if phase == "advance":
            grow(1500)
        cut_short = 0
        for i in range(8):
            run(took * i / 8)
            check()
            with Journal.open(path) as journal, journal.index.read() as txn:
                cp = heads.state(journal.index, txn)
                cut_short += cp is None or not cp.complete or cp.seq < journal.last_seq
        assert cut_short, f"no kill landed inside the {phase}"
        run(None)
        with Journal.open(path) as journal, journal.index.read() as txn:
            cp = heads.state(journal.index, txn)
            assert cp is not None and cp.complete and cp.seq == journal.last_seq, phase
        check()


def test_points_inside_an_overflow_window_around_the_checkpoint(tmp_path: Path) -> None:
    """A checkpoint inside an overflow window: points inside it restore (with allow_partial) as the
    journal holds them, the RESYNC that closes it and every point after it as the device was."""
    rng = random.Random(8)
    size = 1 << 20
    base = rng.randbytes(size)
    (tmp_path / "base.img").write_bytes(base)
    model = DeviceModel(base)
    with Journal.create(tmp_path / "j", device_bytes=size, source=tmp_path / "base.img") as journal:
        ts = journal.info.created_ns

        def add(rtype: RecordType, offset: int = 0, length: int = 0, data: bytes = b"") -> None:
            nonlocal ts
            ts += 1000
            r = Record(journal.last_seq + 1, ts, rtype, 0, offset, length, data)
            journal.append([r])
            model.apply(r)

        def write() -> None:
            length = rng.choice([512, 4096, 8192])
            offset = rng.randrange(0, size - length, 512)
            add(RecordType.WRITE, offset, length, rng.randbytes(length))

        for _ in range(10):
            write()
        add(RecordType.OVERFLOW, 65536, 131072, (ts + 500).to_bytes(8, "little"))
        window = journal.last_seq
        for _ in range(10):
            write()
        heads.bring_up_to_date(journal, min_lag=1)
        with journal.index.read() as txn:
            cp = heads.state(journal.index, txn)
        assert cp is not None and cp.seq > window
        for _ in range(5):
            write()
        device = bytearray(model.current)
        device[65536:196608] = rng.randbytes(131072)  # what the dropped writes left there
        add(RecordType.RESYNC, 65536, 131072, bytes(device[65536:196608]))
        closed = journal.last_seq
        for _ in range(5):
            write()
        for seq in (cp.seq, cp.seq + 2, closed - 1, closed, closed + 3):
            out = tmp_path / f"p{seq}.img"
            result = journal.restore(out, seq=seq, allow_partial=True)
            assert result.checkpoint == cp.seq
            if seq != closed:  # (at the RESYNC itself, whole depends on when it read the device)
                assert result.whole == (seq > closed)
            assert out.read_bytes() == model.states[seq], seq
