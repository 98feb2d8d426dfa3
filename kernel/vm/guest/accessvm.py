"""Instant access in the guest: `cdp mount`, `cdp diff --files` and `cdp umount` on ext4 through dm-cdp.

Run by :mod:`cdpvm` (its ``main`` adds these tests to its own, so they share
its watchdog, dmesg scan and ``cdpvm.tests=`` selection); each result line
is named ``access-...``. Everything is the real thing: the kernel filter,
the drain service, the `cdp` commands as a user types them, nbdkit with the
Python plugin, nbd-client and the kernel's nbd driver, ext4 and e2fsck.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cdpvm import DISK, Session, mark_points, sh, zero_disk

#: the scratch filesystem, mounted during the workload
WORK = "/tmp/acc-fs"
#: where `cdp mount` puts the past
PAST = "/tmp/acc-past"
PAST2 = "/tmp/acc-past2"
PAST3 = "/tmp/acc-past3"


def cdp(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The `cdp` command itself (PYTHONPATH has the project), as a user runs it."""
    return subprocess.run([sys.executable, "-m", "cdp", *args], capture_output=True, text=True, timeout=timeout)


def tree(root: str) -> dict[str, str]:
    """Every regular file under ``root`` (but lost+found): path from the root -> sha256."""
    out = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (top == root and d == "lost+found")]
        for name in files:
            path = os.path.join(top, name)
            with open(path, "rb") as f:
                out["/" + os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _mount_options(mountpoint: str) -> tuple[str, str] | None:
    """(source, per-mount options) of ``mountpoint`` in mountinfo, or None if nothing is mounted there."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mountpoint:
                sep = fields.index("-", 6)
                return fields[sep + 2], fields[5]
    return None


def _nbdkits() -> list[int]:
    """Pids of nbdkit processes (none may be left once `cdp umount` returned)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if os.path.basename(argv0) == b"nbdkit":
                pids.append(int(entry))
    return pids


def _workload(rnd: random.Random) -> tuple[dict[str, str], set[str]]:
    """Round two of the files on WORK: rewrite, grow, truncate, add, delete, chmod.

    Returns the files as they are after it, and every path the workload
    changed: the files themselves and the directories whose entries changed.
    """
    changed: set[str] = set()
    for name in ("d1/f0", "d2/f3", "top1"):                      # rewritten in place, same size
        size = os.path.getsize(f"{WORK}/{name}")
        with open(f"{WORK}/{name}", "r+b") as f:
            f.write(rnd.randbytes(size))
        changed.add("/" + name)
    with open(f"{WORK}/d1/f2", "ab") as f:                        # grown
        f.write(rnd.randbytes(50_000))
    changed.add("/d1/f2")
    os.truncate(f"{WORK}/d3/f1", 1000)                           # truncated
    changed.add("/d3/f1")
    os.chmod(f"{WORK}/d2/f1", 0o600)                             # inode only
    changed.add("/d2/f1")
    for name in ("d2/new", "d3/sub/new", "added"):               # created (d3/sub is new too)
        os.makedirs(os.path.dirname(f"{WORK}/{name}"), exist_ok=True)
        with open(f"{WORK}/{name}", "wb") as f:
            f.write(rnd.randbytes(rnd.choice([300, 9000, 120_000])))
        changed |= {"/" + name, "/" + os.path.dirname(name) if os.path.dirname(name) else "/"}
    changed |= {"/d3"}                                           # holds the new d3/sub
    for name in ("d1/f4", "top2"):                               # deleted
        os.unlink(f"{WORK}/{name}")
        changed |= {"/" + name, "/" + os.path.dirname(name) if os.path.dirname(name) else "/"}
    return tree(WORK), changed


class _Writer:
    """Files written and synced on the live filesystem in a thread: the journal grows under the exports."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.count = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rnd = random.Random(16)
        try:
            os.makedirs(f"{WORK}/live", exist_ok=True)
            while not self.stop.is_set():
                with open(f"{WORK}/live/g{self.count % 20}", "wb") as f:
                    f.write(rnd.randbytes(4096))
                    os.fsync(f.fileno())
                self.count += 1
                time.sleep(0.5)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> int:
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, f"the live writer failed: {self.error}"
        return self.count


def _mount(journal: str, mark: str, where: str, *extra: str) -> tuple[str, str, list[int]]:
    """`cdp mount` of a mark; (the nbd device, the mount's options, the nbdkit serving it)."""
    os.makedirs(where, exist_ok=True)
    before = set(_nbdkits())
    run = cdp("mount", "--journal", journal, "--at", f"mark:{mark}", where, *extra)
    assert run.returncode == 0, f"cdp mount mark:{mark}: rc {run.returncode}: {run.stderr.strip()[-300:]}"
    found = _mount_options(where)
    assert found is not None, f"nothing mounted on {where} after cdp mount said: {run.stdout.strip()}"
    device, options = found
    assert device.startswith("/dev/nbd") and "ro" in options.split(","), found
    nbd = os.path.basename(device)
    assert Path(f"/sys/block/{nbd}/ro").read_text().strip() == "1", f"{device} is connected writable"
    served_by = sorted(set(_nbdkits()) - before)
    assert len(served_by) == 1, f"nbdkit processes new with the mount: {served_by}"
    return device, options, served_by


def _same_files(where: str, want: dict[str, str], what: str) -> None:
    got = tree(where)
    assert got.keys() == want.keys(), f"files differ at {what}: missing {sorted(want.keys() - got.keys())[:5]}, " \
                                      f"extra {sorted(got.keys() - want.keys())[:5]}"
    bad = [p for p in want if got[p] != want[p]]
    assert not bad, f"{len(bad)} files read back different at {what}: {bad[:5]}"


def _umount(where: str, device: str, exports: list[int]) -> None:
    """`cdp umount` and proof it undid everything: mount, nbd connection, nbdkit, state, mount point."""
    run = cdp("umount", where)
    assert run.returncode == 0, f"cdp umount {where}: rc {run.returncode}: {run.stderr.strip()[-300:]}"
    nbd = os.path.basename(device)
    assert _mount_options(where) is None, f"{where} still mounted after cdp umount"
    assert not os.path.exists(f"/sys/block/{nbd}/pid"), f"{device} still connected after cdp umount"
    assert Path(f"/sys/block/{nbd}/size").read_text().strip() == "0", f"{device} still has a size"
    left = [p for p in exports if os.path.exists(f"/proc/{p}")]
    assert not left, f"nbdkit still running after cdp umount {where}: {left}"
    assert os.listdir(where) == [], f"{where} is not empty after cdp umount"


def t_mount() -> str:
    """ext4 on the filter, two marks. While the filesystem keeps being written (the journal grows),
    `cdp mount` of each mark at once reads back every file as it was then, e2fsck -fn is clean on
    the export, and `cdp umount` undoes all of it (the other mount unharmed, and a device it no
    longer owns left connected); `cdp diff --files`
    between the marks names exactly the paths the workload changed. A point before mkfs is
    refused in one line, leaving nothing behind."""
    rnd = random.Random(15)
    t_start = time.monotonic()
    phases: list[str] = []

    def phase(name: str) -> None:
        phases.append(f"{name}={time.monotonic() - t_start:.0f}")

    zero_disk(32)
    s = Session("acc", DISK, mb=32, opts="ring_mb=16")
    s.mark("blank")  # no filesystem yet: cdp mount refuses it
    # 1 KiB blocks and 128-byte inodes (mke2fs's "small" type, its default below 512 MiB): a
    # filesystem whose blocks are smaller than a page, which an nbd device with 4 KiB blocks refused
    sh("mkfs.ext4", "-q", "-F", "-T", "small", "-b", "1024", "-E", "lazy_itable_init=0,lazy_journal_init=0",
       s.dev)
    os.makedirs(WORK, exist_ok=True)
    sh("mount", "-t", "ext4", "-o", "noatime", s.dev, WORK)    # reading back must change no inode
    writer = None
    mounts: dict[str, str] = {}
    try:
        for d in ("d1", "d2", "d3"):
            os.mkdir(f"{WORK}/{d}")
            for i in range(5):
                with open(f"{WORK}/{d}/f{i}", "wb") as f:
                    f.write(rnd.randbytes(rnd.choice([100, 4096, 30_000, 200_000])))
        for name in ("top1", "top2"):
            with open(f"{WORK}/{name}", "wb") as f:
                f.write(rnd.randbytes(7000))
        os.sync()
        s.mark("a")
        at_a = tree(WORK)
        at_b, changed = _workload(rnd)
        os.sync()
        s.mark("b")
        s.settle()   # both marks journaled; what follows keeps the journal growing under the exports
        phase("workload")
        writer = _Writer()
        refused = _refused(s.journal_path)
        phase("refused")
        t0 = time.monotonic()
        device_a, _, export_a = _mount(s.journal_path, "a", PAST)
        mounts[PAST] = device_a
        mount_s = time.monotonic() - t0
        device_b, options_b, export_b = _mount(s.journal_path, "b", PAST2, "--fs-options", "nosuid,nodev")
        mounts[PAST2] = device_b
        assert device_a != device_b and {"nosuid", "nodev"} <= set(options_b.split(",")), (device_b, options_b)
        phase("mounts")
        _same_files(PAST, at_a, "mark a")
        _same_files(PAST2, at_b, "mark b")
        for device in (device_a, device_b):
            fsck = subprocess.run(["e2fsck", "-fn", device], capture_output=True, text=True)
            assert fsck.returncode == 0, f"e2fsck -fn {device}: rc {fsck.returncode}: {fsck.stdout[-300:]}"
        ro = subprocess.run(["touch", f"{PAST}/x"], capture_output=True, text=True)
        assert ro.returncode != 0, "the past is writable"
        phase("checks")
        # by hand, the mount of a is undone and its device freed; another cdp mount takes the
        # device: cdp umount of a stops a's export and leaves the device to its new owner
        sh("umount", PAST)
        sh("nbd-client", "-d", device_a)
        device_c, _, export_c = _mount(s.journal_path, "a", PAST3)
        mounts[PAST3] = device_c
        assert device_c == device_a, (device_c, device_a)
        run = cdp("umount", PAST)
        del mounts[PAST]
        assert run.returncode == 0 and "left alone" in run.stderr, (run.returncode, run.stderr)
        assert not any(os.path.exists(f"/proc/{p}") for p in export_a), "a's nbdkit still runs"
        assert sorted(_nbdkits()) == sorted(export_b + export_c), f"nbdkit: {_nbdkits()}"
        _same_files(PAST3, at_a, "mark a, mounted again on the device cdp umount left alone")
        phase("reused")
        _umount(PAST3, mounts.pop(PAST3), export_c)
        assert _nbdkits() == export_b, f"nbdkit processes after one cdp umount: {_nbdkits()}, wanted {export_b}"
        _same_files(PAST2, at_b, "mark b after the other mounts went")
        _umount(PAST2, mounts.pop(PAST2), export_b)
        written = writer.finish()
        writer = None
        phase("umounts")
    finally:
        if writer is not None:
            writer.stop.set()
        for where in mounts:
            cdp("umount", where)
        sh("umount", WORK, check=False)
    assert not _nbdkits(), f"nbdkit left: {_nbdkits()}"
    state = Path("/run/cdp/mounts")
    assert not state.exists() or not any(state.iterdir()), f"state left: {list(state.iterdir())}"
    s.finish()
    phase("finish")

    # cdp diff --files between the marks: exactly the workload's paths, with the right kind of change
    t0 = time.monotonic()
    run = cdp("diff", "--journal", s.journal_path, "--from", "mark:a", "--to", "mark:b", "--files", "--json")
    diff_s = time.monotonic() - t0
    assert run.returncode == 0, f"cdp diff --files: rc {run.returncode}: {run.stderr.strip()[-300:]}"
    files = {(f["path"], f["change"]) for f in json.loads(run.stdout)["files"]}
    named = {p for p, _ in files}
    assert named == changed, f"diff --files named {sorted(named - changed)} too and missed {sorted(changed - named)}"
    kinds = {p: c for p, c in files}
    for path in changed:
        want = "deleted" if path not in at_b and path in at_a else "added" if path in at_b and path not in at_a \
            else None
        if want is not None:
            assert kinds[path] == want, f"{path}: {kinds[path]}, expected {want}"
    assert kinds["/d3/sub"] == "added" and kinds["/d1/f0"] == "modified", kinds
    assert "no filesystem" in refused
    return (f"files={len(at_a)} mount_s={mount_s:.1f} live_writes={written} diff_files_s={diff_s:.1f} "
            f"changed={len(changed)} at_s:{','.join(phases)}")


def _refused(journal: str) -> str:
    """`cdp mount` of a point with no filesystem is one line and leaves nothing behind; so is
    `cdp umount` of what it did not mount."""
    before = set(_nbdkits())
    os.makedirs(PAST, exist_ok=True)
    run = cdp("mount", "--journal", journal, "--at", "mark:blank", PAST)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and "no filesystem" in lines[0], (run.returncode, lines)
    assert _mount_options(PAST) is None and set(_nbdkits()) == before, "something was left after a refused mount"
    connected = [d for d in os.listdir("/sys/block") if d.startswith("nbd") and os.path.exists(f"/sys/block/{d}/pid")]
    assert not connected, f"nbd devices left connected: {connected}"
    assert os.listdir(PAST) == [] and not any(Path("/run/cdp/mounts").glob("*")), "state left"
    run = cdp("umount", PAST)
    assert run.returncode == 1 and "was not mounted by 'cdp mount'" in run.stderr, run.stderr
    return lines[0]


TESTS: dict[str, Callable[[], str]] = {
    "access-mount": t_mount,
}
