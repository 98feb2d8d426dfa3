"""A full journal filesystem stops `cdp run` with one line and status 1; the next run resumes exactly.

The journal lives on a small tmpfs of its own; the simulator writes more
than it can hold. Once the drain has stopped, the tmpfs is grown and a
second `cdp run` finishes the work: the journal then equals the device,
with every write and the resync of whatever was dropped meanwhile.
"""

from __future__ import annotations

import json
import time
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

from journal import Journal
from tests.support.service import Setup, check_journal, env, sim_process

CDP = Path(sys.executable).parent / "cdp"


@pytest.fixture
def small_fs(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _run_until_full(tmp_path: Path, small_fs: Path, seed: int, policy: Any = None) -> tuple[Setup, str]:
    """`cdp run` on a 16 MiB device whose journal (on the 24 MiB tmpfs) the simulator fills: its stderr.

    ``policy``: a retention policy set on the journal first.
    """
    import random

    from cdp.ringwriter import RingWriter

    size = 16 << 20
    image = tmp_path / "device.img"
    image.write_bytes(random.Random(seed).randbytes(size))
    journal = small_fs / "journal"
    with Journal.create(journal, device_bytes=size, source=image) as j:
        if policy is not None:
            j.set_retention(policy)
    ring = tmp_path / "ring"
    RingWriter.create_file(ring, 8 << 20, size)
    s = Setup(image, journal, ring, tmp_path / "sim.log", size)
    drain = subprocess.Popen([str(CDP), "run", "--journal", str(journal), "--ring", str(ring)],
                             env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sim = sim_process(s, "--seconds", "3", "--seed", "3", "--rate-mb", "60", "--policy", "overflow")
    json.loads(sim.communicate(timeout=120)[0])
    _out, err = drain.communicate(timeout=120)
    assert drain.returncode == 1, (drain.returncode, err)
    return s, err


def test_full_journal_disk_is_one_line_and_the_next_run_resumes(tmp_path: Path, small_fs: Path) -> None:
    s, err = _run_until_full(tmp_path, small_fs, 4)
    image, journal, ring = s.image, s.journal, s.ring
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "full" in lines[0] and "nothing committed is lost" in lines[0], err
    with Journal.open(journal, readonly=True) as j:
        assert j.verify().ok
        stopped_at = j.last_seq
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_fs)], check=True)
    again = subprocess.run([str(CDP), "run", "--journal", str(journal), "--ring", str(ring), "--until-detached"],
                           env=env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    with check_journal(s, exact_log=False) as j:
        assert j.last_seq > stopped_at
        assert [r.seq for r in j.records()] == list(range(1, j.last_seq + 1))
        # the newest point is whole only once a record stamped after the resync's read follows
        j.restore(tmp_path / "restored.img", allow_partial=True)
    assert (tmp_path / "restored.img").read_bytes() == image.read_bytes()


def test_a_full_disk_retention_cannot_help_is_still_one_line(tmp_path: Path, small_fs: Path) -> None:
    """A policy, but nothing retention can give back (the history shares one segment with the live
    baseline): the drain stops with the full disk's one line, which says why retention did not help."""
    from journal.retention import Policy
    from journal.timespec import parse_duration

    s, err = _run_until_full(tmp_path, small_fs, 6, Policy(keep_ns=parse_duration("7d")))
    # (a fold that did give room back says so on a line of its own, before)
    lines = [line for line in err.strip().splitlines() if "retention: the journal's filesystem is full" not in line]
    assert len(lines) == 1 and "nothing committed is lost" in lines[0] and "(retention " in lines[0], err
    with Journal.open(s.journal, readonly=True) as j:
        assert j.verify().ok


def test_a_full_disk_with_a_retention_policy_folds_history_and_goes_on(
        tmp_path: Path, small_fs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """With a policy, the drain makes room by folding the oldest half of the history, and protection goes on."""
    import random
    import threading

    from cdp.ringwriter import RingWriter
    from cdp.service import drain
    from cdp.sim import SimDevice, Workload, run
    from journal.retention import Policy
    from journal.timespec import parse_duration

    monkeypatch.setattr(Journal, "segment_target", 1 << 20)  # many segments, some entirely dead
    size = 4 << 20
    image = tmp_path / "device.img"
    image.write_bytes(random.Random(5).randbytes(size))
    journal = small_fs / "journal"
    with Journal.create(journal, device_bytes=size, source=image) as j:
        j.set_retention(Policy(keep_ns=parse_duration("7d")))  # nothing old enough to fold by age
    ring = tmp_path / "ring"
    RingWriter.create_file(ring, 8 << 20, size)
    stop = threading.Event()
    errors: list[BaseException] = []

    def drainer() -> None:
        try:
            drain(journal, ring, stop=stop, handle_signals=False, batch_bytes=256 << 10)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    thread = threading.Thread(target=drainer)
    thread.start()
    device = SimDevice(image, RingWriter.attach(ring))
    try:
        # 96 MiB of writes over a 4 MiB device: four times what the 24 MiB filesystem holds
        run(device, Workload(7, size, max_write=64 << 10), ops=3000)
    finally:
        device.close()
        time.sleep(1.0)
        stop.set()
        thread.join(timeout=120)
    assert not errors, "".join(traceback.format_exception(errors[0]))
    err = capsys.readouterr().err
    assert "the journal's filesystem is full: history before" in err, err
    with Journal.open(journal, readonly=True) as j:
        assert j.read(0, size) == image.read_bytes()  # protection went on to the end
        assert j.verify().ok
        newest = j.points(reverse=True, limit=1)[0]
        j.restore(tmp_path / "newest.img", seq=newest.seq)


def test_the_live_status_on_a_full_disk_is_one_line_not_lmdb_s_exception(tmp_path: Path, small_fs: Path) -> None:
    """The drain's status write can be the first to meet a full disk: it must be a JournalFull line."""
    from journal.errors import JournalFull

    image = tmp_path / "device.img"
    image.write_bytes(bytes(1 << 20))
    with Journal.create(small_fs / "journal", device_bytes=1 << 20, source=image) as j:
        _fill(small_fs)
        with pytest.raises(JournalFull) as info:
            for i in range(200):  # pages the last commit freed are reused: go on until it needs new ones
                j.set_status({"pad": os.urandom(64 << 10).hex(), "i": i})
        assert "live status" in str(info.value) and len(str(info.value).splitlines()) == 1


def _fill(fs: Path) -> Path:
    """Fill ``fs`` to the last byte with one file; its path (delete it to give the room back)."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while f.write(bytes(size)):
                    pass
            except OSError:
                pass
    return filler


def test_a_compaction_on_a_full_disk_is_one_line_and_finishes_once_there_is_room(
        tmp_path: Path, small_fs: Path) -> None:
    """A compaction whose write the disk refuses stops in one JournalFull line; with room it finishes, exact."""
    from journal.errors import JournalFull
    from journal.retention import Policy
    from tests.support.journals import build

    path = build(small_fs / "journal", writes=400)
    with Journal.open(path) as j:
        points = j.points()
        horizon = points[len(points) // 2].ts_ns
        j.set_retention(Policy(keep_ns=10**18))  # the fold is the horizon's alone
        kept = [p for p in points if p.ts_ns >= horizon]
        before = {p.seq: j.read(0, j.info.device_bytes, seq=p.seq) for p in kept}
        filler = _fill(small_fs)
        with pytest.raises(JournalFull) as info:
            j.compact(horizon_ts=horizon)
        text = str(info.value)
        assert len(text.splitlines()) == 1 and "filesystem is full" in text and "the compaction stopped" in text, text
        filler.unlink()
        result = j.compact(horizon_ts=horizon)
        assert result is not None and result.horizon_ts <= horizon
        for seq, image in before.items():
            assert j.read(0, j.info.device_bytes, seq=seq) == image
        assert j.verify().ok


def test_an_eio_on_a_full_filesystem_counts_as_full_and_elsewhere_as_a_failed_write(
        tmp_path: Path, small_fs: Path) -> None:
    """LMDB reports a short write as EIO: on a full filesystem that is a full disk, else a disk's failure."""
    import lmdb

    from journal.errors import JournalFull
    from journal.journal import _storage_error

    eio = lmdb.Error("mdb_txn_commit: Input/output error")
    roomy = _storage_error(tmp_path, eio)
    assert not isinstance(roomy, JournalFull) and "failed a write (EIO)" in str(roomy)
    _fill(small_fs)
    full = _storage_error(small_fs, eio)
    assert isinstance(full, JournalFull) and "filesystem is full" in str(full)


def test_a_batch_cut_short_by_a_full_disk_leaves_nothing_in_a_segment_it_rolls_from(
        tmp_path: Path, small_fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch the full disk cut short leaves bytes past the committed end; the next, shorter batch
    overwrites only part of them. When the segment is then left for the next one, it must end at its
    last committed record: verify and a reindex read a segment that is not the newest to its end."""
    import random

    from journal import Record, RecordType
    from journal.errors import JournalFull
    from journal.reindex import reindex

    rng = random.Random(9)
    path = small_fs / "journal"
    with Journal.create(path, device_bytes=4 << 20) as journal:
        journal.append([Record(1, journal.last_ts_ns + 1, RecordType.WRITE, 0, 0, 4096, rng.randbytes(4096))])
        vfs = os.statvfs(small_fs)
        filler = small_fs / "filler"
        with open(filler, "wb") as f:
            f.write(bytes(vfs.f_bavail * vfs.f_frsize - (512 << 10)))
        ts = journal.last_ts_ns
        with pytest.raises(JournalFull):  # whole records, then one the disk cuts short
            journal.append([Record(2, ts + 1, RecordType.WRITE, 0, 0, 4096, rng.randbytes(4096)),
                            Record(3, ts + 1, RecordType.WRITE, 0, 0, 4096, rng.randbytes(4096)),
                            Record(4, ts + 1, RecordType.WRITE, 0, 0, 2 << 20, rng.randbytes(2 << 20))])
        filler.unlink()
        seg = journal.writer_seg
        monkeypatch.setattr(journal, "segment_target", journal._require_writer().end + 512)
        journal.append([Record(2, ts + 2, RecordType.WRITE, 0, 8192, 512, rng.randbytes(512))])
        assert journal.writer_seg == seg + 1  # it rolled
        journal.append([Record(3, ts + 3, RecordType.WRITE, 0, 0, 512, rng.randbytes(512))])  # into the next
        report = journal.verify()
        assert report.ok, report.problems
    reindex(path)
    with Journal.open(path, readonly=True) as journal:
        assert journal.last_seq == 3 and journal.verify().ok
