"""The journal against an independent model of the device, over random workloads.

Hypothesis draws writes at any 512-byte aligned offset and length
(overlapping, partial blocks), discards and write-zeroes small and large
(big ones take the extent path), flushes and marks, with non-decreasing
times cut into random batches; then for random seqs and times `read` and
`restore` must equal the model byte for byte.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal, Record, RecordType
from tests.support.devices import random_device
from tests.journal.model import DeviceModel
from tests.support.journals import append_in_cuts

SIZE = (1 << 20) + 64 * 1024  # room for a >= 1 MiB zeroing extent
SECTORS = SIZE // 512


@st.composite
def operations(draw: st.DrawFn) -> list[tuple]:
    ops = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["write", "write", "write", "discard", "zeroes", "big", "flush", "mark"]))
        if kind in ("write", "discard", "zeroes"):
            start = draw(st.integers(0, SECTORS - 1))
            count = draw(st.integers(1, min(SECTORS - start, 160)))
            ops.append((kind, start * 512, count * 512))
        elif kind == "big":
            start = draw(st.integers(0, 128)) * 512
            ops.append(("big", start, 1 << 20))
        else:
            ops.append((kind, 0, 0))
    return ops


def build(tmp: Path, ops: list[tuple], seed: int, splits: list[int]) -> tuple[Journal, DeviceModel]:
    rng = random.Random(seed)
    base = random_device(SIZE, seed)
    image = tmp / "base.img"
    image.write_bytes(base)
    journal = Journal.create(tmp / "j", device_bytes=SIZE, source=image)
    model = DeviceModel(base)
    ts = journal.info.created_ns
    records = []
    for seq, (kind, offset, length) in enumerate(ops, start=1):
        ts += rng.choice([0, 1, 1000, 10**6])
        if kind == "write":
            r = Record(seq, ts, RecordType.WRITE, 0, offset, length, rng.randbytes(length))
        elif kind == "discard":
            r = Record(seq, ts, RecordType.DISCARD, 0, offset, length)
        elif kind in ("zeroes", "big"):
            r = Record(seq, ts, RecordType.WRITE_ZEROES, 0, offset, length)
        elif kind == "flush":
            r = Record(seq, ts, RecordType.FLUSH)
        else:
            r = Record(seq, ts, RecordType.MARK, data=f"m{seq}".encode())
        records.append(r)
        model.apply(r)
    append_in_cuts(journal, records, splits)
    return journal, model


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations(), seed=st.integers(0, 2**16), splits=st.lists(st.integers(0, 100), max_size=5),
       probes=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, SECTORS - 1), st.integers(1, 24)),
                       min_size=1, max_size=8))
def test_read_and_restore_match_model(tmp_path_factory: pytest.TempPathFactory, ops, seed, splits, probes) -> None:
    tmp = tmp_path_factory.mktemp("model")
    journal, model = build(tmp, ops, seed, splits)
    with journal:
        last = journal.last_seq
        assert last == len(ops)
        for pick, sector, count in probes:
            seq = pick % (last + 1)
            offset = sector * 512
            length = min(count * 512, SIZE - offset)
            assert journal.read(offset, length, seq=seq) == model.states[seq][offset:offset + length]
        seq = probes[0][0] % (last + 1)
        out = tmp / f"restore-{seq}.img"
        result = journal.restore(out, seq=seq)
        assert result.seq == seq
        assert out.read_bytes() == model.states[seq]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations(), seed=st.integers(0, 2**16), picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
def test_restore_at_time_matches_model(tmp_path_factory: pytest.TempPathFactory, ops, seed, picks) -> None:
    tmp = tmp_path_factory.mktemp("time")
    journal, model = build(tmp, ops, seed, [])
    with journal:
        first, last = journal.info.created_ns, journal.last_ts_ns
        for i, pick in enumerate(picks):
            at = first + pick * max(1, last - first + 2) // 10**6
            seq, state = model.at_time(at)
            assert journal.resolve(at) == seq
            out = tmp / f"at-{i}.img"
            assert journal.restore(out, at_ns=at).seq == seq
            assert out.read_bytes() == state


def test_hot_block_rewritten_many_times(tmp_path: Path) -> None:
    """A block written thousands of times reads back at every seq in O(1) seeks."""
    journal = Journal.create(tmp_path / "j", device_bytes=1 << 16)
    model = DeviceModel(bytes(1 << 16))
    ts = journal.info.created_ns
    batch = []
    for seq in range(1, 3001):
        r = Record(seq, ts + seq, RecordType.WRITE, 0, 4096 + (seq % 8) * 512, 512, seq.to_bytes(4, "little") * 128)
        batch.append(r)
        model.apply(r)
        if len(batch) == 500:
            journal.append(batch)
            batch = []
    for seq in (1, 7, 8, 9, 1500, 2999, 3000):
        assert journal.read(4096, 4096, seq=seq) == model.states[seq][4096:8192]
    journal.close()
