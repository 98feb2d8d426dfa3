"""The in-place device filter's guest tests (results named ``filter-...``), run by cdpvm.py.

The filter (kernel/cdp-filter.c) hooks submit_bio_noacct and feeds the same
ring as the dm target, with no new device: these tests attach it to devices
the guest keeps using, through the control device /dev/cdpctl (cdp.filter),
and drive the real drain service and journal as cdpvm.py's tests do.

/dev/vda gets an MBR with two 128 MiB partitions for them (vda1: ext4 under
load; vda2: the stacked test); the whole-disk filter is tried on the
hot-removable disk (serial ``cdphot``, 64 MiB), which the last test has the
host remove with the qemu monitor's ``device_del`` (kernel/vm/qmpwatch.py).
At the end the partition table is wiped again.

On the 7.3-rt kernel (PREEMPT_RT) sleeping in atomic context shows at once
in dmesg, which cdpvm.py scans after every test: that, and the RT kernel's
different locking (spinlock_t sleeps, completions in threads), is how the
filter's locking is checked; Debian ships no lockdep kernel.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import hashlib
import json
import mmap
import os
import random
import struct
import subprocess
import sys
import threading
import time

from cdp import attach as cdpattach
from cdp import filter as cdpfilter
from cdp.service import drain
from cdpvm import DISK, Session, _wait_holds_ring, dm_create, dm_remove, mark_points, restore_sha, say, sh, sha_direct
from journal import Journal

BLKRRPART = 0x125F
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
PART_MB = 128
TAG = b"CDPFTAG!"          # a tagged block: TAG, the write's id (u64), random bytes
BLOCK = 4096


# ------------------------------------------------------------------ helpers

def partition_vda() -> tuple[str, str]:
    """Two 128 MiB partitions on vda (an MBR written here, then BLKRRPART); their paths."""
    mbr = bytearray(512)
    for i in range(2):
        off = 446 + 16 * i
        mbr[off + 4] = 0x83
        struct.pack_into("<II", mbr, off + 8, 2048 + i * (PART_MB << 11), PART_MB << 11)
    mbr[510:512] = b"\x55\xaa"
    _write_mbr(bytes(mbr))
    parts = (f"{DISK}1", f"{DISK}2")
    for p in parts:
        _wait_for(lambda p=p: os.path.exists(p), f"{p} to appear")
    return parts


def unpartition_vda() -> None:
    """Wipe the MBR again, so the next tests see a bare vda."""
    _write_mbr(bytes(512))
    _wait_for(lambda: not os.path.exists(f"{DISK}1"), f"{DISK}1 to go")


def _write_mbr(mbr: bytes) -> None:
    fd = os.open(DISK, os.O_RDWR)
    try:
        os.pwrite(fd, mbr, 0)
        os.fsync(fd)
        for _ in range(50):
            try:
                fcntl.ioctl(fd, BLKRRPART)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                time.sleep(0.1)
        raise RuntimeError("BLKRRPART: busy")
    finally:
        os.close(fd)


def _wait_for(cond, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ioc_errno(request: int, **fields: str) -> int:
    """The errno of one raw control ioctl (0 on success)."""
    return cdpfilter._call(request, cdpfilter._pack(**fields))


def hot_disk() -> str:
    """The hot-removable disk's node (serial cdphot)."""
    for name in sorted(os.listdir("/sys/block")):
        try:
            with open(f"/sys/block/{name}/serial") as f:
                if f.read().strip() == "cdphot":
                    return f"/dev/{name}"
        except OSError:
            continue
    raise RuntimeError("no disk with serial cdphot (kernel/vm/run.sh adds it)")


def meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")
    time.sleep(0.5)


def refcnt() -> int:
    with open("/sys/module/dm_cdp/refcnt") as f:
        return int(f.read())


