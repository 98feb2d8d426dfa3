"""Reattach's guest tests (``reattach-filter``, ``reattach-dm``), run by cdpvm.py: the boot unit's lines.

systemd/cdp-attach@.service is what attaches a device at boot and detaches
it at shutdown. The guest has no systemd, so this test reads the unit's
ExecStartPre, ExecStart and ExecStop lines and runs them as systemd would
(``%i`` the instance, ``$VAR`` from the instance's conf file, split into
words, ``$MAINPID`` the drain's pid), on a 32 MiB partition of vda with the
in-place filter, and again with ``--via dm`` (/dev/mapper/ra over it):

1. "first boot": the journal does not exist, attach creates it; writes;
   "shutdown" (detach, the drain journals the ring to its end);
2. the gap: random blocks written straight to the raw partition;
3. "second boot": attach continues the journal; the compare copies exactly
   the changed blocks; writes; shutdown; restores at a mark before the gap
   and one after it equal the device as it was (O_DIRECT hashes);
4. "clean reboot": attach again at once: nothing differs, the window closes
   with no record of the device's inside it.
"""

from __future__ import annotations

import mmap
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

from cdp import attach as cdpattach
from cdp import filter as cdpfilter
from cdpvm import DISK, mark_points, restore_sha, sha_direct
from filtervm import _wait_for, _write_mbr
from journal import Journal
from journal.records import RecordFlag, RecordType

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "cdp-attach@.service"
NAME = "ra"
PART_MB = 32
BLOCK = 4096
JOURNAL = "/tmp/j-ra"
CONF = "/tmp/cdp-conf/ra.conf"


def _partition() -> str:
    """One 32 MiB partition on vda; its path."""
    mbr = bytearray(512)
    mbr[446 + 4] = 0x83
    mbr[446 + 8:446 + 16] = (2048).to_bytes(4, "little") + (PART_MB << 11).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    _write_mbr(bytes(mbr))
    part = f"{DISK}1"
    _wait_for(lambda: os.path.exists(part), f"{part} to appear")
    return part


def _unpartition() -> None:
    _write_mbr(bytes(512))
    _wait_for(lambda: not os.path.exists(f"{DISK}1"), f"{DISK}1 to go")


def unit_lines(unit: Path) -> dict[str, str]:
    """The unit's Exec lines by key (ExecStartPre, ExecStart, ExecStop)."""
    out = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ExecStartPre", "ExecStart", "ExecStop"):
            out[key] = value
    return out


def expand(line: str, env: dict[str, str]) -> list[str]:
    """A unit's command line as systemd runs it: %i, then $VAR split into words, ${VAR} as one."""
    words = []
    for word in shlex.split(line.replace("%i", NAME)):
        if word.startswith("${") and word.endswith("}"):
            words.append(env[word[2:-1]])
        elif word.startswith("$") and word[1:] in env:
            words.extend(env[word[1:]].split())
        else:
            words.append(word)
    return words


