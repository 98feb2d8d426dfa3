"""An independent model of a block device for checking the journal.

It knows nothing of blocks, masks, segments or LMDB: a bytearray with the
ring's records applied in seq order, and the state remembered after each.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from journal import Record, RecordType


@dataclass
class DeviceModel:
    """The device's bytes after every seq, and each seq's time."""

    baseline: bytes
    states: dict[int, bytes] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    #: seqs whose state is remembered (None: every seq)
    keep: set[int] | None = None

    def __post_init__(self) -> None:
        self.current = bytearray(self.baseline)
        self.states[0] = bytes(self.baseline)

    def apply(self, r: Record) -> None:
        if r.type in (RecordType.WRITE, RecordType.RESYNC):
            self.current[r.offset:r.offset + r.length] = bytes(r.data)
        elif r.type in (RecordType.DISCARD, RecordType.WRITE_ZEROES):
            self.current[r.offset:r.offset + r.length] = bytes(r.length)
        if self.keep is None or r.seq in self.keep:
            self.states[r.seq] = bytes(self.current)
        self.seqs.append(r.seq)
        self.times.append(r.ts_ns)

    def at_time(self, ts_ns: int) -> tuple[int, bytes]:
        """(seq, bytes) of the device at a time: every record with ts <= T."""
        i = bisect.bisect_right(self.times, ts_ns)
        seq = self.seqs[i - 1] if i else 0
        return seq, self.states[seq]