class FilterSession:
    """The filter on a device in place, plus the drain service in a thread (as ``cdp attach`` + ``cdp run``)."""

    def __init__(self, name: str, device: str, *, opts: str = "ring_mb=16 policy=block wait_ms=5000",
                 drain_it: bool = True) -> None:
        self.name = name
        self.device = device
        self.ring = f"/dev/cdp/{name}"
        self.journal_path = f"/tmp/j-{name}"
        sh("rm", "-rf", self.journal_path)
        cdpfilter.attach(device, name, opts.split())
        cdpfilter.flush_device_cache(device)
        # baseline after the filter is in: a write racing the copy is also in the ring
        Journal.create(self.journal_path, device_bytes=cdpattach.device_bytes(device), source=device).close()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        if drain_it:
            self.thread.start()

    def _run(self) -> None:
        try:
            drain(self.journal_path, self.ring, device_path=self.device, until_detached=True,
                  stop=self.stop, handle_signals=False)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def mark(self, label: str) -> int:
        return cdpattach.mark(self.ring, label)[0]

    def finish(self, *, detach: bool = True, timeout: float = 300) -> None:
        """Detach (DETACHED ends the service) and wait for the service to journal the rest."""
        if detach:
            cdpfilter.detach(self.name)
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(30)
            raise RuntimeError(f"the drain service of {self.name} did not finish after DETACHED")
        if self.error is not None:
            raise RuntimeError(f"drain of {self.name} failed: {self.error}")

    def journal(self) -> Journal:
        return Journal.open(self.journal_path, readonly=True)


class TaggedWriter:
    """O_DIRECT writes of tagged 4 KiB blocks into a file (or device), each with its time span logged.

    The log is what the journal is held to: every write that started after
    attach returned and ended before detach was called is in the journal
    exactly once; none that ended before attach started or started after
    detach returned is in it at all.
    """

    def __init__(self, path: str, blocks: int, seed: int, *, first_block: int = 0) -> None:
        self.path = path
        self.blocks = blocks
        self.first = first_block
        self.rnd = random.Random(seed)
        self.log: list[tuple[int, float, float]] = []    # id, start, end (monotonic)
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.next_id = seed << 32

    def start(self) -> TaggedWriter:
        self.thread.start()
        return self

    def _run(self) -> None:
        buf = mmap.mmap(-1, BLOCK)
        fd = os.open(self.path, os.O_WRONLY | os.O_DIRECT)
        try:
            while not self.stop.is_set():
                if self.paused.is_set():
                    self.idle.set()
                    time.sleep(0.01)
                    continue
                self.idle.clear()
                self.next_id += 1
                buf.seek(0)
                buf.write(TAG + struct.pack("<Q", self.next_id) + self.rnd.randbytes(BLOCK - 16))
                t0 = time.monotonic()
                try:
                    os.pwrite(fd, buf, (self.first + self.rnd.randrange(self.blocks)) * BLOCK)
                except OSError as exc:
                    self.errors.append(exc.strerror or str(exc))
                    time.sleep(0.05)
                    continue
                self.log.append((self.next_id, t0, time.monotonic()))
        finally:
            os.close(fd)
            buf.close()

    def pause(self) -> None:
        self.paused.set()
        _wait_for(self.idle.is_set, "the writer to pause")

    def resume(self) -> None:
        self.paused.clear()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)


def journal_tags(j: Journal) -> collections.Counter[int]:
    """How often each tagged block's id appears in the journal's WRITE records (baseline excluded)."""
    seen: collections.Counter[int] = collections.Counter()
    for rec in j.records():
        if rec.type != 1 or not rec.length:    # WRITE
            continue
        data = j.read(rec.offset, rec.length, seq=rec.seq)
        for off in range(0, len(data) - 15, BLOCK):
            if data[off:off + 8] == TAG:
                seen[struct.unpack_from("<Q", data, off + 8)[0]] += 1
    return seen


def check_exactly_once(log: list[tuple[int, float, float]], seen: collections.Counter[int],
                       attach: tuple[float, float], detach: tuple[float, float]) -> str:
    """The write log against the journal: inside exactly once, outside never, at the edges at most once."""
    inside = [i for i, t0, t1 in log if t0 >= attach[1] and t1 <= detach[0]]
    before = [i for i, _t0, t1 in log if t1 <= attach[0]]
    after = [i for i, t0, _t1 in log if t0 >= detach[1]]
    missing = [i for i in inside if seen[i] != 1]
    assert not missing, f"{len(missing)} of {len(inside)} writes made while attached are not in the journal " \
                        f"exactly once (e.g. id {missing[0]:#x}: {seen[missing[0]]} times)"
    stray = [i for i in before + after if seen[i]]
    assert not stray, f"{len(stray)} writes made before attach or after detach are in the journal"
    twice = [i for i, n in seen.items() if n > 1]
    assert not twice, f"{len(twice)} writes are in the journal more than once"
    assert after, "no write after detach: the test proves nothing about it"
    return f"inside={len(inside)} before={len(before)} after={len(after)}"


