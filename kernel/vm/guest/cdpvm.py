"""The guest side of `make -C kernel check`: tests of dm-cdp inside a qemu VM.

Runs as the guest's only program (chrooted into the Python root filesystem,
the project's packages on PYTHONPATH). /dev/vda is the scratch disk the
tests write through the filter; journals and restored images live in /tmp
(tmpfs). Each test prints one line on the serial console,

    CDPVM: RESULT <test> PASS|FAIL <detail>

and the host (kernel/vm/run.sh, tests/kernel/test_vm.py) asserts them. The
tests drive the real drain service (cdp.service.drain) in a thread and
restore from the real journal; nothing is simulated.

Kernel command line: ``cdpvm.tests=a,b`` runs a subset, ``cdpvm.bench=1``
adds the speed comparison.
"""

from __future__ import annotations

import collections
import faulthandler
import hashlib
import mmap
import os
import random
import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable

from cdp import attach as cdpattach
from cdp.service import drain
from journal import Journal

DISK = "/dev/vda"
SECTOR = 512
PREFIX = "CDPVM:"


def say(*words: object) -> None:
    print(PREFIX, *words, flush=True)


def sh(*args: str, check: bool = True, timeout: float = 300) -> str:
    """Run a command; its output, or RuntimeError with its stderr on failure."""
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: rc {p.returncode}: {p.stderr.strip()[:300]}")
    return p.stdout


def disk_sectors(path: str = DISK) -> int:
    return cdpattach.device_bytes(path) // SECTOR


def dm_create(name: str, table: str) -> str:
    sh("dmsetup", "create", name, "--table", table)
    return f"/dev/mapper/{name}"


def dm_remove(name: str) -> None:
    for _ in range(50):
        p = subprocess.run(["dmsetup", "remove", name], capture_output=True, text=True)
        if p.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"dmsetup remove {name}: {p.stderr.strip()}")


def dm_status(name: str) -> dict[str, str]:
    out = sh("dmsetup", "status", name)
    return dict(re.findall(r"(\w+)=(\S+)", out))


