"""The simulated device: image and ring stay in step; the workload is reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdp.ring import Entry, Ring, RingError
from cdp.ringabi import RecType
from cdp.ringwriter import RingWriter
from cdp.sim import SimDevice, Workload, apply, run

SIZE = 8 << 20


def make_image(path: Path, size: int = SIZE, seed: int = 0) -> bytes:
    data = bytes(size) if seed == 0 else os.urandom(size)
    path.write_bytes(data)
    return data


def replay(base: bytearray, entries: list, image: bytes) -> bytearray:
    """Apply ring entries to a copy of the device as the journal would; OVERFLOW copies from ``image``."""
    for e in entries:
        assert isinstance(e, Entry), e
        if e.type == RecType.WRITE:
            base[e.offset:e.offset + e.length] = e.payload
        elif e.type in (RecType.DISCARD, RecType.WRITE_ZEROES):
            base[e.offset:e.offset + e.length] = bytes(e.length)
        elif e.type == RecType.OVERFLOW:
            base[e.offset:e.offset + e.length] = image[e.offset:e.offset + e.length]
    return base


def read_everything(ring: Ring) -> list:
    out = []
    while True:
        got = ring.read(1 << 20, 1 << 40)
        out += [e._replace(payload=bytes(e.payload)) if isinstance(e, Entry) else e for e in got]
        ring.release(ring.cursor)
        if not got:
            return out


def test_workload_is_reproducible_and_mixed() -> None:
    def ops(seed: int) -> list:
        workload = Workload(seed, SIZE)
        return [workload.next() for _ in range(3000)]

    a = ops(7)
    assert a == ops(7)
    assert a != ops(8)
    kinds = {op.kind for op in a}
    assert kinds == {"write", "flush", "mark", "discard", "zeroes"}
    writes = [op for op in a if op.kind == "write"]
    sizes = {op.length for op in writes}
    assert min(sizes) == 512 and max(sizes) == 1 << 20
    assert all(op.offset % 512 == 0 and op.length % 512 == 0 and op.offset + op.length <= SIZE
               and len(op.data) == op.length for op in writes)
    spans = [(op.offset, op.offset + op.length) for op in writes[:300]]
    overlaps = sum(1 for i, (s, e) in enumerate(spans) for s2, e2 in spans[:i] if s < e2 and s2 < e)
    assert overlaps > 10


def test_image_and_ring_agree(tmp_path: Path) -> None:
    original = make_image(tmp_path / "img", seed=1)
    writer = RingWriter.create(tmp_path / "ring", 64 << 20, SIZE)
    ring = Ring(tmp_path / "ring")
    with SimDevice(tmp_path / "img", writer, keep_log=True) as device:
        stats = run(device, Workload(3, SIZE), ops=400)
    assert stats.ops == 400 and stats.dropped == 0
    entries = read_everything(ring)
    assert ring.detached
    assert [e.seq for e in entries] == [rec.seq for rec in device.log] == list(range(1, len(entries) + 1))
    image = (tmp_path / "img").read_bytes()
    assert replay(bytearray(original), entries, image) == image
    assert sum(1 for e in entries if e.type == RecType.MARK) == stats.marks
    ring.close()


def test_overflow_policy_keeps_every_changed_byte_covered(tmp_path: Path) -> None:
    original = make_image(tmp_path / "img")
    writer = RingWriter.create(tmp_path / "ring", 1 << 16, SIZE)
    ring = Ring(tmp_path / "ring")
    device = SimDevice(tmp_path / "img", writer, policy="overflow")
    workload = Workload(11, SIZE, max_write=64 << 10)
    entries = []
    for i in range(600):
        apply(device, workload.next())
        if i % 50 == 49:  # a slow consumer
            entries += read_everything(ring)
            device.tick()
    device.close()
    entries += read_everything(ring)
    assert device.stats.dropped > 0
    assert any(e.type == RecType.OVERFLOW for e in entries)
    image = (tmp_path / "img").read_bytes()
    assert replay(bytearray(original), entries, image) == image


def test_block_policy_gives_up_into_overflow(tmp_path: Path) -> None:
    make_image(tmp_path / "img")
    writer = RingWriter.create(tmp_path / "ring", 1 << 16, SIZE)
    with SimDevice(tmp_path / "img", writer, policy="block", wait_ms=20) as device:
        while device.write(0, b"x" * 8192):
            pass
        assert writer.overflow and device.stats.dropped == 1


def test_image_size_must_match(tmp_path: Path) -> None:
    make_image(tmp_path / "img", SIZE // 2)
    writer = RingWriter.create(tmp_path / "ring", 1 << 16, SIZE)
    with pytest.raises(RingError, match="holds"):
        SimDevice(tmp_path / "img", writer)
    writer.close()


def test_sim_process(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cdp.sim", "--ring", str(tmp_path / "ring"),
                          "--image", str(tmp_path / "img"), "--device-mb", "8", "--ops", "200",
                          "--seed", "4", "--ring-mb", "32", "--log", str(tmp_path / "log")],
                         capture_output=True, text=True, timeout=60, check=True)
    stats = json.loads(out.stdout)
    assert stats["ops"] == 200
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == stats["records"]
    with Ring(tmp_path / "ring") as ring:
        assert ring.detached
        entries = read_everything(ring)
    assert [(e.seq, e.type, e.offset, e.length) for e in entries] == \
        [tuple(int(x) for x in (f[0], f[1], f[3], f[4])) for f in (line.split() for line in lines)]


@pytest.mark.parametrize("args, message", [
    (["--seconds", "1"], "does not exist"),
    ([], "give --seconds or --ops"),
])
def test_sim_process_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "cdp.sim", "--ring", str(tmp_path / "ring"),
                          "--image", str(tmp_path / "nope"), *args], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode != 0 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
