"""Journals with a known history of random records, and the device after each of them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from journal import Journal, Record, RecordType
from journal.units import NS


@dataclass
class History:
    """A journal with a known sequence of records, and the device after each of them."""

    path: Path
    baseline: bytes
    created_ns: int
    #: (seq, ts_ns, device after that record), in seq order; seq 0 is the baseline.
    states: list[tuple[int, int, bytes]] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)
    flushes: list[tuple[int, int]] = field(default_factory=list)

    def at(self, ts_ns: int) -> bytes:
        """The model's device at a time: the last state with ts <= ts_ns."""
        found = self.states[0][2]
        for _seq, ts, data in self.states:
            if ts <= ts_ns:
                found = data
            else:
                break
        return found


def build_history(path: Path, baseline: bytes, *, records: int, seed: int) -> History:
    """Journal ``records`` random writes, zeroings, flushes and marks; model every state.

    The model is a plain bytearray the same operations are applied to, kept
    apart from the journal: what `cdp restore` gives is compared with it.
    """
    rng = random.Random(seed)
    size = len(baseline)
    src = path.parent / f"{path.name}-baseline.img"
    src.write_bytes(baseline)
    model = bytearray(baseline)
    with Journal.create(path, device_bytes=size, source=src) as journal:
        hist = History(path, baseline, journal.info.created_ns)
        hist.states.append((0, hist.created_ns, bytes(model)))
        ts = hist.created_ns
        batch: list[Record] = []
        for seq in range(1, records + 1):
            ts += rng.choice([1, 1000, 1_000_000, 37_000_000])
            roll = rng.random()
            if roll < 0.70:
                sectors = rng.choice([1, 1, 8, 8, 16, 128])
                offset = rng.randrange(0, size // 512 - sectors + 1) * 512
                data = rng.randbytes(sectors * 512)
                model[offset:offset + len(data)] = data
                rec = Record(seq, ts, RecordType.WRITE, 0, offset, len(data), data)
            elif roll < 0.80:
                sectors = rng.choice([8, 64, 512])
                offset = rng.randrange(0, size // 512 - sectors + 1) * 512
                kind = rng.choice([RecordType.DISCARD, RecordType.WRITE_ZEROES])
                model[offset:offset + sectors * 512] = bytes(sectors * 512)
                rec = Record(seq, ts, kind, 0, offset, sectors * 512)
            elif roll < 0.93:
                rec = Record(seq, ts, RecordType.FLUSH)
                hist.flushes.append((seq, ts))
            else:
                name = f"m{seq}"
                rec = Record(seq, ts, RecordType.MARK, 0, 0, 0, name.encode())
                hist.marks[name] = ts
            batch.append(rec)
            hist.states.append((seq, ts, bytes(model)))
            if len(batch) >= rng.choice([1, 5, 50]):
                journal.append(batch)
                batch = []
        journal.append(batch)
    return hist


def ts_arg(ts_ns: int) -> str:
    """An exact @EPOCH TIME for a nanosecond timestamp."""
    return f"@{ts_ns // NS}.{ts_ns % NS:09d}"
