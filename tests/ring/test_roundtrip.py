"""Producer and consumer on one real ring file: wrap, commit order, overflow, damage."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from cdp.ring import Corrupt, Entry, Ring, RingError
from cdp.ringabi import (
    CONTROL_SIZE,
    OFF_TAIL,
    REC_OFF_DATA_CRC,
    REC_OFF_SEQ,
    RING_FLAG_DETACHED,
    RING_FLAG_OVERFLOW,
    RecFlag,
    RecType,
    pack_control,
)
from cdp.ringwriter import RingWriter
from tests.support.ring import DEVICE, drain, write


def pattern(i: int, size: int) -> bytes:
    return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]


def test_geometry_and_empty(ring_pair) -> None:
    _writer, ring = ring_pair()
    assert (ring.data_size, ring.device_bytes, ring.block_size) == (1 << 16, DEVICE, 512)
    assert ring.device_id == bytes(range(16))
    assert ring.head == ring.tail == ring.cursor == 0
    assert ring.read() == [] and not ring.overflow and not ring.detached and ring.dropped == 0


def test_roundtrip_through_many_wraps(ring_pair) -> None:
    writer, ring = ring_pair()
    seen: list[Entry] = []
    sizes = [512, 4096, 1536, 8192, 512 * 7]
    for i in range(300):
        size = sizes[i % len(sizes)]
        assert write(writer, (i * 4096) % DEVICE, pattern(i, size), RecFlag.FUA if i % 3 == 0 else 0)
        if i % 4 == 3:
            got = ring.read()
            assert all(isinstance(e, Entry) for e in got)
            seen += [e._replace(payload=bytes(e.payload)) for e in got]
            ring.release(ring.cursor)
    seen += [e._replace(payload=bytes(e.payload)) for e in drain(ring)]
    assert [e.seq for e in seen] == list(range(1, 301))
    assert ring.head > 4 * ring.data_size  # wrapped several times (PADs skipped)
    for i, e in enumerate(seen):
        size = sizes[i % len(sizes)]
        assert (e.type, e.offset, e.length, e.payload) == (RecType.WRITE, (i * 4096) % DEVICE, size, pattern(i, size))
        assert e.flags == (RecFlag.FUA if i % 3 == 0 else 0)
        assert e.pos % 64 == 0 and e.end - e.pos == (64 + size + 63) // 64 * 64
    assert [e.ts_ns for e in seen] == sorted(e.ts_ns for e in seen)
    assert ring.tail == ring.head


def test_every_record_type(ring_pair) -> None:
    writer, ring = ring_pair()
    for kind, kw in [(RecType.DISCARD, {"offset": 0, "length": 1 << 20}),
                     (RecType.WRITE_ZEROES, {"offset": 4096, "length": 512}),
                     (RecType.FLUSH, {}), (RecType.MARK, {"data": "before upgrade ✓".encode()})]:
        for slot in writer.submit(kind, **kw):
            slot.commit()
    got = ring.read()
    assert [(e.type, e.offset, e.length, bytes(e.payload)) for e in got] == [
        (RecType.DISCARD, 0, 1 << 20, b""), (RecType.WRITE_ZEROES, 4096, 512, b""),
        (RecType.FLUSH, 0, 0, b""), (RecType.MARK, 0, 0, "before upgrade ✓".encode())]


def test_out_of_order_commit_and_busy_stop(ring_pair) -> None:
    writer, ring = ring_pair()
    a, b, c = (write(writer, i * 512, pattern(i, 512), commit=False)[0] for i in range(3))
    c.commit()
    b.commit()
    assert ring.read() == []  # a is still BUSY: nothing after it is read
    assert ring.cursor == 0
    a.commit()
    assert [e.seq for e in ring.read()] == [1, 2, 3]


def test_discarded_records_are_skipped_but_keep_seq(ring_pair) -> None:
    writer, ring = ring_pair()
    slots = [write(writer, i * 512, pattern(i, 512), commit=False)[0] for i in range(4)]
    slots[1].discard()
    slots[0].commit()
    slots[3].commit()
    slots[2].discard()
    got = ring.read()
    assert [e.seq for e in got] == [1, 4] and all(isinstance(e, Entry) for e in got)
    with pytest.raises(RingError, match="already committed"):
        slots[1].commit()


def test_large_write_is_split_with_one_timestamp(ring_pair) -> None:
    writer, ring = ring_pair(1 << 17)
    data = os.urandom(100 * 1024)
    slots = write(writer, 8192, data, RecFlag.PREFLUSH | RecFlag.FUA)
    assert len(slots) == 4  # max payload is a quarter of the data area
    got = drain(ring)
    assert b"".join(bytes(e.payload) for e in got) == data
    assert [e.offset for e in got] == [8192 + k * 32768 for k in range(4)]
    assert len({e.ts_ns for e in got}) == 1
    assert [e.flags for e in got] == [3, 1, 1, 1]  # PREFLUSH only on the first piece


def test_overflow_policy_remembers_ranges(ring_pair) -> None:
    writer, ring = ring_pair()
    n = 0
    while write(writer, n * 8192, pattern(n, 8192)):
        n += 1
    assert writer.overflow and ring.overflow and ring.dropped == 1
    first_drop = writer.now()
    # more writes while full: dropped and remembered, including one far away
    assert write(writer, 0, pattern(99, 8192)) == []
    assert write(writer, DEVICE - 8192, pattern(98, 8192)) == []
    assert ring.dropped == 3
    early = [e.seq for e in drain(ring)]
    assert early == list(range(1, n + 1))
    assert ring.overflow  # nothing emitted until the producer tries again
    assert write(writer, 4096, pattern(7, 4096))
    got = drain(ring)
    assert not ring.overflow and not writer.overflow
    overflow = [e for e in got if e.type == RecType.OVERFLOW]
    covered = [(e.offset, e.offset + e.length) for e in overflow]
    # dropped: [n*8192, +8192), [0, 8192), [DEVICE-8192, DEVICE), remembered in 64 KiB chunks
    assert covered[0] == (0, 65536) and covered[-1] == (DEVICE - 65536, DEVICE)
    assert len(covered) <= 3 and all(lo % 65536 == 0 for lo, _ in covered)
    for start, end in [(n * 8192, n * 8192 + 8192), (0, 8192), (DEVICE - 8192, DEVICE)]:
        assert any(lo <= start and end <= hi for lo, hi in covered)
    ts_first = {struct.unpack("<Q", e.payload)[0] for e in overflow}
    assert len(ts_first) == 1 and ts_first.pop() <= first_drop
    assert got[-1].type == RecType.WRITE and got[-1].seq == overflow[-1].seq + 1
    assert [e.seq for e in got] == list(range(n + 1, got[-1].seq + 1))


def test_block_policy_waits_for_room(ring_pair) -> None:
    writer, ring = ring_pair()
    while writer.free() >= 2 * 8256:
        write(writer, 0, pattern(1, 8192))
    assert not writer.overflow
    import threading
    threading.Timer(0.05, lambda: (ring.read(), ring.release(ring.cursor))).start()
    slots = writer.submit(RecType.WRITE, offset=0, length=8192, data=pattern(0, 8192), wait_s=5)
    slots += writer.submit(RecType.WRITE, offset=0, length=8192, data=pattern(0, 8192), wait_s=5)
    assert len(slots) == 2 and not writer.overflow and ring.dropped == 0


def test_no_second_wait_once_dropping(ring_pair) -> None:
    writer, ring = ring_pair()
    while write(writer, 0, pattern(1, 8192)):
        pass
    import time
    start = time.monotonic()
    assert writer.submit(RecType.WRITE, offset=0, length=8192, data=pattern(0, 8192), wait_s=5) == []
    assert time.monotonic() - start < 1 and ring.dropped == 2


def test_close_sets_detached_and_flushes_overflow(ring_pair) -> None:
    writer, ring = ring_pair()
    while write(writer, 0, pattern(1, 8192)):
        pass
    assert ring.flags & RING_FLAG_OVERFLOW
    drain(ring)
    writer.close()
    assert ring.flags == RING_FLAG_DETACHED
    assert [e.type for e in drain(ring)] == [RecType.OVERFLOW]


def test_busy_record_left_by_detached_producer(ring_pair) -> None:
    writer, ring = ring_pair()
    write(writer, 0, pattern(1, 512))
    write(writer, 4096, pattern(2, 1024), commit=False)
    write(writer, 8192, pattern(3, 512), commit=True)
    assert [e.seq for e in ring.read()] == [1]
    writer.close()
    got = ring.read()
    assert isinstance(got[0], Corrupt) and got[0].seq == 2 and "BUSY" in got[0].reason
    assert (got[0].offset, got[0].length) == (4096, 1024)
    assert isinstance(got[1], Entry) and got[1].seq == 3


def test_producer_ignores_a_bogus_tail(ring_pair) -> None:
    writer, ring = ring_pair()
    for i in range(4):
        write(writer, 0, pattern(i, 8192))
    head = writer.head
    with open(ring.path, "r+b") as f:  # a consumer claiming to have released the future
        f.seek(OFF_TAIL)
        f.write(struct.pack("<Q", head + (1 << 16)))
    assert writer.free() == (1 << 16) - head
    with open(ring.path, "r+b") as f:
        f.seek(OFF_TAIL)
        f.write(struct.pack("<Q", 64 * 5))
    assert writer.free() == (1 << 16) - head + 320


def _damage(ring: Ring, pos: int, offset: int, data: bytes) -> None:
    with open(ring.path, "r+b") as f:
        f.seek(CONTROL_SIZE + (pos & (ring.data_size - 1)) + offset)
        f.write(data)


def test_bad_payload_crc_is_reported_with_its_range(ring_pair) -> None:
    writer, ring = ring_pair()
    slots = [write(writer, i * 4096, pattern(i, 4096))[0] for i in range(3)]
    _damage(ring, slots[1].pos, 64 + 100, b"\xff")
    got = ring.read()
    assert [type(e).__name__ for e in got] == ["Entry", "Corrupt", "Entry"]
    bad = got[1]
    assert (bad.seq, bad.offset, bad.length, bad.pos) == (2, 4096, 4096, slots[1].pos)
    assert "CRC" in bad.reason and bad.range_known


def test_bad_header_is_skipped_by_scanning(ring_pair) -> None:
    writer, ring = ring_pair()
    slots = [write(writer, i * 4096, pattern(i, 4096))[0] for i in range(3)]
    _damage(ring, slots[1].pos, REC_OFF_SEQ, b"\x09")
    got = ring.read()
    assert [type(e).__name__ for e in got] == ["Entry", "Corrupt", "Entry"]
    assert got[1].seq is None and not got[1].range_known
    assert got[1].pos == slots[1].pos and got[1].end == slots[2].pos
    assert "CRC" in got[1].reason and got[2].seq == 3


def test_seq_gap_is_reported(ring_pair, tmp_path: Path) -> None:
    writer, ring = ring_pair()
    write(writer, 0, pattern(0, 512))
    writer._seq += 5  # a producer that lost records
    write(writer, 0, pattern(1, 512))
    got = ring.read()
    assert isinstance(got[1], Corrupt) and "jumps from 1 to 7" in got[1].reason and not got[1].range_known
    assert isinstance(got[2], Entry) and got[2].seq == 7


def test_data_crc_field_damage(ring_pair) -> None:
    writer, ring = ring_pair()
    slot = write(writer, 0, pattern(0, 512))[0]
    _damage(ring, slot.pos, REC_OFF_DATA_CRC, b"\0\0\0\0")  # hdr_crc now fails
    got = ring.read()
    assert len(got) == 1 and isinstance(got[0], Corrupt) and got[0].end == ring.head


def test_release_bounds(ring_pair) -> None:
    writer, ring = ring_pair()
    write(writer, 0, pattern(0, 512))
    with pytest.raises(RingError, match="cannot release"):
        ring.release(64 * 9)
    ring.read()
    ring.release(ring.cursor)
    assert ring.tail == ring.cursor == writer.head


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.write_bytes(b"hello"), "too small"),
    (lambda p: p.write_bytes(bytes(8192)), "not a cdp ring"),
    (lambda p: p.write_bytes(pack_control(1 << 16, 4096, 512)[:4] + struct.pack("<I", 2) + bytes(4088 + 65536)),
     "ABI version 2"),
    (lambda p: p.write_bytes(pack_control(3 << 16, 4096, 512) + bytes(3 << 16)), "power of two"),
    (lambda p: p.write_bytes(pack_control(1 << 16, 4096, 512) + bytes(100)), "holds"),
    (lambda p: p.write_bytes(pack_control(1 << 16, 4096, 512, head=64) + bytes(1 << 16)[:-1] + b"\0"), None),
    (lambda p: p.write_bytes(pack_control(1 << 16, 4096, 512, head=100) + bytes(1 << 16)), "inconsistent"),
    (lambda p: p.mkdir(), "Is a directory"),
    (lambda p: os.mkfifo(p), "neither"),
    (lambda p: None, "No such file"),
])
def test_bad_ring_files(tmp_path: Path, setup, message: str | None) -> None:
    path = tmp_path / "r"
    setup(path)
    if message is None:
        Ring(path).close()
        return
    with pytest.raises(RingError, match=message) as info:
        Ring(path)
    assert "\n" not in str(info.value)


def test_one_consumer_at_a_time(ring_pair) -> None:
    _writer, ring = ring_pair()
    with pytest.raises(RingError, match="another process"):
        Ring(ring.path)


def test_attach_refuses_a_used_ring(ring_pair) -> None:
    writer, ring = ring_pair()
    write(writer, 0, pattern(0, 512))
    with pytest.raises(RingError, match="already used"):
        RingWriter.attach(ring.path)


def test_lock_is_released_even_while_payload_views_live(ring_pair) -> None:
    writer, ring = ring_pair()
    write(writer, 0, pattern(0, 512))
    kept = ring.read()
    path = ring.path
    ring.close()
    with Ring(path) as again:  # a view into the old mapping must not keep the ring locked
        assert again.read()[0].seq == 1
    assert bytes(kept[0].payload) == pattern(0, 512)