def frozen_mark(s: FilterSession, mnt: str, dev: str, label: str, nbytes: int) -> tuple[int, str]:
    """Freeze the filesystem, mark, read what the device holds, thaw: the mark and the device's hash."""
    fd = os.open(mnt, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
        try:
            seq = s.mark(label)
            digest = sha_direct(dev, nbytes)
        finally:
            fcntl.ioctl(fd, FITHAW, 0)
    finally:
        os.close(fd)
    return seq, digest


# --------------------------------------------------------------------- tests

def t_filter_ext4() -> str:
    """A mounted ext4 on a partition under write load: attach, mark (frozen), detach, keep writing.

    Every tagged O_DIRECT write between attach and detach is in the journal
    exactly once and none from before or after; restores at the marks equal
    the device's bytes at the mark; FLUSH points pass e2fsck.
    """
    p1, _p2 = partition_vda()
    nbytes = cdpattach.device_bytes(p1)
    mnt = "/tmp/fmnt"
    os.makedirs(mnt, exist_ok=True)
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", p1)
    sh("mount", "-t", "ext4", p1, mnt)
    try:
        data = f"{mnt}/tagged.bin"
        with open(data, "wb") as f:        # allocated and written: O_DIRECT overwrites go straight down
            f.write(os.urandom(8 << 20))
            f.flush()
            os.fsync(f.fileno())
        writer = TaggedWriter(data, (8 << 20) // BLOCK, seed=7).start()
        churn_stop = threading.Event()

        def churn() -> None:       # buffered files and fsyncs: metadata, journal commits, flushes
            rnd = random.Random(3)
            n = 0
            while not churn_stop.is_set():
                with open(f"{mnt}/c{n % 40}", "wb") as f:
                    f.write(rnd.randbytes(rnd.choice([300, 9000, 70000])))
                    if n % 5 == 0:
                        os.fsync(f.fileno())
                n += 1
        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        time.sleep(1.0)
        t_a0 = time.monotonic()
        s = FilterSession("f-ext4", p1)
        t_a1 = time.monotonic()
        time.sleep(2.0)
        marks = []
        for i in range(2):
            marks.append(frozen_mark(s, mnt, p1, f"m{i}", nbytes))
            time.sleep(1.0)
        t_d0 = time.monotonic()
        s.finish()
        t_d1 = time.monotonic()
        time.sleep(1.5)
        writer.finish()
        churn_stop.set()
        churner.join(60)
        assert not writer.errors, f"the writer failed: {writer.errors[:3]}"
    finally:
        sh("umount", mnt, check=False)
    with s.journal() as j:
        result = check_exactly_once(writer.log, journal_tags(j), (t_a0, t_a1), (t_d0, t_d1))
        pts = mark_points(j)
        for i, (seq, digest) in enumerate(marks):
            assert pts[f"m{i}"] == seq, f"mark m{i}: journal seq {pts.get(f'm{i}')}, ring seq {seq}"
            got = restore_sha(j, seq, nbytes)
            assert got == digest, f"restore at mark m{i} differs from the device at the mark"
        flushes = [p for p in j.points(kinds=["flush"]) if p.whole]
        assert flushes, "no FLUSH points in the journal"
        for p in flushes[len(flushes) // 2::max(1, len(flushes) // 2)][:2]:
            # a crash-consistent point of a mounted ext4: what mount would see after a power cut,
            # so its journal is replayed first, then the check must find nothing
            j.restore("/tmp/ffsck.img", seq=p.seq)
            subprocess.run(["e2fsck", "-E", "journal_only", "-y", "/tmp/ffsck.img"], capture_output=True)
            r = subprocess.run(["e2fsck", "-fn", "/tmp/ffsck.img"], capture_output=True, text=True)
            os.unlink("/tmp/ffsck.img")
            assert r.returncode == 0, f"e2fsck at FLUSH seq {p.seq}: rc {r.returncode}: {r.stdout[-300:]}"
    unpartition_vda()
    return f"{result} marks={len(marks)} flush_points={len(flushes)}"


def t_filter_cycle() -> str:
    """Attach and detach 100 times under write load: module refcount back, slab and MemAvailable bounded."""
    p1, _p2 = partition_vda()
    writer = TaggedWriter(p1, 4096, seed=11).start()
    cycles = 100
    # a leaked 1 MiB ring per cycle would be 100 MiB; one leaked bitmap or queue per cycle ~1 MiB of slab
    slab_bound_kb, avail_bound_kb = 1024, 8192
    try:
        # one cycle first: the hook's and the pools' one-time allocations are not a leak
        cdpfilter.attach(p1, "f-cyc", ["ring_kb=1024", "policy=overflow"])
        cdpfilter.detach("f-cyc")
        drop_caches()
        before_ref, before, rss0 = refcnt(), meminfo(), rss_kb()
        t0 = time.monotonic()
        marks = 0
        for i in range(cycles):
            cdpfilter.attach(p1, "f-cyc", ["ring_kb=1024", "policy=overflow"])
            assert refcnt() == before_ref + 1, f"cycle {i}: refcnt {refcnt()} while attached, {before_ref} before"
            if i % 10 == 0:
                cdpattach.mark("/dev/cdp/f-cyc", f"c{i}")
                marks += 1
            cdpfilter.detach("f-cyc")
        dt = time.monotonic() - t0
        drop_caches()
        after_ref, after, rss1 = refcnt(), meminfo(), rss_kb()
    finally:
        writer.finish()
        if cdpfilter.status(name="f-cyc") is not None:
            cdpfilter.detach("f-cyc")
    assert after_ref == before_ref, f"module refcount {after_ref} after {cycles} cycles, {before_ref} before"
    slab = after["Slab"] - before["Slab"]
    # what this process grew by (the write log) is not the kernel's: MemAvailable net of it
    avail = after["MemAvailable"] - before["MemAvailable"] + (rss1 - rss0)
    assert slab <= slab_bound_kb, f"Slab grew {slab} KiB over {cycles} cycles (bound {slab_bound_kb} KiB)"
    assert avail >= -avail_bound_kb, f"MemAvailable (net of this process) fell {-avail} KiB over {cycles} " \
                                     f"cycles (bound {avail_bound_kb} KiB; one leaked ring would be 1024)"
    assert not writer.errors, f"the writer failed during the cycles: {writer.errors[:3]}"
    assert len(writer.log) > cycles, f"only {len(writer.log)} writes during {cycles} cycles: no load"
    unpartition_vda()
    return (f"cycles={cycles} ms_per_cycle={dt / cycles * 1000:.0f} writes={len(writer.log)} refcnt={after_ref} "
            f"slab_kb={slab:+d} (bound {slab_bound_kb}) memavail_kb={avail:+d} (bound -{avail_bound_kb})")


def t_filter_stacked() -> str:
    """The filter on a partition and the dm target on a device above it: two consistent journals."""
    _p1, p2 = partition_vda()
    nbytes = cdpattach.device_bytes(p2)
    f = FilterSession("f-st", p2)
    d = Session("d-st", p2)
    rnd = random.Random(5)
    buf = mmap.mmap(-1, 1 << 16)
    marks: list[tuple[str, str]] = []
    fd = os.open(d.dev, os.O_WRONLY | os.O_DIRECT)
    try:
        for round_ in range(4):
            for _ in range(150):
                n = rnd.choice([1, 4, 16]) * BLOCK
                buf.seek(0)
                buf.write(rnd.randbytes(n))
                os.pwrite(fd, memoryview(buf)[:n], rnd.randrange((nbytes - n) // BLOCK) * BLOCK)
            os.fsync(fd)
            label = f"s{round_}"
            d.mark(label)
            f.mark(label)
            marks.append((label, sha_direct(p2, nbytes)))
    finally:
        os.close(fd)
        buf.close()
    d.finish()
    f.finish()
    out = []
    for s in (f, d):
        with s.journal() as j:
            pts = mark_points(j)
            for label, digest in marks:
                assert restore_sha(j, pts[label], nbytes) == digest, \
                    f"{s.name}: restore at {label} differs from the device"
            out.append(f"{s.name}:records={j.stats().records}")
    unpartition_vda()
    return " ".join(out) + f" marks={len(marks)}"


def t_filter_errors() -> str:
    """Each refusal has its errno and the CLI's one line; rmmod is refused while attached."""
    p1, p2 = partition_vda()
    got = {}
    cdpfilter.attach(p1, "fe1", ["ring_kb=256", "policy=overflow"])
    try:
        cases = {
            "twice": (cdpfilter.IOC_ATTACH, {"device": p1, "name": "fe2"}, errno.EEXIST),
            "disk-of-part": (cdpfilter.IOC_ATTACH, {"device": DISK, "name": "fe3"}, errno.EBUSY),
            "name-taken": (cdpfilter.IOC_ATTACH, {"device": hot_disk(), "name": "fe1"}, errno.EADDRINUSE),
            "not-blk": (cdpfilter.IOC_ATTACH, {"device": "/dev/null", "name": "fe4"}, errno.ENOTBLK),
            "no-such": (cdpfilter.IOC_ATTACH, {"device": "/dev/nonexistent", "name": "fe4"}, errno.ENOENT),
            "bad-opt": (cdpfilter.IOC_ATTACH, {"device": p2, "name": "fe5", "opts": "ring_mb=3"}, errno.EINVAL),
            "bad-name": (cdpfilter.IOC_ATTACH, {"device": p2, "name": ".x"}, errno.EINVAL),
            "detach-none": (cdpfilter.IOC_DETACH, {"name": "nope"}, errno.ENOENT),
        }
        for what, (req, fields, want) in cases.items():
            err = ioc_errno(req, **fields)
            assert err == want, f"{what}: errno {errno.errorcode.get(err, err)}, wanted {errno.errorcode[want]}"
            got[what] = errno.errorcode[err]
        # rmmod: the attached filter holds the module
        libc = ctypes.CDLL(None, use_errno=True)
        r = libc.syscall(176, b"dm_cdp", os.O_NONBLOCK)    # delete_module
        err = ctypes.get_errno()
        assert r != 0 and err in (errno.EWOULDBLOCK, errno.EBUSY), f"rmmod while attached: rc {r} errno {err}"
        got["rmmod"] = errno.errorcode[err]
        # the CLI: one line, non-zero exit
        for argv, words in ((["attach", DISK, "--name", "fcli", "--journal", "/tmp/j-fcli-x"], "already has"),
                            (["detach", "nope"], "nope")):
            p = subprocess.run([sys.executable, "-m", "cdp", *argv], capture_output=True, text=True, timeout=120)
            lines = p.stderr.strip().splitlines()
            assert p.returncode != 0 and len(lines) == 1 and words in lines[0], \
                f"cdp {' '.join(argv)}: rc {p.returncode}, stderr {p.stderr.strip()[-300:]!r}"
    finally:
        cdpfilter.detach("fe1")
    got["detach-again"] = errno.errorcode[ioc_errno(cdpfilter.IOC_DETACH, name="fe1")]
    assert got["detach-again"] == "ENOENT", got
    unpartition_vda()
    return " ".join(f"{k}={v}" for k, v in got.items())


def t_filter_cli() -> str:
    """cdp attach picks the filter for a plain device and says so; status shows the mode; detach undoes it."""
    _p1, p2 = partition_vda()
    j = "/tmp/j-fcli"
    sh("rm", "-rf", j)

    def cdp(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cdp", *argv], capture_output=True, text=True, timeout=300)

    a = cdp("attach", p2, "--name", "fcli", "--journal", j, "--ring-mb", "4")
    assert a.returncode == 0, f"cdp attach: {a.stderr.strip()[-300:]}"
    assert "filter attached in place" in a.stderr, a.stderr
    service = subprocess.Popen([sys.executable, "-m", "cdp", "run", "--journal", j, "--ring", "/dev/cdp/fcli",
                                "--until-detached"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        fd = os.open(p2, os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 1 << 16)
        buf.write(os.urandom(1 << 16))
        os.pwrite(fd, buf, 1 << 20)
        os.fsync(fd)
        os.close(fd)
        buf.close()
        want = sha_direct(p2, cdpattach.device_bytes(p2))
        m = cdp("mark", "after", "--ring", "fcli")
        assert m.returncode == 0, m.stderr
        st = json.loads(cdp("status", "--journal", j, "--json").stdout)
        assert st["mode"] == "filter", st.get("mode")
        text = cdp("status", "--journal", j).stdout
        assert "mode      filter" in text, text
        d = cdp("detach", "fcli")
        assert d.returncode == 0 and "in-place filter" in d.stderr, d.stderr
        _out, err = service.communicate(timeout=120)
        assert service.returncode == 0, f"cdp run: {err.strip()[-300:]}"
    finally:
        if service.poll() is None:
            service.kill()
    st = json.loads(cdp("status", "--journal", j, "--json").stdout)
    assert st["mode"] == "none", st.get("mode")
    with Journal.open(j, readonly=True) as jj:
        assert restore_sha(jj, mark_points(jj)["after"], cdpattach.device_bytes(p2)) == want
    unpartition_vda()
    return "attach=filter status=filter->none detach=ok restore=ok"


def t_filter_hotplug() -> str:
    """A whole-disk filter; the host removes the disk (device_del): the ring gets DETACHED, no oops."""
    dev = hot_disk()
    nbytes = cdpattach.device_bytes(dev)
    s = FilterSession("f-hot", dev)
    writer = TaggedWriter(dev, nbytes // BLOCK, seed=13).start()
    time.sleep(1.0)
    writer.pause()
    seq = s.mark("before")
    digest = sha_direct(dev, nbytes)
    writer.resume()
    time.sleep(1.0)
    sysdir = f"/sys/block/{os.path.basename(dev)}"
    say("QMP", "device_del", "hot")
    _wait_for(lambda: not os.path.exists(sysdir), f"{dev} to be removed (device_del)", timeout=90)
    # the filter sees the dead disk within its watch period and detaches: the service ends
    s.finish(detach=False, timeout=60)
    writer.finish()
    assert cdpfilter.status(name="f-hot") is None, "the filter is still attached after the disk went"
    assert writer.errors, "no write failed after the disk was removed"
    with s.journal() as j:
        assert restore_sha(j, seq, nbytes) == digest, "restore at the mark before removal differs"
        records = j.stats().records
    return f"writes={len(writer.log)} failed_after={len(writer.errors)} records={records}"


def t_filter_hookcycle() -> str:
    """The hook itself registered and removed 60 times under write load (hook_idle_ms=0)."""
    p1, _p2 = partition_vda()
    knob = "/sys/module/dm_cdp/parameters/hook_idle_ms"
    with open(knob) as f:
        old = f.read().strip()
    with open(knob, "w") as f:
        f.write("0")
    writer = TaggedWriter(p1, 4096, seed=17).start()
    try:
        for _ in range(60):
            cdpfilter.attach(p1, "f-hc", ["ring_kb=1024", "policy=overflow"])
            cdpfilter.detach("f-hc")
            time.sleep(0.05)
    finally:
        writer.finish()
        with open(knob, "w") as f:
            f.write(old)
    assert not writer.errors, writer.errors[:3]
    unpartition_vda()
    return f"cycles=60 writes={len(writer.log)}"


def t_filter_bench() -> str:
    """4 KiB and 64 KiB O_DIRECT writes, interleaved: raw disk, filter with nobody draining, filter with
    cdp run, and dm-log-writes for 64 KiB; medians of three rounds of a second each."""
    p1, p2 = partition_vda()
    mb = 64
    seconds = 1.0
    names = ["raw", "filter-idle", "filter-run", "log-writes"]
    dm_create("fblogdev", f"0 {PART_MB << 11} linear {p2} 0")
    dm_create("fblog", f"0 {mb << 11} log-writes {p1} /dev/mapper/fblogdev")
    j = "/tmp/j-fbench"
    results: dict[tuple[str, int], list[float]] = {}
    cpu: dict[int, list[float]] = {}
    try:
        for bs in (4096, 65536):
            buf = mmap.mmap(-1, bs)
            buf.write(os.urandom(bs))
            for _rep in range(3):
                for name in names:
                    service = None
                    if name == "filter-idle":   # a fresh ring each round, big enough not to fill
                        cdpfilter.attach(p1, "fb", ["ring_mb=256", "policy=overflow"])
                    elif name == "filter-run":
                        sh("rm", "-rf", j)
                        cdpfilter.attach(p1, "fb", ["ring_mb=64", "policy=block", "wait_ms=5000"])
                        Journal.create(j, device_bytes=cdpattach.device_bytes(p1)).close()
                        service = subprocess.Popen([sys.executable, "-m", "cdp", "run", "--journal", j, "--ring",
                                                    "/dev/cdp/fb", "--until-detached"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                        _wait_holds_ring(service, "/dev/cdp/fb")
                    path = "/dev/mapper/fblog" if name == "log-writes" else p1
                    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
                    n = 0
                    c0 = os.times()
                    t0 = time.perf_counter()
                    while time.perf_counter() - t0 < seconds:
                        os.pwrite(fd, buf, (n * bs) % (mb << 20))
                        n += 1
                        if n % 64 == 0:
                            os.fsync(fd)
                    os.fsync(fd)
                    dt = time.perf_counter() - t0
                    c1 = os.times()
                    os.close(fd)
                    results.setdefault((name, bs), []).append(n * bs / dt / (1 << 20))
                    if name == "filter-idle":
                        cpu.setdefault(bs, []).append(((c1.user + c1.system) - (c0.user + c0.system)) / n * 1e6)
                    if name != "raw" and name != "log-writes":
                        cdpfilter.detach("fb")
                    if service is not None:
                        _o, err = service.communicate(timeout=120)
                        assert service.returncode == 0, f"cdp run: {err.strip()[-300:]}"
            buf.close()
    finally:
        if cdpfilter.status(name="fb") is not None:
            cdpfilter.detach("fb")
        for n in ("fblog", "fblogdev"):
            dm_remove(n)
    parts = []
    for bs in (4096, 65536):
        med = {n: sorted(results[(n, bs)])[1] for n in names}
        for n in names:
            say("BENCH", f"bs={bs}", f"target={n}", f"MBps={med[n]:.2f}", f"vs_raw={med[n] / med['raw']:.2f}")
        say("BENCH", f"bs={bs}", "target=filter-idle", f"writer_cpu_us_per_write={sorted(cpu[bs])[1]:.0f}")
        parts.append(f"{bs // 1024}k:idle/raw={med['filter-idle'] / med['raw']:.2f},"
                     f"idle/logwrites={med['filter-idle'] / med['log-writes']:.2f},"
                     f"run/raw={med['filter-run'] / med['raw']:.2f}")
    unpartition_vda()
    return " ".join(parts)


def _cleanup() -> None:
    """After a failed test: nothing of it left in the way of the next one."""
    sh("umount", "/tmp/fmnt", check=False)
    for name in ("f-ext4", "f-cyc", "f-st", "fe1", "fcli", "fb", "f-hot", "f-hc"):
        if cdpfilter.status(name=name) is not None:
            cdpfilter.detach(name)
    for dm in ("d-st", "fblog", "fblogdev"):
        subprocess.run(["dmsetup", "remove", dm], capture_output=True)
    if os.path.exists(f"{DISK}1"):
        unpartition_vda()


def _cleaned(fn):
    def run() -> str:
        try:
            return fn()
        except BaseException:
            try:
                _cleanup()
            except Exception as exc:  # the test's own failure is the one to report
                say("CLEANUP", type(exc).__name__, str(exc)[:200])
            raise
    run.__doc__ = fn.__doc__
    return run


TESTS = {
    "filter-ext4": _cleaned(t_filter_ext4),
    "filter-cycle": _cleaned(t_filter_cycle),
    "filter-stacked": _cleaned(t_filter_stacked),
    "filter-errors": _cleaned(t_filter_errors),
    "filter-cli": _cleaned(t_filter_cli),
    "filter-hotplug": _cleaned(t_filter_hotplug),
    "filter-bench": _cleaned(t_filter_bench),
    "filter-hookcycle": _cleaned(t_filter_hookcycle),
}
#: In cdpvm.py's default run, after the dm target's tests; hotplug last (its disk is gone after it).
DEFAULT = ["filter-errors", "filter-ext4", "filter-stacked", "filter-cli", "filter-cycle", "filter-hotplug"]
