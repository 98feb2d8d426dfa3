"""`cdp attach DEVICE --journal EXISTING`: continue a journal after a gap, through real processes.

The producer is the simulator (a ring file over an image, as the filter is
a ring over the device); `cdp attach --ring` takes it in place of the
kernel filter. The device model is this test's own bytearray, changed by
the same requests the test sends to the simulated device and by the writes
it makes to the image behind the journal's back (the gap); the journal is
never asked what the device should hold.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from pathlib import Path

from cdp.ringwriter import RingWriter
from cdp.sim import SimDevice
from journal import Journal, Record
from journal.format import BLOCK
from journal.identity import device_id
from journal.records import RecordFlag, RecordType
from tests.support.cli import CDP, cdp
from tests.support.devices import random_device
from tests.support.history import ts_arg

RING = 16 << 20  # holds a whole workload: the tests drain after it


class Scene:
    """An image, its model, a journal over it and a fresh ring per capture session."""

    def __init__(self, tmp: Path, size: int, seed: int) -> None:
        self.tmp = tmp
        self.rng = random.Random(seed)
        self.model = bytearray(random_device(size, seed))
        self.image = tmp / "device.img"
        self.image.write_bytes(self.model)
        self.journal = tmp / "journal"
        assert cdp("init", "--journal", self.journal, "--device", self.image).code == 0
        self.rings = 0
        #: (time, model state) pairs at moments between requests
        self.moments: list[tuple[int, bytes]] = []

    def new_ring(self) -> Path:
        self.rings += 1
        ring = self.tmp / f"ring{self.rings}"
        RingWriter.create_file(ring, RING, len(self.model), device_id=device_id(self.image))
        return ring

    def workload(self, ring: Path, count: int, mark: str | None = None, pause: float = 0.0) -> None:
        """``count`` requests through the simulated device, each applied to the model too; then detach."""
        dev = SimDevice(self.image, RingWriter.attach(ring), policy="block", wait_ms=30_000)
        try:
            for i in range(count):
                roll = self.rng.random()
                sectors = self.rng.choice([1, 8, 8, 16, 64])
                offset = self.rng.randrange(0, len(self.model) // 512 - sectors + 1) * 512
                if roll < 0.85:
                    data = self.rng.randbytes(sectors * 512)
                    assert dev.write(offset, data)
                    self.model[offset:offset + len(data)] = data
                elif roll < 0.92:
                    assert dev.write_zeroes(offset, sectors * 512)
                    self.model[offset:offset + sectors * 512] = bytes(sectors * 512)
                else:
                    assert dev.flush()
                if i % 10 == 0:
                    self.moments.append((time.time_ns(), bytes(self.model)))
                    if pause:
                        time.sleep(pause)
            if mark is not None:
                assert dev.mark(mark)
            self.moments.append((time.time_ns(), bytes(self.model)))
        finally:
            dev.close()

    def drain(self, ring: Path) -> None:
        run = cdp("run", "--journal", self.journal, "--ring", ring, "--until-detached")
        assert run.code == 0, run.err

    def last_seq(self) -> int:
        """The journal's last seq now (where a gap's window will begin after)."""
        with Journal.open(self.journal, readonly=True) as j:
            return j.last_seq

    def gap(self, blocks: list[int]) -> set[int]:
        """Write the image behind the journal's back: new data in ``blocks``, a sector of one more,
        and an unchanged rewrite of another. Returns the blocks whose content changed."""
        changed = set()
        with open(self.image, "r+b") as f:
            for b in blocks:
                data = self.rng.randbytes(BLOCK)
                f.seek(b * BLOCK)
                f.write(data)
                self.model[b * BLOCK:(b + 1) * BLOCK] = data
                changed.add(b)
            partial = max(blocks) + 3
            sector = bytes(self.model[partial * BLOCK + 1024:partial * BLOCK + 1536])
            new = bytes(b ^ 0xFF for b in sector)
            f.seek(partial * BLOCK + 1024)
            f.write(new)
            self.model[partial * BLOCK + 1024:partial * BLOCK + 1536] = new
            changed.add(partial)
            same = max(blocks) + 7
            f.seek(same * BLOCK)
            f.write(self.model[same * BLOCK:(same + 1) * BLOCK])   # rewritten, not changed
        return changed

    def attach(self, ring: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
        run = cdp("attach", self.image, "--journal", self.journal, "--ring", ring, "--json", *extra, env=env)
        assert run.code == 0, run.err
        return json.loads(run.out)

    def restore(self, at: str, *extra: str) -> tuple[int, bytes, str]:
        out = self.tmp / "restored.img"
        run = cdp("restore", "--journal", self.journal, "--at", at, "--to", out, "--force", *extra)
        return run.code, out.read_bytes() if run.code == 0 else b"", run.err


def copied_blocks(journal: Path, after_seq: int) -> int:
    """4 KiB blocks the journal copied as RESYNC records after ``after_seq``."""
    with Journal.open(journal, readonly=True) as j:
        return sum(r.length // BLOCK for r in j.records(after_seq + 1)
                   if r.type == RecordType.RESYNC and not r.flags & RecordFlag.UNCHANGED)


def test_reattach_journals_exactly_the_changed_blocks_and_restores_exactly(tmp_path: Path) -> None:
    s = Scene(tmp_path, 4 << 20, seed=5)
    ring = s.new_ring()
    s.workload(ring, 200, mark="before-detach")
    s.drain(ring)
    at_detach = bytes(s.model)
    detached_ns = time.time_ns()
    last_seq = s.last_seq()
    changed = s.gap([3, 4, 5, 200, 511, 700])
    in_gap_ns = time.time_ns()

    ring = s.new_ring()
    out = s.attach(ring)
    assert out["blocks_compared"] == (4 << 20) // BLOCK
    assert out["blocks_differing"] == len(changed) == 7
    assert out["bytes_journaled"] == len(changed) * BLOCK
    assert copied_blocks(s.journal, last_seq) == len(changed)
    window = out["window"]
    assert window["seq"] == last_seq + 1 and not window["open"] and window["start_ns"] > detached_ns - 10**9
    s.moments.clear()
    s.workload(ring, 150, mark="after-reattach")
    s.drain(ring)

    # the window shows: its overflow point is not whole, the points before it are
    points = json.loads(cdp("points", "--journal", s.journal, "--json").out)
    by_seq = {p["seq"]: p for p in points}
    assert by_seq[window["seq"]]["kind"] == "overflow" and not by_seq[window["seq"]]["whole"]
    assert all(p["whole"] for p in points if p["seq"] < window["seq"])
    # a time in the gap is refused without --allow-partial, one line
    code, _data, err = s.restore(ts_arg(in_gap_ns))
    assert code != 0 and len(err.splitlines()) == 1 and "not whole" in err
    # earlier points are exact, and so are the later ones
    assert s.restore("mark:before-detach") [1] == at_detach
    assert s.restore("mark:after-reattach")[1] == bytes(s.model)
    for ts, state in s.moments[::3]:
        code, data, err = s.restore(ts_arg(ts))
        assert code == 0, err
        assert data == state, f"restore at {ts} differs from the model"
    assert cdp("verify", "--journal", s.journal).code == 0

    # reindex rebuilds the unchanged RESYNC records exactly: same window, same bytes
    with Journal.open(s.journal, readonly=True) as j:
        before = [(w.seq, w.resynced_to, w.resync_seq) for w in j.overflow_windows()]
    assert cdp("reindex", "--journal", s.journal).code == 0
    with Journal.open(s.journal, readonly=True) as j:
        assert [(w.seq, w.resynced_to, w.resync_seq) for w in j.overflow_windows()] == before
    assert cdp("verify", "--journal", s.journal).code == 0
    assert s.restore("mark:after-reattach")[1] == bytes(s.model)
    assert s.restore("mark:before-detach")[1] == at_detach


def test_writes_during_the_compare_are_exact(tmp_path: Path) -> None:
    """The producer writes while `cdp attach` compares (several steps): every point after is exact."""
    s = Scene(tmp_path, 24 << 20, seed=9)
    ring = s.new_ring()
    s.workload(ring, 100)
    s.drain(ring)
    s.gap([10, 2000, 4000, 5000])
    ring = s.new_ring()
    s.moments.clear()
    writer = threading.Thread(target=s.workload, args=(ring, 600), kwargs={"pause": 0.002})
    proc = subprocess.Popen([os.fspath(CDP), "attach", os.fspath(s.image), "--journal", os.fspath(s.journal),
                             "--ring", os.fspath(ring), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "CDP_JOURNAL": ""})
    writer.start()
    out, err = proc.communicate(timeout=300)
    writer.join()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert not summary["window"]["open"] and summary["blocks_compared"] == (24 << 20) // BLOCK
    s.drain(ring)
    closed_ns = summary["window"]["closed_ns"]
    after = [(ts, state) for ts, state in s.moments if ts > closed_ns]
    assert after, "the workload ended before the compare did: nothing checked"
    for ts, state in after[::4] + [after[-1]]:
        code, data, err = s.restore(ts_arg(ts))
        assert code == 0, err
        assert data == state, f"restore at {ts} differs from the model"
    assert s.image.read_bytes() == bytes(s.model)


def test_a_compare_killed_midway_goes_on_exactly(tmp_path: Path) -> None:
    s = Scene(tmp_path, 16 << 20, seed=13)
    ring = s.new_ring()
    s.workload(ring, 80, mark="before")
    s.drain(ring)
    before = bytes(s.model)
    last_seq = s.last_seq()
    changed = s.gap([1, 900, 1500, 3000, 4000])
    ring = s.new_ring()
    run = cdp("attach", s.image, "--journal", s.journal, "--ring", ring, "--json",
              env={"CDP_COMPARE_CRASH_AFTER": str(8 << 20)})
    assert run.code == -9 and run.out == ""
    with Journal.open(s.journal, readonly=True) as j:
        (w,) = [w for w in j.overflow_windows() if w.seq > last_seq]
        assert w.resync_seq is None and 0 < w.resynced_to < 16 << 20   # killed halfway
    out = s.attach(ring)
    assert not out["window"]["open"]
    with Journal.open(s.journal, readonly=True) as j:
        assert all(w.resync_seq is not None for w in j.overflow_windows())
    assert copied_blocks(s.journal, last_seq) == len(changed)   # nothing copied twice, nothing missed
    s.workload(ring, 60, mark="after")
    s.drain(ring)
    assert s.restore("mark:after")[1] == bytes(s.model)
    assert s.restore("mark:before")[1] == before
    assert cdp("verify", "--journal", s.journal).code == 0


def test_wrong_device_size_or_damaged_journal_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    s = Scene(tmp_path, 1 << 20, seed=3)
    ring = s.new_ring()
    s.workload(ring, 30)
    s.drain(ring)
    last_seq = s.last_seq()
    other = tmp_path / "copy.img"
    other.write_bytes(s.image.read_bytes())   # same size, same bytes: another device all the same
    small = tmp_path / "small.img"
    small.write_bytes(bytes(512 << 10))
    ring2 = s.new_ring()
    run = cdp("attach", other, "--journal", s.journal, "--ring", ring2)
    run.one_line_error(1, "is not the device journal")
    run = cdp("attach", small, "--journal", s.journal, "--ring", ring2)
    run.one_line_error(1, "holds 524288 bytes")
    run = cdp("attach", tmp_path / "nothing.img", "--journal", s.journal, "--ring", ring2)
    run.one_line_error(1, "nothing.img")
    with Journal.open(s.journal, readonly=True) as j:
        assert j.last_seq == last_seq and not j.overflow_windows()
    data = s.journal / "index" / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[0:4096 * 2] = bytes(4096 * 2)   # both meta pages
    data.write_bytes(raw)
    run = cdp("attach", s.image, "--journal", s.journal, "--ring", ring2)
    run.one_line_error(1, "cannot continue")
    assert cdp("reindex", "--journal", s.journal).code == 0
    with Journal.open(s.journal, readonly=True) as j:
        assert j.last_seq == last_seq   # nothing journaled was lost
    run = cdp("attach", s.image, "--journal", s.journal, "--compare-later")
    run.one_line_error(2, "regular file")
    with Journal.open(s.journal, readonly=True) as j:
        assert j.last_seq == last_seq and not j.overflow_windows()


def test_compare_later_leaves_the_window_to_cdp_run(tmp_path: Path) -> None:
    s = Scene(tmp_path, 2 << 20, seed=4)
    ring = s.new_ring()
    s.workload(ring, 40)
    s.drain(ring)
    changed = s.gap([7, 8, 300])
    last_seq = s.last_seq()
    ring = s.new_ring()
    out = s.attach(ring, "--compare-later")
    assert out["window"]["open"] and "blocks_compared" not in out
    s.workload(ring, 40, mark="end")
    s.drain(ring)   # the drain service compares
    with Journal.open(s.journal, readonly=True) as j:
        assert all(w.resync_seq is not None for w in j.overflow_windows())
    assert copied_blocks(s.journal, last_seq) >= len(changed)
    # the mark was journaled before the drain compared: inside the window, refused
    code, _data, err = s.restore("mark:end")
    assert code != 0 and "not whole" in err
    assert s.restore("mark:end", "--allow-partial")[0] == 0
    assert s.restore(ts_arg(time.time_ns()))[1] == bytes(s.model)



# ----------------------------------------------------------------- the boot unit

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "cdp-attach@.service"
GENERATOR = REPO / "systemd" / "cdp-attach-generator"


def _unit_exec_lines() -> dict[str, str]:
    out = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("Exec"):
            out[key] = value
    return out


def test_boot_unit_orders_itself_before_local_filesystems() -> None:
    text = UNIT.read_text()
    for needed in ("DefaultDependencies=no", "Before=local-fs-pre.target shutdown.target",
                   "Conflicts=shutdown.target", "TimeoutStartSec=infinity"):
        assert needed in text, needed
    lines = _unit_exec_lines()
    assert set(lines) == {"ExecStartPre", "ExecStart", "ExecStop"}
    # the lines parse as cdp command lines (the VM test, reattachvm.py, runs them for real)
    from cdp.cli import build_parser

    env = {"$DEVICE": "/dev/sdb", "$JOURNAL": "/var/lib/cdp/sdb", "$ATTACH_OPTS": "--via dm --compare-later"}
    for key in ("ExecStartPre", "ExecStart"):
        words = []
        for w in lines[key].replace("%i", "sdb").split():
            words.extend(env[w].split() if w in env else [w])
        assert words[:2] == ["/usr/bin/env", "cdp"]
        args = build_parser().parse_args(words[2:])
        assert args.journal == "/var/lib/cdp/sdb" or os.fspath(args.journal) == "/var/lib/cdp/sdb"
    assert "cdp detach %i" in lines["ExecStop"] and "$MAINPID" in lines["ExecStop"]


def test_boot_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    if subprocess.run(["sh", "-c", "command -v systemd-analyze"], capture_output=True).returncode:
        import pytest

        pytest.skip("systemd-analyze is not installed")
    (tmp_path / UNIT.name).write_text(UNIT.read_text())
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", os.fspath(tmp_path / "cdp-attach@sdb.service")],
                       capture_output=True, text=True)
    complaints = [line for line in (p.stdout + p.stderr).splitlines() if "cdp-attach" in line]
    assert p.returncode == 0 and not complaints, p.stdout + p.stderr


def test_generator_enables_one_instance_per_conf(tmp_path: Path) -> None:
    if subprocess.run(["sh", "-c", "command -v systemd-escape"], capture_output=True).returncode:
        import pytest

        pytest.skip("systemd-escape is not installed")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "sdb.conf").write_text("DEVICE=/dev/disk/by-id/wwn-0x5000c500a1b2c3d4\nJOURNAL=/var/lib/cdp/sdb\n")
    (conf / "bad name.conf").write_text("DEVICE=/dev/sdc\n")
    (conf / "nodev.conf").write_text("JOURNAL=/var/lib/cdp/x\n")
    out = tmp_path / "out"
    p = subprocess.run([os.fspath(GENERATOR), os.fspath(out), os.fspath(out), os.fspath(out)],
                       capture_output=True, text=True, env={**os.environ, "CDP_CONF_DIR": os.fspath(conf)})
    assert p.returncode == 0, p.stderr
    assert "bad name" in p.stderr and "nodev.conf: no DEVICE" in p.stderr
    wants = out / "local-fs-pre.target.wants"
    assert sorted(x.name for x in wants.iterdir()) == ["cdp-attach@sdb.service"]
    assert os.readlink(wants / "cdp-attach@sdb.service") == "/lib/systemd/system/cdp-attach@.service"
    dropin = (out / "cdp-attach@sdb.service.d" / "device.conf").read_text()
    dev_unit = r"dev-disk-by\x2did-wwn\x2d0x5000c500a1b2c3d4.device"
    assert dropin == f"[Unit]\nBindsTo={dev_unit}\nAfter={dev_unit}\n"


# ----------------------------------------------------------------- the compare's pieces

def test_journal_crcs_equal_the_model_for_every_kind_of_block(tmp_path: Path) -> None:
    """Full, partial, compressed, zeroed (small and big extents), never written, a short last block:
    the index-only CRC or the composed one is the CRC of what the model holds, at every seq asked."""
    import crc32c

    from cdp.reattach import device_crcs, journal_crcs

    rng = random.Random(11)
    size = (3 << 20) + 1536                      # the last 4 KiB block is short
    baseline = bytearray(random_device(size, 11))
    baseline[:BLOCK * 20] = bytes(BLOCK * 20)    # never written blocks read as zeros
    src = tmp_path / "base.img"
    src.write_bytes(baseline)
    model = bytearray(baseline)
    nblocks = (size + BLOCK - 1) // BLOCK
    with Journal.create(tmp_path / "j", device_bytes=size, source=src) as j:
        seq = 0
        for step in range(6):
            recs = []
            for _ in range(60):
                seq += 1
                roll = rng.random()
                if step == 3 and not recs:       # a big zeroing extent (the zext table)
                    off, n = BLOCK * 100 + 512, 1 << 20
                    recs.append(Record(seq, time.time_ns(), RecordType.WRITE_ZEROES, 0, off, n))
                    model[off:off + n] = bytes(n)
                    continue
                sectors = rng.choice([1, 3, 8, 16, 24]) if roll < 0.85 else rng.choice([8, 64])
                off = rng.randrange(0, size // 512 - sectors + 1) * 512
                if roll < 0.85:
                    # random (stored raw) or text-like (stored as zstd pieces): each kind's CRC is asked
                    data = (rng.randbytes(sectors * 512) if roll < 0.45 else
                            (b"%d lines of text " % rng.randrange(10**6) * sectors * 64)[:sectors * 512])
                    recs.append(Record(seq, time.time_ns(), RecordType.WRITE, 0, off, len(data), data))
                    model[off:off + len(data)] = data
                else:
                    recs.append(Record(seq, time.time_ns(), RecordType.DISCARD, 0, off, sectors * 512))
                    model[off:off + sectors * 512] = bytes(sectors * 512)
            j.append(recs)
            want = device_crcs(bytes(model))
            assert len(want) == nblocks
            assert journal_crcs(j, 0, nblocks, j.last_seq) == want, f"after step {step}"
        assert device_crcs(bytes(model))[-1] == crc32c.crc32c(bytes(model[-1536:]) + bytes(BLOCK - 1536))


def test_an_unchanged_resync_carries_no_payload(tmp_path: Path) -> None:
    import pytest

    from journal.errors import JournalError

    src = tmp_path / "base.img"
    src.write_bytes(bytes(1 << 20))
    with Journal.create(tmp_path / "j", device_bytes=1 << 20, source=src) as j:
        with pytest.raises(JournalError, match="unchanged RESYNC carries a payload"):
            j.append([Record(1, time.time_ns(), RecordType.RESYNC, int(RecordFlag.UNCHANGED), 0, BLOCK,
                             bytes(BLOCK))])
        assert j.append([Record(1, time.time_ns(), RecordType.RESYNC, int(RecordFlag.UNCHANGED), 0, 1 << 20)]) == 1
        assert j.stats().data_bytes == 0 and j.verify().ok


def test_reattach_after_a_compaction_compares_against_the_new_base(tmp_path: Path) -> None:
    """Retention folds the history, the closed reattach window with it; a later gap is still found
    exactly, compared against the rolled-forward base."""
    s = Scene(tmp_path, 2 << 20, seed=21)
    ring = s.new_ring()
    s.workload(ring, 60)
    s.drain(ring)
    s.gap([5, 6, 90])
    ring = s.new_ring()
    assert not s.attach(ring)["window"]["open"]
    s.workload(ring, 60)
    s.drain(ring)
    time.sleep(1.5)
    ring = s.new_ring()
    assert not s.attach(ring)["window"]["open"]   # no gap: nothing differs
    s.workload(ring, 40, mark="kept")
    s.drain(ring)
    kept = bytes(s.model)
    assert cdp("retain", "--journal", s.journal, "--keep", "1s").code == 0
    run = cdp("compact", "--journal", s.journal, "--json")
    assert run.code == 0, run.err
    folded = json.loads(run.out)
    assert folded["compacted"] and folded["records_dropped"] > 0
    last_seq = s.last_seq()
    changed = s.gap([1, 200, 300, 301])
    ring = s.new_ring()
    out = s.attach(ring)
    assert out["blocks_differing"] == len(changed) and not out["window"]["open"]
    assert copied_blocks(s.journal, last_seq) == len(changed)
    s.workload(ring, 40, mark="end")
    s.drain(ring)
    assert s.restore("mark:kept")[1] == kept
    assert s.restore("mark:end")[1] == bytes(s.model)
    assert cdp("verify", "--journal", s.journal).code == 0
