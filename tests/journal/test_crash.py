"""SIGKILL at random points of append, and torn segment tails on disk.

After each kill the journal must open to exactly the last whole batch (no
torn record, no lost committed batch, the cursor naming that batch), match
the model byte for byte, verify clean, and keep accepting appends.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from journal import Journal
from tests.journal.crash_writer import BATCH_RECORDS, SIZE, batch
from tests.journal.model import DeviceModel

ROOT = Path(__file__).resolve().parents[2]


def model_upto(last_seq: int, created_ns: int, keep: set[int] | None = None) -> DeviceModel:
    model = DeviceModel(bytes(SIZE), keep=keep)
    for i in range(last_seq // BATCH_RECORDS):
        for r in batch(i, created_ns):
            model.apply(r)
    return model


def check(path: Path, rng: random.Random) -> int:
    with Journal.open(path) as journal:
        last = journal.last_seq
        assert last % BATCH_RECORDS == 0, f"torn batch: last_seq {last}"
        if last:
            assert journal.cursor() == {"batch": last // BATCH_RECORDS - 1}
        seqs = [0, last] + [rng.randrange(0, last + 1) for _ in range(3)]
        model = model_upto(last, journal.info.created_ns, set(seqs))
        for seq in seqs:
            assert journal.read(0, SIZE, seq=seq) == model.states[seq]
        assert [r.seq for r in journal.records()] == list(range(1, last + 1))
        report = journal.verify()
        assert report.ok, report.problems
        return last


def test_sigkill_during_append_keeps_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "j"
    Journal.create(path, device_bytes=SIZE).close()
    rng = random.Random(7)
    progress = []
    for _round in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "tests.journal.crash_writer", str(path)], cwd=ROOT)
        time.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append(check(path, rng))
    assert progress[-1] > progress[0] > 0, progress


def test_torn_tail_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal.create(path, device_bytes=SIZE)
    created = journal.info.created_ns
    journal.append(batch(0, created), cursor={"batch": 0})
    journal.close()
    seg = path / "segments" / "00000001.seg"
    committed = seg.stat().st_size
    whole = seg.read_bytes()
    # half a batch that never reached its index commit: a header and a torn payload
    with open(seg, "ab") as f:
        f.write(whole[64:64 + 64 + 700])
    with Journal.open(path) as journal:
        assert journal.last_seq == BATCH_RECORDS
        assert seg.stat().st_size == committed
        journal.append(batch(1, created), cursor={"batch": 1})
    assert check(path, random.Random(1)) == 2 * BATCH_RECORDS


def test_replayed_batch_is_a_noop(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=SIZE) as journal:
        records = batch(0, journal.info.created_ns)
        assert journal.append(records) == BATCH_RECORDS
        size = journal.stats().disk_bytes
        assert journal.append(records) == 0
        assert journal.append(records[:10] + batch(1, journal.info.created_ns)[:5]) == 5
        assert journal.last_seq == BATCH_RECORDS + 5
        assert journal.stats().records == BATCH_RECORDS + 5
        assert journal.stats().disk_bytes >= size


def test_segment_rolls_and_reads_across(tmp_path: Path, monkeypatch) -> None:
    """Records spread over several segments read back and survive reopen."""
    import journal.journal as jmod

    monkeypatch.setattr(jmod.Journal, "segment_target", 256 * 1024)
    path = tmp_path / "j"
    with Journal.create(path, device_bytes=SIZE) as journal:
        for i in range(6):
            journal.append(batch(i, journal.info.created_ns))
        created = journal.info.created_ns
    assert len(list((path / "segments").glob("*.seg"))) > 3
    model = model_upto(6 * BATCH_RECORDS, created, {1, 100, 6 * BATCH_RECORDS})
    with Journal.open(path, readonly=True) as journal:
        for seq in (0, 1, 100, 6 * BATCH_RECORDS):
            assert journal.read(0, SIZE, seq=seq) == model.states[seq]
        assert journal.verify().ok


def test_sigkill_during_a_reindex_leaves_the_old_index_or_a_reindex_to_finish(tmp_path: Path) -> None:
    """A reindex killed at any moment: the journal opens to the same answers, or says in one line that
    its index is missing, and the next reindex gives the same answers (never an index half built)."""
    from journal.errors import JournalError
    from journal.retention import Policy
    from journal.timespec import parse_duration
    from tests.journal import test_compact as compaction

    path = tmp_path / "j"
    journal, _model, _rng, _pins = compaction.build(tmp_path, 12, 1500)
    with journal:
        journal.set_retention(Policy(keep_ns=parse_duration("1h")))
        journal.compact(journal.last_ts_ns + 1800 * compaction.S)  # a plan for the reindex to refold

    def answers() -> tuple[list[tuple[int, str, bool]], dict[int, bytes]]:
        with Journal.open(path, readonly=True) as j:
            points = [(p.seq, p.kind, p.whole) for p in j.points()]
            return points, {s: j.read(0, j.info.device_bytes, seq=s) for s, _k, _w in points}

    want = answers()
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from journal.reindex import reindex; "
            f"print('go', flush=True); reindex({str(path)!r})")

    def start() -> subprocess.Popen:
        """A reindex, once its imports are done (the kills below spread over its own work)."""
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "go\n"
        return proc

    def finish(proc: subprocess.Popen) -> int:
        code = proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        return code

    proc = start()
    started = time.monotonic()
    assert finish(proc) == 0
    took = time.monotonic() - started
    assert answers() == want
    for i in range(12):
        proc = start()
        time.sleep(took * i / 12)
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        try:
            got = answers()  # the old index or the new one, whole
        except JournalError as exc:  # killed between the renames: no index, and open says so
            assert len(str(exc).splitlines()) == 1 and "reindex" in str(exc), exc
            assert finish(start()) == 0
            got = answers()
        assert got == want, f"kill {i} of 12 into the reindex"
    with Journal.open(path) as j:
        assert j.verify().ok
