"""Hypothesis: garbage and damaged rings never crash the reader or get past its checks."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import crc32c
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cdp.ring import Corrupt, Entry, Ring, RingError
from cdp.ringabi import CONTROL_SIZE, REC_MAGIC, RecState, RecType, pack_control
from cdp.ringwriter import RingWriter

DATA = 1 << 16
DEVICE = 1 << 20
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_all(ring: Ring) -> list[Entry | Corrupt]:
    out: list[Entry | Corrupt] = []
    for _ in range(10_000):
        got = ring.read(max_records=7, max_bytes=20_000)
        out += got
        ring.release(ring.cursor)
        if not got:
            return out
    raise AssertionError("the reader made no progress")


def independently_checked(raw: bytes, entry: Entry) -> None:
    """Re-check an entry against the bytes, without the reader's code."""
    o = entry.pos % DATA
    magic, rtype, _flags, rec_len, data_len, seq, _ts, offset, length, dcrc, hcrc, state = \
        struct.unpack_from("<IHHIIQQQQIII", raw, o)
    assert magic == REC_MAGIC and crc32c.crc32c(raw[o:o + 52]) == hcrc
    assert state == RecState.COMMITTED and seq == entry.seq and seq > 0
    assert rec_len % 64 == 0 and 64 + data_len <= rec_len and o + rec_len <= DATA
    payload = raw[o + 64:o + 64 + data_len]
    assert bytes(entry.payload) == payload and (crc32c.crc32c(payload) if data_len else 0) == dcrc
    assert entry.data_crc == dcrc
    if rtype == RecType.WRITE and offset % 4096 == 0 and data_len % 4096 == 0:
        assert entry.block_crcs == [crc32c.crc32c(payload[i:i + 4096]) for i in range(0, data_len, 4096)]
    else:
        assert entry.block_crcs is None
    assert entry.type == rtype and RecType.WRITE <= rtype < RecType.PAD
    if rtype in (RecType.WRITE, RecType.DISCARD, RecType.WRITE_ZEROES, RecType.OVERFLOW):
        assert offset % 512 == 0 and length % 512 == 0 and 0 < length and offset + length <= DEVICE
    if rtype == RecType.WRITE:
        assert data_len == length


def forged_header(fields: tuple[int, ...]) -> bytes:
    """A header with a correct magic and hdr_crc but arbitrary field values."""
    rtype, flags, rec_len, data_len, seq, ts, offset, length, dcrc, state = fields
    body = struct.pack("<IHHIIQQQQI", REC_MAGIC, rtype, flags, rec_len, data_len, seq, ts, offset, length, dcrc)
    return body + struct.pack("<III", crc32c.crc32c(body), state, 0)


u64 = st.integers(0, 2**64 - 1)
header_fields = st.tuples(
    st.integers(0, 9), st.integers(0, 0xFFFF), st.sampled_from([0, 64, 128, 4160, 65536]) | st.integers(0, 2**32 - 1),
    st.sampled_from([0, 8, 512, 4096]) | st.integers(0, 2**32 - 1), st.integers(0, 20) | u64, u64,
    st.sampled_from([0, 512, 4096]) | u64, st.sampled_from([0, 512, 4096]) | u64,
    st.just(0) | st.integers(0, 2**32 - 1), st.integers(0, 3) | st.integers(0, 2**32 - 1))
#: Well-formed payload-less records (FLUSH, DISCARD), so that good records meet garbage.
plausible_fields = st.tuples(
    st.sampled_from([4, 2, 7]), st.integers(0, 3), st.just(64), st.just(0), st.integers(0, 40), u64,
    st.sampled_from([0, 512, DEVICE - 512]), st.sampled_from([512, 4096]), st.just(0), st.integers(0, 2))


@SETTINGS
@given(seed=st.integers(0, 2**32), noise=st.floats(0, 1), tail_blocks=st.integers(0, 1 << 30),
       used=st.integers(0, DATA // 64), flags=st.integers(0, 3),
       headers=st.lists(st.tuples(st.integers(0, DATA // 64 - 1), header_fields | plausible_fields),
                        max_size=40))
def test_random_bytes_never_crash_the_reader(seed: int, noise: float, tail_blocks: int, used: int, flags: int,
                                             headers: list) -> None:
    import random

    rng = random.Random(seed)
    raw = bytearray(rng.randbytes(DATA) if noise > 0.5 else DATA)
    for slot, fields in headers:
        raw[slot * 64:slot * 64 + 64] = forged_header(fields)
    data = bytes(raw)
    tail = tail_blocks * 64
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ring"
        path.write_bytes(pack_control(DATA, DEVICE, 512, flags=flags, head=tail + used * 64, tail=tail) + data)
        with Ring(path) as ring:
            entries = read_all(ring)
            event(f"good records: {min(3, sum(isinstance(e, Entry) for e in entries))}")
            event(f"corrupt stretches: {min(3, len(entries) - sum(isinstance(e, Entry) for e in entries))}")
            for entry in entries:
                if isinstance(entry, Entry):
                    independently_checked(data, entry)
                else:
                    assert entry.end >= entry.pos and "\n" not in entry.reason


def build_ring(path: Path, n: int, seed: int) -> list[tuple[int, int, int, bytes]]:
    """A ring file with ``n`` committed records (wrapping); returns (seq, type, offset, payload)."""
    import random

    rng = random.Random(seed)
    writer = RingWriter.create(path, DATA, DEVICE)
    reader = Ring(path)
    kept = []
    for _ in range(n):
        while writer.free() < 20_000:  # keep room: these tests do not exercise overflow
            reader.read(max_records=rng.randint(1, 50))
            reader.release(reader.cursor)
        kind = rng.choice([RecType.WRITE] * 4 + [RecType.FLUSH, RecType.MARK, RecType.DISCARD])
        if kind == RecType.WRITE:
            size = 512 * rng.randint(1, 16)
            data = rng.randbytes(size)
            slots = writer.submit(kind, offset=512 * rng.randrange(DEVICE // 512 - 16), length=size, data=data)
        elif kind == RecType.MARK:
            data = f"m{rng.random()}".encode()
            slots = writer.submit(kind, data=data)
        else:
            data = b""
            slots = writer.submit(kind, offset=0, length=4096)
        assert slots
        for slot in slots:
            slot.commit() if rng.random() > 0.1 else slot.discard()
            if slot.done and writer._data32[((slot.pos % DATA) >> 2) + 14] == RecState.COMMITTED:
                kept.append((slot.seq, int(kind), data))
    reader.close()
    writer.close(detach=False)
    return kept


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(1, 60),
       hits=st.lists(st.tuples(st.integers(0, DATA - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_records_are_never_yielded_as_good(seed: int, n: int, hits: list[tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ring"
        kept = {seq: (kind, data) for seq, kind, data in build_ring(path, n, seed)}
        raw = bytearray(path.read_bytes())
        for pos, value in hits:
            raw[CONTROL_SIZE + pos] = value
        path.write_bytes(raw)
        data = bytes(raw[CONTROL_SIZE:])
        try:
            ring = Ring(path)
        except RingError:
            return
        with ring:
            for entry in read_all(ring):
                if isinstance(entry, Entry):
                    independently_checked(data, entry)
                    # whatever survived is exactly what was committed under that seq
                    assert entry.seq in kept, entry
                    assert (entry.type, bytes(entry.payload)) == kept[entry.seq]