def sha_of(path: str, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        left = length if length is not None else 1 << 62
        while left > 0:
            chunk = f.read(min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def sha_direct(path: str, length: int) -> str:
    """sha256 of a block device read with O_DIRECT (what the device holds, not the cache)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)
    h = hashlib.sha256()
    try:
        off = 0
        while off < length:
            n = os.preadv(fd, [buf], off)
            if n <= 0:
                break
            n = min(n, length - off)
            h.update(buf[:n])
            off += n
    finally:
        os.close(fd)
        buf.close()
    return h.hexdigest()


def zero_disk(mb: int) -> None:
    sh("dd", "if=/dev/zero", f"of={DISK}", "bs=1M", f"count={mb}", "oflag=direct", "status=none")


def dmesg_problems() -> list[str]:
    """Kernel log lines that mean a bug: WARN, BUG (sleeping or scheduling in atomic context, on RT
    any spinlock_t taken with preemption off), oops, hung task."""
    out = sh("dmesg", check=False)
    bad = re.compile(r"(WARNING:|BUG:|Oops|general protection|INFO: task .* blocked|Call Trace|KASAN|refcount_t)")
    return [line for line in out.splitlines() if bad.search(line)]


PROBE = "/run/probe"    # kernel/vm/init copies a static busybox and cdp_atomic_probe.ko here


def atomic_probe() -> str:
    """The dmesg scan's positive control, run after its verdict: load a module that sleeps with
    preemption off (kernel/vm/probe) and require the scan to report the splat as new problems."""
    before = len(dmesg_problems())
    sh(f"{PROBE}/busybox", "insmod", f"{PROBE}/cdp_atomic_probe.ko", check=False)   # fails by design
    new = dmesg_problems()[before:]
    caught = [line for line in new if "scheduling while atomic" in line or "invalid context" in line]
    assert caught, f"the probe's sleep in atomic context left no problem in dmesg ({len(new)} new lines)"
    return " ".join(caught[0].split("]", 1)[-1].split()[:4])


class Session:
    """A cdp target over a device plus the drain service in a thread."""

    def __init__(self, name: str, device: str, *, opts: str = "", mb: int | None = None,
                 journal_dir: str | None = None, live: bool = False) -> None:
        self.name = name
        self.device = device
        self.live = live
        self.journal_path = journal_dir or f"/tmp/j-{name}"
        sh("rm", "-rf", self.journal_path)
        if live:
            cdpattach.attach_live(name, options=opts.split())
        else:
            cdpattach.attach_new(device, name, options=opts.split(), sectors=(mb << 11) if mb else None)
        self.dev = f"/dev/mapper/{name}"
        self.ring = f"/dev/cdp/{name}"
        nbytes = cdpattach.device_bytes(self.dev)
        # baseline after the filter is in: a write racing the copy is also in the ring
        Journal.create(self.journal_path, device_bytes=nbytes, source=self.dev).close()
        self.stop = threading.Event()
        self.stats = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stats = drain(self.journal_path, self.ring, device_path=self.dev, until_detached=True,
                               stop=self.stop, handle_signals=False)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def mark(self, label: str) -> int:
        seq, _ts = cdpattach.mark(self.ring, label)
        return seq

    def settle(self, timeout: float = 300) -> None:
        """Wait until the service released every record and closed any overflow window."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            i = cdpattach.info(self.ring)
            if i.tail == i.head and not i.flags & 1:
                with self.journal() as j:
                    pts = j.points()
                if not pts or pts[-1].whole:
                    return
            time.sleep(0.2)
        raise RuntimeError("the service did not catch up")

    def finish(self, timeout: float = 300) -> None:
        """Detach the filter and wait until the service has journaled everything.

        Live: the table reload detaches (DETACHED ends the service). A new
        device cannot be removed while the service holds it open for resync
        reads, so the service is stopped once it caught up, then the device
        goes.
        """
        if self.live:
            cdpattach.detach(self.name)
        else:
            self.settle(timeout)
            self.stop.set()
            self.thread.join(timeout)
            dm_remove(self.name)
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(30)
            raise RuntimeError("the drain service did not finish after DETACHED")
        if self.error is not None:
            raise RuntimeError(f"drain failed: {self.error}")

    def journal(self) -> Journal:
        return Journal.open(self.journal_path, readonly=True)


def restore_sha(j: Journal, seq: int, length: int, target: str = "/tmp/restore.img") -> str:
    if os.path.exists(target):
        os.unlink(target)
    j.restore(target, seq=seq)
    digest = sha_of(target, length)
    os.unlink(target)
    return digest


def mark_points(j: Journal) -> dict[str, int]:
    return {p.name: p.seq for p in j.points(kinds=["mark"])}


# --------------------------------------------------------------------- tests

def t_module() -> str:
    """The module alone: records in the ring, the ioctls, status, message, DETACHED."""
    from cdp.ring import Ring
    from cdp.ringabi import RING_FLAG_DETACHED, RecType
    sectors = 16 << 11
    dm_create("m0", f"0 {sectors} cdp {DISK} m0 ring_mb=4")
    ring = Ring("/dev/cdp/m0")
    try:
        sh("dd", "if=/dev/urandom", "of=/dev/mapper/m0", "bs=4k", "count=16", "oflag=direct", "status=none")
        sh("dmsetup", "message", "m0", "0", "mark", "first")
        sh("dd", "if=/dev/urandom", "of=/dev/mapper/m0", "bs=64k", "count=2", "seek=3", "oflag=direct",
           "conv=fsync", "status=none")
        cdpattach.mark("/dev/cdp/m0", "second")
        info = cdpattach.info("/dev/cdp/m0")
        entries = ring.read()
        kinds = [e.type for e in entries]
        writes = [e for e in entries if e.type == RecType.WRITE]
        assert all(hasattr(e, "payload") for e in entries), f"corrupt records: {entries}"
        assert len(writes) == 18, f"{len(writes)} WRITE records, expected 18"
        assert sum(e.length for e in writes) == 16 * 4096 + 2 * 65536
        seqs = [e.seq for e in entries]
        assert seqs == list(range(1, len(seqs) + 1)), f"seqs {seqs}"
        ts = [e.ts_ns for e in entries]
        assert ts == sorted(ts), "ts_ns decreased"
        names = [bytes(e.payload).decode() for e in entries if e.type == RecType.MARK]
        assert names == ["first", "second"], names
        assert RecType.FLUSH in kinds, "no FLUSH record after conv=fsync"
        with open("/dev/mapper/m0", "rb") as f:
            f.seek(3 * 65536)
            want = f.read(65536)
        assert bytes(writes[16].payload) == want, "payload differs from the device"
        assert info.records == len(entries) and info.write_bytes == 16 * 4096 + 2 * 65536, info
        st = dm_status("m0")
        assert int(st["records"]) == len(entries) and st["overflow"] == "no", st
        bad = subprocess.run(["dmsetup", "create", "m1", "--table", f"0 {sectors} cdp {DISK} m0"],
                             capture_output=True, text=True)
        assert bad.returncode != 0, "a second target with the same name was accepted"
        ring.release(entries[-1].end)
        dm_remove("m0")
        # the mapping outlives the target: no use-after-free, DETACHED is set
        assert ring.flags & RING_FLAG_DETACHED, "DETACHED not set after removal"
        assert ring.read() == [], "records after DETACHED"
    finally:
        ring.close()
        subprocess.run(["dmsetup", "remove", "m0"], capture_output=True)
    return f"records={len(entries)} writes={len(writes)}"


def t_ringcheck() -> str:
    """A 64 KiB ring under heavy writes, read by a slow consumer: nothing read is overwritten before release."""
    import crc32c
    from cdp.ring import Corrupt, Ring
    from cdp.ringabi import RecType
    sectors = 16 << 11
    dm_create("rc", f"0 {sectors} cdp {DISK} rc ring_kb=64 policy=overflow")
    ring = Ring("/dev/cdp/rc")
    # every sector says where it belongs: a misplaced copy shows where it came from
    pattern = b"".join((b"%08d" % (i * 512)).ljust(512, b".") for i in range(16 << 11))
    with open("/tmp/pattern", "wb") as f:
        f.write(pattern)
    dd = subprocess.Popen(["dd", "if=/tmp/pattern", "of=/dev/mapper/rc", "bs=256k", "count=64", "oflag=direct",
                           "status=none"])
    seen = overflow = 0
    bad: list[str] = []
    try:
        while dd.poll() is None or ring.pending():
            entries = ring.read()
            if not entries:
                ring.wait(0.01)
                continue
            time.sleep(0.005)   # the producer runs meanwhile: it must not touch unreleased bytes
            for e in entries:
                if isinstance(e, Corrupt):
                    o = e.pos & (ring.data_size - 1)
                    h = bytes(ring._data[o:o + 64])
                    dl = int.from_bytes(h[12:16], "little")
                    off = int.from_bytes(h[32:40], "little")
                    pl = bytes(ring._data[o + 64:o + 64 + dl])
                    fd = os.open("/dev/mapper/rc", os.O_RDONLY)
                    dev = os.pread(fd, dl, off)
                    os.close(fd)
                    zero_at = next((i for i in range(0, dl, 512) if pl[i:i + 512] == bytes(512)), -1)
                    diff_at = next((i for i in range(0, dl, 512) if pl[i:i + 512] != dev[i:i + 512]), -1)
                    bad.append(f"corrupt at {e.pos}: {e.reason} seq={int.from_bytes(h[16:24], 'little')} "
                               f"dl={dl} off={off} crc_hdr={int.from_bytes(h[48:52], 'little'):#x} "
                               f"crc_pl={crc32c.crc32c(pl):#x} head={ring.head} tail={ring.tail} "
                               f"zero_at={zero_at} diff_vs_dev_at={diff_at} "
                               f"sectors={[pl[i:i + 8].decode('latin1') for i in range(0, dl, 2048)]}")
                    continue
                seen += 1
                overflow += e.type == RecType.OVERFLOW
                hdr = ring._data[e.pos & (ring.data_size - 1):][:64]
                want = int.from_bytes(hdr[48:52], "little")
                if e.payload and crc32c.crc32c(e.payload) != want:
                    bad.append(f"seq {e.seq} at {e.pos} changed before release")
            ring.release(entries[-1].end)
        st = dm_status("rc")
    finally:
        dd.wait()
        ring.close()
        dm_remove("rc")
        os.unlink("/tmp/pattern")
    assert not bad, f"{len(bad)} problems: {bad[:3]}"
    assert overflow > 0 and int(st["dropped"]) > 0, f"no overflow under a 64 KiB ring: {st}"
    return f"records={seen} overflow_records={overflow} dropped={st['dropped']}"


def t_block() -> str:
    """policy=block with nobody draining: one bounded wait, then drops at once; room brings OVERFLOW records."""
    from cdp.ring import Ring
    from cdp.ringabi import RecType
    sectors = 16 << 11
    dm_create("bk", f"0 {sectors} cdp {DISK} bk ring_kb=64 policy=block wait_ms=400")
    fd = os.open("/dev/mapper/bk", os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 16384)
    buf.write(os.urandom(16384))
    times = []
    try:
        for i in range(12):
            t0 = time.monotonic()
            os.pwrite(fd, buf, i * 16384)
            times.append(time.monotonic() - t0)
        st = dm_status("bk")
        ring = Ring("/dev/cdp/bk")
        try:
            entries = ring.read()
            ring.release(entries[-1].end)
            os.pwrite(fd, buf, 20 * 16384)   # room again: the OVERFLOW records come first
            after = ring.read()
        finally:
            ring.close()
    finally:
        os.close(fd)
        buf.close()
        dm_remove("bk")
    waits = [t for t in times if t > 0.3]
    assert len(waits) == 1, f"expected one bounded wait, got write times {[round(t, 3) for t in times]}"
    assert max(times) < 2.0, f"a write waited {max(times):.2f}s with wait_ms=400"
    assert int(st["dropped"]) == 9 and st["overflow"] == "yes", st
    kinds = [e.type for e in after]
    assert RecType.OVERFLOW in kinds and kinds[-1] == RecType.WRITE, f"after room returned: {kinds}"
    ovf = [e for e in after if e.type == RecType.OVERFLOW]
    assert sum(e.length for e in ovf) >= 9 * 16384, "OVERFLOW ranges do not cover the dropped writes"
    return f"wait={max(times):.2f}s dropped={st['dropped']} overflow_records={len(ovf)}"


def _aligned(data: bytes) -> mmap.mmap:
    buf = mmap.mmap(-1, max(len(data), 4096))
    buf.write(data)
    return buf


def t_raw() -> str:
    """Random raw writes, O_DIRECT and buffered, with marks: every mark restores byte-identical."""
    rnd = random.Random(1)
    mb = 24
    s = Session("raw", DISK, mb=mb, opts="ring_mb=8")
    size = mb << 20
    expected: dict[str, str] = {}
    dfd = os.open(s.dev, os.O_WRONLY | os.O_DIRECT)
    bfd = os.open(s.dev, os.O_WRONLY)
    try:
        for round_ in range(6):
            for _ in range(25):
                n = rnd.choice([512, 4096, 8192, 65536, 131072, 1 << 20]) if rnd.random() < 0.9 else 3 << 20
                off = rnd.randrange(0, (size - n) // 512) * 512
                data = rnd.randbytes(n)
                if rnd.random() < 0.5 and n % 512 == 0:
                    buf = _aligned(data)
                    os.pwritev(dfd, [memoryview(buf)[:n]], off)
                    buf.close()
                else:
                    os.pwrite(bfd, data, off)
            os.fsync(bfd)
            label = f"r{round_}"
            s.mark(label)
            expected[label] = sha_direct(s.dev, size)
    finally:
        os.close(dfd)
        os.close(bfd)
    s.finish()
    with s.journal() as j:
        marks = mark_points(j)
        bad = [m for m, digest in expected.items() if m not in marks or restore_sha(j, marks[m], size) != digest]
    assert not bad, f"marks that do not restore identical: {bad}"
    return f"marks={len(expected)} records={s.stats.records}"


def _debugfs_cat(image: str, path: str) -> bytes:
    p = subprocess.run(["debugfs", "-R", f"cat {path}", image], capture_output=True)
    return p.stdout


def _assert_files(image: str, want: dict[str, str], where: str) -> None:
    """Every file of ``want`` (name -> sha256) reads back identical from the ext4 ``image``."""
    for name, digest in want.items():
        got = hashlib.sha256(_debugfs_cat(image, f"/{name}")).hexdigest()
        assert got == digest, f"{name} differs {where}"


def t_ext4() -> str:
    """ext4 on the filter: every FLUSH point passes e2fsck -fn; marks after sync hold the files."""
    rnd = random.Random(2)
    mb = 32
    s = Session("fs", DISK, mb=mb, opts="ring_mb=16")
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", s.dev)
    s.mark("mkfs")   # a half-made filesystem is no filesystem: FLUSH points count from here
    os.makedirs("/tmp/fs", exist_ok=True)
    sh("mount", "-t", "ext4", s.dev, "/tmp/fs")
    files: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    try:
        for round_ in range(4):
            for i in range(12):
                name = f"f{round_}_{i}"
                data = rnd.randbytes(rnd.choice([100, 5000, 70000, 400000]))
                with open(f"/tmp/fs/{name}", "wb") as f:
                    f.write(data)
                current[name] = hashlib.sha256(data).hexdigest()
            if round_ and current:
                victim = sorted(current)[rnd.randrange(len(current))]
                os.unlink(f"/tmp/fs/{victim}")
                del current[victim]
            os.sync()
            label = f"e{round_}"
            s.mark(label)
            files[label] = dict(current)
    finally:
        sh("umount", "/tmp/fs", check=False)
    s.finish()
    checked = 0
    with s.journal() as j:
        made = mark_points(j)["mkfs"]
        flushes = [p for p in j.points(kinds=["flush"]) if p.whole and p.seq > made]
        assert flushes, "no FLUSH points in the journal"
        step = max(1, len(flushes) // 6)
        picks = flushes[::step][:6] + [flushes[-1]]
        for p in picks:
            j.restore("/tmp/fsck.img", seq=p.seq)
            r = subprocess.run(["e2fsck", "-fn", "/tmp/fsck.img"], capture_output=True, text=True)
            os.unlink("/tmp/fsck.img")
            assert r.returncode == 0, f"e2fsck at FLUSH seq {p.seq}: rc {r.returncode}: {r.stdout[-300:]}"
            checked += 1
        marks = mark_points(j)
        for label, want in files.items():
            if label == "mkfs":
                continue
            j.restore("/tmp/m.img", seq=marks[label])
            _assert_files("/tmp/m.img", want, f"at mark {label}")
            os.unlink("/tmp/m.img")
    return f"flush_points={len(flushes)} fsck_checked={checked} marks={len(files)}"


def t_discard() -> str:
    """blkdiscard and write-zeroes ranges come back as zeros."""
    mb = 8
    size = mb << 20
    sh("dd", "if=/dev/urandom", f"of={DISK}", "bs=1M", f"count={mb}", "oflag=direct", "status=none")
    s = Session("dz", DISK, mb=mb, opts="ring_mb=4")
    sh("blkdiscard", "-o", str(1 << 20), "-l", str(1 << 20), s.dev)
    sh("blkdiscard", "-z", "-o", str(4 << 20), "-l", str(512 << 10), s.dev)
    s.mark("after")
    s.finish()
    with s.journal() as j:
        kinds = {r.type for r in j.records()}
        marks = mark_points(j)
        j.restore("/tmp/dz.img", seq=marks["after"])
    with open("/tmp/dz.img", "rb") as f:
        img = f.read()
    os.unlink("/tmp/dz.img")
    assert img[1 << 20:2 << 20] == bytes(1 << 20), "discarded range not zero after restore"
    assert img[4 << 20:(4 << 20) + (512 << 10)] == bytes(512 << 10), "write-zeroes range not zero"
    with open(DISK, "rb") as f:
        disk = f.read(size)
    assert img[:1 << 20] == disk[:1 << 20] and img[2 << 20:4 << 20] == disk[2 << 20:4 << 20], "other bytes differ"
    return f"record_types={sorted(int(k) for k in kinds)}"


def t_overflow() -> str:
    """A 64 KiB ring with policy=overflow under heavy writes: OVERFLOW, resync, later marks exact."""
    mb = 16
    size = mb << 20
    s = Session("ovf", DISK, mb=mb, opts="ring_kb=64 policy=overflow")
    sh("dd", "if=/dev/urandom", f"of={s.dev}", "bs=256k", "count=48", "oflag=direct", "status=none")
    st = dm_status("ovf")
    # let the service catch up and resync, then a quiet mark must be exact
    deadline = time.time() + 120
    while time.time() < deadline:
        st = dm_status("ovf")
        if st["overflow"] == "no" and int(st["fill"].split("/")[0]) == 0:
            break
        time.sleep(0.5)
    time.sleep(2)
    s.mark("quiet")
    want = sha_direct(s.dev, size)
    sh("dd", "if=/dev/urandom", f"of={s.dev}", "bs=4k", "count=4", "seek=100", "oflag=direct", "status=none")
    s.mark("later")
    want2 = sha_direct(s.dev, size)
    s.finish()
    with s.journal() as j:
        pts = j.points()
        marks = {p.name: p for p in pts if p.kind == "mark"}
        kinds = {p.kind for p in pts}
        assert "overflow" in kinds, f"no overflow point (status {st})"
        assert "resync" in kinds, "no resync point"
        assert marks["quiet"].whole and marks["later"].whole, "marks after resync are not whole"
        assert restore_sha(j, marks["quiet"].seq, size) == want, "restore at 'quiet' differs"
        assert restore_sha(j, marks["later"].seq, size) == want2, "restore at 'later' differs"
    return f"dropped={st['dropped']} overflow_records={st['overflow_records']}"


#: Longest interrupts-off section allowed while an OVERFLOW backlog is emitted,
#: in the TCG guest. A step of 64 records takes about 200-300 us there; a vCPU
#: the host preempts while it holds the lock adds a host time slice (about 4 ms
#: seen on a busy host). Emitting the backlog in one hold took 12-25 ms.
IRQSOFF_BOUND_US = 10000


def _chunk_runs(bits: bytearray) -> list[tuple[int, int]]:
    """The runs of set entries of ``bits`` as (first, end) index pairs."""
    runs = []
    i = bits.find(1)
    while i >= 0:
        j = bits.find(0, i)
        j = len(bits) if j < 0 else j
        runs.append((i, j))
        i = bits.find(1, j)
    return runs


def _overflow_backlog() -> tuple[float, float, int, int, int, float]:
    """Drop every other 4 KiB chunk of a 256 MiB target, then let a MARK emit the backlog.

    Checks that the OVERFLOW records cover exactly the dropped chunks, that
    the MARK comes after them and that no lock hold emitted more than 64.
    Returns the longest interrupts-off section (us) overall and before the
    emission, the runs and chunks emitted, the most records one lock hold
    emitted, and how long the MARK ioctl took (us).
    """
    from cdp.ring import Corrupt, Ring
    from cdp.ringabi import RecType
    mb, chunk = 256, 4096          # 65536 chunks of 4 KiB: the bitmap's most
    dm_create("oi", f"0 {mb << 11} cdp {DISK} oi ring_mb=8 policy=overflow")
    ring = Ring("/dev/cdp/oi")
    fd = os.open("/dev/mapper/oi", os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)
    try:
        # nobody drains: 1 MiB writes fill the 8 MiB ring, the last ones drop
        ranges = [(i << 20, 1 << 20) for i in range(9)]
        # then every other chunk: the most runs the bitmap can hold
        ranges += [(k * 2 * chunk, chunk) for k in range((mb << 20) // (2 * chunk))]
        for off, n in ranges:
            os.pwritev(fd, [memoryview(buf)[:n]], off)
        st0 = dm_status("oi")
        kept = ring.read()
        recorded = {(e.offset, e.length) for e in kept if e.type == RecType.WRITE}
        ring.release(kept[-1].end)
        # the MARK finds the ring empty: the whole backlog goes first
        t0 = time.perf_counter()
        cdpattach.mark("/dev/cdp/oi", "after")
        mark_us = (time.perf_counter() - t0) * 1e6
        st = dm_status("oi")
        entries = []
        while ring.pending():
            got = ring.read()
            entries += [(e.type, e.offset, e.length, e.ts_ns) if not isinstance(e, Corrupt)
                        else ("corrupt", e.pos, 0, 0) for e in got]
            ring.release(got[-1].end)
    finally:
        os.close(fd)
        buf.close()
        ring.close()
        dm_remove("oi")
    dropped = bytearray((mb << 20) // chunk)
    for off, n in ranges:
        if (off, n) not in recorded:
            dropped[off // chunk:(off + n) // chunk] = b"\x01" * (n // chunk)
    want = [(a * chunk, (b - a) * chunk) for a, b in _chunk_runs(dropped)]
    got = [(off, n) for t, off, n, _ts in entries if t == RecType.OVERFLOW]
    assert st0["overflow"] == "yes" and int(st0["dropped"]) == len(ranges) - len(recorded), st0
    assert not [e for e in entries if e[0] == "corrupt"], "corrupt records in the ring"
    assert sorted(got) == want, f"{len(got)} OVERFLOW ranges, {len(want)} runs dropped; first {got[:3]} {want[:3]}"
    assert entries[-1][0] == RecType.MARK, f"the MARK is not last: {entries[-3:]}"
    assert st["overflow"] == "no" and int(st["overflow_records"]) == len(want), st
    # each lock hold stamps its OVERFLOW records with one ts_ns: the largest
    # group of equal stamps is the most records emitted with interrupts off
    per_hold = max(collections.Counter(ts for t, _o, _n, ts in entries if t == RecType.OVERFLOW).values())
    assert per_hold <= 64, f"{per_hold} OVERFLOW records in one lock hold"
    return (int(st["irqsoff_max_ns"]) / 1000, int(st0["irqsoff_max_ns"]) / 1000, len(want), sum(dropped),
            per_hold, mark_us)


def t_overflow_irqsoff() -> str:
    """An OVERFLOW backlog of 32k runs is emitted exactly, with a short longest interrupts-off section.

    The figure is guest time, and a vCPU the host preempts while it holds
    the lock counts too (up to 14.7 ms seen with the host at load 5 on two
    cores): up to three attempts are made before a figure above the bound
    is taken as a failure. The bound on the work itself, at most 64 records
    per hold, is checked exactly on every attempt.
    """
    tries = []
    for _ in range(3):
        max_us, base_us, runs, chunks, per_hold, mark_us = _overflow_backlog()
        tries.append(f"{max_us:.0f}us")
        if max_us <= IRQSOFF_BOUND_US:
            break
    detail = (f"max={max_us:.0f}us before_emit={base_us:.0f}us runs={runs} chunks={chunks} "
              f"per_hold={per_hold} mark_call={mark_us:.0f}us bound={IRQSOFF_BOUND_US}us tries={','.join(tries)}")
    assert max_us <= IRQSOFF_BOUND_US, f"interrupts were off too long: {detail}"
    return detail


def _ioc_mark(fd: int, raw: bytes) -> int:
    """CDP_IOC_MARK with a name given as bytes; the MARK's seq, or OSError."""
    import fcntl
    buf = bytearray(cdpattach.IOC_MARK_STRUCT.pack(0, 0, len(raw), 0, raw))
    fcntl.ioctl(fd, cdpattach.CDP_IOC_MARK, buf, True)
    return cdpattach.IOC_MARK_STRUCT.unpack(buf)[0]


#: Run as root without CAP_SYS_ADMIN: MARK through read-only and write-only descriptors.
_MARK_NO_ADMIN = """
import errno, fcntl, os, sys
from cdp.attach import CDP_IOC_MARK, IOC_MARK_STRUCT


def _ioc_mark(fd, raw):
    buf = bytearray(IOC_MARK_STRUCT.pack(0, 0, len(raw), 0, raw))
    fcntl.ioctl(fd, CDP_IOC_MARK, buf, True)
    return IOC_MARK_STRUCT.unpack(buf)[0]


ring = sys.argv[1]
fd = os.open(ring, os.O_RDONLY)
try:
    _ioc_mark(fd, b"read-only")
    print("rdonly=accepted")
except OSError as exc:
    print("rdonly=" + errno.errorcode.get(exc.errno, str(exc.errno)))
finally:
    os.close(fd)
fd = os.open(ring, os.O_WRONLY)
try:
    print("wronly=seq%d" % _ioc_mark(fd, b"write-only"))
finally:
    os.close(fd)
"""


def t_mark_rdonly() -> str:
    """CDP_IOC_MARK needs a descriptor opened for writing, or CAP_SYS_ADMIN: EBADF otherwise."""
    from cdp.ring import Ring
    from cdp.ringabi import RecType
    dm_create("mp", f"0 {16 << 11} cdp {DISK} mp ring_kb=256")
    try:
        # without CAP_SYS_ADMIN (bounding set): uid 0 still owns the 0600 node
        p = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin", sys.executable, "-c",
                            _MARK_NO_ADMIN, "/dev/cdp/mp"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"the unprivileged marker failed: {p.stderr.strip()[-300:]}"
        got = dict(line.split("=", 1) for line in p.stdout.split())
        assert got.get("rdonly") == "EBADF", f"MARK on O_RDONLY without CAP_SYS_ADMIN: {got}"
        assert got.get("wronly", "").startswith("seq"), f"MARK on O_WRONLY: {got}"
        # with CAP_SYS_ADMIN a read-only descriptor is enough
        fd = os.open("/dev/cdp/mp", os.O_RDONLY)
        try:
            _ioc_mark(fd, b"admin")
        finally:
            os.close(fd)
        with Ring("/dev/cdp/mp") as ring:
            names = [bytes(e.payload).decode() for e in ring.read() if e.type == RecType.MARK]
    finally:
        dm_remove("mp")
    assert names == ["write-only", "admin"], f"MARK records in the ring: {names}"
    return f"rdonly={got['rdonly']} wronly={got['wronly']} admin=ok"


#: Mark names the kernel refuses: escape sequences, controls, malformed UTF-8.
BAD_MARK_NAMES = [
    b"\x1b[2J", b"red\x1b[31mtext", b"\x1b]0;title\x07", b"bell\x07", b"a\x00b", b"tab\tname", b"del\x7f",
    b"\xc2\x9b31m",                   # C1 CSI, the one-byte escape
    b"\xc2\x85",                      # C1 NEL
    b"\xff", b"\x80abc",               # not a lead byte
    b"caf\xc3",                       # truncated
    b"\xc0\x9b", b"\xe0\x80\x9b",      # overlong ESC
    b"\xed\xa0\x80",                  # a surrogate
    b"\xf4\x90\x80\x80",              # past U+10FFFF
]
#: ... and names it keeps, byte for byte.
GOOD_MARK_NAMES = ["caf\u00e9", "\u65e5\u672c\u8a9e", "release-1.2-\u2713", "\U0001d11e-clef", "with space", "a" * 255]


def t_mark_names() -> str:
    """Mark names that are not printable UTF-8 are refused by the ioctl and by dmsetup message."""
    import errno
    from cdp.ring import Ring
    from cdp.ringabi import RecType
    dm_create("mn", f"0 {16 << 11} cdp {DISK} mn ring_kb=256")
    fd = os.open("/dev/cdp/mn", os.O_WRONLY)
    try:
        wrong = []
        for raw in BAD_MARK_NAMES:
            try:
                _ioc_mark(fd, raw)
                wrong.append(f"ioctl accepted {raw!r}")
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    wrong.append(f"ioctl {raw!r}: {exc.strerror}")
            if b"\0" in raw or b"\t" in raw or b" " in raw:
                continue        # not one dmsetup argument
            p = subprocess.run([b"dmsetup", b"message", b"mn", b"0", b"mark", raw], capture_output=True)
            if p.returncode == 0:
                wrong.append(f"dmsetup message accepted {raw!r}")
        for name in GOOD_MARK_NAMES:
            _ioc_mark(fd, name.encode())
            if " " not in name:
                sh("dmsetup", "message", "mn", "0", "mark", name)
        with Ring("/dev/cdp/mn") as ring:
            got = [bytes(e.payload) for e in ring.read() if e.type == RecType.MARK]
    finally:
        os.close(fd)
        dm_remove("mn")
    assert not wrong, "; ".join(wrong)
    want = [n.encode() for name in GOOD_MARK_NAMES for n in ([name] if " " in name else [name, name])]
    assert got == want, f"MARK records {got[:4]}... differ from the names given"
    return f"refused={len(BAD_MARK_NAMES)} kept={len(got)}"


def t_device_id() -> str:
    """device_id=<32 hex digits> in the table lands in the control page; a bad one is refused."""
    from cdp.ring import Ring
    ident = bytes(range(0xa0, 0xb0))
    sectors = 16 << 11
    bad = {}
    for value in ("00" * 15, "00" * 17, "zz" + "00" * 15, ""):
        p = subprocess.run(["dmsetup", "create", "dx", "--table", f"0 {sectors} cdp {DISK} dx device_id={value}"],
                           capture_output=True, text=True)
        bad[value] = p.returncode
        if p.returncode == 0:
            dm_remove("dx")
    assert all(bad.values()), f"bad device_id accepted: {[v for v, rc in bad.items() if rc == 0]}"
    assert subprocess.run(["dmsetup", "info", "dx"], capture_output=True).returncode != 0, "a refused table left dx"
    dm_create("di", f"0 {sectors} cdp {DISK} di ring_kb=256 device_id={ident.hex().upper()}")
    dm_create("dz", f"0 {sectors} cdp {DISK} dz ring_kb=256")
    try:
        with Ring("/dev/cdp/di") as ring:
            got = ring.device_id
        fd = os.open("/dev/cdp/di", os.O_RDONLY)   # the bytes themselves: offset 32 of the control page
        try:
            ctl = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
            raw = ctl[32:48]
            ctl.close()
        finally:
            os.close(fd)
        with Ring("/dev/cdp/dz") as ring:
            zero = ring.device_id
        table = sh("dmsetup", "table", "di")
        table_z = sh("dmsetup", "table", "dz")
    finally:
        dm_remove("di")
        dm_remove("dz")
    assert got == ident and raw == ident, f"control page device_id {got.hex()} / {raw.hex()}, table said {ident.hex()}"
    assert zero == bytes(16), f"device_id without the option: {zero.hex()}"
    assert f"device_id={ident.hex()}" in table and "device_id" not in table_z, f"dmsetup table: {table!r} {table_z!r}"
    return f"device_id={got.hex()} refused={len(bad)}"


def t_table_errors() -> str:
    """A table refused at each stage of the constructor leaves nothing behind; the name is free again."""
    sectors = 16 << 11
    dm_create("te0", f"0 {sectors} cdp {DISK} te ring_kb=256")
    refused = {
        "no name": f"0 {sectors} cdp {DISK}",
        "bad option": f"0 {sectors} cdp {DISK} te2 ring_mb=3",
        "no device": f"0 {sectors} cdp /dev/nonexistent te2",
        "name taken": f"0 {sectors} cdp {DISK} te ring_kb=256",   # fails after the ring was allocated
    }
    wrong = []
    try:
        for what, table in refused.items():
            p = subprocess.run(["dmsetup", "create", "te1", "--table", table], capture_output=True, text=True)
            if p.returncode == 0:
                wrong.append(f"{what}: accepted")
                dm_remove("te1")
            if os.path.exists("/dev/cdp/te2"):
                wrong.append(f"{what}: left /dev/cdp/te2")
        assert os.path.exists("/dev/cdp/te"), "the refused duplicate took the first target's ring away"
    finally:
        dm_remove("te0")
    # every refused constructor let go of the name and the device
    dm_create("te1", f"0 {sectors} cdp {DISK} te2 ring_kb=256")
    dm_remove("te1")
    assert not os.path.exists("/dev/cdp/te") and not os.path.exists("/dev/cdp/te2"), "a ring node outlived its target"
    assert not wrong, "; ".join(wrong)
    return f"refused={len(refused)}"


def t_concurrent() -> str:
    """Several writers for a fixed time: counters add up, the journal has every byte, dmesg is clean."""
    mb = 32
    size = mb << 20
    s = Session("cc", DISK, mb=mb, opts="ring_mb=16 wait_ms=5000")
    written = [0] * 4
    stop_at = time.time() + 8

    def writer(k: int) -> None:
        rnd = random.Random(10 + k)
        fd = os.open(s.dev, os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 65536)
        buf.write(rnd.randbytes(65536))
        try:
            while time.time() < stop_at:
                n = rnd.choice([4096, 16384, 65536])
                off = (k * (size // 4)) + rnd.randrange(0, (size // 4 - n) // 4096) * 4096
                os.pwritev(fd, [memoryview(buf)[:n]], off)
                written[k] += n
        finally:
            os.close(fd)
            buf.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    st = dm_status("cc")
    s.mark("end")
    want = sha_direct(s.dev, size)
    s.finish()
    total = sum(written)
    assert int(st["dropped"]) == 0, f"writes dropped: {st}"
    assert int(st["bytes"]) == total, f"target counted {st['bytes']} bytes, writers wrote {total}"
    assert int(st["committed"]) + int(st["discarded"]) + 0 <= int(st["records"]), st
    with s.journal() as j:
        journaled = sum(r.length for r in j.records() if int(r.type) == 1)
        assert journaled == total, f"the journal holds {journaled} written bytes, writers wrote {total}"
        assert restore_sha(j, mark_points(j)["end"], size) == want, "restore at 'end' differs"
    problems = dmesg_problems()
    assert not problems, f"dmesg: {problems[:3]}"
    return f"bytes={total} records={st['records']}"


def t_live() -> str:
    """Insert the filter live into a mounted dm volume being written, and remove it: nothing missed."""
    mb = 32
    dm_create("vol", f"0 {mb << 11} linear {DISK} 0")
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "/dev/mapper/vol")
    os.makedirs("/tmp/vol", exist_ok=True)
    sh("mount", "-t", "ext4", "/dev/mapper/vol", "/tmp/vol")
    stop = threading.Event()
    count = [0]

    def writer() -> None:
        rnd = random.Random(5)
        while not stop.is_set():
            with open(f"/tmp/vol/w{count[0] % 40}", "wb") as f:
                f.write(rnd.randbytes(rnd.choice([3000, 50000, 200000])))
            count[0] += 1
            if count[0] % 10 == 0:
                os.sync()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(1)
        s = Session("vol", "/dev/mapper/vol", opts="ring_mb=16", live=True)
        before = count[0]
        time.sleep(4)
        assert count[0] > before, "the writer stalled across the insertion"
        stop.set()
        t.join(60)
        os.sync()
        s.mark("synced")
        want = {f: hashlib.sha256(open(f"/tmp/vol/{f}", "rb").read()).hexdigest() for f in os.listdir("/tmp/vol")
                if f.startswith("w")}
        s.finish()   # live removal: the volume stays mounted
        assert cdpattach.dm_table("vol").split()[2] == "linear", "the original table did not come back"
        with open("/tmp/vol/after", "wb") as f:
            f.write(b"still mounted")
        os.sync()
    finally:
        stop.set()
        t.join(60)
        sh("umount", "/tmp/vol", check=False)
        subprocess.run(["dmsetup", "remove", "vol"], capture_output=True)
    with s.journal() as j:
        j.restore("/tmp/live.img", seq=mark_points(j)["synced"])
    r = subprocess.run(["e2fsck", "-fn", "/tmp/live.img"], capture_output=True, text=True)
    assert r.returncode == 0, f"e2fsck of the restored volume: {r.stdout[-300:]}"
    _assert_files("/tmp/live.img", want, "in the restored volume")
    os.unlink("/tmp/live.img")
    return f"files={len(want)} writes={count[0]}"


def _wait_holds_ring(proc: subprocess.Popen, ring: str, timeout: float = 120) -> None:
    """Wait until ``proc`` (``cdp run``) holds the ring's flock: it drains the ring from then on.

    Started in the background, the service may take seconds to import and
    open the ring on a busy host; a target removed before that is a ring
    it never sees. /proc/locks is read, never the lock taken, which would
    make the service find the ring busy.
    """
    ino = str(os.stat(ring).st_ino)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise RuntimeError(f"cdp run exited with {proc.returncode}: {err.strip()[-300:]}")
        with open("/proc/locks") as f:
            for line in f:   # "1: FLOCK  ADVISORY  WRITE 1234 00:05:567 0 EOF"
                w = line.split()
                if len(w) >= 6 and w[1] == "FLOCK" and w[4] == str(proc.pid) and w[5].rsplit(":", 1)[-1] == ino:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"cdp run did not open {ring} within {timeout:.0f}s")


def t_cli() -> str:
    """The user's path through the CLI: cdp attach --via dm, cdp run, cdp mark --ring, cdp detach, on a loop device."""
    mb = 16
    img = "/tmp/cli.img"
    with open(img, "wb") as f:
        f.write(os.urandom(mb << 20))
    loop = sh("losetup", "-f", "--show", img).strip()
    cdp = [sys.executable, "-m", "cdp"]
    run = None
    try:
        bad = subprocess.run(cdp + ["attach", "/dev/nonexistent", "--journal", "/tmp/j-none"],
                             capture_output=True, text=True)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(bad.stderr.splitlines()) == 1, \
            f"bad input: rc {bad.returncode}: {bad.stderr!r}"
        # --via dm: a plain device would get the in-place filter (filtervm.py's filter-cli tests that)
        sh(*cdp, "attach", loop, "--via", "dm", "--name", "cli", "--journal", "/tmp/j-cli", "--ring-mb", "8")
        run = subprocess.Popen(cdp + ["run", "--journal", "/tmp/j-cli", "--ring", "/dev/cdp/cli",
                                      "--until-detached"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        _wait_holds_ring(run, "/dev/cdp/cli")
        sh("dd", "if=/dev/urandom", "of=/dev/mapper/cli", "bs=64k", "count=40", "seek=7", "oflag=direct",
           "status=none")
        sh(*cdp, "mark", "m1", "--ring", "cli")
        want = sha_direct("/dev/mapper/cli", mb << 20)
        sh("dd", "if=/dev/zero", "of=/dev/mapper/cli", "bs=4k", "count=8", "oflag=direct", "status=none")
        sh(*cdp, "detach", "cli")
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, f"cdp run: rc {run.returncode}: {err.strip()[-300:]}"
        assert not os.path.exists("/dev/mapper/cli"), "detach left /dev/mapper/cli"
        with Journal.open("/tmp/j-cli", readonly=True) as j:
            got = restore_sha(j, mark_points(j)["m1"], mb << 20)
        assert got == want, "restore at m1 differs"
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        subprocess.run(["dmsetup", "remove", "cli"], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        os.unlink(img)
    return f"loop={loop}"


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(user + system ticks of process ``pid``, idle ticks of the whole guest), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    idle = int(open("/proc/stat").readline().split()[4])
    return int(fields[11]) + int(fields[12]), idle


def t_bench() -> str:
    """4 KiB and 64 KiB direct writes through raw, dm-linear, dm-log-writes and dm-cdp, interleaved."""
    mb = 64
    sectors = mb << 11
    seconds = 1.0
    # cdp-idle: the filter with nobody draining (a fresh ring, big enough for a round):
    # its own cost, apart from the drain service's CPU inside the same guest
    names = ["raw", "linear", "log-writes", "cdp", "cdp-idle"]
    # dm-log-writes needs a log device: the second half of the disk
    dm_create("blin", f"0 {sectors} linear {DISK} 0")
    dm_create("blogdev", f"0 {min(disk_sectors() - sectors, 1 << 20)} linear {DISK} {sectors}")
    dm_create("blog", f"0 {sectors} log-writes {DISK} /dev/mapper/blogdev")
    # the service keeps up or the writer waits (policy=block): what it costs shows in MB/s
    dm_create("bcdp", f"0 {sectors} cdp {DISK} bcdp ring_mb=64 policy=block wait_ms=5000")
    idle_table = f"0 {sectors} cdp {DISK} bidle ring_mb=512 policy=overflow"
    dm_create("bidle", idle_table)
    j = "/tmp/j-bench"
    sh("rm", "-rf", j)
    Journal.create(j, device_bytes=sectors * 512).close()
    # the drain service in its own process, as `cdp run` runs under systemd
    # (a thread of this process would fight the writer loop for the GIL)
    service = subprocess.Popen([sys.executable, "-m", "cdp", "run", "--journal", j, "--ring", "/dev/cdp/bcdp",
                                "--until-detached"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    paths = {"raw": DISK, "linear": "/dev/mapper/blin", "log-writes": "/dev/mapper/blog", "cdp": "/dev/mapper/bcdp",
             "cdp-idle": "/dev/mapper/bidle"}
    results: dict[tuple[str, int], list[float]] = {}
    cpu_use: dict[int, list[tuple[float, float]]] = {}
    for bs in (4096, 65536):
        buf = mmap.mmap(-1, bs)
        buf.write(os.urandom(bs))
        for rep in range(3):
            for name in names:
                if name == "cdp-idle":  # a fresh ring each round: it must not fill up and drop
                    dm_remove("bidle")
                    dm_create("bidle", idle_table)
                fd = os.open(paths[name], os.O_WRONLY | os.O_DIRECT)
                n = 0
                cpu0 = _cpu_ticks(service.pid)
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    os.pwrite(fd, buf, (n * bs) % (32 << 20))
                    n += 1
                    if n % 64 == 0:
                        os.fsync(fd)
                os.fsync(fd)
                dt = time.perf_counter() - t0
                cpu1 = _cpu_ticks(service.pid)
                os.close(fd)
                results.setdefault((name, bs), []).append(n * bs / dt / (1 << 20))
                if name == "cdp":   # where the guest's CPU went, per write
                    tick_us = 1e6 / os.sysconf("SC_CLK_TCK") / n
                    cpu_use.setdefault(bs, []).append(((cpu1[0] - cpu0[0]) * tick_us, (cpu1[1] - cpu0[1]) * tick_us))
        buf.close()
    st = dm_status("bcdp")
    idle = dm_status("bidle")
    for n in ("blog", "blogdev", "blin", "bidle"):
        dm_remove(n)
    # the service must have kept up: it drains what is left quickly
    t0 = time.monotonic()
    while cdpattach.info("/dev/cdp/bcdp").tail != cdpattach.info("/dev/cdp/bcdp").head and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    lag = time.monotonic() - t0
    dm_remove("bcdp")
    _out, err = service.communicate(timeout=120)
    assert service.returncode == 0, f"cdp run: rc {service.returncode}: {err.strip()[-300:]}"
    say("BENCH", f"cdp_dropped={st['dropped']}", f"cdp_records={st['records']}", f"drain_lag_s={lag:.1f}")
    parts = []
    for bs in (4096, 65536):
        med = {n: sorted(results[(n, bs)])[1] for n in names}
        for n in names:
            say("BENCH", f"bs={bs}", f"target={n}", f"MBps={med[n]:.2f}",
                f"vs_linear={med[n] / med['linear']:.2f}")
        service_us, idle_us = sorted(cpu_use[bs])[1]
        say("BENCH", f"bs={bs}", "target=cdp", f"service_cpu_us_per_write={service_us:.0f}",
            f"guest_idle_us_per_write={idle_us:.0f}")
        parts.append(f"{bs // 1024}k:cdp/linear={med['cdp'] / med['linear']:.2f},"
                     f"cdp/logwrites={med['cdp'] / med['log-writes']:.2f},"
                     f"idle/linear={med['cdp-idle'] / med['linear']:.2f}")
    return " ".join(parts) + f" dropped={st['dropped']} idle_dropped={idle['dropped']}"


def t_overflow_inflight() -> str:
    """Writes dropped while still in flight are in the journal once their window closes.

    A dm-delay device under the target holds every write 300 ms (reads go at once), so the
    bios the target drops are still on their way to the disk when half the ring is free
    again. An OVERFLOW record must not be committed before the writes it covers completed:
    the service copies its ranges from the device as soon as it reads it, and a write that
    lands after that copy would be in no record, leaving a mark reported whole that restores
    the old bytes (as before e5142a7: this failed every time, overflow-inflight0 with 0 ms
    never did).
    """
    return _overflow_inflight(300)


def _overflow_inflight(delay_ms: int) -> str:
    mb = 16
    size = mb << 20
    zero_disk(mb)
    dm_create("slow", f"0 {size // SECTOR} delay {DISK} 0 0 {DISK} 0 {delay_ms}")
    try:
        s = Session("ovi", "/dev/mapper/slow", mb=mb, opts="ring_kb=64 policy=overflow")
        stop = time.monotonic() + 3

        def writer(k: int) -> None:   # 16 KiB O_DIRECT writes, one region of 4 MiB per writer
            fd = os.open(s.dev, os.O_WRONLY | os.O_DIRECT)
            buf = _aligned(os.urandom(16 << 10))
            try:
                n = 0
                while time.monotonic() < stop:
                    os.pwritev(fd, [buf], k * (4 << 20) + (n * (16 << 10)) % (4 << 20))
                    n += 1
            finally:
                os.close(fd)
                buf.close()
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.time() + 120    # the ring drained, no overflow, every window resynced
        while time.time() < deadline:
            i = cdpattach.info(s.ring)
            with s.journal() as j:
                open_windows = [w for w in j.overflow_windows() if w.resync_seq is None]
            if i.tail == i.head and not i.flags & 1 and not open_windows:
                break
            time.sleep(0.5)
        s.mark("end")
        want = sha_direct(s.dev, size)
        st = dm_status("ovi")
        s.finish()
    finally:
        subprocess.run(["dmsetup", "remove", "ovi"], capture_output=True)
        dm_remove("slow")
    with s.journal() as j:
        end = {p.name: p for p in j.points() if p.kind == "mark"}["end"]
        assert end.whole, "the mark after every window closed is not whole"
        got = restore_sha(j, end.seq, size)
    detail = f"dropped={st['dropped']} overflow_records={st['overflow_records']}"
    assert got == want, f"restore at a whole mark differs from the device ({detail})"
    return detail


TESTS: dict[str, Callable[[], str]] = {
    "module": t_module,
    "ringcheck": t_ringcheck,
    "block": t_block,
    "raw": t_raw,
    "ext4": t_ext4,
    "discard": t_discard,
    "overflow": t_overflow,
    "overflow-irqsoff": t_overflow_irqsoff,
    "mark-rdonly": t_mark_rdonly,
    "mark-names": t_mark_names,
    "device-id": t_device_id,
    "table-errors": t_table_errors,
    "concurrent": t_concurrent,
    "live": t_live,
    "cli": t_cli,
    "bench": t_bench,
    "overflow-inflight": t_overflow_inflight,
    "overflow-inflight0": lambda: _overflow_inflight(0),
}
DEFAULT = ["module", "ringcheck", "block", "raw", "ext4", "discard", "overflow", "overflow-inflight",
           "overflow-irqsoff", "mark-rdonly", "mark-names", "device-id", "table-errors", "concurrent", "live", "cli"]


#: A test that runs longer than this is stuck (the slowest takes under a minute even on a loaded host);
#: ``cdpvm.watchdog=N`` on the kernel command line changes it.
WATCHDOG_S = 400


def _stuck(name: str) -> None:
    """Print what the guest is doing and end the run at once, instead of idling to the host's timeout:
    tasks in D state and every CPU's backtrace (sysrq w, l), and every Python thread's stack."""
    say("RESULT", name, "FAIL", f"stuck for {WATCHDOG_S}s: blocked tasks, CPU backtraces and Python stacks follow")
    before = len(sh("dmesg", check=False).splitlines())
    for key in "wl":
        with open("/proc/sysrq-trigger", "w") as f:
            f.write(key)
    time.sleep(2)
    print("\n".join(sh("dmesg", check=False).splitlines()[before:]), flush=True)
    faulthandler.dump_traceback(all_threads=True)
    sys.stdout.flush()
    say("DONE", "failed")
    os._exit(3)


def main(argv: list[str]) -> int:
    opts = dict(a.split("=", 1) for a in argv if a.startswith("cdpvm.") and "=" in a)
    # the instant-access suite (accessvm.py, tests named access-*) uses this module's helpers
    sys.modules.setdefault("cdpvm", sys.modules[__name__])
    import accessvm
    TESTS.update(accessvm.TESTS)
    names = opts.get("cdpvm.tests", ",".join(DEFAULT + list(accessvm.TESTS))).split(",")
    if opts.get("cdpvm.bench") == "1" and "bench" not in names:
        names.extend(["bench", "filter-bench"])
    global WATCHDOG_S
    WATCHDOG_S = int(opts.get("cdpvm.watchdog", WATCHDOG_S))
    say("START", os.uname().release, " ".join(names))
    failed = 0
    for name in names:
        fn = TESTS.get(name)
        if fn is None:
            say("RESULT", name, "FAIL", "no such test")
            failed += 1
            continue
        zero_disk(1)
        t0 = time.monotonic()
        watchdog = threading.Timer(WATCHDOG_S, _stuck, args=(name,))
        watchdog.daemon = True
        watchdog.start()
        try:
            detail = fn()
            say("RESULT", name, "PASS", f"{time.monotonic() - t0:.1f}s", detail)
        except BaseException as exc:  # one line per failure, the trace on the console for humans
            failed += 1
            traceback.print_exc()
            msg = " ".join(str(exc).split())[:400]
            say("RESULT", name, "FAIL", f"{time.monotonic() - t0:.1f}s", f"{type(exc).__name__}: {msg}")
        finally:
            watchdog.cancel()
        for line in dmesg_problems():
            say("DMESG", line)
    problems = dmesg_problems()
    say("RESULT", "dmesg", "PASS" if not problems else "FAIL", f"problems={len(problems)}")
    try:
        say("RESULT", "dmesg-probe", "PASS", atomic_probe())
    except Exception as exc:
        failed += 1
        say("RESULT", "dmesg-probe", "FAIL", " ".join(str(exc).split())[:400])
    say("DONE", "failed" if failed or problems else "ok")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    # The in-place filter's tests (filter-...) live in filtervm.py, which takes its helpers from
    # this file: imported only here, so the two never import each other half-made.
    import filtervm

    TESTS.update(filtervm.TESTS)
    DEFAULT.extend(filtervm.DEFAULT)
    import reattachvm  # the boot unit's lines: reattach with the filter (takes helpers from both)

    TESTS.update(reattachvm.TESTS)
    DEFAULT.extend(reattachvm.DEFAULT)
    sys.exit(main(sys.argv[1:]))
