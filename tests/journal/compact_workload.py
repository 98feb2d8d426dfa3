"""A deterministic workload for the compaction tests, and a process that compacts it.

Records span simulated hours (a few seconds to minutes apart) so that
retention tiers of minutes and hours have points to thin; most writes land
in a small hot region, so whole segments die as the hot blocks are
rewritten, and flushes, marks and user marks give the policy points to keep.

Run ``python -m tests.journal.compact_workload DIR NOW_NS`` to compact the
journal at DIR as of NOW_NS (the crash tests kill it part-way).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

from journal import Journal, Record, RecordType

SIZE = 128 * 1024
SEGMENT = 48 * 1024
S = 1_000_000_000


_WORDS = [b"def ", b"return ", b"self", b".path", b"(", b")", b"\n    ", b"import ", b"journal", b"# "]


def mixed(rng: random.Random, n: int) -> bytes:
    """Payload bytes a compressing journal stores all three ways: text, zeros, random, 2 KiB at a time."""
    out = bytearray()
    while len(out) < n:
        kind = rng.random()
        if kind < 0.5:
            piece = b"".join(rng.choice(_WORDS) for _ in range(400))[:2048]
        elif kind < 0.75:
            piece = bytes(2048)
        else:
            piece = rng.randbytes(2048)
        out += piece
    return bytes(out[:n])


def records(seed: int, count: int, created_ns: int, first_seq: int = 1,
            start_ns: int | None = None,
            payload: Callable[[random.Random, int], bytes] | None = None) -> list[Record]:
    """``count`` records from ``first_seq`` on, each a few seconds to minutes after the last.

    ``payload(rng, n)`` makes each write's bytes (default: random).
    """
    rng = random.Random(seed)
    data = payload if payload is not None else (lambda r, n: r.randbytes(n))
    ts = created_ns if start_ns is None else start_ns
    out = []
    # an overflow range waiting for its resync: (offset, length, due, bytes resynced so far)
    window: tuple[int, int, int, int] | None = None
    for seq in range(first_seq, first_seq + count):
        roll = rng.random()
        if window is not None and seq >= window[2]:
            # the service copies the dropped range back from the device, a piece at a time for a
            # long one (a compaction can come between the pieces); the window closes with the last;
            # the journal stamps a resync with the time of the record before it (its own is the read's)
            offset, length, _due, done = window
            piece = length - done if rng.random() < 0.5 else rng.randrange(1, (length - done) // 512 + 1) * 512
            out.append(Record(seq, ts, RecordType.RESYNC, 0, offset + done, piece, rng.randbytes(piece)))
            done += piece
            window = None if done == length else (offset, length, seq + rng.randrange(2, 12), done)
            continue
        ts += rng.choice([1, 5, 30, 90, 600]) * S + rng.randrange(S)
        if window is None and roll < 0.01:
            # writes were dropped: a window opens that the next few records do not close
            offset = rng.randrange(0, SIZE // 512 - 16) * 512
            length = rng.randrange(1, 16) * 512
            out.append(Record(seq, ts, RecordType.OVERFLOW, 0, offset, length, (ts - S).to_bytes(8, "little")))
            window = (offset, length, seq + rng.randrange(2, 12), 0)
        elif roll < 0.55:  # the hot region: blocks 0..7, rewritten over and over
            offset = rng.randrange(0, 64) * 512
            length = rng.randrange(1, 17) * 512
            out.append(Record(seq, ts, RecordType.WRITE, 0, offset, length, data(rng, length)))
        elif roll < 0.7:
            offset = rng.randrange(0, SIZE // 512 - 24) * 512
            length = rng.randrange(1, 24) * 512
            out.append(Record(seq, ts, RecordType.WRITE, 0, offset, length, data(rng, length)))
        elif roll < 0.75:
            offset = rng.randrange(0, SIZE // 512 - 16) * 512
            out.append(Record(seq, ts, RecordType.DISCARD, 0, offset, rng.randrange(1, 16) * 512))
        elif roll < 0.95:
            out.append(Record(seq, ts, RecordType.FLUSH))
        else:
            out.append(Record(seq, ts, RecordType.MARK, data=f"m{seq}".encode()))
    return out


def main() -> None:
    Journal.segment_target = SEGMENT
    path, now = Path(sys.argv[1]), int(sys.argv[2])
    with Journal.open(path) as journal:
        print("compacting", flush=True)  # the crash tests time their kill from here
        journal.compact(now)


if __name__ == "__main__":
    main()