class Unit:
    """cdp-attach@ra run by hand: start (pre + main), stop (ExecStop with $MAINPID)."""

    def __init__(self, device: str, opts: str = "") -> None:
        os.makedirs(os.path.dirname(CONF), exist_ok=True)
        self.env = {"DEVICE": device, "JOURNAL": JOURNAL, "ATTACH_OPTS": f"--ring-mb 4 {opts}".strip()}
        with open(CONF, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in self.env.items()))
        self.lines = unit_lines(UNIT)
        # `cdp` on PATH, as the package installs it
        os.makedirs("/tmp/ra-bin", exist_ok=True)
        shim = "/tmp/ra-bin/cdp"
        with open(shim, "w") as f:
            f.write(f"#!/bin/sh\nexec {sys.executable} -m cdp \"$@\"\n")
        os.chmod(shim, 0o755)
        self.proc_env = dict(os.environ, PATH=f"/tmp/ra-bin:{os.environ.get('PATH', '/usr/bin:/bin')}")
        self.main: subprocess.Popen[str] | None = None

    def start(self) -> str:
        pre = subprocess.run(expand(self.lines["ExecStartPre"], self.env), capture_output=True, text=True,
                             env=self.proc_env, timeout=600)
        assert pre.returncode == 0, f"ExecStartPre: {pre.stderr.strip()[-400:]}"
        self.main = subprocess.Popen(expand(self.lines["ExecStart"], self.env), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=self.proc_env)
        return pre.stderr

    def stop(self) -> None:
        """ExecStop while the drain runs; like systemd, this process reaps the drain when it ends
        (an unreaped one would stay a zombie, alive to ExecStop's ``kill -0``)."""
        assert self.main is not None
        env = dict(self.proc_env, MAINPID=str(self.main.pid))
        stop = subprocess.Popen(expand(self.lines["ExecStop"], self.env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        _out, err = self.main.communicate(timeout=300)   # the drain ends by itself once detached
        assert self.main.returncode == 0, f"ExecStart (cdp run): {err.strip()[-300:]}"
        _out, stop_err = stop.communicate(timeout=60)    # and ExecStop returns once it has ended
        assert stop.returncode == 0, f"ExecStop: {stop_err.strip()[-300:]}"
        self.main = None

    def mark(self, name: str) -> None:
        """`cdp mark NAME` on the unit's ring, as an admin would while it runs."""
        run = subprocess.run(["/tmp/ra-bin/cdp", "mark", name, "--ring", NAME], capture_output=True, text=True,
                             env=self.proc_env)
        assert run.returncode == 0, run.stderr

    def kill(self) -> None:
        if self.main is not None and self.main.poll() is None:
            self.main.kill()
            self.main.wait()


def _write_blocks(device: str, blocks: list[int], seed: int) -> None:
    """Random 4 KiB blocks written with O_DIRECT (the device itself, no cache in between)."""
    rng = random.Random(seed)
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)
    try:
        for b in blocks:
            buf.seek(0)
            buf.write(rng.randbytes(BLOCK))
            os.pwrite(fd, buf, b * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()


def _copied_after(seq: int) -> tuple[int, int]:
    """(blocks copied by RESYNC records, other records that wrote) after ``seq``."""
    copied = others = 0
    with Journal.open(JOURNAL, readonly=True) as j:
        for r in j.records(seq + 1):
            if r.type == RecordType.RESYNC:
                if not r.flags & RecordFlag.UNCHANGED:
                    copied += r.length // BLOCK
            elif r.type in (RecordType.WRITE, RecordType.DISCARD, RecordType.WRITE_ZEROES):
                others += 1
    return copied, others


def _last_seq() -> int:
    with Journal.open(JOURNAL, readonly=True) as j:
        return j.last_seq


def t_reattach_filter() -> str:
    """The boot unit's lines with the filter: first boot, a gap written raw, reattach, a clean reboot."""
    return _reattach(via="filter")


def t_reattach_dm() -> str:
    """The same with ATTACH_OPTS=--via dm: the system writes through /dev/mapper/ra, the gap the raw partition."""
    return _reattach(via="dm")


def _reattach(via: str) -> str:
    part = _partition()
    subprocess.run(["rm", "-rf", JOURNAL], check=True)
    size = cdpattach.device_bytes(part)
    nblocks = size // BLOCK
    unit = Unit(part, "--via dm" if via == "dm" else "")
    # seeds of this variant's own: the partition still holds the other variant's blocks, and a
    # gap that rewrote them with the same bytes would change nothing (rightly copied: 0)
    base = 10 if via == "dm" else 0
    # where the system writes while captured: the partition itself, or the dm device over it
    live = part if via == "filter" else f"/dev/mapper/{NAME}"
    try:
        err = unit.start()                                 # first boot: a new journal
        assert ("filter attached in place" if via == "filter" else "dm target: created") in err, err[-300:]
        _write_blocks(live, random.Random(base + 1).sample(range(nblocks), 40), seed=base + 1)
        unit.mark("before-gap")
        before = sha_direct(part, size)
        unit.stop()
        assert cdpfilter.status(name=NAME) is None and not os.path.exists(f"/dev/mapper/{NAME}")

        gap = sorted(random.Random(base + 2).sample(range(nblocks), 25))   # written behind cdp's back
        _write_blocks(part, gap, seed=base + 2)
        seq = _last_seq()
        err = unit.start()                                 # second boot: the journal goes on
        assert "differed" in err, err[-300:]
        copied, _ = _copied_after(seq)
        assert copied == len(gap), f"the compare copied {copied} blocks for {len(gap)} changed: {err[-400:]}"
        _write_blocks(live, random.Random(base + 3).sample(range(nblocks), 30), seed=base + 3)
        unit.mark("after-gap")
        after = sha_direct(part, size)
        unit.stop()

        seq = _last_seq()
        unit.start()                                       # a clean reboot: no gap at all
        copied, others = _copied_after(seq)
        with Journal.open(JOURNAL, readonly=True) as j:
            open_windows = [w for w in j.overflow_windows() if w.resync_seq is None]
            marks = mark_points(j)
            assert restore_sha(j, marks["before-gap"], size) == before, "restore before the gap differs"
            assert restore_sha(j, marks["after-gap"], size) == after, "restore after the gap differs"
        assert copied == 0 and others == 0 and not open_windows, (copied, others, open_windows)
        unit.stop()
    finally:
        unit.kill()
        if cdpfilter.status(name=NAME) is not None:
            cdpfilter.detach(NAME)
        if os.path.exists(f"/dev/mapper/{NAME}"):
            subprocess.run(["dmsetup", "remove", NAME], capture_output=True)
        _unpartition()   # the next test sees a bare vda, whatever happened here
    return f"via={via} gap={len(gap)} copied={len(gap)} clean-reboot copied=0 restores=2"


TESTS = {"reattach-filter": t_reattach_filter, "reattach-dm": t_reattach_dm}
DEFAULT = ["reattach-filter", "reattach-dm"]
