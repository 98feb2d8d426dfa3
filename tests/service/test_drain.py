"""The drain service in process: sessions, damage, overflow, status, errors."""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

from cdp.ring import Ring
from cdp.ringabi import CONTROL_SIZE, OFF_TAIL, REC_OFF_SEQ, RecType
from cdp.ringwriter import RingWriter
from cdp.service import drain
from cdp.sim import SimDevice, Workload, run
from journal import Journal, RecordType
from journal.errors import DeviceMismatch
from tests.support.service import check_journal, make_setup


def sim_in_thread(s, ops: int, seed: int = 3, **kw) -> tuple[threading.Thread, SimDevice]:
    device = SimDevice(s.image, RingWriter.attach(s.ring), keep_log=True, **kw)

    def work() -> None:
        run(device, Workload(seed, s.size, max_write=256 << 10), ops=ops)
        device.close()
        s.log.write_text("".join(f"{r.seq} {r.type} {r.flags} {r.offset} {r.length} {r.crc}\n" for r in device.log))

    thread = threading.Thread(target=work)
    thread.start()
    return thread, device


def test_drain_while_the_device_writes(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    thread, device = sim_in_thread(s, 1500)
    progress = []
    stats = drain(s.journal, s.ring, until_detached=True, on_progress=progress.append)
    thread.join()
    assert stats.stopped_by == "detached" and stats.detached
    assert stats.records == device.stats.records and stats.corrupt == 0 and stats.overflows == 0
    assert progress and stats.last_ring_seq == device.stats.records
    with check_journal(s) as j:
        status = j.status()
        assert status["state"] == "stopped" and status["records"] == stats.records
        assert status["lag_bytes"] == 0 and status["lag_seconds"] == 0.0 and status["detached"]
        for key in ("pid", "ring", "started_ns", "updated_ns", "bytes", "rate_records", "rate_bytes",
                    "ring_fill", "dropped", "overflow"):
            assert key in status
        points = j.points(kinds={"flush", "mark"})
        assert len(points) == device.stats.flushes + device.stats.marks and all(p.whole for p in points)


def test_restart_after_unreleased_batch_skips_duplicates(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    thread, _device = sim_in_thread(s, 300)
    thread.join()
    first = drain(s.journal, s.ring, until_detached=True)
    # as if the process died after the journal commit but before storing tail
    with open(s.ring, "r+b") as f:
        f.seek(OFF_TAIL)
        f.write(struct.pack("<Q", 0))
    again = drain(s.journal, s.ring, until_detached=True)
    assert again.records == 0 and again.duplicates_skipped == first.records
    check_journal(s).close()


def test_new_session_after_a_finished_one(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    thread, _ = sim_in_thread(s, 100, seed=1)
    thread.join()
    drain(s.journal, s.ring, until_detached=True)
    first_log = s.log.read_text()
    RingWriter.create_file(s.ring, 8 << 20, s.size)
    thread, _ = sim_in_thread(s, 100, seed=2)
    thread.join()
    stats = drain(s.journal, s.ring, until_detached=True)
    assert stats.overflows == 0 and stats.problems == []
    s.log.write_text(first_log + s.log.read_text())
    check_journal(s).close()


def test_new_session_before_the_old_one_was_drained(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    thread, _ = sim_in_thread(s, 100, seed=1)
    thread.join()
    stop = threading.Event()
    stop.set()
    drain(s.journal, s.ring, stop=stop)  # reads nothing: the old ring is abandoned
    with Ring(s.ring) as ring:  # someone else consumed part of it: seq 1 not at tail
        ring.read(max_records=3)
        ring.release(ring.cursor)
    stats = drain(s.journal, s.ring, until_detached=True)
    assert stats.overflows == 1 and "released before this journal" in stats.problems[0]
    assert stats.resync_bytes == s.size
    with check_journal(s, exact_log=False) as j:
        windows = j.overflow_windows()
        assert len(windows) == 1 and windows[0].resync_seq is not None
        assert (windows[0].offset, windows[0].length) == (0, s.size)


def test_damaged_payload_becomes_an_overflow_range(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    writer = RingWriter.attach(s.ring)
    device = SimDevice(s.image, writer)
    device.write(0, b"a" * 4096)
    slot_pos = writer.head
    device.write(1 << 20, b"b" * 8192)
    device.write(4096, b"c" * 512)
    device.close()
    with open(s.ring, "r+b") as f:
        f.seek(CONTROL_SIZE + slot_pos + 64 + 10)
        f.write(b"X")
    stats = drain(s.journal, s.ring, until_detached=True)
    assert stats.corrupt == 1 and stats.overflows == 1 and stats.resync_bytes == 8192
    assert "CRC" in stats.problems[0] and "seq 2" in stats.problems[0]
    with check_journal(s, exact_log=False) as j:
        types = [r.type for r in j.records()]
        assert types == [RecordType.WRITE, RecordType.OVERFLOW, RecordType.WRITE, RecordType.RESYNC]
        assert j.overflow_windows()[0].resync_seq == 4


def test_damaged_header_resyncs_the_whole_device(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=8 << 20)
    writer = RingWriter.attach(s.ring)
    device = SimDevice(s.image, writer)
    for i in range(5):
        if i == 2:
            bad = writer.head
        device.write(i * 4096, bytes([i + 1]) * 4096)
    device.close()
    with open(s.ring, "r+b") as f:
        f.seek(CONTROL_SIZE + bad + REC_OFF_SEQ)
        f.write(b"\x77")
    stats = drain(s.journal, s.ring, until_detached=True)
    assert stats.corrupt == 1 and stats.resync_bytes == s.size
    with check_journal(s, exact_log=False) as j:
        assert [(w.offset, w.length) for w in j.overflow_windows()] == [(0, s.size)]
        assert all(w.resync_seq for w in j.overflow_windows())


def test_overflow_records_are_resynced_from_the_device(tmp_path: Path) -> None:
    s = make_setup(tmp_path, ring_size=1 << 16)
    thread, device = sim_in_thread(s, 400, policy="overflow")
    thread.join()  # nobody drains while it writes: most writes are dropped
    stats = drain(s.journal, s.ring, until_detached=True)
    assert device.stats.dropped > 0 and stats.overflows > 0 and stats.resync_bytes > 0
    with check_journal(s, exact_log=False) as j:
        windows = j.overflow_windows()
        assert windows and all(w.resync_seq is not None for w in windows)
        inside = [p for p in j.points(kinds={"flush", "mark"}) if not p.whole]
        assert inside or not j.points(kinds={"flush", "mark"})
        assert j.points(kinds={"resync"})


def test_device_is_closed_once_resynced(tmp_path: Path) -> None:
    """The service holds the device open only while it copies, so it can be removed afterwards."""
    s = make_setup(tmp_path, ring_size=1 << 16)
    thread, device = sim_in_thread(s, 400, policy="overflow")
    thread.join()
    stop = threading.Event()
    runner = threading.Thread(target=drain, args=(s.journal, s.ring), kwargs={"stop": stop, "handle_signals": False})
    runner.start()
    try:
        deadline = time.monotonic() + 30
        with Journal.open(s.journal, readonly=True) as j:
            while not (j.overflow_windows() and all(w.resync_seq is not None for w in j.overflow_windows())):
                assert time.monotonic() < deadline, "the resync never finished"
                time.sleep(0.05)
        time.sleep(0.3)  # a few turns of the service loop
        image = os.path.realpath(s.image)
        open_paths = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
        assert image not in open_paths
    finally:
        stop.set()
        runner.join()


def test_device_mismatch(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    RingWriter.create_file(s.ring, 1 << 16, s.size * 2)
    with pytest.raises(DeviceMismatch, match="protects a device of"):
        drain(s.journal, s.ring, until_detached=True)


def test_stop_event_finishes_cleanly(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    stats = drain(s.journal, s.ring, stop=stop)
    assert stats.stopped_by == "stop" and stats.records == 0
    with Journal.open(s.journal, readonly=True) as j:
        assert j.status()["state"] == "stopped"


def test_service_imports_no_ui() -> None:
    import subprocess

    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('textual', 'rich', 'tui'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import cdp.service, cdp.sim\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_restore_at_a_mark_gives_the_device_as_it_was(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=8 << 20)
    device = SimDevice(s.image, RingWriter.attach(s.ring))
    workload = Workload(21, s.size, max_write=128 << 10)
    snapshots = {}
    stop = threading.Event()
    drainer = threading.Thread(target=drain, args=(s.journal, s.ring),
                               kwargs={"until_detached": True, "stop": stop})
    drainer.start()
    for name in ("one", "two", "three"):
        run(device, workload, ops=150)
        device.mark(name)
        snapshots[name] = s.image.read_bytes()
    run(device, workload, ops=100)
    device.close()
    drainer.join(timeout=60)
    assert not drainer.is_alive()
    with Journal.open(s.journal, readonly=True) as j:
        marks = {p.name: p for p in j.points(kinds={"mark"})}
        for name, image in snapshots.items():
            out = tmp_path / f"{name}.img"
            j.restore(out, at_ns=marks[name].ts_ns)
            assert out.read_bytes() == image, name


def test_producer_detached_while_dropping(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=8 << 20, ring_size=1 << 16)
    device = SimDevice(s.image, RingWriter.attach(s.ring), policy="overflow")
    while device.write(0, b"z" * 8192):
        pass
    assert device.write(1 << 20, b"y" * 8192) == 0  # dropped too
    while (slot := device.writer.reserve(RecType.FLUSH)) is not None:  # fill every last byte
        slot.commit()
    device.writer.close(wait_s=0)  # no room to say which ranges: OVERFLOW stays set
    device.close()
    with Ring(s.ring) as ring:
        assert ring.overflow and ring.detached
    stats = drain(s.journal, s.ring, until_detached=True)
    assert stats.overflows == 1 and stats.resync_bytes == s.size
    assert "detached while dropping" in stats.problems[0]
    with check_journal(s, exact_log=False) as j:
        assert [(w.offset, w.length) for w in j.overflow_windows()] == [(0, s.size)]
    again = drain(s.journal, s.ring, until_detached=True)  # nothing new, no second resync
    assert again.records == 0 and again.overflows == 0


def test_status_is_published_while_running(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    stop = threading.Event()
    drainer = threading.Thread(target=drain, args=(s.journal, s.ring), kwargs={"stop": stop})
    drainer.start()
    device = SimDevice(s.image, RingWriter.attach(s.ring))
    seen = []
    with Journal.open(s.journal, readonly=True) as j:
        for _ in range(5):
            run(device, Workload(4, s.size), seconds=0.5, rate_mb=20)
            status = j.status()
            if status is not None:
                seen.append(status)
        stop.set()
        drainer.join(timeout=30)
        final = j.status()
    device.close()
    running = [st for st in seen if st["state"] == "running"]
    assert len({st["updated_ns"] for st in running}) >= 2
    assert all(st["pid"] == __import__("os").getpid() and st["ring"] == str(s.ring) for st in running)
    assert any(st["records"] > 0 and st["rate_bytes"] > 0 for st in running)
    assert all(0 <= st["ring_fill"] <= 1 and st["lag_bytes"] >= 0 and st["lag_seconds"] >= 0 for st in running)
    assert final["state"] == "stopped"
