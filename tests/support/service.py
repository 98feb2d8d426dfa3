"""Drain-service setups for tests: a real image, its journal, a fresh ring, and the processes around them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cdp.ringwriter import RingWriter
from journal import Journal, RecordType
from tests.support.devices import write_device

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Setup:
    image: Path
    journal: Path
    ring: Path
    log: Path
    size: int


def make_setup(tmp_path: Path, size: int = 16 << 20, ring_size: int = 8 << 20, seed: int = 1) -> Setup:
    """An image with random content, a journal whose baseline is that image, a fresh ring."""
    image = tmp_path / "device.img"
    write_device(image, size, seed, zero_fraction=0.0)
    Journal.create(tmp_path / "journal", device_bytes=size, source=image).close()
    RingWriter.create_file(tmp_path / "ring", ring_size, size)
    return Setup(image, tmp_path / "journal", tmp_path / "ring", tmp_path / "sim.log", size)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def sim_process(s: Setup, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cdp.sim", "--ring", str(s.ring), "--image", str(s.image),
                             "--log", str(s.log), *args], env=env(), stdout=subprocess.PIPE, text=True)


def drain_process(s: Setup, *args: str, crash_after: int | None = None) -> subprocess.Popen:
    e = env()
    if crash_after is not None:
        e["CDP_DRAIN_CRASH_BEFORE_RELEASE"] = str(crash_after)
    return subprocess.Popen([sys.executable, "-m", "cdp.service", "--journal", str(s.journal),
                             "--ring", str(s.ring), *args], env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_log(path: Path) -> list[tuple[int, int, int, int]]:
    """(type, flags, offset, length) of every record the simulator published, in ring order."""
    out = []
    for line in path.read_text().splitlines():
        _seq, rtype, flags, offset, length, _crc = (int(x) for x in line.split())
        out.append((rtype, flags, offset, length))
    return out


def check_journal(s: Setup, *, exact_log: bool = True) -> Journal:
    """The journal's latest state is the image; its seqs have no gap; it holds each ring record once."""
    j = Journal.open(s.journal, readonly=True)
    image = s.image.read_bytes()
    assert j.read(0, s.size) == image, "journal content differs from the device image"
    infos = list(j.records())
    assert [r.seq for r in infos] == list(range(1, j.last_seq + 1)), "journal seqs have a gap or a duplicate"
    if exact_log:
        ring_types = {int(t) for t in RecordType if t < RecordType.RESYNC}
        got = [(r.type, r.flags, r.offset, r.length) for r in infos if r.type in ring_types]
        assert got == read_log(s.log), "journal records differ from what the producer published"
    return j
