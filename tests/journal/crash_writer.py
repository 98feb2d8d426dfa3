"""A journal writer for crash tests: appends a deterministic stream of batches.

Batch i is always the same records (seeded by i), so the test can rebuild
the model of every batch and check that after a SIGKILL the journal holds
exactly a prefix of whole batches. Run: python -m tests.journal.crash_writer DIR START_BATCH
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from journal import Journal, Record, RecordType

SIZE = 1 << 20
BATCH_RECORDS = 40


def batch(i: int, created_ns: int) -> list[Record]:
    """The records of batch ``i`` (seqs i*40+1 ..)."""
    rng = random.Random(i)
    out = []
    for k in range(BATCH_RECORDS):
        seq = i * BATCH_RECORDS + k + 1
        ts = created_ns + seq * 1000
        roll = rng.random()
        if roll < 0.8:
            offset = rng.randrange(0, SIZE // 512 - 256) * 512
            length = rng.randrange(1, 256) * 512
            out.append(Record(seq, ts, RecordType.WRITE, 0, offset, length, rng.randbytes(length)))
        elif roll < 0.9:
            offset = rng.randrange(0, SIZE // 512 - 64) * 512
            out.append(Record(seq, ts, RecordType.DISCARD, 0, offset, rng.randrange(1, 64) * 512))
        else:
            out.append(Record(seq, ts, RecordType.FLUSH))
    return out


def main() -> None:
    path = Path(sys.argv[1])
    journal = Journal.open(path)
    i = journal.last_seq // BATCH_RECORDS
    while True:
        journal.append(batch(i, journal.info.created_ns), cursor={"batch": i})
        i += 1


if __name__ == "__main__":
    main()
